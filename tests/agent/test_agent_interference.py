"""The agent's cycle measures its VMs' interference: its status carries status.interference and
the VMsIsolated condition (the figures themselves are tested through audit_and_measure in
tests/agent/audit/test_interference.py)."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from kvtune_agent import agent as agent_module
from kvtune_agent.agent import Agent, AgentSettings
from kvtune_agent.audit import audit_and_measure
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from support.agent import StoredState

from .specs import busy_host


def test_an_agents_cycles_report_vms_isolated_and_the_measured_interference(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)
    state = StoredState("Audit")
    agent = Agent(t.cast(t.Any, state),
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))

    agent.step()

    assert state.body is not None
    status = HypervisorNodeStateStatus.model_validate(state.body["status"])
    isolated = cond.find(status.conditions, "VMsIsolated")
    assert isolated is not None and (isolated.status, isolated.reason) == ("True", "NoVMs")
    assert status.interference is not None and status.interference.vms == 0


def test_the_agent_audits_vms_against_the_profile_s_cpu_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = busy_host(tmp_path)
    tree.file("/sys/devices/system/cpu/isolated", "2-15")  # the kernel's, not the profile's
    state = StoredState("Audit")
    assert state.body is not None
    state.body["spec"]["host"].setdefault("cpu", {})["partition"] = {
        "housekeepingCoresPerNumaNode": 1}
    seen: list[object] = []

    def audit(*args: t.Any, **kwargs: t.Any) -> t.Any:
        seen.append(kwargs["isolated"])
        return audit_and_measure(*args, **kwargs)

    monkeypatch.setattr(agent_module, "audit_and_measure", audit)
    agent = Agent(t.cast(t.Any, state),
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))

    agent.step()

    assert seen == [frozenset(range(64)) - {0, 16, 32, 48}]
