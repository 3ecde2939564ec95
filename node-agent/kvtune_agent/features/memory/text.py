"""The memory section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    HostReport,
)

from ...host import paths
from ..page import Page, mib, or_dash, pools_text
from . import probe as memory


def _memory(page: Page, report: HostReport) -> None:
    mem = report.memory
    page.heading("MEMORY", "Memory", "Hugepages")
    page.row("MemTotal:", f"{mib(mem.total_kib)} ({mib(mem.available_kib)} available)",
             paths.MEMINFO)
    page.row("Swap:", "off" if mem.swap_total_kib == 0 else mib(mem.swap_total_kib),
             "/proc/swaps")
    page.row("Transparent hugepages:", f"{or_dash(mem.transparent_hugepage)} (defrag "
             f"{or_dash(mem.transparent_hugepage_defrag)})")
    pools = pools_text(mem.hugepages) if mem.hugepage_pools_known else "unknown"
    page.row("Hugepages:", f"{pools} (default {or_dash(mem.default_hugepage_kib)} kB)",
             memory.HUGEPAGES)
    page.row("Kernel args:", " ".join(mem.kernel_args) or "-")


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _memory(page, report)
