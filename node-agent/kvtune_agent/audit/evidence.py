"""The interference a running VM suffers, from two readings of the host's counters: pure logic.

The host's counters are cumulative (a vCPU thread's run delay since it started, each CPU's
interrupts since boot), so one reading says nothing; what a VM suffered is the difference between
two, over the wall time between them. This module holds what one reading is (`NodeReading`, made
by `sampling`, the one module that reads /proc for it), how /proc's texts are parsed, and how two
readings become figures (`compare`). Everything here is a function of its arguments, so every
rule is tested on hand-made readings, and the realhost tier only has to show the reads are right.

What is measured, per VM:
- CPU wait: each vCPU thread's run delay (`schedstat`'s second field, ns) over the window, the
  share of time the vCPU was runnable and not running, which the guest sees as steal;
  involuntary context switches and CPU migrations (`sched`), and the CPUs it was seen on.
- Memory: the share of QEMU's resident pages (`numa_maps`) on nodes away from its vCPUs, and
  the share backed by hugepages; VmSwap and KSM-merged pages as the kernel counts them.
- Noise on its dedicated CPUs: interrupts per second on the busiest one (`/proc/interrupts`),
  and the share of their time other tasks ran: their busy time (`/proc/stat`) less the VM's
  own vCPU run time. /proc/stat counts in clock ticks (USER_HZ), so that share is good to about
  one tick per CPU per window.
Input that vanished or does not parse is skipped and counted by reason, never an error: a VM
stops, a thread exits, between any two reads.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Why an input was skipped (counted in status and in a metric: a bounded set).
SKIP_REASONS = (
    "QemuNotFound",      # a running domain with no QEMU process naming it
    "QemuAmbiguous",     # several QEMU processes name it, none in its launcher's pod
    "VmStopped",         # its QEMU went away while it was read
    "NoVcpuThreads",     # its QEMU has no 'CPU N/KVM' thread (not KVM, or not yet started)
    "ThreadExited",      # a vCPU thread went away between two readings or within one
    "FileMissing",       # a /proc file this kernel should have is absent
    "FileMalformed",     # a /proc file that is short or does not parse
    "CounterReset",      # a counter went backwards (a thread reused an id)
    "Unreadable",        # a read failed (permissions, I/O)
)
#: QEMU's name for a vCPU thread (qemu's qemu_thread_create with debug-threads=on, which libvirt
#: always passes): how KubeVirt's virt-handler finds them too.
VCPU_THREAD = re.compile(r"CPU (\d+)/KVM")


class Skipped(Counter[str]):
    """Skipped inputs by reason (one of SKIP_REASONS)."""


@dataclass(frozen=True)
class Thread:
    """One vCPU thread at one instant: cumulative counters and the CPU it last ran on."""

    vcpu: int
    tid: int
    run_ns: int
    wait_ns: int
    involuntary: int | None
    migrations: int | None
    cpu: int | None


@dataclass(frozen=True)
class Memory:
    """QEMU's resident memory by NUMA node (KiB) from its numa_maps, and how much of it sits in
    hugepages; `at`: when it was read (memory is read within a budget, not every cycle)."""

    by_node_kib: Mapping[int, int]
    huge_kib: int
    at: float

    @property
    def total_kib(self) -> int:
        return sum(self.by_node_kib.values())


@dataclass(frozen=True)
class VmReading:
    """One VM at one instant."""

    namespace: str
    name: str
    pid: int
    #: The QEMU process's start time (clock ticks since boot): a pid reused by another process
    #: between two readings is not the same VM.
    start: int
    threads: tuple[Thread, ...]
    #: Host CPUs its vCPUs are pinned to; empty: they float.
    dedicated: frozenset[int]
    #: NUMA nodes its vCPUs are on (pinned CPUs' nodes, else those of the CPUs seen).
    vcpu_nodes: frozenset[int]
    swap_kib: int | None = None
    ksm_pages: int | None = None
    memory: Memory | None = None
    #: Tasks outside its pod allowed on its dedicated CPUs, 'pid (comm)'.
    foreign_tasks: tuple[str, ...] = ()
    #: Its dedicated CPUs outside the isolated set (empty when no set is given).
    outside_isolated: frozenset[int] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class NodeReading:
    """One reading of the host: every VM's, and the per-CPU counters; `at` in seconds of a
    monotonic clock."""

    at: float
    vms: Mapping[str, VmReading]
    #: Interrupts by /proc/interrupts line ("24", "LOC") and CPU, cumulative.
    irqs: Mapping[str, Mapping[int, int]] | None
    #: What each line is ("IO-APIC 5-edge ACPI:Ged", "Local timer interrupts").
    irq_names: Mapping[str, str] = field(default_factory=dict)
    #: Each CPU's busy clock ticks (/proc/stat: all but idle and iowait), cumulative.
    busy_ticks: Mapping[int, int] | None = None
    skipped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IrqSource:
    """An interrupt line's count on some CPUs over a window."""

    line: str
    name: str
    count: int


