"""The only conversation of the webhook with the Kubernetes API (besides kopf's own watches):
its webhook configurations, the Secret its replicas share a certificate in, and a namespace the
watch has not delivered yet. It only reads the cluster otherwise.

Thin, synchronous calls, run in a thread by the async server.
"""

from __future__ import annotations

import base64
import typing as t

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..common.kube import unless_missing

#: The webhook's server-side applies: its own manager, so that the operator's and the webhook's
#: fields are never mistaken for each other's.
WEBHOOK_FIELD_MANAGER = "kvtune-webhook"


class Kube:
    """Typed wrappers for the few calls the webhook makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._admission = client.AdmissionregistrationV1Api(api)

    def apply_webhook_configurations(self, bodies: t.Sequence[t.Mapping[str, t.Any]]) -> None:
        """Server-side apply: the webhook owns exactly the fields it writes, and a rerun with
        the same bodies (every replica writes them) changes nothing."""
        for body in bodies:
            apply = (
                self._admission.patch_mutating_webhook_configuration
                if body["kind"] == "MutatingWebhookConfiguration"
                else self._admission.patch_validating_webhook_configuration
            )
            apply(body["metadata"]["name"], dict(body), field_manager=WEBHOOK_FIELD_MANAGER,
                  force=True, _content_type="application/apply-patch+yaml")

    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
        """A Secret's decoded data and resourceVersion; None when there is none."""
        secret = unless_missing(lambda: self._core.read_namespaced_secret(name, namespace))
        if secret is None:
            return None
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return data, secret.metadata.resource_version

    def create_secret(self, namespace: str, name: str, data: t.Mapping[str, bytes]) -> bool:
        """Create the Secret; False when another writer created it first."""
        return self._unless_conflict(lambda: self._core.create_namespaced_secret(
            namespace, self._secret(name, data)))

    def replace_secret(
        self, namespace: str, name: str, data: t.Mapping[str, bytes], resource_version: str
    ) -> bool:
        """Replace the Secret as read at `resource_version`; False when it changed since."""
        body = self._secret(name, data)
        body["metadata"]["resourceVersion"] = resource_version
        return self._unless_conflict(lambda: self._core.replace_namespaced_secret(
            name, namespace, body))

    @staticmethod
    def _secret(name: str, data: t.Mapping[str, bytes]) -> dict[str, t.Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name,
                             "labels": {"app.kubernetes.io/managed-by": "kvtune-webhook"}},
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}

    @staticmethod
    def _unless_conflict(call: t.Callable[[], object]) -> bool:
        try:
            call()
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    def namespace_uid(self, name: str) -> str | None:
        """A namespace's uid; None when it is gone."""
        namespace = unless_missing(lambda: self._core.read_namespace(name))
        return None if namespace is None else str(namespace.metadata.uid)

    def namespace_labels(self, name: str) -> dict[str, str]:
        """A namespace's labels ({} when it is gone), for one the watch has not delivered yet."""
        namespace = unless_missing(lambda: self._core.read_namespace(name))
        return {} if namespace is None else dict(namespace.metadata.labels or {})
