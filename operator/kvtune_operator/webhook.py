"""Serving the VMI admission webhook: its TLS files, kopf's HTTPS server, and the webhook
configurations that send the apiserver to it.

Why kvtune writes the configurations itself instead of kopf's `settings.admission.managed`:
kopf's managed configurations have no namespaceSelector, fix failurePolicy per handler at import
time and timeoutSeconds at 30, and drop the webhooks whenever the operator stops, which would
let VMIs through unshaped during every restart even where the admin asked for Fail. kopf still
serves the requests, routes each to its handler by the URL's last segment (the handler id), and
restarts its server when the certificate files change; `VmiWebhookServer` writes the
configurations each time kopf starts listening, so a renewed CA reaches the apiserver.

Scope: only VMI CREATE in namespaces other than Kubernetes' own and the operator's, and neither
namespaces nor VMIs labelled `kvtune.io/skip: "true"`: those never wait on the webhook, whatever
the failurePolicy. Finer selection (the profiles' own selectors) happens in the handlers, because
the configurations cannot follow profiles as they change.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import datetime
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import kopf

from .kube import Kube
from .pki import CertificateAuthority
from .settings import Settings
from .vmi.selection import SKIP_ANNOTATION

VMIS = ("kubevirt.io", "v1", "virtualmachineinstances")
#: Handler ids; kopf serves each handler at /<id>.
MUTATE_ID = "vmi-mutate"
VALIDATE_ID = "vmi-validate"
#: Name of both webhook configurations (one Mutating, one Validating).
CONFIGURATION_NAME = "kvtune.io"
#: The label that keeps a VMI or a whole namespace away from the webhook; the annotation of the
#: same name lets the webhook see a VMI but leave it alone.
SKIP_LABEL = SKIP_ANNOTATION
#: Set by the apiserver on every namespace.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
SERVICE_PORT = 443
#: A generated certificate outlives any run of the operator; a mounted one is renewed outside.
GENERATED_VALIDITY = datetime.timedelta(days=365)
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")
#: The apiserver refuses a webhook timeoutSeconds above this.
MAX_TIMEOUT_SECONDS = 30


class WebhookSetupError(RuntimeError):
    """The webhook cannot be served as configured."""


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


def tls_files(directory: Path | None, hosts: Sequence[str]) -> TlsFiles:
    """The serving certificate, its key and the CA that signed it, in `directory`: the files
    already there (a mounted Secret), or a CA and certificate for `hosts` generated when none is.
    None means a private temporary directory, removed at exit."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="kvtune-webhook-"))
        atexit.register(shutil.rmtree, directory, True)
    files = TlsFiles(*(directory / name for name in TLS_FILES))
    present = [name for name in TLS_FILES if (directory / name).exists()]
    if len(present) == len(TLS_FILES):
        return files
    if present:
        missing = sorted(set(TLS_FILES) - set(present))
        raise WebhookSetupError(
            f"webhook cert dir {directory} holds {', '.join(present)} but not "
            f"{', '.join(missing)}: mount all of tls.crt, tls.key and ca.crt (a kubernetes.io/tls "
            "Secret with its CA), or empty the directory to let the operator generate them"
        )
    ca = CertificateAuthority.create("kvtune-webhook-ca", GENERATED_VALIDITY)
    try:
        ca.issue_serving(hosts[0], list(hosts), GENERATED_VALIDITY).write(directory, "tls")
        files.ca.write_bytes(ca.cert_pem)
    except OSError as err:
        raise WebhookSetupError(
            f"cannot write a generated webhook certificate into {directory}: {err}; make the "
            "directory writable, or mount tls.crt, tls.key and ca.crt there"
        ) from err
    return files


def serving_hosts(settings: Settings) -> list[str]:
    """The names the serving certificate must be valid for."""
    hosts = [settings.webhook_host]
    if settings.webhook_service:
        namespace, name = _service(settings.webhook_service)
        hosts = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", *hosts]
    return hosts


def _service(reference: str) -> tuple[str, str]:
    namespace, _, name = reference.partition("/")
    if not namespace or not name or "/" in name:
        raise WebhookSetupError(
            f"webhook service {reference!r} is not namespace/name (e.g. kvtune/kvtune-webhook)"
        )
    return namespace, name


