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
(a VM not read yet has none).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from kvtune_api.v1alpha1.host import HostReport

from ..hostfs import HostFS, Process, ProcessTable
from ..probe import cpulist
from . import evidence
from .checks import Observed
from .evidence import Memory, NodeReading, Skipped, Thread, VmReading

T = TypeVar("T")
#: Seconds a cycle spends reading numa_maps at most (whole files: a read is not cut).
MEMORY_BUDGET = 0.005
#: Bytes of one numa_maps read at most: a QEMU has a few hundred mappings (~100 bytes each);
#: what lies beyond is not counted (the figures then cover the mappings read).
NUMA_MAPS_LIMIT = 1 << 20
#: Tasks named per VM (the count of the others is not kept: the figures say how much they ran).
MAX_TASKS = 5


def qemu_domain(process: Process) -> str | None:
    """The domain a QEMU process runs, from the `-name guest=<name>,...` libvirt gives it."""
    argv = process.argv
    program = os.path.basename(argv[0]) if argv else ""
    if not (program.startswith("qemu") or (process.comm or "").startswith("qemu")):
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
    clock: Callable[[], float] = time.monotonic
    previous: NodeReading | None = None
    _threads: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    _memory: dict[str, Memory] = field(default_factory=dict)
    _turn: int = 0

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
        readings = _with_tasks(fs, readings, processes, qemus)
        # The per-CPU files only matter to VMs with dedicated CPUs.
        noisy = any(r.dedicated for r in readings.values())
        irqs = _per_cpu(fs, "/proc/interrupts", evidence.parse_interrupts, skipped, noisy)
        busy = _per_cpu(fs, "/proc/stat", evidence.parse_proc_stat, skipped, noisy)
        skipped["Unreadable"] += len(fs.take_issues())
        now = NodeReading(
            at=self.clock(), vms=readings, irqs=irqs[0] if irqs else None,
            irq_names=irqs[1] if irqs else {}, busy_ticks=busy,
            skipped={k: v for k, v in skipped.items() if v})
        live = {(r.pid, r.start) for r in readings.values()}
        self._threads = {key: value for key, value in self._threads.items() if key in live}
        self._memory = {key: value for key, value in self._memory.items() if key in readings}
        before, self.previous = self.previous, now
        return now, before

    def _vm(
        self, fs: HostFS, vm: Observed, pid: int, node_of_cpu: Mapping[int, int],
        isolated: frozenset[int] | None, skipped: Skipped,
    ) -> VmReading | None:
        stat = fs.read_text(f"/proc/{pid}/stat")
        parsed = None if stat is None else evidence.parse_stat(stat)
        if parsed is None:
            skipped["VmStopped" if stat is None else "FileMalformed"] += 1
            return None
        start = parsed[0]
        threads = self._vcpu_threads(fs, pid, start, skipped)
        if threads is None:
            return None
        status = evidence.parse_fields(fs.read_text(f"/proc/{pid}/status") or "")
        dedicated = vm.domain.pinned_cpus if vm.domain is not None else frozenset()
        seen = dedicated or {t.cpu for t in threads if t.cpu is not None}
        return VmReading(
            namespace=vm.namespace, name=vm.name, pid=pid, start=start, threads=threads,
            dedicated=dedicated,
            vcpu_nodes=frozenset(node_of_cpu[c] for c in seen if c in node_of_cpu),
            swap_kib=evidence.number(status.get("VmSwap")),
            ksm_pages=fs.read_int(f"/proc/{pid}/ksm_merging_pages"),
            memory=self._memory.get(vm.label),
            outside_isolated=dedicated - isolated if isolated is not None else frozenset(),
        )

    def _vcpu_threads(
        self, fs: HostFS, pid: int, start: int, skipped: Skipped
    ) -> tuple[Thread, ...] | None:
        """The QEMU's vCPU threads read now; its vCPU thread ids are found once per QEMU and
        looked for again only when one of them is gone."""
        known = self._threads.get((pid, start))
        for attempt in range(2):
            if known is None:
                known = _find_vcpus(fs, pid)
                if known is None:
                    skipped["VmStopped"] += 1
                    return None
                if not known:
                    skipped["NoVcpuThreads"] += 1
                    return None
                self._threads[(pid, start)] = known
            threads = [_thread(fs, pid, tid, vcpu, skipped) for vcpu, tid in sorted(known.items())]
            if all(t is not None for t in threads) or attempt:
                return tuple(t for t in threads if t is not None)
            known = None  # a vCPU thread went away (hot-unplug): look them up again
        return ()

    def _read_memory(self, fs: HostFS, readings: dict[str, VmReading], skipped: Skipped) -> None:
        """numa_maps of a few VMs in turn, within the budget; the others keep their last."""
        keys = sorted(readings)
        if not keys:
            return
        spent = 0.0
        order = keys[self._turn % len(keys):] + keys[:self._turn % len(keys)]
        for index, key in enumerate(order):
            if index and spent >= self.memory_budget:  # at least one a cycle
                break
            reading = readings[key]
            began = self.clock()
            text = fs.read_bytes(f"/proc/{reading.pid}/numa_maps", 0, self.numa_maps_limit)
            spent += self.clock() - began
            self._turn += 1
            if text is None:
                skipped["VmStopped"] += 1
                continue
            by_node, huge = evidence.parse_numa_maps(text.decode("ascii", errors="replace"))
            self._memory[key] = Memory(by_node, huge, began)
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
        match = evidence.VCPU_THREAD.fullmatch(fs.read_value(f"/proc/{pid}/task/{tid}/comm") or "")
        if match and tid.isdigit():
            found[int(match.group(1))] = int(tid)
    return found


