"""Real `kvtune agent` processes, each with its node name and host tree, on the real API server.

The operator is not running here: the tests write each node's HypervisorNodeState as the
operator renders it, and watch the agent converge the tree and report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kvtune_agent import nfd
from kvtune_agent.engine.journal import JOURNAL_PATH
from kvtune_agent.engine.status import REVERTED
from kvtune_api.labels import JOURNAL_LABEL, READY_LABEL
from support.agent import ENFORCE, KSM_RUN, Node
from support.cluster import ClusterAccess, wait_for

NODE0_2M = "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"


@pytest.fixture
def node(cluster: ClusterAccess, api_client: client.ApiClient, kvtune_crds: list[str],
         tmp_path: Path) -> Iterator[Node]:
    made = Node(cluster, api_client, tmp_path / "host")
    yield made
    made.stop()


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
    labels_version = node.core.read_node(node.name).metadata.resource_version
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
    assert node.core.read_node(node.name).metadata.resource_version == labels_version, (
        "a restart relabelled the node")


def _enforced(node: Node) -> None:
    """The agent has applied ENFORCE: journal, feature file and ready label in place."""
    node.render("Enforce", **ENFORCE)
    node.start()
    # The label is written in the same cycle as the feature file, but may land first.
    wait_for(lambda: node.labels().get(READY_LABEL) == "true" and node.host_has(JOURNAL_PATH)
             and node.host_has(nfd.FEATURES_FILE), "the node labelled ready, its journal and "
             "feature file written", timeout=60)


def test_a_node_leaving_its_profile_gets_back_its_host_and_loses_its_ready_label(
    node: Node,
) -> None:
    _enforced(node)
    node.render("Enforce", revert=True, **ENFORCE)
    wait_for(lambda: node.reported() and node.condition(REVERTED) == "True", "Reverted",
             timeout=60)
    assert node.host_file(KSM_RUN) == "1" and not node.host_has(nfd.FEATURES_FILE)
    wait_for(lambda: READY_LABEL not in node.labels(), "the ready label removed", timeout=10)
    node.delete_state()  # as the operator does once the node reported Reverted
    time.sleep(3)
    assert READY_LABEL not in node.labels(), node.log()


def test_an_agent_that_finds_its_state_gone_restores_everything_kvtune_wrote(
    node: Node,
) -> None:
    _enforced(node)
    node.delete_state()  # the operator gave up waiting for this node's revert
    wait_for(lambda: READY_LABEL not in node.labels(), "the ready label removed", timeout=30)
    wait_for(lambda: not node.host_has(JOURNAL_PATH), "the journal restored", timeout=30)
    assert node.host_file(KSM_RUN) == "1" and not node.host_has(nfd.FEATURES_FILE)
    wait_for(lambda: JOURNAL_LABEL not in node.labels(), "the journal label removed", timeout=10)


def test_a_profile_moving_to_audit_withdraws_the_feature_file(node: Node) -> None:
    _enforced(node)
    node.render("Audit", **ENFORCE)
    wait_for(lambda: not node.host_has(nfd.FEATURES_FILE), "the feature file withdrawn",
             timeout=30)
    # The host still matches, which Audit reports as Ready; it changes nothing back.
    assert node.labels().get(READY_LABEL) == "true" and node.host_file(KSM_RUN) == "0"