@dataclass(frozen=True)
class VmFigures:
    """What one VM suffered over a window (None: not measured, never zero) and the counter
    increments behind it, for the metrics."""

    reading: VmReading
    window: float | None
    #: When the reading was taken (the end of the window).
    at: float = 0.0
    cpu_wait_percent: float | None = None
    worst_vcpu: int | None = None
    worst_vcpu_wait_percent: float | None = None
    involuntary_per_second: float | None = None
    migrations_per_second: float | None = None
    ran_on: frozenset[int] = frozenset()
    remote_memory_percent: float | None = None
    hugepage_memory_percent: float | None = None
    irqs_per_second: float | None = None
    busiest_cpu: int | None = None
    irq_sources: tuple[IrqSource, ...] = ()
    foreign_percent: float | None = None
    #: Other VMs' vCPU threads seen on its dedicated CPUs ("ns/vm vCPU 1").
    foreign_vcpus: tuple[str, ...] = ()
    #: Counter increments over the window: vCPU wait and run (s), involuntary switches,
    #: migrations, interrupts on its dedicated CPUs, other tasks' time on them (s).
    wait_seconds: float = 0.0
    run_seconds: float = 0.0
    involuntary: int = 0
    migrations: int = 0
    irqs: int = 0
    foreign_seconds: float = 0.0


# -- parsing /proc ---------------------------------------------------------------------------


def parse_schedstat(text: str) -> tuple[int, int] | None:
    """(run ns, run-delay ns) of /proc/<pid>/task/<tid>/schedstat ("run wait slices")."""
    parts = text.split()
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def parse_stat(text: str) -> tuple[int, int | None] | None:
    """(start time in ticks, CPU last run on) of a /proc/<pid>/stat line; the comm in
    parentheses may hold spaces and parentheses itself, so fields are counted from the last ')'."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    # Fields after the comm start at field 3 (state): starttime is field 22, processor 39.
    if not paren or len(fields) < 20 or not fields[19].isdigit():
        return None
    cpu = int(fields[36]) if len(fields) > 36 and fields[36].isdigit() else None
    return int(fields[19]), cpu


def parse_fields(text: str, separator: str = ":") -> dict[str, str]:
    """"key: value" lines (status, sched: 'key   :   value') as a dict, keys and values stripped."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(separator)
        if sep:
            found[key.strip()] = value.strip()
    return found


def number(value: str | None) -> int | None:
    """An integer field's value ("12", "12 kB", "12.000000"); None when absent or not one."""
    if value is None:
        return None
    head = value.split()[0] if value.split() else ""
    head = head.split(".")[0]
    return int(head) if head.isdigit() else None


def parse_numa_maps(text: str) -> tuple[dict[int, int], int]:
    """(resident KiB by node, of which in hugepages) from a numa_maps text.

    Each line is one mapping: "<addr> <policy> [file=..] [huge] [anon=N] ... N0=12 N1=3
    kernelpagesize_kB=4"; its pages on node n are the Nn counts times the page size. A last
    line without its newline (a read cut short) is dropped, not guessed.
    """
    by_node: dict[int, int] = {}
    huge = 0
    lines = text.split("\n")
    for line in lines[:-1] if not text.endswith("\n") else lines:
        page_kib = 4
        pages: list[tuple[int, int]] = []
        for token in line.split()[2:]:
            key, eq, value = token.partition("=")
            if not eq or not value.isdigit():
                continue
            if key == "kernelpagesize_kB":
                page_kib = int(value)
            elif key[:1] == "N" and key[1:].isdigit():
                pages.append((int(key[1:]), int(value)))
        for node, count in pages:
            by_node[node] = by_node.get(node, 0) + count * page_kib
        if " huge " in f" {line} ":
            huge += sum(count for _, count in pages) * page_kib
    return by_node, huge