def configurations(
    client_config: kopf.WebhookClientConfig, settings: Settings, own_namespace: str | None
) -> list[dict[str, Any]]:
    """The Mutating- and ValidatingWebhookConfiguration, as bodies for a server-side apply.

    `client_config` is what kopf's server reports (its URL and CA bundle); `own_namespace` is
    the operator's namespace, when known."""
    excluded = sorted({*settings.webhook_excluded_namespaces, *filter(None, [own_namespace])})
    skip = {"key": SKIP_LABEL, "operator": "NotIn", "values": ["true"]}
    common = {
        "rules": [
            {
                "apiGroups": [VMIS[0]],
                "apiVersions": [VMIS[1]],
                "resources": [VMIS[2]],
                "operations": ["CREATE"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": excluded},
                skip,
            ]
        },
        "objectSelector": {"matchExpressions": [skip]},
        "failurePolicy": settings.webhook_failure_policy,
        # Also VMIs sent as another version of the API, converted to v1 for the webhook.
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": settings.webhook_timeout_seconds,
        "admissionReviewVersions": ["v1"],
    }
    # Called again when a later mutating webhook (KubeVirt's own) changed the VMI: the mutation
    # is idempotent, so a second pass only fills in what the other webhook left unset.
    mutating = {**common, "reinvocationPolicy": "IfNeeded"}
    return [
        _configuration(kind, handler_id, webhook, client_config, settings)
        for kind, handler_id, webhook in (
            ("MutatingWebhookConfiguration", MUTATE_ID, mutating),
            ("ValidatingWebhookConfiguration", VALIDATE_ID, common),
        )
    ]


def _configuration(
    kind: str,
    handler_id: str,
    webhook: dict[str, Any],
    client_config: kopf.WebhookClientConfig,
    settings: Settings,
) -> dict[str, Any]:
    where: dict[str, Any] = {"caBundle": client_config.get("caBundle")}
    if settings.webhook_service:
        namespace, name = _service(settings.webhook_service)
        where["service"] = {
            "namespace": namespace, "name": name, "port": SERVICE_PORT, "path": f"/{handler_id}"
        }
    else:
        where["url"] = f"{str(client_config.get('url', '')).rstrip('/')}/{handler_id}"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {
            "name": CONFIGURATION_NAME,
            "labels": {"app.kubernetes.io/managed-by": "kvtune-operator"},
        },
        # Webhook names must be fully qualified: <id>.kvtune.io.
        "webhooks": [{"name": f"{handler_id}.{CONFIGURATION_NAME}", "clientConfig": where,
                      **webhook}],
    }


class VmiWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, listening only once the operator's indexes are filled, and
    (re)writing the webhook configurations each time it starts listening.

    kopf answers admissions as soon as its server runs, before its indexes have listed the
    cluster; an answer from empty indexes would let a VMI through unshaped. Until `indexed` is
    set, the apiserver finds nothing listening and applies the failurePolicy, as in any restart.
    """

    def __init__(
        self, *, publish: Callable[[kopf.WebhookClientConfig], None], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._publish = publish
        self.indexed = asyncio.Event()

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        await self.indexed.wait()
        async for client_config in super().__call__(fn):
            await asyncio.to_thread(self._publish, client_config)
            yield client_config


def configure(
    operator: kopf.OperatorSettings, settings: Settings, kube: Kube
) -> VmiWebhookServer | None:
    """Set up kopf's admission server as `settings` say; None when the webhook is off."""
    if not settings.webhook:
        kube.delete_webhook_configurations(CONFIGURATION_NAME)
        operator.admission.server = _never_listen
        return None
    if not 1 <= settings.webhook_timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise WebhookSetupError(
            f"webhook timeout {settings.webhook_timeout_seconds} s is outside the 1 to "
            f"{MAX_TIMEOUT_SECONDS} s the apiserver accepts: choose a value in that range"
        )
    files = tls_files(settings.webhook_cert_dir, serving_hosts(settings))
    server = VmiWebhookServer(
        publish=lambda client_config: kube.apply_webhook_configurations(
            configurations(client_config, settings, settings.namespace)
        ),
        # Behind a Service the pod's address is not known in advance: listen everywhere.
        addr="0.0.0.0" if settings.webhook_service else settings.webhook_host,
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=files.cert,
        pkeyfile=files.key,
        cafile=files.ca,
    )
    operator.admission.server = server
    return server


async def _never_listen(fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
    # kopf refuses to start with admission handlers registered but no server configured.
    await asyncio.Event().wait()
    yield kopf.WebhookClientConfig()  # never reached; makes this an async generator

