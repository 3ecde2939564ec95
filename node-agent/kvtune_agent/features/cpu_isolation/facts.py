"""The host facts CPU isolation plans from that the probe report does not carry: every IRQ's
affinity (the report groups them), the masks as the kernel prints them (their width), which
IRQs the kernel manages, irqbalance's file and the running command line. Only reads.
"""

from __future__ import annotations

from ...bootloader import CMDLINE
from ...hostfs import HostFS
from ...probe.isolation import (
    DEFAULT_IRQ_AFFINITY,
    WORKQUEUE_CPUMASK,
    irq_affinities,
)
from .plan import IRQBALANCE_CONFIGS, IsolationFacts

#: The kernel's view of one IRQ's descriptor, where debugfs is mounted (CONFIG_GENERIC_IRQ_DEBUGFS).
IRQ_DEBUGFS = "/sys/kernel/debug/irq/irqs"
MANAGED_FLAG = "IRQD_AFFINITY_MANAGED"


def read_facts(fs: HostFS) -> IsolationFacts:
    irqs = {irq: frozenset(cpus) for irq, cpus in irq_affinities(fs).items()}
    managed = frozenset(irq for irq in irqs
                        if MANAGED_FLAG in (fs.read_text(f"{IRQ_DEBUGFS}/{irq}") or ""))
    config = next(((path, fs.read_file(path) or "") for path in IRQBALANCE_CONFIGS
                   if fs.has_file(path)), None)
    return IsolationFacts(
        irqs=irqs, managed=managed, default_mask=fs.read_value(DEFAULT_IRQ_AFFINITY),
        workqueue_mask=fs.read_value(WORKQUEUE_CPUMASK), irqbalance_config=config,
        cmdline=fs.read_value(CMDLINE) or "")
