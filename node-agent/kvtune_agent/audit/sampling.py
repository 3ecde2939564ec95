"""Reading the host's counters of each running VM: the one module `evidence` gets its input from.

Every read goes through HostFS, so a tree of fake /proc files stands in for a host. The VMs are
those the audit found (`Observed`: a libvirt domain, its launcher pid, its pins); their QEMU
processes are found in the probe's process table by the `-name guest=<domain>` libvirt gives
them, and their vCPU threads by the name QEMU gives each one ('CPU N/KVM'), as KubeVirt's
virt-handler finds them. Anything that vanishes between two reads (a VM stopping, a thread
exiting) is skipped with a counted reason (`evidence.SKIP_REASONS`).

A `Sampler` lives as long as the agent: it keeps the previous reading (the counters are
cumulative), each QEMU's vCPU threads (they live as long as the QEMU), and each VM's memory
reading. numa_maps is the one costly read (the kernel walks the process's page tables to write
it), so at most `memory_budget` seconds a cycle are spent on it, a few VMs each cycle in turn,
and each file is read only up to `numa_maps_limit` bytes; a VM's memory figures carry their age
(a VM not read yet has none). Processes' affinities (which tasks may run on a VM's dedicated
CPUs) are read at once for a process new to the agent and again in turn within `tasks_budget`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from kvtune_api.v1alpha1.host import HostReport

from ..host import cpulist
from ..host.hostfs import HostFS, Process, ProcessTable
from . import evidence
from .checks import Observed
from .evidence import Memory, NodeReading, Skipped, Thread, VmReading

T = TypeVar("T")
#: Seconds a cycle spends reading numa_maps at most (whole files: a read is not cut).
MEMORY_BUDGET = 0.001
#: Bytes of one numa_maps read at most: a QEMU has a few hundred mappings (~100 bytes each);
#: what lies beyond is not counted (the figures then cover the mappings read).
NUMA_MAPS_LIMIT = 1 << 20
#: Seconds a cycle spends at most reading again the allowed CPUs of processes already known
#: (processes new to the agent are always read).
TASKS_BUDGET = 0.0005


def qemu_domain(process: Process) -> str | None:
    """The domain a QEMU process runs, from the `-name guest=<name>,...` libvirt gives it."""
    argv, comm = process.argv, process.comm or ""
    if not comm.startswith("qemu") and (  # the substring first: most processes are not QEMU
            not argv or "qemu" not in argv[0] or
            not os.path.basename(argv[0]).startswith("qemu")):
        return None
    for index, arg in enumerate(argv[:-1]):
        if arg == "-name":
            # libvirt doubles commas inside the name; options follow a single comma.
            value = argv[index + 1].replace(",,", "\0").split(",")[0].replace("\0", ",")
            return value.removeprefix("guest=")
    return None


@dataclass
class Sampler:
    """The agent's reader of per-VM evidence; one per agent process (see the module doc)."""

    memory_budget: float = MEMORY_BUDGET
    numa_maps_limit: int = NUMA_MAPS_LIMIT
    tasks_budget: float = TASKS_BUDGET
    #: When a reading is taken (seconds, monotonic): the windows' ends. The budgets are
    #: spent in real time whatever this clock says.
    clock: Callable[[], float] = time.monotonic
    previous: NodeReading | None = None
    #: Each QEMU's start time and vCPU thread ids (vCPU -> tid), by pid.
    _threads: dict[int, tuple[int, dict[int, int]]] = field(default_factory=dict)
    #: Each VM's memory as last read, and whose turn it is next.
    _memory: dict[str, Memory] = field(default_factory=dict)
    _turn: int = 0
    #: Each process's allowed CPUs (None: unreadable or placed by the kernel), as last read,
    #: and whose turn it is next.
    _allowed: dict[int, frozenset[int] | None] = field(default_factory=dict)
    _task_turn: int = 0

    def read(
        self, fs: HostFS, vms: Sequence[Observed], host: HostReport, processes: ProcessTable,
        isolated: frozenset[int] | None = None,
    ) -> tuple[NodeReading, NodeReading | None]:
        """A reading of every reachable VM of `vms` now, and the previous one to compare it
        with. `isolated`: the node's isolated CPU set, when one is known."""
        skipped = Skipped()
        node_of_cpu = {cpu: node.id for node in host.numa.nodes
                       for cpu in cpulist.parse(node.cpus)}
        qemus = _qemus(fs, vms, processes, skipped)
        readings: dict[str, VmReading] = {}
        for vm, pid in qemus:
            reading = self._vm(fs, vm, pid, node_of_cpu, isolated, skipped)
            if reading is not None:
                readings[vm.label] = reading
        self._read_memory(fs, readings, skipped)
        if any(r.dedicated for r in readings.values()):
            self._read_affinities(fs, processes)
            readings = _foreign(fs, readings, self._allowed, processes, qemus)
            readings = _workqueues(fs, readings)
        # The per-CPU files only matter to VMs with dedicated CPUs.
        noisy = any(r.dedicated for r in readings.values())
        irqs = _per_cpu(fs, "/proc/interrupts", evidence.parse_interrupts, skipped, noisy)
        busy = _per_cpu(fs, "/proc/stat", evidence.parse_proc_stat, skipped, noisy)
        skipped["Unreadable"] += len(fs.take_issues())
        now = NodeReading(
            at=self.clock(), vms=readings, irqs=irqs, busy_ticks=busy,
            skipped={k: v for k, v in skipped.items() if v})
        live = {r.pid for r in readings.values()}
        self._threads = {pid: value for pid, value in self._threads.items() if pid in live}
        self._memory = {key: value for key, value in self._memory.items() if key in readings}
        before, self.previous = self.previous, now
        return now, before

    def _vm(
        self, fs: HostFS, vm: Observed, pid: int, node_of_cpu: Mapping[int, int],
        isolated: frozenset[int] | None, skipped: Skipped,
    ) -> VmReading | None:
        pins = {} if vm.domain is None else {
            index: next(iter(cpus)) for index, cpus in enumerate(vm.domain.vcpu_cpus)
            if cpus is not None and len(cpus) == 1}
        found = self._vcpu_threads(fs, pid, pins, skipped)
        if found is None:
            return None
        start, threads = found
        dedicated = vm.domain.pinned_cpus if vm.domain is not None else frozenset()
        seen = dedicated or {t.cpu for t in threads if t.cpu is not None}
        return VmReading(
            namespace=vm.namespace, name=vm.name, pid=pid, start=start, threads=threads,
            dedicated=dedicated,
            vcpu_nodes=frozenset(node_of_cpu[c] for c in seen if c in node_of_cpu),
            memory=self._memory.get(vm.label),
            outside_isolated=dedicated - isolated if isolated is not None else frozenset(),
        )

    def _vcpu_threads(
        self, fs: HostFS, pid: int, pins: Mapping[int, int], skipped: Skipped
    ) -> tuple[int, tuple[Thread, ...]] | None:
        """The QEMU's start time and its vCPU threads read now. Both are found once per QEMU
        (its stat, its task list) and looked for again only when a vCPU thread is gone: then
        the QEMU may have stopped, or its pid be another process's now. `pins`: the one CPU of
        each vCPU pinned to a single CPU (where it runs, without reading where it ran last)."""
        cached = self._threads.get(pid)
        if cached is not None:
            trial = Skipped()
            threads = [_thread(fs, pid, tid, vcpu, pins.get(vcpu), trial)
                       for vcpu, tid in sorted(cached[1].items())]
            if all(t is not None for t in threads):
                return cached[0], tuple(t for t in threads if t is not None)
        stat = _small(fs, f"/proc/{pid}/stat")
        parsed = None if stat is None else evidence.parse_stat(stat)
        known = None if parsed is None else _find_vcpus(fs, pid)
        if parsed is None or known is None:
            self._threads.pop(pid, None)
            skipped["VmStopped" if stat is None or known is None else "FileMalformed"] += 1
            return None
        if not known:
            skipped["NoVcpuThreads"] += 1
            return None
        self._threads[pid] = (parsed[0], known)
        threads = [_thread(fs, pid, tid, vcpu, pins.get(vcpu), skipped)
                   for vcpu, tid in sorted(known.items())]
        return parsed[0], tuple(t for t in threads if t is not None)

    def _read_affinities(self, fs: HostFS, processes: ProcessTable) -> None:
        """Each process's allowed CPUs: a process not seen before at once, the others again
        in turn within the budget (affinities change seldom; how much other tasks ran on a VM's
        CPUs is measured every cycle from /proc/stat)."""
        process_of = {process.pid: process for process in processes}
        pids = list(process_of)
        alive = set(pids)
        self._allowed = {pid: cpus for pid, cpus in self._allowed.items() if pid in alive}
        for pid in pids:
            if pid not in self._allowed:
                self._allowed[pid] = _allowed(fs, process_of[pid])
        began = time.perf_counter()
        for _ in range(len(pids)):
            if time.perf_counter() - began >= self.tasks_budget:
                break
            pid = pids[self._task_turn % len(pids)]
            self._task_turn += 1
            self._allowed[pid] = _allowed(fs, process_of[pid])

    def _read_memory(self, fs: HostFS, readings: dict[str, VmReading], skipped: Skipped) -> None:
        """numa_maps (and VmSwap, KSM pages) of a few VMs in turn, within the budget; the others
    keep their last."""
        keys = sorted(readings)
        if not keys:
            return
        spent = 0.0
        order = keys[self._turn % len(keys):] + keys[:self._turn % len(keys)]
        for index, key in enumerate(order):
            if index and spent >= self.memory_budget:  # at least one a cycle
                break
            reading = readings[key]
            began = time.perf_counter()
            text = fs.read_bytes(f"/proc/{reading.pid}/numa_maps", 0, self.numa_maps_limit)
            self._turn += 1
            if text is None:
                spent += time.perf_counter() - began
                skipped["VmStopped"] += 1
                continue
            by_node, huge = evidence.parse_numa_maps(text.decode("ascii", errors="replace"))
            status = evidence.parse_fields(_small(fs, f"/proc/{reading.pid}/status") or "")
            ksm = evidence.number(_small(fs, f"/proc/{reading.pid}/ksm_merging_pages"))
            spent += time.perf_counter() - began
            self._memory[key] = Memory(by_node, huge, self.clock(),
                                       evidence.number(status.get("VmSwap")), ksm)
            readings[key] = dataclasses.replace(reading, memory=self._memory[key])


