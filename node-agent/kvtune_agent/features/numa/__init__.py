"""NUMA: the nodes, their CPUs and memory, as `numactl -H` shows them. kvtune changes nothing
here; the condition says what was detected, and the other features plan per node from it."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import (
    HostReport,
    NumaReport,
    Problem,
)

from ...host.hostfs import HostFS, ProcessTable
from ...host.meminfo import NODES
from ..base import (
    Feature,
    Plan,
    Settled,
)
from ..page import Page
from . import probe as numa_probe
from . import text

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
        HypervisorNodeStateStatus,
    )


class Numa(Feature[NumaReport, None]):
    condition = "NUMA"
    section = "numa"
    problem_name = "NUMA"
    volatile = ("host.numa.nodes.memoryFreeKib",)

    def probe(self, fs: HostFS, processes: ProcessTable) -> NumaReport:
        return numa_probe.probe(fs)

    def check(self, found: NumaReport) -> list[Problem]:
        return numa_probe.check(found)

    def settled(self, host: HostReport, plan: Plan, notes: str) -> Settled:
        nodes = host.numa.nodes
        if not nodes:
            return "False", "NotDetected", f"no NUMA nodes under {NODES}"
        return "True", "Detected", f"{len(nodes)} NUMA node(s): " + ", ".join(
            f"node{n.id} CPUs {n.cpus or 'none'}, {n.memory_total_kib // 2**20} GiB"
            for n in nodes)

    def labels(self, spec: HypervisorNodeStateSpec,
               status: HypervisorNodeStateStatus) -> dict[str, str]:
        return {} if status.host is None else {"numa-nodes": str(len(status.host.numa.nodes))}

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Numa()