def _thread(fs: HostFS, pid: int, tid: int, vcpu: int, skipped: Skipped) -> Thread | None:
    base = f"/proc/{pid}/task/{tid}"
    text = fs.read_text(f"{base}/schedstat")
    if text is None:
        skipped["ThreadExited" if not fs.exists(base) else "FileMissing"] += 1
        return None
    counters = evidence.parse_schedstat(text)
    stat = evidence.parse_stat(fs.read_text(f"{base}/stat") or "")
    if counters is None or stat is None:
        skipped["FileMalformed"] += 1
        return None
    sched = fs.read_text(f"{base}/sched")
    if sched is not None:
        fields = evidence.parse_fields(sched)
        involuntary = evidence.number(fields.get("nr_involuntary_switches"))
        migrations = evidence.number(fields.get("se.nr_migrations"))
    else:  # a kernel without CONFIG_SCHED_DEBUG: switches from status, migrations unknown
        fields = evidence.parse_fields(fs.read_text(f"{base}/status") or "")
        involuntary = evidence.number(fields.get("nonvoluntary_ctxt_switches"))
        migrations = None
    return Thread(vcpu=vcpu, tid=tid, run_ns=counters[0], wait_ns=counters[1],
                  involuntary=involuntary, migrations=migrations, cpu=stat[1])


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


def _with_tasks(
    fs: HostFS, readings: dict[str, VmReading], processes: ProcessTable,
    qemus: Iterable[tuple[Observed, int]],
) -> dict[str, VmReading]:
    """Each VM with dedicated CPUs with the tasks outside its pod allowed on them.

    A process's affinity is its main thread's (one read of its status); a bound per-CPU kernel
    thread (no command line, one CPU) is the kernel's own and left out, as are the VM's QEMU and
    the processes of its launcher's pod (which the kubelet confines to the VM's CPUs).
    """
    wanted = {key: r for key, r in readings.items() if r.dedicated}
    if not wanted:
        return readings
    allowed = []
    for process in processes:
        status = evidence.parse_fields(fs.read_text(f"/proc/{process.pid}/status") or "")
        cpus = status.get("Cpus_allowed_list")
        try:
            parsed = frozenset(cpulist.parse(cpus)) if cpus else None
        except ValueError:
            parsed = None
        if parsed is None or (not process.argv and len(parsed) == 1):
            continue
        allowed.append((process, parsed))
    launchers = {vm.label: vm.pid for vm, _ in qemus}
    pods: dict[int, str | None] = {}

    def pod(pid: int) -> str | None:
        if pid not in pods:
            pods[pid] = fs.readlink(f"/proc/{pid}/ns/mnt")
        return pods[pid]

    result = dict(readings)
    for key, reading in wanted.items():
        launcher = launchers.get(key)
        own = pod(launcher) if launcher is not None else None
        names = []
        for process, task_cpus in allowed:
            if process.pid == reading.pid or not task_cpus & reading.dedicated:
                continue
            if own is not None and pod(process.pid) == own:
                continue
            names.append(f"{process.pid} ({(process.comm or '?')[:32]})")
        result[key] = dataclasses.replace(reading, foreign_tasks=tuple(names))
    return result
