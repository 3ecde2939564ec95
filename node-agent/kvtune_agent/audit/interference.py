"""Judging measured interference: the node's VMsIsolated condition, its worst offenders with the
cause named, and the CpuNoise findings the VM audit (VMsCompliant) adds for noisy CPUs.

Pure functions of `evidence.compare`'s figures and the profile's thresholds (spec.audit). A cause
is said in the words a person acts on: which vCPU waited, what else ran on its CPU, which
interrupt lines fired there, which node its memory is on.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

from kvtune_api import conditions
from kvtune_api.v1alpha1.audit import VmFinding
from kvtune_api.v1alpha1.common import Condition
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.interference import (
    MAX_NAMES,
    MAX_OFFENDERS,
    MAX_VMS,
    Cause,
    NodeInterference,
    Offender,
    VmInterference,
)
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from kvtune_api.v1alpha1.profile import AuditSettings, CpuPartition

from ..features.cpu_partition import PartitionRefused, partition
from ..host import cpulist
from .evidence import VmFigures

VMS_ISOLATED = "VMsIsolated"
#: Interrupt lines named in a message.
NAMED_SOURCES = 3


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _names(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _ids(ids: Iterable[int]) -> str:
    return cpulist.format_ids(ids)


def causes(vm: VmFigures, limits: AuditSettings) -> list[Cause]:
    """The thresholds `vm` exceeds, worst kind first."""
    found: list[Cause] = []
    if _over(vm.cpu_wait_percent, limits.max_cpu_wait_percent):
        found.append("CpuWait")
    if _over(vm.irqs_per_second, limits.max_irqs_per_second):
        found.append("Irqs")
    if _over(vm.remote_memory_percent, limits.max_remote_memory_percent):
        found.append("RemoteMemory")
    return found


def _over(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


def _irq_sources(vm: VmFigures) -> str:
    window = vm.window or 1.0
    return ", ".join(
        f"{s.line}{f' ({s.name})' if s.name else ''} {s.count / window:.0f}/s"
        for s in vm.sources()[:NAMED_SOURCES]
    )


def noise(vm: VmFigures) -> str:
    """What else ran on the VM's CPUs, for a cause message; "" when nothing is known."""
    reading = vm.reading
    if not reading.dedicated:
        cpus = _ids(vm.ran_on) if vm.ran_on else "any CPU"
        return (f"its vCPUs are not pinned and float over {cpus}, shared with every other task "
                "there; give it dedicated CPUs (dedicatedCpuPlacement)")
    parts = []
    if vm.foreign_percent is not None:
        parts.append(f"CPU {_ids(reading.dedicated)} ran other tasks {vm.foreign_percent:.0f} % "
                     "of the time")
    others = [*vm.foreign_vcpus, *reading.foreign_tasks]
    if others:
        parts.append(f"allowed there: {_names(others)}")
    if vm.sources():
        parts.append(f"interrupts: {_irq_sources(vm)}")
    return "; ".join(parts)


def message(vm: VmFigures, cause: Cause) -> str:
    """The cause of one exceeded threshold, in words."""
    label = vm.reading.label
    window = f"the last {vm.window:.0f} s" if vm.window else "the window"
    if cause == "CpuWait":
        why = noise(vm)
        return (f"vCPU {vm.worst_vcpu} of {label} waited {vm.worst_vcpu_wait_percent or 0:.0f} % "
                f"of {window} (all its vCPUs {vm.cpu_wait_percent or 0:.0f} %)"
                + (f": {why}" if why else ""))
    if cause == "Irqs":
        return (f"CPU {vm.busiest_cpu} of {label} took {vm.irqs_per_second or 0:.0f} interrupts "
                f"a second over {window}: {_irq_sources(vm)}; move device IRQs to the "
                "housekeeping CPUs (smp_affinity_list, irqbalance's banned CPUs)")
    memory = vm.reading.memory
    away = sorted(n for n in (memory.by_node_kib if memory else {})
                  if n not in vm.reading.vcpu_nodes)
    return (f"{vm.remote_memory_percent or 0:.0f} % of {label}'s memory is on NUMA node "
            f"{_ids(away)}, away from its vCPUs on node {_ids(vm.reading.vcpu_nodes)}; bind its "
            "memory to its vCPUs' node (numatune, hugepages per node)")


