"""The node agent's only conversation with the Kubernetes API.

An agent reads and writes exactly three things, all about its own node: its HypervisorNodeState
(watched with a field selector, status written through the status subresource), its Node's
kvtune labels (`kvtune_api.labels`), and Events. Least privilege in the cluster mirrors this list.
"""

from __future__ import annotations

import datetime
import os
import queue
import threading
import typing as t
import uuid

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kvtune_api.v1alpha1 import API_GROUP, API_VERSION, GROUP_VERSION

from .features.base import NodeMeta

STATES = "hypervisornodestates"
EVENTS_NAMESPACE = "default"  # Events about cluster-scoped objects live in `default`.


def api_client() -> client.ApiClient:
    """In-cluster credentials, else the kubeconfig $KUBECONFIG names (read now, not at import)."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        path = os.environ.get("KUBECONFIG")
        return t.cast(client.ApiClient, config.new_client_from_config(config_file=path))


class AgentKube:
    """The agent's reads and writes, each scoped to one node."""

    def __init__(self, api: client.ApiClient, node: str) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.node = node

    def read_state(self) -> dict[str, t.Any] | None:
        try:
            body: dict[str, t.Any] = self._custom.get_cluster_custom_object(
                API_GROUP, API_VERSION, STATES, self.node
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return body

    def watch_state(self, changes: queue.Queue[str], stop: threading.Event) -> None:
        """Put a note on `changes` whenever this node's state changes; runs until `stop`.

        Only the notification travels: the loop re-reads the object, so a burst of events
        costs one cycle, and a broken watch is simply restarted.
        """
        while not stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self._custom.list_cluster_custom_object, API_GROUP, API_VERSION, STATES,
                    field_selector=f"metadata.name={self.node}", timeout_seconds=60,
                ):
                    changes.put(event["type"])
                    if stop.is_set():
                        break
            except Exception:  # a dropped watch is normal (apiserver restarts, timeouts)
                stop.wait(1.0)
            finally:
                stream.stop()

    def node_meta(self) -> NodeMeta:
        meta = self._core.read_node(self.node).metadata
        return NodeMeta(dict(meta.labels or {}), dict(meta.annotations or {}))

    def patch_status(self, status: dict[str, t.Any]) -> None:
        self._custom.patch_cluster_custom_object_status(
            API_GROUP, API_VERSION, STATES, self.node, {"status": status}
        )

    def patch_labels(self, labels: t.Mapping[str, str | None]) -> None:
        """Set (or, for None, remove) these labels of the agent's own Node, and no others."""
        self._core.patch_node(self.node, {"metadata": {"labels": dict(labels)}})

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._core.create_namespaced_event(EVENTS_NAMESPACE, {
            "metadata": {"name": f"{self.node}.{uuid.uuid4().hex[:10]}"},
            "involvedObject": {"apiVersion": GROUP_VERSION, "kind": "HypervisorNodeState",
                               "name": self.node},
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kvtune-agent", "host": self.node},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        })
