"""The host facts CPU isolation plans from that the probe report does not carry: every IRQ's
affinity (the report groups them), the masks as the kernel prints them (their width), which
IRQs the kernel manages, irqbalance's file, and each CPU's frequency governor and idle states.
Only reads.
"""

from __future__ import annotations

import re

from kvtune_api.v1alpha1.host import HostReport

from ...host import cpulist
from ...host.hostfs import HostFS
from .plan import IRQBALANCE_CONFIGS, IdleState, IsolationFacts, governor_path
from .probe import (
    DEFAULT_IRQ_AFFINITY,
    WORKQUEUE_CPUMASK,
    irq_affinities,
    irq_affinity_path,
)

CPUS = "/sys/devices/system/cpu"
_STATE = re.compile(r"state([0-9]{1,2})")

#: The kernel's view of one IRQ's descriptor, where debugfs is mounted (CONFIG_GENERIC_IRQ_DEBUGFS).
IRQ_DEBUGFS = "/sys/kernel/debug/irq/irqs"
MANAGED_FLAG = "IRQD_AFFINITY_MANAGED"


def read_facts(fs: HostFS, host: HostReport) -> IsolationFacts:
    irqs = {irq: frozenset(cpus) for irq, cpus in irq_affinities(fs).items()}
    # Since 6.12 the kernel makes the file of an IRQ userspace may not move read-only; before,
    # debugfs (where mounted) tells a managed one.
    managed = frozenset(irq for irq in irqs if fs.read_only(irq_affinity_path(irq))
                        or MANAGED_FLAG in (fs.read_text(f"{IRQ_DEBUGFS}/{irq}") or ""))
    online = sorted(cpulist.read(fs, f"{CPUS}/online") or ())
    return IsolationFacts(
        irqs=irqs, managed=managed, default_mask=fs.read_value(DEFAULT_IRQ_AFFINITY),
        workqueue_mask=fs.read_value(WORKQUEUE_CPUMASK),
        irqbalance_config=_irqbalance_config(fs, host.cpu_isolation.irqbalance.unit_path),
        governors=_governors(fs, online), idle_states=_idle_states(fs, online))


def _irqbalance_config(fs: HostFS, unit: str | None) -> tuple[str, str | None]:
    """The file irqbalance's unit reads its settings from (its EnvironmentFile under /etc, else
    the distribution's: Debian's /etc/default, Red Hat's /etc/sysconfig) and what it holds: ""
    for a file not there yet, None for one that cannot be read."""
    named = [line.partition("=")[2].strip().lstrip("-")
             for line in (fs.read_file(unit) or "" if unit else "").splitlines()
             if line.strip().startswith("EnvironmentFile=")]
    path = next((p for p in named if p.startswith("/etc/") and ".." not in p), None) or next(
        (p for p in IRQBALANCE_CONFIGS if fs.has_file(p)), None) or next(
        (p for p in IRQBALANCE_CONFIGS if fs.is_dir(p.rsplit("/", 1)[0])), IRQBALANCE_CONFIGS[0])
    return path, fs.read_file(path) if fs.has_file(path) else ""


def _governors(fs: HostFS, online: list[int]) -> dict[int, tuple[str, tuple[str, ...]]]:
    found = {}
    for cpu in online:
        now = fs.read_value(governor_path(cpu))
        if now is not None:
            offered = fs.read_value(f"{CPUS}/cpu{cpu}/cpufreq/scaling_available_governors")
            found[cpu] = (now, tuple((offered or "").split()))
    return found


def _idle_states(fs: HostFS, online: list[int]) -> dict[int, tuple[IdleState, ...]]:
    found = {}
    for cpu in online:
        base = f"{CPUS}/cpu{cpu}/cpuidle"
        states = []
        for name in fs.list_dir(base):
            match = _STATE.fullmatch(name)
            latency = fs.read_int(f"{base}/{name}/latency")
            disabled = fs.read_value(f"{base}/{name}/disable")
            if match and latency is not None and disabled is not None:
                states.append(IdleState(int(match.group(1)),
                                        fs.read_value(f"{base}/{name}/name") or name,
                                        latency, disabled))
        if states:
            found[cpu] = tuple(sorted(states, key=lambda state: state.index))
    return found
