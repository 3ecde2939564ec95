"""What the apiserver is told about the VMI admission webhook: the webhook configurations that
send VMI creations to it, and the TLS material it serves with.

Why kvtune writes the configurations itself instead of kopf's `settings.admission.managed`:
kopf's managed configurations have no namespaceSelector, fix failurePolicy per handler at import
time and timeoutSeconds at 30, and drop the webhooks whenever the process stops, which would let
VMIs through unshaped during every restart even where the admin asked for Fail. Every webhook
replica applies the same configurations (server-side apply, one field manager), so whichever
writes last changes nothing.

Scope: only VMI CREATE in namespaces other than Kubernetes' own and kvtune's, and neither
namespaces nor VMIs labelled `kvtune.io/skip: "true"`: those never wait on the webhook, whatever
the failurePolicy. Finer selection (the profiles' own selectors) happens in the answers, because
the configurations cannot follow profiles as they change.

TLS, three ways (`WebhookSettings`): files mounted from outside (cert-manager), a Secret the
replicas share and the webhook maintains itself (the shipped Deployment), or a CA made in memory
for one local process. The shared Secret holds a ten-year CA and a one-year serving certificate;
a replica that finds the certificate within `RENEW_BEFORE` of its end issues a new one from the
same CA, so the caBundle the apiserver trusts never changes and replicas still serving the old
certificate stay valid until they reread the Secret.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from .kube import Kube
from .pki import CertificateAuthority
from .settings import WebhookSettings
from .vmi.selection import SKIP_ANNOTATION

VMIS = ("kubevirt.io", "v1", "virtualmachineinstances")
#: The request paths of the two webhooks.
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
#: The apiserver refuses a webhook timeoutSeconds above this.
MAX_TIMEOUT_SECONDS = 30
#: The keys of a kubernetes.io/tls Secret with its CA, as cert-manager writes them.
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")
#: The CA's key, kept only in the webhook's own Secret, to renew the serving certificate.
CA_KEY = "ca.key"
CA_VALIDITY = datetime.timedelta(days=3650)
SERVING_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=90)


class WebhookSetupError(RuntimeError):
    """The webhook cannot be served as configured."""


@dataclasses.dataclass(frozen=True)
class TlsMaterial:
    """A serving certificate, its key and the CA that signed it, all PEM."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


class TlsSource(Protocol):
    def load(self) -> TlsMaterial:
        """The material to serve with now (blocking: reads files or the API)."""


def check(settings: WebhookSettings) -> None:
    """Refuse settings the apiserver would refuse later, naming the flag and the fix."""
    if not 1 <= settings.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise WebhookSetupError(
            f"webhook timeout {settings.timeout_seconds} s is outside the 1 to "
            f"{MAX_TIMEOUT_SECONDS} s the apiserver accepts: choose a value in that range"
        )
    serving_hosts(settings)
    if settings.tls_secret:
        _reference(settings.tls_secret, "TLS Secret", "kvtune-system/kvtune-webhook-tls")


def tls_source(settings: WebhookSettings, kube: Kube) -> TlsSource:
    """Where the TLS material comes from, as `settings` say (see the module's docstring)."""
    hosts = serving_hosts(settings)
    if settings.cert_dir is not None:
        return MountedTls(settings.cert_dir)
    if settings.tls_secret:
        namespace, name = _reference(settings.tls_secret, "TLS Secret", "")
        return SecretTls(kube, namespace, name, hosts)
    return GeneratedTls(hosts)


@dataclasses.dataclass(frozen=True)
class MountedTls:
    """tls.crt, tls.key and ca.crt in a directory, renewed by whoever mounted them."""

    directory: Path

    def load(self) -> TlsMaterial:
        present = [name for name in TLS_FILES if (self.directory / name).exists()]
        if len(present) != len(TLS_FILES):
            missing = sorted(set(TLS_FILES) - set(present))
            raise WebhookSetupError(
                f"webhook cert dir {self.directory} lacks {', '.join(missing)}: mount a "
                "kubernetes.io/tls Secret with its CA (tls.crt, tls.key and ca.crt) there, or "
                "leave --cert-dir out to let the webhook make its own (--tls-secret)"
            )
        cert, key, ca = ((self.directory / name).read_bytes() for name in TLS_FILES)
        return TlsMaterial(cert, key, ca)


class GeneratedTls:
    """A CA and serving certificate made in memory, for one process (local runs)."""

    def __init__(self, hosts: Sequence[str]) -> None:
        ca = CertificateAuthority.create("kvtune-webhook-ca", SERVING_VALIDITY)
        pair = ca.issue_serving(hosts[0], list(hosts), SERVING_VALIDITY)
        self._material = TlsMaterial(pair.cert_pem, pair.key_pem, ca.cert_pem)

    def load(self) -> TlsMaterial:
        return self._material


