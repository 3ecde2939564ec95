"""The CPU isolation section of `kvtune probe`'s text report (Feature.report): where IRQs,
unbound workqueues and kernel threads may run today, the facts a partition is judged by."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import CpuIsolationReport, HostReport

from ...host import cpulist
from ..page import Page, daemon_text, or_dash
from .probe import DEFAULT_IRQ_AFFINITY, NUMA_BALANCING, WORKQUEUE_CPUMASK

#: Affinities shown one per row; the rest are counted in one.
SHOWN = 4


def _irqs(page: Page, found: CpuIsolationReport) -> None:
    if found.irqs_unknown:
        page.row("IRQs:", "unknown", DEFAULT_IRQ_AFFINITY)
        return
    groups = sorted(found.irqs, key=lambda g: -len(cpulist.parse(g.irqs)))
    for group in groups[:SHOWN]:
        count = len(cpulist.parse(group.irqs))
        page.row("IRQs:", f"{count} on CPUs {group.affinity} ({group.irqs})", "CPUIsolation")
    if len(groups) > SHOWN:
        rest = sum(len(cpulist.parse(g.irqs)) for g in groups[SHOWN:])
        page.row("IRQs:", f"{rest} more, on {len(groups) - SHOWN} other CPU sets", "CPUIsolation")


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    found = report.cpu_isolation
    page.heading("CPU ISOLATION", "CPUIsolation")
    page.row("cores:", f"{len(found.cores)} (SMT siblings grouped)" if found.cores else "unknown",
             "CPUIsolation")
    _irqs(page, found)
    page.row("new IRQs on:", or_dash(found.default_irq_affinity), DEFAULT_IRQ_AFFINITY)
    page.row("workqueues on:", or_dash(found.workqueue_cpumask), WORKQUEUE_CPUMASK)
    page.row("NUMA balancing:", {None: "not in this kernel", 0: "off"}.get(
        found.numa_balancing, f"on ({found.numa_balancing})"), NUMA_BALANCING)
    threads = ", ".join(f"{g.count} on {g.affinity}" for g in found.kernel_threads) or "-"
    page.row("kernel threads:", threads, "CPUIsolation")
    page.row("irqbalance:", daemon_text(found.irqbalance), "CPUIsolation")
