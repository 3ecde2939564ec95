"""The node agent's metrics move when a cycle, a probe, an applied step, a status write or a VM
audit happens, and a real `kvtune agent` serves them on its port.

The first tests drive the seams in this process and read its registry before and after; the
last runs the agent as a process on the session's API server, as test_agent_process.py does,
and scrapes it.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from kubernetes import client
from kvtune_agent import metrics
from kvtune_agent.agent import Agent, AgentSettings
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.wiring import run_cycle
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from kvtune_cli.localcluster import free_port
from support.agent import ENFORCE, Node, StoredState
from support.cluster import ClusterAccess, wait_for
from support.hosttree import intel_two_socket
from support.metrics import scraped, value

from .specs import node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
STEPS = "kvtune_agent_apply_steps_total"


def test_a_cycle_is_timed_counted_and_stamped_when_it_succeeds() -> None:
    ok, timed = value("kvtune_agent_cycles_total", result="ok"), value(
        "kvtune_agent_cycle_duration_seconds_count")
    before = time.time()
    with metrics.cycle():
        pass
    assert value("kvtune_agent_cycles_total", result="ok") == ok + 1
    assert value("kvtune_agent_cycle_duration_seconds_count") == timed + 1
    assert value("kvtune_agent_last_successful_cycle_timestamp_seconds") >= before


def test_a_failed_cycle_counts_as_an_error_and_leaves_the_last_success_alone() -> None:
    errors, last = value("kvtune_agent_cycles_total", result="error"), value(
        "kvtune_agent_last_successful_cycle_timestamp_seconds")
    with pytest.raises(RuntimeError), metrics.cycle():
        raise RuntimeError("the apiserver is away")
    assert value("kvtune_agent_cycles_total", result="error") == errors + 1
    assert value("kvtune_agent_last_successful_cycle_timestamp_seconds") == last


def test_an_enforcing_cycle_counts_its_probes_and_each_applied_step_by_feature(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).ksm(1).systemctl()
    probes = value("kvtune_agent_probe_duration_seconds_count")
    applied = value(STEPS, feature="KSM", result="Applied")
    spec = node_spec("Enforce", memory={"ksm": "Disabled"})
    run_cycle(tree.kernel(), spec, 1, NodeMeta(), HypervisorNodeStateStatus(),
              systemd=tree.systemd(), now=NOW, timeout=5)
    assert value("kvtune_agent_probe_duration_seconds_count") == probes + 2  # before and after
    assert value(STEPS, feature="KSM", result="Applied") > applied


def test_an_audit_cycle_applies_and_counts_no_step(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).ksm(1).systemctl()
    applied = value(STEPS, feature="KSM", result="Applied")
    run_cycle(tree.kernel(), node_spec("Audit", memory={"ksm": "Disabled"}), 1, NodeMeta(),
              HypervisorNodeStateStatus(), systemd=tree.systemd(), now=NOW, timeout=5)
    assert value(STEPS, feature="KSM", result="Applied") == applied


def test_a_step_counts_a_status_write_only_when_the_status_changed(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).ksm(0).systemctl()
    agent = Agent(StoredState("Audit"),
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))
    writes = value("kvtune_agent_status_writes_total")
    agent.step()
    assert value("kvtune_agent_status_writes_total") == writes + 1
    agent.step()
    assert value("kvtune_agent_status_writes_total") == writes + 1, "nothing new to write"


def test_a_step_sets_the_vm_gauges_from_its_audit(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).ksm(0).systemctl()
    agent = Agent(StoredState("Audit"),
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))
    metrics.VMS.labels("violation").set(3)  # left from an earlier audit
    agent.step()  # this host runs no VM
    assert value("kvtune_agent_vms", state="violation") == 0
    assert value("kvtune_agent_vms", state="compliant") == 0


def test_a_running_agent_serves_its_cycles_steps_and_writes(
    cluster: ClusterAccess, api_client: client.ApiClient, kvtune_crds: list[str], tmp_path: Path
) -> None:
    node, port = Node(cluster, api_client, tmp_path / "host"), free_port()
    node.render("Enforce", **ENFORCE)
    started = time.time()
    node.start(metrics_port=port)
    try:
        wait_for(lambda: node.reported() and node.condition("Ready") == "True",
                 "the agent reports Ready", timeout=60)
        wait_for(lambda: (scraped(port, "kvtune_agent_cycles_total", result="ok") or 0) >= 1,
                 f"a counted cycle on port {port}\n{node.log()}", timeout=30)
        assert (scraped(port, STEPS, feature="KSM", result="Applied") or 0) >= 1
        assert (scraped(port, "kvtune_agent_status_writes_total") or 0) >= 1
        assert (scraped(port, "kvtune_agent_probe_duration_seconds_count") or 0) >= 1
        assert (scraped(port, "kvtune_agent_last_successful_cycle_timestamp_seconds")
                or 0) >= started
    finally:
        node.stop()