def _item(vm: VmFigures, found: list[Cause]) -> VmInterference:
    reading = vm.reading
    memory = reading.memory
    age = None if memory is None else max(0.0, vm.at - memory.at)
    return VmInterference(
        name=reading.name,
        namespace=reading.namespace,
        vcpus=len(reading.threads),
        cpu_wait_percent=_round(vm.cpu_wait_percent),
        worst_vcpu=vm.worst_vcpu,
        worst_vcpu_wait_percent=_round(vm.worst_vcpu_wait_percent),
        involuntary_switches_per_second=_round(vm.involuntary_per_second),
        migrations_per_second=_round(vm.migrations_per_second),
        ran_on=_ids(vm.ran_on),
        dedicated_cpus=_ids(reading.dedicated),
        remote_memory_percent=_round(vm.remote_memory_percent),
        hugepage_memory_percent=_round(vm.hugepage_memory_percent),
        memory_age_seconds=_round(age, 0),
        swap_kib=reading.swap_kib,
        ksm_merging_pages=reading.ksm_pages,
        irqs_per_second=_round(vm.irqs_per_second, 0),
        foreign_percent=_round(vm.foreign_percent),
        foreign_tasks=list(reading.foreign_tasks[:MAX_NAMES]),
        outside_isolated=_ids(reading.outside_isolated),
        causes=found,
    )


def summarise(
    figures: Sequence[VmFigures], skipped: dict[str, int], limits: AuditSettings
) -> NodeInterference:
    """The node's status summary: every VM's figures, those over a threshold first, and the
    worst offenders (by how far over their first threshold they are) with their cause."""
    judged = [(vm, causes(vm, limits)) for vm in figures]
    over = [(vm, found) for vm, found in judged if found]
    over.sort(key=lambda pair: (-_severity(pair[0], pair[1][0], limits), pair[0].reading.label))
    offenders = [Offender(vm=vm.reading.label, cause=found[0], message=message(vm, found[0]))
                 for vm, found in over[:MAX_OFFENDERS]]
    ordered = over + [(vm, found) for vm, found in judged if not found]
    window = next((vm.window for vm in figures if vm.window is not None), None)
    return NodeInterference(
        window_seconds=_round(window),
        vms=len(figures),
        over_threshold=len(over),
        offenders=offenders,
        items=[_item(vm, found) for vm, found in ordered[:MAX_VMS]],
        skipped=dict(sorted(skipped.items())),
        truncated=len(figures) > MAX_VMS,
    )


def _severity(vm: VmFigures, cause: Cause, limits: AuditSettings) -> float:
    """How many times its threshold a cause's figure is."""
    value, limit = {
        "CpuWait": (vm.cpu_wait_percent, limits.max_cpu_wait_percent),
        "Irqs": (vm.irqs_per_second, limits.max_irqs_per_second),
        "RemoteMemory": (vm.remote_memory_percent, limits.max_remote_memory_percent),
    }.get(cause, (None, None))
    return (value or 0.0) / max(float(limit or 0), 1e-9)


def isolated_condition(summary: NodeInterference, generation: int | None = None) -> Condition:
    """VMsIsolated: True when every running VM's measured interference is within spec.audit."""
    if not summary.vms:
        return conditions.make(VMS_ISOLATED, "True", "NoVMs", "no running VMs measured",
                               generation)
    if summary.offenders:
        first = "; ".join(o.message for o in summary.offenders[:2])
        return conditions.make(
            VMS_ISOLATED, "False", "OverThresholds",
            f"{summary.over_threshold} of {summary.vms} VMs suffer more interference than "
            f"spec.audit allows: {first}", generation)
    if summary.window_seconds is None:
        return conditions.make(
            VMS_ISOLATED, "Unknown", "Measuring",
            f"the first reading of {summary.vms} VMs is taken; their figures come with the "
            "next cycle", generation)
    # No figure in the message: it would change every cycle, and so rewrite the status.
    return conditions.make(
        VMS_ISOLATED, "True", "WithinThresholds",
        f"all {summary.vms} VMs within spec.audit's thresholds (figures in "
        "status.interference and the agent's metrics)", generation)


