"""The operator's only conversation with the Kubernetes API (besides kopf's own watches).

Everything here is a thin, synchronous call (run in a thread by the async callers) that turns a
planned action into a request. Conflicts that the next reconcile pass resolves by itself (an
object already created, already gone) are not errors.
"""

from __future__ import annotations

import os
import typing as t

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kvtune_api.v1alpha1 import API_GROUP, API_VERSION

from .reconcile import Action, CreateState, DeleteState, LabelNode, PatchStateSpec
from .render import PROFILE_LABEL

STATES = "hypervisornodestates"
PROFILES = "hypervisorprofiles"


def api_client() -> client.ApiClient:
    """A client for the cluster the operator runs in, else the one $KUBECONFIG names."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        # Read $KUBECONFIG now: the client library reads it once, at import time.
        path = os.environ.get("KUBECONFIG")
        return t.cast(client.ApiClient, config.new_client_from_config(config_file=path))


class Kube:
    """Typed wrappers for the few writes the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    def execute(self, action: Action) -> None:
        if isinstance(action, CreateState):
            self._tolerate(409, lambda: self._custom.create_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, dict(action.manifest)))
        elif isinstance(action, PatchStateSpec):
            body: dict[str, t.Any] = {"spec": dict(action.spec)}
            if action.annotations:
                body["metadata"] = {"annotations": dict(action.annotations)}
            self._tolerate(404, lambda: self._custom.patch_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, action.name, body))
        elif isinstance(action, DeleteState):
            self._tolerate(404, lambda: self._custom.delete_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, action.name))
        elif isinstance(action, LabelNode):
            patch = {"metadata": {"labels": {PROFILE_LABEL: action.profile}}}
            self._tolerate(404, lambda: self._core.patch_node(action.node, patch))

    def patch_profile_status(self, name: str, status: dict[str, t.Any]) -> None:
        self._tolerate(404, lambda: self._custom.patch_cluster_custom_object_status(
            API_GROUP, API_VERSION, PROFILES, name, {"status": status}))

    @staticmethod
    def _tolerate(code: int, call: t.Callable[[], object]) -> None:
        try:
            call()
        except ApiException as err:
            if err.status != code:
                raise