def _qemus(
    fs: HostFS, vms: Sequence[Observed], processes: ProcessTable, skipped: Skipped
) -> list[tuple[Observed, int]]:
    """Each reachable VM with the pid of the QEMU that runs it."""
    by_domain: dict[str, list[int]] = {}
    for process in processes:
        domain = qemu_domain(process)
        if domain is not None:
            by_domain.setdefault(domain, []).append(process.pid)
    found = []
    for vm in vms:
        if vm.domain is None:
            continue  # unreachable: the audit reports it
        pids = by_domain.get(vm.domain_name, [])
        if len(pids) > 1 and vm.pid is not None:
            # In its launcher's pod, QEMU shares the launcher's mount namespace.
            pod = fs.readlink(f"/proc/{vm.pid}/ns/mnt")
            pids = [p for p in pids if pod is not None and fs.readlink(f"/proc/{p}/ns/mnt") == pod]
        if len(pids) == 1:
            found.append((vm, pids[0]))
        else:
            skipped["QemuAmbiguous" if pids else "QemuNotFound"] += 1
    return found


def _find_vcpus(fs: HostFS, pid: int) -> dict[int, int] | None:
    """vCPU index -> thread id of a QEMU; None when the process is gone."""
    tids = fs.list_dir(f"/proc/{pid}/task")
    if not tids:
        return None
    found = {}
    for tid in tids:
        comm = (_small(fs, f"/proc/{pid}/task/{tid}/comm") or "").strip()
        match = evidence.VCPU_THREAD.fullmatch(comm)
        if match and tid.isdigit():
            found[int(match.group(1))] = int(tid)
    return found