def noise_findings(
    vm: VmFigures, limits: AuditSettings, partitioned: bool = True
) -> list[VmFinding]:
    """The CpuNoise findings of a VM with dedicated CPUs (the VM audit, VMsCompliant): CPUs
    outside the isolated set, other VMs' vCPUs and other tasks allowed there, interrupts over
    spec.audit's limit.

    On a node without a CPU partition (`partitioned` False: no isolated set is known) every
    host daemon may run on every CPU, and nothing kvtune was asked to do keeps them off: the
    tasks allowed there are a Warning that says so, not a broken promise. Another VM's vCPU on
    its CPUs and interrupts over the profile's limit are violations either way.
    """
    reading = vm.reading
    if not reading.dedicated:
        return []
    found = []
    if reading.outside_isolated:
        found.append(VmFinding(severity="Violation", rule="CpuNoise", message=(
            f"its dedicated CPUs {_ids(reading.outside_isolated)} are outside the node's "
            "isolated CPUs, where housekeeping work (kernel threads, host daemons, interrupts) "
            "runs; give VMs only isolated CPUs (the kubelet's reservedSystemCPUs = the "
            "housekeeping set)")))
    # No measured figure in these messages: they change every cycle, and so would the status.
    if vm.foreign_vcpus:
        found.append(VmFinding(severity="Violation", rule="CpuNoise", message=(
            f"other VMs' vCPUs run on its dedicated CPUs {_ids(reading.dedicated)}: "
            f"{_names(vm.foreign_vcpus, MAX_NAMES)}")))
    if reading.foreign_tasks and partitioned:
        found.append(VmFinding(severity="Violation", rule="CpuNoise", message=(
            f"other tasks may run on its dedicated CPUs {_ids(reading.dedicated)}: "
            f"{_names(reading.foreign_tasks, MAX_NAMES)}; confine them to the housekeeping "
            "CPUs (systemd CPUAffinity, the kubelet's reservedSystemCPUs, the workqueue "
            "cpumask)")))
    elif reading.foreign_tasks:
        # Every host task may run there: which ones come and go is no news.
        found.append(VmFinding(severity="Warning", rule="CpuNoise", message=(
            f"host tasks may run on its dedicated CPUs {_ids(reading.dedicated)}, as on every "
            "CPU of a node without a CPU partition (no isolated CPUs): give the node "
            "housekeeping and isolated CPUs")))
    if _over(vm.irqs_per_second, limits.max_irqs_per_second):
        found.append(VmFinding(severity="Violation", rule="CpuNoise", message=message(vm, "Irqs")))
    return found


#: The status fields of the measurement that change every cycle and are no reason on their own
#: to write the status (the agent's VOLATILE list): they are refreshed when it is written.
VOLATILE = tuple(f"interference.{path}" for path in (
    "windowSeconds", "skipped",
    *(f"items.{name}" for name in (
        "cpuWaitPercent", "worstVcpu", "worstVcpuWaitPercent", "involuntarySwitchesPerSecond",
        "migrationsPerSecond", "ranOn", "remoteMemoryPercent", "hugepageMemoryPercent",
        "memoryAgeSeconds", "swapKib", "ksmMergingPages", "irqsPerSecond", "foreignPercent",
        "foreignTasks")),
))


def isolated_cpus(host: HostReport | None) -> frozenset[int] | None:
    """The node's isolated CPUs as its kernel has them (isolcpus=), or None when none are."""
    text = host.numa.isolated_cpus if host is not None else ""
    return frozenset(cpulist.parse(text)) if text else None


def profile_isolated_cpus(
    wanted: CpuPartition | None, host: HostReport | None
) -> frozenset[int] | None:
    """The isolated CPUs a VM's dedicated CPUs are audited against: the profile's partition
    (spec.cpu.partition) on this node where one is set, as the kubelet and the IRQ and
    kernel-noise steps use it, whether or not a reboot has put it in isolcpus yet; else, and
    where the partition cannot be made here (the CPUIsolation condition says why), the kernel's
    isolcpus."""
    if wanted is not None and host is not None:
        try:
            return partition(wanted, host).isolated
        except PartitionRefused:
            pass
    return isolated_cpus(host)


def with_interference(
    status: HypervisorNodeStateStatus,
    summary: NodeInterference,
    previous: HypervisorNodeStateStatus,
    generation: int,
    now: datetime.datetime,
) -> HypervisorNodeStateStatus:
    """The status with the measured interference and its VMsIsolated condition."""
    condition = conditions.merge(
        previous.conditions, [isolated_condition(summary, generation)], now)
    others = [c for c in status.conditions if c.type != VMS_ISOLATED]
    return status.model_copy(update={"interference": summary,
                                     "conditions": [*others, *condition]})