@dataclasses.dataclass(frozen=True)
class SecretTls:
    """The material every replica shares through one Secret, made and renewed by them."""

    kube: Kube
    namespace: str
    name: str
    hosts: Sequence[str]

    def load(self) -> TlsMaterial:
        # Two replicas may create or renew at once: the API lets one win (create, or replace at
        # the resourceVersion read) and the other rereads, so all serve the same material.
        for _ in range(3):
            secret = self.kube.read_secret(self.namespace, self.name)
            if secret is None:
                if self.kube.create_secret(self.namespace, self.name, self._made(None)):
                    continue
            else:
                data, version = secret
                material = self._usable(data)
                if material is not None:
                    return material
                if self.kube.replace_secret(
                    self.namespace, self.name, self._made(data), version
                ):
                    continue
        raise WebhookSetupError(
            f"the webhook TLS Secret {self.namespace}/{self.name} kept changing while it was "
            "being read; another writer may be fighting over it"
        )

    def _usable(self, data: dict[str, bytes]) -> TlsMaterial | None:
        """The Secret's material, if complete, for these hosts and not near its end."""
        if not all(key in data for key in (*TLS_FILES, CA_KEY)):
            return None
        cert = x509.load_pem_x509_certificate(data["tls.crt"])
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        if left < RENEW_BEFORE or not covers(cert, self.hosts):
            return None
        return TlsMaterial(data["tls.crt"], data["tls.key"], data["ca.crt"])

    def _made(self, old: dict[str, bytes] | None) -> dict[str, bytes]:
        """New Secret data: a serving certificate from the Secret's CA when it holds one (the
        caBundle stays), else from a new CA."""
        try:
            ca = CertificateAuthority.from_pem(old["ca.crt"], old[CA_KEY]) if old else None
        except (KeyError, ValueError):
            ca = None
        if ca is None or ca.cert.not_valid_after_utc - datetime.datetime.now(
            datetime.UTC
        ) < SERVING_VALIDITY:
            ca = CertificateAuthority.create("kvtune-webhook-ca", CA_VALIDITY)
        pair = ca.issue_serving(self.hosts[0], list(self.hosts), SERVING_VALIDITY)
        return {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca.cert_pem,
                CA_KEY: ca.key_pem}


def covers(cert: x509.Certificate, hosts: Sequence[str]) -> bool:
    """Whether the certificate names every one of `hosts` (DNS names or IP addresses)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = set(sans.get_values_for_type(x509.DNSName))
    addresses = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    for host in hosts:
        try:
            if str(ipaddress.ip_address(host)) not in addresses:
                return False
        except ValueError:
            if host not in names:
                return False
    return True


def serving_hosts(settings: WebhookSettings) -> list[str]:
    """The names the serving certificate must be valid for."""
    hosts = [settings.host]
    if settings.service:
        namespace, name = _reference(settings.service, "webhook service",
                                     "kvtune-system/kvtune-webhook")
        hosts = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", *hosts]
    return hosts


def _reference(reference: str, what: str, example: str) -> tuple[str, str]:
    namespace, _, name = reference.partition("/")
    if not namespace or not name or "/" in name:
        raise WebhookSetupError(
            f"{what} {reference!r} is not namespace/name"
            + (f" (e.g. {example})" if example else "")
        )
    return namespace, name


def configurations(
    url: str, ca_pem: bytes, settings: WebhookSettings, owner_uid: str | None = None
) -> list[dict[str, Any]]:
    """The Mutating- and ValidatingWebhookConfiguration, as bodies for a server-side apply.

    `url` is where this process listens (used when no Service is named); `ca_pem` the CA that
    signed its certificate; `owner_uid` the uid of kvtune's namespace (`settings.namespace`).

    The configurations are owned by that Namespace (an owner both cluster-scoped, as they are,
    and deleted on uninstall): `kubectl delete -k` removes the namespace, and the garbage
    collector then removes the configurations, which would otherwise outlive the webhook and,
    under failurePolicy Fail, block every VMI creation."""
    excluded = sorted({*settings.excluded_namespaces, *filter(None, [settings.namespace])})
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
        "failurePolicy": settings.failure_policy,
        # Also VMIs sent as another version of the API, converted to v1 for the webhook.
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": settings.timeout_seconds,
        "admissionReviewVersions": ["v1"],
    }
    # Called again when a later mutating webhook (KubeVirt's own) changed the VMI: the mutation
    # is idempotent, so a second pass only fills in what the other webhook left unset.
    mutating = {**common, "reinvocationPolicy": "IfNeeded"}
    bodies = [
        _configuration(kind, path, webhook, url, ca_pem, settings)
        for kind, path, webhook in (
            ("MutatingWebhookConfiguration", MUTATE_ID, mutating),
            ("ValidatingWebhookConfiguration", VALIDATE_ID, common),
        )
    ]
    if settings.namespace and owner_uid:
        for body in bodies:
            body["metadata"]["ownerReferences"] = [{
                "apiVersion": "v1", "kind": "Namespace", "name": settings.namespace,
                "uid": owner_uid,
            }]
    return bodies


def _configuration(
    kind: str,
    path: str,
    webhook: dict[str, Any],
    url: str,
    ca_pem: bytes,
    settings: WebhookSettings,
) -> dict[str, Any]:
    where: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if settings.service:
        namespace, name = _reference(settings.service, "webhook service", "")
        where["service"] = {
            "namespace": namespace, "name": name, "port": SERVICE_PORT, "path": f"/{path}"
        }
    else:
        where["url"] = f"{url.rstrip('/')}/{path}"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {
            "name": CONFIGURATION_NAME,
            "labels": {"app.kubernetes.io/managed-by": "kvtune-webhook"},
        },
        # Webhook names must be fully qualified: <path>.kvtune.io.
        "webhooks": [{"name": f"{path}.{CONFIGURATION_NAME}", "clientConfig": where,
                      **webhook}],
    }