#: Bytes read of a small /proc file (stat, status, schedstat, comm: a few hundred to 1.5 KiB):
#: asking for no more than this spares the reader a buffer of HostFS's largest read.
SMALL = 8192


def _small(fs: HostFS, path: str, size: int = SMALL) -> str | None:
    """The first `size` bytes of a small /proc file as text; None when absent or unreadable."""
    data = fs.read_bytes(path, 0, size)
    return None if data is None else data.decode("ascii", errors="replace")


#: Bytes of a thread's sched file read: the counters wanted are in its first lines (the rest,
#: NUMA and load averages, is of no use here).
SCHED_HEAD = 1024


def _thread(
    fs: HostFS, pid: int, tid: int, vcpu: int, pinned: int | None, skipped: Skipped
) -> Thread | None:
    base = f"/proc/{pid}/task/{tid}"
    text = _small(fs, f"{base}/schedstat")
    if text is None:
        skipped["ThreadExited" if not fs.exists(base) else "FileMissing"] += 1
        return None
    counters = evidence.parse_schedstat(text)
    cpu: int | None = pinned
    if pinned is None:
        stat = evidence.parse_stat(_small(fs, f"{base}/stat") or "")
        cpu = None if stat is None else stat[1]
        if stat is None:
            counters = None
    if counters is None:
        skipped["FileMalformed"] += 1
        return None
    sched = _small(fs, f"{base}/sched", SCHED_HEAD)
    if sched is not None:
        involuntary = evidence.sched_value(sched, "nr_involuntary_switches")
        migrations = evidence.sched_value(sched, "se.nr_migrations")
    else:  # a kernel without CONFIG_SCHED_DEBUG: switches from status, migrations unknown
        fields = evidence.parse_fields(_small(fs, f"{base}/status") or "")
        involuntary = evidence.number(fields.get("nonvoluntary_ctxt_switches"))
        migrations = None
    return Thread(vcpu=vcpu, tid=tid, run_ns=counters[0], wait_ns=counters[1],
                  involuntary=involuntary, migrations=migrations, cpu=cpu)


