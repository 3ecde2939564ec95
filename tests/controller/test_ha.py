"""Two operator replicas with kopf peering: one works, the other takes over when it dies.

The replicas are real `kvtune operator` processes (peering, no --standalone); the leader is
killed with SIGKILL, so its peering record is left to expire as after a crash.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import typing as t
import uuid
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client
from support.cluster import ClusterAccess, apply_crds, is_gone, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
G, V = "kvtune.io", "v1alpha1"
LIFETIME = 5  # seconds; short so that the takeover after a crash is quick to test


@pytest.fixture(scope="module")
def peering(api_client: client.ApiClient, kvtune_crds: list[str]) -> None:
    """kopf's peering CRD as deploy/base ships it; the operator creates the object itself."""
    docs = yaml.safe_load_all((REPO / "deploy/base/kopf-peering.yaml").read_text())
    apply_crds(api_client, [d for d in docs if d["kind"] == "CustomResourceDefinition"])


def replica(cluster: ClusterAccess, priority: int, log: pathlib.Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    with log.open("wb") as out:
        return subprocess.Popen(
            # No metrics: two replicas on one host cannot both have the default port.
            [sys.executable, "-m", "kvtune_cli.main", "operator",
             "--peering-priority", str(priority), "--peering-lifetime", str(LIFETIME),
             "--metrics-port", "0"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )


@pytest.fixture
def replicas(
    cluster: ClusterAccess, peering: None, tmp_path: pathlib.Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    # The leader first, so that the follower meets it: kopf starts paused and resumes only when
    # no live replica outranks it (two starting at once could both resume for a moment).
    procs = {"leader": replica(cluster, 200, tmp_path / "leader.log")}
    wait_for(lambda: "Resuming operations" in (tmp_path / "leader.log").read_text(),
             "the leader to start working", timeout=60)
    procs["follower"] = replica(cluster, 100, tmp_path / "follower.log")
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_the_follower_takes_over_a_killed_leader_without_duplicate_work(
    replicas: dict[str, subprocess.Popen[bytes]], api_client: client.ApiClient,
    tmp_path: pathlib.Path,
) -> None:
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    tag = uuid.uuid4().hex[:6]
    pool = {"pool": f"ha-{tag}"}

    def node(name: str) -> str:
        core.create_node({"metadata": {"name": f"{tag}-{name}", "labels": pool}})
        return f"{tag}-{name}"

    def state(name: str) -> dict[str, t.Any] | None:
        return None if is_gone(lambda: custom.get_cluster_custom_object(
            G, V, "hypervisornodestates", name)) else custom.get_cluster_custom_object(
            G, V, "hypervisornodestates", name)

    first = node("a")
    custom.create_cluster_custom_object(G, V, "hypervisorprofiles", {
        "apiVersion": f"{G}/{V}", "kind": "HypervisorProfile", "metadata": {"name": f"ha-{tag}"},
        "spec": {"nodeSelector": {"matchLabels": pool}}})
    wait_for(lambda: state(first) is not None, "the leader renders the first node", timeout=60)
    created = state(first)
    assert created is not None
    time.sleep(3)  # a second, duplicate-acting replica would patch or recreate it by now
    again = state(first)
    assert again is not None
    assert again["metadata"]["generation"] == created["metadata"]["generation"]
    # kopf starts paused and resumes once peering shows no replica above it: only the leader.
    assert "Resuming operations" not in (tmp_path / "follower.log").read_text()
    assert "Resuming operations" in (tmp_path / "leader.log").read_text()

    replicas["leader"].send_signal(signal.SIGKILL)
    replicas["leader"].wait(timeout=10)
    second = node("b")
    wait_for(lambda: state(second) is not None,
             "the follower to take over and render the new node", timeout=120)
    assert "Resuming operations" in (tmp_path / "follower.log").read_text()
