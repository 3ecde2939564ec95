"""The only conversation of the operator with the Kubernetes API (besides kopf's own watches).

Everything here is a thin, synchronous call (run in a thread by the async callers) that turns a
planned action into a request. Conflicts that the next reconcile pass resolves by itself (an
object already created, already gone) are not errors.
"""

from __future__ import annotations

import typing as t

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api.v1alpha1 import API_GROUP, API_VERSION

from ..common.kube import unless_missing
from ..common.profiles import PROFILE_LABEL
from .views import (
    CORDONED_ANNOTATION,
    Action,
    ApplyConfigMap,
    CordonNode,
    CreateState,
    CreateVolume,
    DeleteConfigMap,
    DeleteState,
    EvictVmPods,
    LabelNode,
    PatchState,
)

FIELD_MANAGER = "kvtune-operator"
STATES = "hypervisornodestates"
PROFILES = "hypervisorprofiles"
#: KubeVirt labels every VM's pod with this; evicting it migrates or stops the VM.
VM_POD_SELECTOR = "kubevirt.io=virt-launcher"


class Kube:
    """Typed wrappers for the few calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)

    def execute(self, action: Action) -> None:
        if isinstance(action, CreateState):
            self._tolerate(409, lambda: self._custom.create_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, dict(action.manifest)))
        elif isinstance(action, PatchState):
            body: dict[str, t.Any] = {}
            if action.spec is not None:
                body["spec"] = dict(action.spec)
            if action.annotations:
                body.setdefault("metadata", {})["annotations"] = dict(action.annotations)
            if action.labels:
                body.setdefault("metadata", {})["labels"] = dict(action.labels)
            self._tolerate(404, lambda: self._custom.patch_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, action.name, body))
        elif isinstance(action, DeleteState):
            self._tolerate(404, lambda: self._custom.delete_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, action.name))
        elif isinstance(action, LabelNode):
            patch = {"metadata": {"labels": {PROFILE_LABEL: action.profile}}}
            self._tolerate(404, lambda: self._core.patch_node(action.node, patch))
        elif isinstance(action, CordonNode):
            # One patch: the cordon and the note that it is kvtune's are never apart.
            cordon: dict[str, t.Any] = {
                "spec": {"unschedulable": action.unschedulable or None},
                "metadata": {"annotations": {
                    CORDONED_ANNOTATION: "true" if action.unschedulable else None}},
            }
            self._tolerate(404, lambda: self._core.patch_node(action.node, cordon))
        elif isinstance(action, EvictVmPods):
            self._evict_vm_pods(action.node)
        elif isinstance(action, CreateVolume):
            self._tolerate(409, lambda: self._core.create_persistent_volume(
                dict(action.manifest)))
        elif isinstance(action, ApplyConfigMap):
            meta = action.manifest["metadata"]
            self._core.patch_namespaced_config_map(
                meta["name"], meta["namespace"], dict(action.manifest),
                field_manager=FIELD_MANAGER, force=True,
                _content_type="application/apply-patch+yaml")
        elif isinstance(action, DeleteConfigMap):
            self._tolerate(404, lambda: self._core.delete_namespaced_config_map(
                action.name, action.namespace))

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data; None when there is no such ConfigMap."""
        found = unless_missing(lambda: self._core.read_namespaced_config_map(name, namespace))
        return None if found is None else dict(found.data or {})

    def daemonset_exists(self, namespace: str, name: str) -> bool:
        found = unless_missing(lambda: self._apps.read_namespaced_daemon_set(name, namespace))
        return found is not None

    def _vm_pods(self, node: str) -> list[t.Any]:
        pods = self._core.list_pod_for_all_namespaces(
            label_selector=VM_POD_SELECTOR, field_selector=f"spec.nodeName={node}"
        ).items
        finished = ("Succeeded", "Failed")
        return [p for p in pods if p.status is None or p.status.phase not in finished]

    def count_vm_pods(self, node: str) -> int:
        return len(self._vm_pods(node))

    def _evict_vm_pods(self, node: str) -> None:
        for pod in self._vm_pods(node):
            eviction = client.V1Eviction(metadata=client.V1ObjectMeta(
                name=pod.metadata.name, namespace=pod.metadata.namespace))
            try:
                self._core.create_namespaced_pod_eviction(
                    pod.metadata.name, pod.metadata.namespace, eviction)
            except ApiException as err:
                # 429: a PodDisruptionBudget says not now; 404: already gone. The next pass
                # asks again until the drain succeeds or times out.
                if err.status not in (404, 429):
                    raise

    def apply_daemonset(self, manifest: dict[str, t.Any]) -> None:
        """Server-side apply: creates the DaemonSet, or updates what differs, or writes nothing."""
        self._apps.patch_namespaced_daemon_set(
            manifest["metadata"]["name"], manifest["metadata"]["namespace"], manifest,
            field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml",
        )

    def ensure_peering(self, name: str) -> None:
        """Create kopf's peering object for the replicas, unless it exists: a one-step install
        cannot create it with its CRD, and mandatory peering waits for it."""
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                "metadata": {"name": name}}
        self._tolerate(409, lambda: self._custom.create_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", body))

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