def _per_cpu(
    fs: HostFS, path: str, parse: Callable[[str], T | None], skipped: Skipped, wanted: bool
) -> T | None:
    """A per-CPU file parsed; None, counted, when it is missing or does not parse."""
    if not wanted:
        return None
    text = fs.read_text(path)
    parsed = None if text is None else parse(text)
    if parsed is None:
        skipped["FileMissing" if text is None else "FileMalformed"] += 1
    return parsed


#: PF_NO_SETAFFINITY in a task's flags (stat's field 9): the kernel places the task itself
#: (per-CPU kernel threads, workqueue workers and rescuers) and refuses anyone else's affinity.
PF_NO_SETAFFINITY = 0x04000000
#: The unbound workqueues' CPUs: their workers follow it, not sched_setaffinity.
WORKQUEUE_MASK = "/sys/devices/virtual/workqueue/cpumask"


def _allowed(fs: HostFS, process: Process) -> frozenset[int] | None:
    """The CPUs a process's main thread may run on (its status's Cpus_allowed_list); None when
    unreadable, or for a kernel thread the kernel places itself (no one can move it: the
    workqueue mask, checked apart, moves the unbound workqueues' workers)."""
    pid = process.pid
    if not process.argv:  # a kernel thread: only kernel threads carry the flag
        stat = _small(fs, f"/proc/{pid}/stat") or ""
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 6 and fields[6].isdigit() and int(fields[6]) & PF_NO_SETAFFINITY:
            return None
    text = _small(fs, f"/proc/{pid}/status") or ""
    at = text.find("Cpus_allowed_list:")
    if at < 0:
        return None
    value = text[at + 18:text.find("\n", at) if "\n" in text[at:] else len(text)]
    try:
        return frozenset(cpulist.parse(value))
    except ValueError:
        return None


def _workqueues(fs: HostFS, readings: dict[str, VmReading]) -> dict[str, VmReading]:
    """VMs whose dedicated CPUs the unbound workqueues may use, with those named."""
    text = fs.read_value(WORKQUEUE_MASK)
    try:
        allowed = frozenset(cpulist.parse_mask(text)) if text else frozenset()
    except ValueError:
        fs.note(WORKQUEUE_MASK, f"not a cpumask: {text[:40] if text else ''!r}")
        return readings
    return {key: dataclasses.replace(r, foreign_tasks=(
                *r.foreign_tasks,
                f"unbound workqueues (cpumask {cpulist.format_ids(allowed)})"))
            if r.dedicated & allowed else r
            for key, r in readings.items()}


def _foreign(
    fs: HostFS, readings: dict[str, VmReading], allowed: Mapping[int, frozenset[int] | None],
    processes: ProcessTable, qemus: Iterable[tuple[Observed, int]],
) -> dict[str, VmReading]:
    """Each VM with dedicated CPUs with the tasks outside its pod allowed on them.

    Kernel threads the kernel places itself are left out (`_allowed`), as are the VM's QEMU and
    the processes of its launcher's pod (which the kubelet confines to the VM's CPUs).
    """
    launchers = {vm.label: vm.pid for vm, _ in qemus}
    pods: dict[int, str | None] = {}

    def pod(pid: int) -> str | None:
        if pid not in pods:
            pods[pid] = fs.readlink(f"/proc/{pid}/ns/mnt")
        return pods[pid]

    dedicated = frozenset().union(*(r.dedicated for r in readings.values()))
    # One intersection per process, then each VM looks up its own CPUs only.
    by_cpu: dict[int, list[Process]] = {}
    for process in processes:
        cpus = allowed.get(process.pid)
        if cpus is not None:
            for cpu in cpus & dedicated:
                by_cpu.setdefault(cpu, []).append(process)
    result = dict(readings)
    for key, reading in readings.items():
        if not reading.dedicated:
            continue
        launcher = launchers.get(key)
        own = pod(launcher) if launcher is not None else None
        found = {p.pid: p for cpu in reading.dedicated for p in by_cpu.get(cpu, ())}
        names = [f"{process.pid} ({(process.comm or '?')[:32]})"
                 for pid, process in sorted(found.items())
                 if pid != reading.pid and (own is None or pod(pid) != own)]
        result[key] = dataclasses.replace(reading, foreign_tasks=tuple(names))
    return result
