"""The agent's cycle measures its VMs' interference: its status carries status.interference and
the VMsIsolated condition (the figures themselves are tested through audit_and_measure in
tests/agent/audit/test_interference.py)."""

from __future__ import annotations

import typing as t
from pathlib import Path

from kvtune_agent.agent import Agent, AgentSettings
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