def parse_interrupts(text: str) -> tuple[dict[str, dict[int, int]], dict[str, str]] | None:
    """(counts by line and CPU, description by line) of /proc/interrupts; None without its
    header. Columns are the online CPUs the header names; lines with fewer counts (ERR, MIS
    are system-wide) are left out."""
    lines = text.splitlines()
    if not lines:
        return None
    header = lines[0].split()
    if not header or not all(h.startswith("CPU") and h[3:].isdigit() for h in header):
        return None
    cpus = [int(h[3:]) for h in header]
    counts: dict[str, dict[int, int]] = {}
    names: dict[str, str] = {}
    for line in lines[1:]:
        label, colon, rest = line.partition(":")
        parts = rest.split()
        if not colon or len(parts) < len(cpus) or not all(p.isdigit() for p in parts[:len(cpus)]):
            continue
        label = label.strip()
        counts[label] = {cpu: int(p) for cpu, p in zip(cpus, parts, strict=False)}
        names[label] = " ".join(parts[len(cpus):])
    return counts, names


def parse_proc_stat(text: str) -> dict[int, int] | None:
    """Each CPU's busy ticks from /proc/stat's cpuN lines: user, nice, system, irq, softirq and
    steal (guest time is inside user); idle and iowait are not busy."""
    busy = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        values = rest.split()
        if len(values) < 8 or not all(v.isdigit() for v in values[:8]):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
        busy[int(name[3:])] = user + nice + system + irq + softirq + steal
    return busy or None


# -- two readings to figures -----------------------------------------------------------------


def _share(part: float, whole: float) -> float:
    return max(0.0, 100.0 * part / whole) if whole > 0 else 0.0


def _cpu_figures(
    now: VmReading, before: VmReading, window: float, skipped: Skipped
) -> dict[str, t.Any]:
    """The CPU-wait figures of one VM whose QEMU is the same in both readings."""
    earlier = {t.tid: t for t in before.threads}
    waits: dict[int, float] = {}
    involuntary: list[int | None] = []
    migrations: list[int | None] = []
    wait_ns = run_ns = 0
    for thread in now.threads:
        old = earlier.pop(thread.tid, None)
        if old is None or old.vcpu != thread.vcpu:
            continue  # first seen now: a delta from the next reading on
        if thread.run_ns < old.run_ns or thread.wait_ns < old.wait_ns:
            skipped["CounterReset"] += 1
            continue
        wait_ns += thread.wait_ns - old.wait_ns
        run_ns += thread.run_ns - old.run_ns
        waits[thread.vcpu] = _share((thread.wait_ns - old.wait_ns) / 1e9, window)
        involuntary.append(_delta(thread.involuntary, old.involuntary))
        migrations.append(_delta(thread.migrations, old.migrations))
    if earlier:
        skipped["ThreadExited"] += len(earlier)
    if not waits:
        return {}
    worst = max(waits, key=lambda vcpu: (waits[vcpu], -vcpu))
    switched = None if None in involuntary else sum(t.cast(list[int], involuntary))
    moved = None if None in migrations else sum(t.cast(list[int], migrations))
    return {
        "cpu_wait_percent": sum(waits.values()) / len(waits),
        "worst_vcpu": worst,
        "worst_vcpu_wait_percent": waits[worst],
        "involuntary_per_second": None if switched is None else switched / window,
        "migrations_per_second": None if moved is None else moved / window,
        "wait_seconds": wait_ns / 1e9,
        "run_seconds": run_ns / 1e9,
        "involuntary": switched or 0,
        "migrations": moved or 0,
    }


def _delta(now: int | None, before: int | None) -> int | None:
    return None if now is None or before is None or now < before else now - before


def _memory_figures(vm: VmReading) -> dict[str, t.Any]:
    memory = vm.memory
    if memory is None or memory.total_kib == 0:
        return {}
    figures: dict[str, t.Any] = {
        "hugepage_memory_percent": _share(memory.huge_kib, memory.total_kib)}
    if vm.vcpu_nodes:
        remote = sum(kib for node, kib in memory.by_node_kib.items() if node not in vm.vcpu_nodes)
        figures["remote_memory_percent"] = _share(remote, memory.total_kib)
    return figures


