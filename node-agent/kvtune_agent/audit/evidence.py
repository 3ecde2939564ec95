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
import heapq
import operator
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
    "ReaderFailed",      # the measurement itself raised (a defect: see the agent's log)
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
    """QEMU's resident memory by NUMA node (KiB) from its numa_maps, how much of it sits in
    hugepages, its swapped-out memory (VmSwap, KiB) and KSM-merged pages (None: no such
    counter); `at`: when they were read (memory is read within a budget, not every cycle)."""

    by_node_kib: Mapping[int, int]
    huge_kib: int
    at: float
    swap_kib: int | None = None
    ksm_pages: int | None = None

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
    memory: Memory | None = None
    #: Tasks outside its pod allowed on its dedicated CPUs, 'pid (comm)'.
    foreign_tasks: tuple[str, ...] = ()
    #: Its dedicated CPUs outside the isolated set (empty when no set is given).
    outside_isolated: frozenset[int] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def swap_kib(self) -> int | None:
        return None if self.memory is None else self.memory.swap_kib

    @property
    def ksm_pages(self) -> int | None:
        return None if self.memory is None else self.memory.ksm_pages


@dataclass(frozen=True)
class NodeReading:
    """One reading of the host: every VM's, and the per-CPU counters; `at` in seconds of a
    monotonic clock."""

    at: float
    vms: Mapping[str, VmReading]
    #: Interrupts by /proc/interrupts line ("24", "LOC") and CPU, cumulative.
    irqs: Interrupts | None
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
    #: The lines that fired most on the busiest CPU; worked out when asked (`sources`) from
    #: `irq_window`, since only a message needs them.
    irq_sources: tuple[IrqSource, ...] = ()
    irq_window: IrqWindow | None = field(default=None, compare=False, repr=False)
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

    def sources(self) -> tuple[IrqSource, ...]:
        """The interrupt lines that fired most on its busiest dedicated CPU, most first."""
        if self.irq_sources or self.irq_window is None or self.busiest_cpu is None:
            return self.irq_sources
        return self.irq_window.sources(self.busiest_cpu)


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


def sched_value(text: str, key: str) -> int | None:
    """One counter of a sched file ("key    :    12"), found without splitting the file."""
    at = text.find(f"\n{key} ")
    if at < 0:
        return None
    end = text.find("\n", at + 1)
    _, colon, value = text[at + 1:end if end > 0 else len(text)].partition(":")
    return number(value) if colon else None


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
    for line in lines if text.endswith("\n") else lines[:-1]:
        page_kib = 4
        pages = 0
        counted: list[tuple[str, str]] = []
        for token in line.split()[2:]:
            if token[0] == "N" and "=" in token:
                node, _, value = token[1:].partition("=")
                counted.append((node, value))
            elif token.startswith("kernelpagesize_kB="):
                page_kib = int(token[18:]) if token[18:].isdigit() else 4
        for node, value in counted:
            if node.isdigit() and value.isdigit():
                by_node[int(node)] = by_node.get(int(node), 0) + int(value) * page_kib
                pages += int(value)
        if " huge " in line:
            huge += pages * page_kib
    return by_node, huge


@dataclass(frozen=True)
class Interrupts:
    """/proc/interrupts: each line's counts, one per CPU of `cpus` (the online CPUs, in the
    order of its header), and what each line is ("IO-APIC 5-edge ACPI:Ged")."""

    cpus: tuple[int, ...]
    counts: Mapping[str, tuple[int, ...]]
    names: Mapping[str, str] = field(default_factory=dict)


def parse_interrupts(text: str) -> Interrupts | None:
    """/proc/interrupts parsed; None without its header. Lines with fewer counts than CPUs
    (ERR and MIS are system-wide) are left out."""
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if not header or not all(h.startswith("CPU") and h[3:].isdigit() for h in header):
        return None
    cpus = tuple(int(h[3:]) for h in header)
    width = len(cpus)
    counts: dict[str, tuple[int, ...]] = {}
    names: dict[str, str] = {}
    for line in lines[1:]:
        label, colon, rest = line.partition(":")
        parts = rest.split(None, width)  # the counts, then the description in one piece
        if not colon or len(parts) < width:
            continue
        try:
            values = tuple(map(int, parts[:width]))
        except ValueError:
            continue  # ERR, MIS: one system-wide count and no more
        label = label.strip()
        counts[label] = values
        names[label] = " ".join(parts[width].split()) if len(parts) > width else ""
    return Interrupts(cpus, counts, names)


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


