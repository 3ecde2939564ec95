"""Helpers of the planner tests: a host tree planned by every registered feature."""

from __future__ import annotations

import typing as t

from kvtune_agent.features import block, cpu
from kvtune_agent.features.base import Finding, NodeMeta, Plan
from kvtune_agent.features.block import Scheduler
from kvtune_agent.features.cpu import PleFacts
from kvtune_agent.wiring import plan, probe_host
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, PlannedStep
from support.hosttree import (
    HostTree,
)

GiB = 2**20  # KiB


def host_facts(
    schedulers: dict[str, Scheduler] | None = None, ple_staged: str | None = None,
    ple_staged_before_boot: bool = False,
) -> dict[t.Any, t.Any]:
    """The host facts the planners read beyond the probe (each feature's `read`)."""
    return {block.FEATURE: schedulers or {},
            cpu.FEATURE: PleFacts(ple_staged, ple_staged_before_boot)}


def plan_of(
    tree: HostTree, spec: HypervisorNodeStateSpec, node: NodeMeta | None = None,
    files: dict[t.Any, t.Any] | None = None,
) -> Plan:
    return plan(spec, probe_host(tree.fs()), node, files)


def steps_of(found: Plan) -> dict[str, PlannedStep]:
    return {step.planned.id: step.planned for step in found.steps}


def finding_of(found: Plan, reason: str) -> Finding:
    [finding] = [f for f in found.findings if f.reason == reason]
    return finding


def pages(size: str = "1Gi", **allocation: t.Any) -> dict[str, t.Any]:
    return {"hugepages": {"pages": [{"size": size, **allocation}]}}