def irq_window(
    now: NodeReading, before: NodeReading, cpus: Iterable[int]
) -> tuple[dict[int, int], list[IrqSource]] | None:
    """Interrupts on each of `cpus` over the window, and the lines behind them, most first;
    None when either reading lacks /proc/interrupts."""
    if now.irqs is None or before.irqs is None:
        return None
    wanted = frozenset(cpus)
    per_cpu = dict.fromkeys(wanted, 0)
    sources = []
    for line, counts in now.irqs.items():
        old = before.irqs.get(line, {})
        total = 0
        for cpu in wanted & counts.keys():
            # A line that appeared (a hot-plugged device) counts from 0; one that went back
            # (never, for the kernel's counters) counts nothing.
            total_cpu = max(0, counts[cpu] - old.get(cpu, 0))
            per_cpu[cpu] += total_cpu
            total += total_cpu
        if total:
            sources.append(IrqSource(line, now.irq_names.get(line, ""), total))
    sources.sort(key=lambda s: (-s.count, s.line))
    return per_cpu, sources


def _noise_figures(
    vm: VmReading, now: NodeReading, before: NodeReading, window: float, ticks_per_second: int,
    run_seconds: float,
) -> dict[str, t.Any]:
    """Interrupts on the VM's dedicated CPUs, and the share of their time other tasks ran."""
    if not vm.dedicated:
        return {}
    figures: dict[str, t.Any] = {}
    irqs = irq_window(now, before, vm.dedicated)
    if irqs is not None:
        per_cpu, sources = irqs
        busiest = max(sorted(per_cpu), key=lambda cpu: per_cpu[cpu])
        figures.update(irqs_per_second=per_cpu[busiest] / window, busiest_cpu=busiest,
                       irq_sources=tuple(sources), irqs=sum(per_cpu.values()))
    if now.busy_ticks is not None and before.busy_ticks is not None:
        cpus = [c for c in vm.dedicated if c in now.busy_ticks and c in before.busy_ticks]
        if cpus:
            busy = sum(max(0, now.busy_ticks[c] - before.busy_ticks[c]) for c in cpus)
            foreign = max(0.0, busy / ticks_per_second - run_seconds)
            figures.update(foreign_percent=_share(foreign, window * len(cpus)),
                           foreign_seconds=foreign)
    return figures


def _foreign_vcpus(vm: VmReading, readings: Iterable[VmReading]) -> tuple[str, ...]:
    """Other VMs' vCPU threads last seen on this VM's dedicated CPUs."""
    return tuple(
        f"{other.label} vCPU {thread.vcpu} (on CPU {thread.cpu})"
        for other in readings if other.label != vm.label
        for thread in other.threads if thread.cpu in vm.dedicated
    )


def compare(
    now: NodeReading, before: NodeReading | None, ticks_per_second: int = 100
) -> tuple[list[VmFigures], Skipped]:
    """Each VM of `now` with what it suffered since `before` (its figures that need a window
    are None without one: the first reading, or a VM whose QEMU is not the one before), and
    the inputs skipped along the way (those of both readings' making included)."""
    skipped = Skipped(now.skipped)
    window = None if before is None else now.at - before.at
    figures = []
    for key in sorted(now.vms):
        vm = now.vms[key]
        old = None if before is None else before.vms.get(key)
        values: dict[str, t.Any] = _memory_figures(vm)
        ran_on = {thread.cpu for thread in vm.threads if thread.cpu is not None}
        same = old is not None and (old.pid, old.start) == (vm.pid, vm.start)
        if before is not None and old is not None and same and window and window > 0:
            cpu = _cpu_figures(vm, old, window, skipped)
            values.update(cpu)
            values.update(_noise_figures(vm, now, before, window, ticks_per_second,
                                         cpu.get("run_seconds", 0.0)))
            ran_on |= {thread.cpu for thread in old.threads if thread.cpu is not None}
        values["foreign_vcpus"] = _foreign_vcpus(vm, now.vms.values()) if vm.dedicated else ()
        base = VmFigures(reading=vm, window=window, at=now.at, ran_on=frozenset(ran_on))
        figures.append(dataclasses.replace(base, **values))
    return figures, skipped

