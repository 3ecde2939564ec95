"""What CPU isolation moves, as the host has it now: cores, IRQs, workqueues, kernel threads.

A CPU given to a VM is only quiet if nothing else is allowed there, and the kernel says where
each kind of work may run in its own file:
- cores: a CPU's SMT siblings (topology/core_cpus_list since 5.4, thread_siblings_list before),
  so that a partition keeps whole cores together;
- IRQs: /proc/irq/N/smp_affinity_list per IRQ, and /proc/irq/default_smp_affinity (a mask)
  for IRQs not yet set up. Whether an IRQ is managed (spread by its driver, which the kernel
  refuses to move: EIO) no /proc file says; the step that moves it finds out;
- unbound workqueues: /sys/devices/virtual/workqueue/cpumask (a mask, since 4.2);
- automatic NUMA balancing: /proc/sys/kernel/numa_balancing;
- kernel threads: those /proc/<pid>/stat flags as kernel threads (PF_KTHREAD) that the kernel
  lets move (no PF_NO_SETAFFINITY: per-CPU threads and workqueue rescuers have it), with their
  Cpus_allowed_list from /proc/<pid>/status; threaded IRQ handlers (irq/N-name) follow their
  IRQ and are left to it. They are grouped by affinity, as are IRQs, so the
  report stays small on hosts with thousands of either.
Only reads; what could not be read is noted by HostFS and reported as a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import (
    MAX_GROUPS,
    MAX_IRQS,
    CpuCore,
    CpuIsolationReport,
    IrqGroup,
    KernelThreadGroup,
    Problem,
)

from ...host import cpulist, daemon
from ...host.hostfs import HostFS, ProcessTable

IRQS = "/proc/irq"
DEFAULT_IRQ_AFFINITY = f"{IRQS}/default_smp_affinity"
WORKQUEUE_CPUMASK = "/sys/devices/virtual/workqueue/cpumask"
NUMA_BALANCING = "/proc/sys/kernel/numa_balancing"
#: task flags (include/linux/sched.h): a kernel thread, and one whose affinity the kernel fixed.
PF_KTHREAD = 0x00200000
PF_NO_SETAFFINITY = 0x04000000
_IRQ_DIR = re.compile(r"[0-9]{1,6}")
_NODE_LINK = re.compile(r"node([0-9]{1,4})")
CPUS = "/sys/devices/system/cpu"


def irq_affinity_path(irq: int) -> str:
    return f"{IRQS}/{irq}/smp_affinity_list"


def irq_ids(fs: HostFS) -> list[int]:
    """The IRQs /proc/irq lists, in order (at most MAX_IRQS)."""
    ids = sorted(int(name) for name in fs.list_dir(IRQS) if _IRQ_DIR.fullmatch(name))
    return ids[:MAX_IRQS]


def irq_affinities(fs: HostFS) -> dict[int, set[int]]:
    """IRQ -> the CPUs it may be delivered to; IRQs whose file could not be read are left out
    (the read is noted)."""
    found = {}
    for irq in irq_ids(fs):
        cpus = cpulist.read(fs, irq_affinity_path(irq))
        if cpus is not None:
            found[irq] = cpus
    return found


@dataclass(frozen=True)
class KernelThread:
    """A kernel thread the kernel lets move, and where it may run."""

    pid: int
    comm: str
    affinity: frozenset[int]


def _flags(stat: str) -> int | None:
    """The flags field of /proc/<pid>/stat: the ninth, counted after the comm in parentheses
    (which may hold blanks and parentheses itself)."""
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[6])
    except (IndexError, ValueError):
        return None


def _allowed(status: str) -> set[int] | None:
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "Cpus_allowed_list":
            try:
                return cpulist.parse(value)
            except ValueError:
                return None
    return None


def movable_kernel_threads(fs: HostFS, processes: ProcessTable) -> list[KernelThread]:
    """The kernel threads whose affinity may be set (no PF_NO_SETAFFINITY), by pid. A kernel
    thread has no command line; one that ends while it is read is left out."""
    found = []
    for process in processes:
        if process.argv:
            continue
        stat = fs.read_text(f"/proc/{process.pid}/stat")
        status = fs.read_text(f"/proc/{process.pid}/status")
        flags = _flags(stat or "")
        allowed = _allowed(status or "")
        if flags is None or allowed is None or not flags & PF_KTHREAD:
            continue
        # A threaded IRQ handler (irq/N-name) follows its IRQ's affinity, moved with the IRQ.
        if not flags & PF_NO_SETAFFINITY and not (process.comm or "").startswith("irq/"):
            found.append(KernelThread(process.pid, process.comm or "", frozenset(allowed)))
    return found


def _siblings(fs: HostFS, cpu: int) -> set[int] | None:
    """The CPUs of `cpu`'s core: core_cpus_list (5.4 on), else the older thread_siblings_list,
    or either's mask on kernels without the lists."""
    top = f"{CPUS}/cpu{cpu}/topology"
    for name in ("core_cpus", "thread_siblings"):
        found = cpulist.read_either(fs, f"{top}/{name}_list", f"{top}/{name}")
        if found is not None:
            return found
    return None


