"""A fake node with a real `kvtune agent` process: a Node object, a host tree and the agent.

Shared by the agent's own API tests (which write the HypervisorNodeState as the operator renders
it) and the operator's (where the operator renders it and the agent follows).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import typing as t
import uuid
from pathlib import Path

from kubernetes import client
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.kube import AgentKube
from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller.render import render_node_state

from support.cluster import ClusterAccess
from support.hosttree import FAKE_SYSTEMCTL, intel_two_socket
from support.sections import HostSections

G, V, STATES = "kvtune.io", "v1alpha1", "hypervisornodestates"
KSM_RUN = "sys/kernel/mm/ksm/run"

#: A spec an Enforce agent can fully apply to the fake host: KSM off, 2Mi pages on both nodes.
ENFORCE: HostSections = {"memory": {"ksm": "Disabled",
                      "hugepages": {"pages": [{"size": "2Mi", "perNode": [
                          {"node": 0, "count": 1024}, {"node": 1, "count": 1024}]}]}}}


class StoredState(AgentKube):
    """The agent's API module over one stored HypervisorNodeState, without a cluster: every
    read and write the agent's step makes, overridden (no API client is made; `watch_state`,
    which only the agent's loop calls, would fail)."""

    def __init__(self, mode: str) -> None:
        profile = Profile.from_body({"metadata": {"name": "p", "uid": "u", "generation": 1},
                                     "spec": {"nodeSelector": {}, "mode": mode, **ENFORCE}})
        self.body: dict[str, t.Any] | None = render_node_state(profile, "n1")
        self.body["metadata"]["generation"] = 1
        self.labels: dict[str, str] = {}

    def read_state(self) -> dict[str, t.Any] | None:
        return self.body

    def node_meta(self) -> NodeMeta:
        return NodeMeta(dict(self.labels))

    def patch_status(self, status: dict[str, t.Any]) -> None:
        assert self.body is not None
        self.body["status"] = status

    def patch_labels(self, labels: t.Mapping[str, str | None]) -> None:
        for key, label in labels.items():
            if label is None:
                self.labels.pop(key, None)
            else:
                self.labels[key] = label

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass


class Node:
    """A fake node: a Node object, a host tree, its HypervisorNodeState and its agent process."""

    def __init__(self, cluster: ClusterAccess, api: client.ApiClient, root: Path,
                 **labels: str) -> None:
        self.cluster, self.root = cluster, root
        self.name = f"agent-{uuid.uuid4().hex[:8]}"
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        # KSM on but nothing merged: a plain file tree cannot unmerge pages as the kernel does.
        self.tree = intel_two_socket(root).ksm(1).systemctl()
        self.tree.file("/proc/stat", "cpu  1 2 3\nbtime 1700000000")
        self.core.create_node({"metadata": {"name": self.name, "labels": labels}})
        self.proc: subprocess.Popen[bytes] | None = None

    def render(self, mode: str, *, revert: bool = False, **spec: t.Unpack[HostSections]) -> None:
        """Write the state as the operator renders it (`revert`: the node leaves its profile)."""
        profile = Profile.from_body({"metadata": {"name": "p", "uid": "u", "generation": 1},
                                     "spec": {"nodeSelector": {}, "mode": mode, **spec}})
        manifest = render_node_state(profile, self.name, revert=revert)
        del manifest["metadata"]["ownerReferences"]  # no profile object in these tests
        try:
            self.custom.create_cluster_custom_object(G, V, STATES, manifest)
        except client.ApiException as err:
            if err.status != 409:
                raise
            self.custom.patch_cluster_custom_object(G, V, STATES, self.name,
                                                    {"spec": manifest["spec"]})

    def start(self, metrics_port: int = 0) -> None:
        """Start the agent; without a metrics port it serves no metrics, so that agents of
        test sessions running side by side on one machine never contend for a port."""
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        log = (self.root.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvtune_cli.main", "agent", "--node", self.name,
             "--root", str(self.root), "--interval", "1",
             "--systemctl", str(self.root / FAKE_SYSTEMCTL.lstrip("/")),
             "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def delete_state(self) -> None:
        self.custom.delete_cluster_custom_object(G, V, STATES, self.name)

    def state(self) -> dict[str, t.Any]:
        got: dict[str, t.Any] = self.custom.get_cluster_custom_object(G, V, STATES, self.name)
        return got

    def reported(self) -> bool:
        state = self.state()
        observed = (state.get("status") or {}).get("observedGeneration")
        return bool(observed == state["metadata"]["generation"])

    def condition(self, type_: str) -> str | None:
        for c in (self.state().get("status") or {}).get("conditions", []):
            if c["type"] == type_:
                return str(c["status"])
        return None

    def labels(self) -> dict[str, str]:
        return dict(self.core.read_node(self.name).metadata.labels or {})

    def host_has(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).exists()

    def host_file(self, path: str) -> str:
        return (self.root / path).read_text().strip()

    def log(self) -> str:
        return (self.root.parent / f"{self.name}.log").read_text()[-3000:]
