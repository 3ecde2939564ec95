"""Real `kvtune agent` processes, each with its node name and host tree, on the real API server.

The operator is not running here: the tests write each node's HypervisorNodeState as the
operator renders it, and watch the agent converge the tree and report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosttree import FAKE_SYSTEMCTL, intel_two_socket
from kubernetes import client
from kvtune_operator.profiles import Profile
from kvtune_operator.render import render_node_state
from support.cluster import ClusterAccess, wait_for

G, V, STATES = "kvtune.io", "v1alpha1", "hypervisornodestates"
KSM_RUN = "sys/kernel/mm/ksm/run"
NODE0_2M = "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"


class Node:
    """A fake node: a Node object, a host tree, its HypervisorNodeState and its agent process."""

    def __init__(self, cluster: ClusterAccess, api: client.ApiClient, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.name = f"agent-{uuid.uuid4().hex[:8]}"
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        # KSM on but nothing merged: a plain file tree cannot unmerge pages as the kernel does.
        self.tree = intel_two_socket(root).ksm(1).systemctl()
        self.tree.file("/proc/stat", "cpu  1 2 3\nbtime 1700000000")
        self.core.create_node({"metadata": {"name": self.name}})
        self.proc: subprocess.Popen[bytes] | None = None

    def render(self, mode: str, **spec: t.Any) -> None:
        profile = Profile.from_body({"metadata": {"name": "p", "uid": "u", "generation": 1},
                                     "spec": {"nodeSelector": {}, "mode": mode, **spec}})
        manifest = render_node_state(profile, self.name)
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

    def state(self) -> dict[str, t.Any]:
        got: dict[str, t.Any] = self.custom.get_cluster_custom_object(G, V, STATES, self.name)
        return got

    def reported(self) -> bool:
        state = self.state()
        return (state.get("status") or {}).get("observedGeneration") == state["metadata"][
            "generation"]

    def condition(self, type_: str) -> str | None:
        for c in (self.state().get("status") or {}).get("conditions", []):
            if c["type"] == type_:
                return str(c["status"])
        return None

    def host_file(self, path: str) -> str:
        return (self.root / path).read_text().strip()

    def log(self) -> str:
        return (self.root.parent / f"{self.name}.log").read_text()[-3000:]


@pytest.fixture
def node(cluster: ClusterAccess, api_client: client.ApiClient, kvtune_crds: list[str],
         tmp_path: Path) -> Iterator[Node]:
    made = Node(cluster, api_client, tmp_path / "host")
    yield made
    made.stop()


ENFORCE = {"memory": {"ksm": "Disabled",
                      "hugepages": {"pages": [{"size": "2Mi", "perNode": [
                          {"node": 0, "count": 1024}, {"node": 1, "count": 1024}]}]}}}


def test_an_enforcing_agent_converges_its_host_and_reports_ready(node: Node) -> None:
    node.render("Enforce", **ENFORCE)
    node.start()
    wait_for(lambda: node.reported() and node.condition("Ready") == "True",
             "the agent reports Ready", timeout=60)
    assert node.host_file(KSM_RUN) == "0"
    assert node.state()["status"]["plan"] == []
    # The agent labels its node just after writing the status that says Ready.
    wait_for(lambda: (node.core.read_node(node.name).metadata.labels or {}).get(
        "kvtune.io/ready") == "true", "the node labelled ready", timeout=10)


def test_a_spec_change_is_picked_up(node: Node) -> None:
    node.render("Enforce", **ENFORCE)
    node.start()
    wait_for(node.reported, "the first report", timeout=60)
    node.render("Enforce", memory={**ENFORCE["memory"], "hugepages": {"pages": [
        {"size": "2Mi", "perNode": [{"node": 0, "count": 1536}, {"node": 1, "count": 1024}]}]}})
    wait_for(lambda: node.host_file(NODE0_2M) == "1536", "the new hugepage count written",
             timeout=60)
    wait_for(lambda: node.reported() and node.condition("Ready") == "True", "Ready again")


def test_drift_is_fixed_in_enforce(node: Node) -> None:
    node.render("Enforce", **ENFORCE)
    node.start()
    wait_for(lambda: node.reported() and node.condition("Ready") == "True", "Ready", timeout=60)
    node.tree.file("/" + KSM_RUN, 1)  # someone turns KSM back on
    wait_for(lambda: node.host_file(KSM_RUN) == "0", "KSM turned off again", timeout=30)


def test_drift_is_only_reported_in_audit(node: Node) -> None:
    node.tree.ksm(0)  # the tree's hugepages already match: the host is as the spec asks
    node.render("Audit", **ENFORCE)
    node.start()
    wait_for(lambda: node.reported() and node.condition("Ready") == "True",
             "Ready: the host already matches", timeout=60)
    node.tree.file("/" + KSM_RUN, 1)
    wait_for(lambda: node.condition("Ready") == "False", "the drift reported", timeout=30)
    steps = node.state()["status"]["plan"]
    assert any(s["path"].endswith("ksm/run") for s in steps), steps
    time.sleep(2)
    assert node.host_file(KSM_RUN) == "1", "Audit must not write"


def test_a_restarted_agent_writes_nothing_new(node: Node) -> None:
    node.render("Enforce", **ENFORCE)
    node.start()
    wait_for(lambda: node.reported() and node.condition("Ready") == "True", "Ready", timeout=60)
    time.sleep(2)
    before_version = node.state()["metadata"]["resourceVersion"]
    before_files = {p: p.stat().st_mtime_ns for p in node.root.rglob("*") if p.is_file()}
    node.stop()
    node.start()
    time.sleep(5)  # several cycles of the new process
    assert node.proc is not None and node.proc.poll() is None, node.log()
    after_files = {p: p.stat().st_mtime_ns for p in node.root.rglob("*") if p.is_file()}
    changed = [str(p) for p in after_files if after_files[p] != before_files.get(p)]
    assert changed == [], "a restart re-applied something"
    assert node.state()["metadata"]["resourceVersion"] == before_version, (
        "the status was rewritten although nothing changed")