def _node(fs: HostFS, cpu: int) -> int | None:
    """The NUMA node the kernel links in the CPU's directory (cpuN/nodeM); None without NUMA."""
    found = (_NODE_LINK.fullmatch(name) for name in fs.list_dir(f"{CPUS}/cpu{cpu}"))
    return next((int(match.group(1)) for match in found if match), None)


def _cores(fs: HostFS, online: set[int]) -> list[CpuCore]:
    cores: dict[frozenset[int], None] = {}
    for cpu in sorted(online):
        siblings = _siblings(fs, cpu)
        if siblings is not None and cpu in siblings:
            cores.setdefault(frozenset(siblings & online))
    return [CpuCore(cpus=cpulist.format_ids(core), node=_node(fs, min(core)))
            for core in sorted(cores, key=min)]


def _grouped_irqs(affinities: dict[int, set[int]]) -> list[IrqGroup]:
    groups: dict[str, list[int]] = {}
    for irq, cpus in affinities.items():
        groups.setdefault(cpulist.format_ids(cpus), []).append(irq)
    return [IrqGroup(affinity=affinity, irqs=cpulist.format_ids(irqs))
            for affinity, irqs in sorted(groups.items(), key=lambda g: min(g[1]))][:MAX_GROUPS]


def _grouped_threads(threads: list[KernelThread]) -> list[KernelThreadGroup]:
    groups: dict[str, list[str]] = {}
    for thread in threads:
        groups.setdefault(cpulist.format_ids(thread.affinity), []).append(thread.comm)
    return [KernelThreadGroup(affinity=affinity, count=len(names), examples=names[:3])
            for affinity, names in sorted(groups.items())][:MAX_GROUPS]


def probe(fs: HostFS, processes: ProcessTable) -> CpuIsolationReport:
    online = cpulist.read(fs, f"{CPUS}/online") or set()
    default = cpulist.read_mask(fs, DEFAULT_IRQ_AFFINITY)
    workqueue = cpulist.read_mask(fs, WORKQUEUE_CPUMASK)
    return CpuIsolationReport(
        cores=_cores(fs, online),
        irqs=_grouped_irqs(irq_affinities(fs)),
        irqs_unknown=default is None,
        default_irq_affinity=None if default is None else cpulist.format_ids(default),
        workqueue_cpumask=None if workqueue is None else cpulist.format_ids(workqueue),
        numa_balancing=fs.read_int(NUMA_BALANCING),
        kernel_threads=_grouped_threads(movable_kernel_threads(fs, processes)),
        irqbalance=daemon.probe(fs, processes, "irqbalance"),
    )


def check(report: CpuIsolationReport) -> list[Problem]:
    """No findings of its own: what is wrong depends on the profile's partition, which the
    CPU-isolation feature judges."""
    return []
