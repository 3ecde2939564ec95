"""The NUMA section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    HostReport,
)

from ...host import meminfo
from ..page import Page, pools_text


def _numa(page: Page, report: HostReport) -> None:
    nodes = report.numa.nodes
    page.heading("NUMA (numactl -H)", "NUMA")
    ids = [node.id for node in nodes]
    page.line(f"  available: {len(nodes)} nodes ({','.join(map(str, ids))})")
    for node in nodes:
        key = f"{meminfo.NODES}/node{node.id}/meminfo"
        page.line(f"  node {node.id} cpus: {node.cpus or '(none)'}", key)
        kind = " (memoryless)" if node.memoryless else " (memory only)" if node.memory_only else ""
        if node.memory_total_kib or node.memoryless:
            page.line(f"  node {node.id} size: {node.memory_total_kib // 1024} MB{kind}", key)
            page.line(f"  node {node.id} free: {node.memory_free_kib // 1024} MB")
        else:
            page.line(f"  node {node.id} size: unknown (no readable meminfo)", key)
        own = [p for p in report.memory.hugepages_per_node if p.node == node.id]
        page.line(f"  node {node.id} hugepages: {pools_text(own)}")
    if nodes:
        page.line("  node distances:")
        page.line("  node " + "".join(f"{i:>4}" for i in ids))
        for node in nodes:
            page.line(f"  {node.id:>3}: " + "".join(f"{d:>4}" for d in node.distances))


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _numa(page, report)