class IrqWindow:
    """Interrupts on each CPU over a window, worked out once for all CPUs, not per VM; the
    lines behind them only for the CPUs asked about."""

    def __init__(self, now: NodeReading, before: NodeReading) -> None:
        self.now, self.before = now.irqs, before.irqs
        self.known = self.now is not None and self.before is not None
        self.totals: dict[int, int] = {}
        if self.now is None or self.before is None:
            return
        old = dict(zip(self.before.cpus, _column_sums(self.before), strict=True))
        # A line that appears (a hot-plugged device) adds its whole count: fine, it is new.
        self.totals = {cpu: max(0, total - old.get(cpu, 0))
                       for cpu, total in zip(self.now.cpus, _column_sums(self.now), strict=True)}

    def sources(self, cpu: int, count: int = 3) -> tuple[IrqSource, ...]:
        """The lines that fired most on `cpu` over the window, most first."""
        if self.now is None or self.before is None or cpu not in self.now.cpus:
            return ()
        lines, at = list(self.now.counts), self.now.cpus.index(cpu)
        now = [values[at] for values in self.now.counts.values()]
        if cpu in self.before.cpus:
            index = self.before.cpus.index(cpu)
            old = [self.before.counts[line][index] if line in self.before.counts else 0
                   for line in lines]
        else:
            old = [0] * len(lines)
        deltas = list(map(operator.sub, now, old))
        # nlargest with a key is stable: lines of equal counts keep the file's order.
        top = heapq.nlargest(count, range(len(lines)), key=deltas.__getitem__)
        return tuple(IrqSource(lines[i], self.now.names.get(lines[i], ""), deltas[i])
                     for i in top if deltas[i] > 0)


def _column_sums(irqs: Interrupts) -> list[int]:
    """Each CPU's interrupts, all lines together."""
    return [sum(column) for column in zip(*irqs.counts.values(), strict=True)] or [0] * len(
        irqs.cpus)


def _noise_figures(
    vm: VmReading, now: NodeReading, before: NodeReading, irqs: IrqWindow, window: float,
    ticks_per_second: int, run_seconds: float,
) -> dict[str, t.Any]:
    """Interrupts on the VM's dedicated CPUs, and the share of their time other tasks ran."""
    if not vm.dedicated:
        return {}
    figures: dict[str, t.Any] = {}
    if irqs.known:
        per_cpu = {cpu: irqs.totals.get(cpu, 0) for cpu in sorted(vm.dedicated)}
        busiest = max(per_cpu, key=lambda cpu: per_cpu[cpu])
        figures.update(irqs_per_second=per_cpu[busiest] / window, busiest_cpu=busiest,
                       irq_window=irqs, irqs=sum(per_cpu.values()))
    if now.busy_ticks is not None and before.busy_ticks is not None:
        cpus = [c for c in vm.dedicated if c in now.busy_ticks and c in before.busy_ticks]
        if cpus:
            busy = sum(max(0, now.busy_ticks[c] - before.busy_ticks[c]) for c in cpus)
            foreign = max(0.0, busy / ticks_per_second - run_seconds)
            figures.update(foreign_percent=_share(foreign, window * len(cpus)),
                           foreign_seconds=foreign)
    return figures


def _vcpus_by_cpu(readings: Iterable[VmReading]) -> dict[int, list[tuple[str, str]]]:
    """(VM label, 'label vCPU n (on CPU c)') of every vCPU thread, by the CPU it was last on."""
    found: dict[int, list[tuple[str, str]]] = {}
    for vm in readings:
        for thread in vm.threads:
            if thread.cpu is not None:
                found.setdefault(thread.cpu, []).append(
                    (vm.label, f"{vm.label} vCPU {thread.vcpu} (on CPU {thread.cpu})"))
    return found


def _foreign_vcpus(vm: VmReading, by_cpu: Mapping[int, list[tuple[str, str]]]) -> tuple[str, ...]:
    """Other VMs' vCPU threads last seen on this VM's dedicated CPUs."""
    return tuple(name for cpu in sorted(vm.dedicated) for label, name in by_cpu.get(cpu, ())
                 if label != vm.label)


def compare(
    now: NodeReading, before: NodeReading | None, ticks_per_second: int = 100
) -> tuple[list[VmFigures], Skipped]:
    """Each VM of `now` with what it suffered since `before` (its figures that need a window
    are None without one: the first reading, or a VM whose QEMU is not the one before), and
    the inputs skipped along the way (those of both readings' making included)."""
    skipped = Skipped(now.skipped)
    window = None if before is None else now.at - before.at
    irqs = None if before is None else IrqWindow(now, before)
    by_cpu = _vcpus_by_cpu(now.vms.values())
    figures = []
    for key in sorted(now.vms):
        vm = now.vms[key]
        old = None if before is None else before.vms.get(key)
        values: dict[str, t.Any] = _memory_figures(vm)
        ran_on = {thread.cpu for thread in vm.threads if thread.cpu is not None}
        same = old is not None and (old.pid, old.start) == (vm.pid, vm.start)
        if before is not None and irqs is not None and old is not None and same and window:
            cpu = _cpu_figures(vm, old, window, skipped)
            values.update(cpu)
            values.update(_noise_figures(vm, now, before, irqs, window, ticks_per_second,
                                         cpu.get("run_seconds", 0.0)))
            ran_on |= {thread.cpu for thread in old.threads if thread.cpu is not None}
        values["foreign_vcpus"] = _foreign_vcpus(vm, by_cpu) if vm.dedicated else ()
        base = VmFigures(reading=vm, window=window, at=now.at, ran_on=frozenset(ran_on))
        figures.append(dataclasses.replace(base, **values))
    return figures, skipped

