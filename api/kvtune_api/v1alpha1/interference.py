"""What the node agent measured of the interference each running VM suffers.

The audit (`audit.py`) checks the configuration a VM got; this is the disturbance itself, read
from the host's own counters between two agent cycles: how long its vCPUs waited for a physical
CPU, how much of its memory sits on a NUMA node away from its vCPUs, and how many interrupts and
other tasks hit its dedicated CPUs. The status holds a compact summary per VM (rounded figures,
bounded lists) and the worst offenders with the cause named; the live figures are the agent's
Prometheus metrics (docs/interference.md).
"""

from __future__ import annotations

import typing as t

from pydantic import Field

from .common import BaseModel, Opt
from .host import CpuList

#: VMs summarised in status, and offenders named: a node runs tens to a few hundred VMs; the
#: counts always cover all of them.
MAX_VMS = 50
MAX_OFFENDERS = 5
MAX_NAMES = 5

Cause = t.Literal["CpuWait", "RemoteMemory", "Irqs", "ForeignTasks", "OutsideIsolated", "Swap"]


class VmInterference(BaseModel):
    """One running VM's measured interference over the last window (percent and rates rounded;
    absent: not measured, never zero)."""

    name: str = Field(description="The VMI name (the libvirt domain name without its namespace).")
    namespace: str = Field(default="", description="The VMI namespace; empty if not a KubeVirt VM.")
    vcpus: int = Field(default=0, ge=0, description="vCPU threads found (QEMU's 'CPU N/KVM').")
    cpu_wait_percent: Opt[float] = Field(
        default=None,
        description="Share of the window its vCPUs were runnable but waited for a physical CPU "
        "(schedstat run delay over wall time, averaged over vCPUs): the guest's steal.",
    )
    worst_vcpu: Opt[int] = Field(default=None, description="The vCPU that waited longest.")
    worst_vcpu_wait_percent: Opt[float] = Field(
        default=None, description="That vCPU's wait share of the window."
    )
    involuntary_switches_per_second: Opt[float] = Field(
        default=None, description="Preemptions of its vCPU threads per second (all vCPUs)."
    )
    migrations_per_second: Opt[float] = Field(
        default=None,
        description="Moves of its vCPU threads between CPUs per second (absent: the kernel "
        "has no /proc/<pid>/task/<tid>/sched).",
    )
    ran_on: CpuList = Field(default="", description="Host CPUs its vCPU threads were seen on.")
    dedicated_cpus: CpuList = Field(
        default="", description="Host CPUs its vCPUs are pinned to; empty: they float."
    )
    remote_memory_percent: Opt[float] = Field(
        default=None,
        description="Share of its QEMU's resident memory on NUMA nodes other than its vCPUs' "
        "(/proc/<pid>/numa_maps).",
    )
    hugepage_memory_percent: Opt[float] = Field(
        default=None, description="Share of its QEMU's resident memory backed by hugepages."
    )
    memory_age_seconds: Opt[float] = Field(
        default=None,
        description="Age of the memory figures: numa_maps is read within a time budget per "
        "cycle, a few VMs at a time, so they may be some cycles old.",
    )
    swap_kib: Opt[int] = Field(default=None, description="QEMU's swapped-out memory (VmSwap).")
    ksm_merging_pages: Opt[int] = Field(
        default=None, description="QEMU's pages merged by KSM (absent: kernel has no counter)."
    )
    irqs_per_second: Opt[float] = Field(
        default=None,
        description="Interrupts per second on its busiest dedicated CPU (/proc/interrupts, "
        "every line, the timer included); absent: no dedicated CPUs.",
    )
    foreign_percent: Opt[float] = Field(
        default=None,
        description="Share of its dedicated CPUs' time other tasks ran (busy time from "
        "/proc/stat less its own vCPUs' run time); absent: no dedicated CPUs.",
    )
    foreign_tasks: list[str] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="Tasks outside its pod allowed on its dedicated CPUs, as 'pid (comm)' (bound "
        "per-CPU kernel threads left out).",
    )
    outside_isolated: CpuList = Field(
        default="",
        description="Its dedicated CPUs outside the node's isolated CPU set (when one is set).",
    )
    causes: list[Cause] = Field(
        default_factory=list, max_length=6, description="The thresholds it exceeds."
    )


class Offender(BaseModel):
    """A VM over a threshold, and why, in words."""

    vm: str = Field(description="namespace/name of the VM.")
    cause: Cause = Field(description="The threshold exceeded first (the worst).")
    message: str = Field(description="What was measured and where it comes from.")


class NodeInterference(BaseModel):
    """The interference measured on one node's running VMs."""

    window_seconds: Opt[float] = Field(
        default=None, description="Wall time between the two readings compared."
    )
    vms: int = Field(default=0, ge=0, description="Running VMs measured.")
    over_threshold: int = Field(default=0, ge=0, description="VMs over a threshold.")
    offenders: list[Offender] = Field(
        default_factory=list, max_length=MAX_OFFENDERS, description="The worst VMs, worst first."
    )
    items: list[VmInterference] = Field(
        default_factory=list,
        max_length=MAX_VMS,
        description=f"Up to {MAX_VMS} VMs, those over a threshold first.",
    )
    skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Inputs skipped this cycle, by reason (a VM that stopped, a thread that "
        "exited, a /proc file missing or short): counted, never fatal.",
    )
    truncated: bool = Field(default=False, description=f"More than {MAX_VMS} VMs: items cut.")
