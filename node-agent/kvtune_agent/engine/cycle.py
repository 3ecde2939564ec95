"""One cycle of the node agent: probe, plan, apply, probe again, report.

The agent process (which talks to the API) calls `run_cycle` on every spec change and on a
timer, so drift is found and corrected the same way as a new spec. The status it returns is
computed from a fresh probe after applying, never from what apply hoped it did: a write the
kernel took only in part shows up as a step still to do.

Revert restores what kvtune itself changed, from the host journal, in any mode; it waits while
paused, and it never takes VFs away from running VMs unless the operator has approved (drained)
the node. `revert_orphaned` does the same for an agent that finds its HypervisorNodeState gone
but its journal not empty (the state was deleted while the node was down, or after a timeout).

The probe runs under one deadline for the whole pass (PROBE_SECONDS), in a thread of its own:
a read of a kernel file can block in the kernel (a driver that hangs, a process's cmdline
behind its memory lock), and no deadline can interrupt it, but the cycle need not wait with it.
A probe past its deadline is left to its read; the cycle reports `ProbeHung` naming the path it
is stuck on, and no later cycle probes until that thread has returned (one stuck thread, not
one more each cycle). A thread per read would cost thousands of threads a pass; the reads that
do hang in practice (devices, sriov_numvfs, files on network filesystems) have their own.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import (
    HugepageRetry,
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
    StepResult,
)

from .. import metrics, nfd
from ..features.base import NodeMeta, Plan
from ..features.memory import boot
from ..features.sriov import probe as sriov
from ..host import bootloader, reboot
from ..host.hostfs import HostFS, HostWriteError, ProcessTable, setting
from ..host.systemd import Systemd
from . import retry as backoff
from .apply import apply
from .journal import JOURNAL_PATH, Entry, Journal, JournalError
from .plan import PLE_CONF, HostFiles, Scheduler, plan, scheduler_path
from .probe import probe_host
from .status import node_status, probe_hung_status


def read_host_files(fs: HostFS, host: HostReport) -> HostFiles:
    """The host facts the planner needs beyond the probe: I/O schedulers and staged files."""
    schedulers = {}
    for device in host.block.devices:
        if device.classification != "Eligible":  # only free LUNs are ever handed to VMs
            continue
        line = fs.read_value(scheduler_path(device.name))
        if line:
            offered = tuple(line.replace("[", " ").replace("]", " ").split())
            schedulers[device.name] = Scheduler(setting(line), offered)
    if not fs.has_file(PLE_CONF):
        return HostFiles(schedulers)
    written, booted = fs.modified(PLE_CONF), fs.boot_time()
    before_boot = written is not None and booted is not None and written < booted
    return HostFiles(schedulers, fs.read_file(PLE_CONF), before_boot)


@dataclass(frozen=True)
class Cycle:
    """What a cycle came to: the status to report, and the process table of its last probe."""

    status: HypervisorNodeStateStatus
    #: The host's processes as the probe behind `status.host` read them: the VM audit that
    #: follows looks for its VMs there rather than reading /proc again. None when the probe
    #: did not return (`status.host` is then the previous one, and there is nothing to audit).
    processes: ProcessTable | None


#: The longest a whole probe pass may take, in seconds (default 60): a pass takes well under a
#: second, device reads give up after 5 s each and configuration files after 10 s.
PROBE_SECONDS = 60.0
#: The probe thread left in a read that did not return, by host root (see the module doc).
_STUCK: dict[str, tuple[threading.Thread, HostFS]] = {}


class ProbeHung(Exception):
    """The probe did not return within PROBE_SECONDS; the message names the path it waits on."""


def _probe(fs: HostFS) -> tuple[HostReport, ProcessTable]:
    """One probe pass: the process table, read once, and the host report made with it.

    Raises ProbeHung when it does not return within PROBE_SECONDS, or when an earlier pass is
    still stuck."""
    root = str(fs.root)
    if root in _STUCK:
        stuck, stuck_fs = _STUCK[root]
        if stuck.is_alive():
            raise ProbeHung(_hung_message(stuck_fs.reading, "still has not returned"))
        del _STUCK[root]
    found: list[tuple[HostReport, ProcessTable]] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            processes = fs.processes()
            found.append((_timed_probe(fs, processes), processes))
        except BaseException as err:  # raised again in the cycle's thread
            failed.append(err)

    worker = threading.Thread(target=work, name="kvtune probe", daemon=True)
    worker.start()
    worker.join(PROBE_SECONDS)
    if worker.is_alive():
        _STUCK[root] = (worker, fs)
        raise ProbeHung(_hung_message(fs.reading, f"did not return within {PROBE_SECONDS:g} s"))
    if failed:
        raise failed[0]
    return found[0]


def _hung_message(path: str | None, what: str) -> str:
    where = f"reading {path}" if path else "in a read of the host"
    return (f"the probe of the host {what}: it is stuck {where}, which the kernel does not "
            "return from (a driver that hangs, or a process blocked in the kernel); nothing is "
            "planned or changed until it returns, and no other probe starts meanwhile. Check "
            "dmesg and what holds that file; a reboot may be needed")


def _timed_probe(fs: HostFS, processes: ProcessTable | None = None) -> HostReport:
    """probe_host, timed for kvtune_agent_probe_duration_seconds.

    Timed here rather than in the probe package: `kvtune probe` has no metrics to serve and
    should not pay for importing prometheus_client.
    """
    with metrics.PROBE_SECONDS.time():
        return probe_host(fs, processes)


def run_cycle(
    fs: HostFS,
    spec: HypervisorNodeStateSpec,
    generation: int,
    node_meta: NodeMeta,
    previous: HypervisorNodeStateStatus,
    *,
    systemd: Systemd,
    now: datetime.datetime,
    timeout: float,
    journal_path: str = JOURNAL_PATH,
) -> Cycle:
    """Probe the host, move it toward `spec` (Enforce and not paused only) and report.

    `generation` is the state's metadata.generation, `previous` its current status (for
    condition transition times), `timeout` the deadline in seconds of each host write and
    systemctl call. Audit and paused cycles write nothing to the host. A probe after a change
    reads the processes afresh: stopping a daemon ends its process.
    """
    # Audit and paused cycles write nothing, the journal included (see journal.py).
    journal = Journal(fs, journal_path, read_only=not spec.revert and (
        spec.mode != "Enforce" or spec.paused))
    try:
        return _cycle(fs, spec, generation, node_meta, previous, journal, systemd, now, timeout)
    except ProbeHung as err:
        return Cycle(probe_hung_status(previous, str(err), now), None)


def _cycle(
    fs: HostFS, spec: HypervisorNodeStateSpec, generation: int, node_meta: NodeMeta,
    previous: HypervisorNodeStateStatus, journal: Journal, systemd: Systemd,
    now: datetime.datetime, timeout: float,
) -> Cycle:
    """run_cycle's work; raises ProbeHung."""
    host, processes = _probe(fs)
    if spec.revert:
        return _revert_cycle(fs, spec, generation, host, processes, journal, previous, systemd,
                             now, timeout)
    found = plan(spec, host, node_meta, read_host_files(fs, host))
    held = backoff.hold_sriov(backoff.hold(found, previous.hugepage_retries, now),
                              previous.sriov_retries, now)
    work = backoff.hold_boot(_boot(held, spec, host, previous.hugepage_retries, fs, journal,
                                   timeout), previous.boot_retries, now)
    results = None
    if spec.mode == "Enforce" and not spec.paused and work.steps:
        results = apply(work, fs, journal, systemd, spec.disruption, timeout=timeout)
        host, processes = _probe(fs)
        found = plan(spec, host, node_meta, read_host_files(fs, host))
    retries = backoff.track(previous.hugepage_retries, results or [], found, host, now)
    vf_retries = backoff.track_sriov(previous.sriov_retries, results or [], found, host, now)
    held = backoff.hold_sriov(backoff.hold(found, retries, now), vf_retries, now)
    work = _boot(held, spec, host, retries, fs, journal, timeout)
    boot_retries = backoff.track_boot(previous.boot_retries, results or [], work, now)
    work = backoff.hold_boot(work, boot_retries, now)
    status = node_status(spec, generation, host, work, results, previous, now,
                         hugepage_retries=retries, sriov_retries=vf_retries,
                         boot_retries=boot_retries)
    return Cycle(status, processes)


def _boot(
    work: Plan, spec: HypervisorNodeStateSpec, host: HostReport,
    retries: Sequence[HugepageRetry], fs: HostFS, journal: Journal, timeout: float,
) -> Plan:
    """`work` with the boot-time hugepages (boot.py); the boot configuration is read only
    when the spec allocates hugepages or kvtune has written it (to withdraw what it staged)."""
    try:
        journaled = {e.path: e.original or "" for e in journal.entries() if e.kind == "bootargs"}
    except JournalError:
        journaled = {}  # nothing known to withdraw; apply reports the journal
    if not spec.host.memory.hugepages.pages and not journaled:
        return work
    facts = dataclasses.replace(bootloader.read_facts(fs, timeout=timeout),
                                reboot_requested=reboot.requested(fs))
    return boot.stage(work, spec, host, retries, facts, journaled)


def _revert_cycle(
    fs: HostFS, spec: HypervisorNodeStateSpec, generation: int, host: HostReport,
    processes: ProcessTable, journal: Journal, previous: HypervisorNodeStateStatus,
    systemd: Systemd, now: datetime.datetime, timeout: float,
) -> Cycle:
    results: list[StepResult] | None = None
    try:
        if journal.count() and not spec.paused:
            results = journal.revert(systemd, timeout=timeout,
                                     hold=_vf_hold(fs, spec.disruption.approved, timeout))
            host, processes = _probe(fs)
        elif not spec.paused:
            journal.tidy()
        left: int | None = journal.count()
    except (JournalError, HostWriteError) as err:
        results, left = [StepResult(id="revert/journal", result="Failed", message=str(err))], None
    status = node_status(spec, generation, host, Plan(), results, previous, now,
                         journal_entries=left)
    return Cycle(status, processes)


def _vf_hold(fs: HostFS, approved: bool, timeout: float) -> Callable[[Entry], str | None]:
    """Holds back restoring a VF count that would take VFs from running VMs (see module doc).

    The VFs are read right before each restore, not from the cycle's probe: a VM may take one
    in between.
    """

    def hold(entry: Entry) -> str | None:
        if approved or not entry.path.endswith("/sriov_numvfs"):
            return None
        # Under the writes' deadline: a read of sriov_numvfs waits for a hung write to it.
        now, why = fs.read_within(entry.path, timeout=timeout)
        if now is None:
            return (f"{entry.path} cannot be read now ({why}), so whether restoring its VF "
                    f"count ({entry.original}) would take VFs from VMs is unknown; it is tried "
                    "again next cycle")
        if now == entry.original:
            return None
        in_use = sriov.vfs_in_use(fs, entry.path)
        if not in_use:
            return None
        return (f"VFs {sriov.held(in_use)} of {entry.path} are in use; its original VF count "
                f"({entry.original}) is restored once the VMs or programs holding them have "
                "left the node")

    return hold


@dataclass(frozen=True)
class OrphanRevert:
    """What restoring an orphaned node came to."""

    #: One result per journal entry restored or tried (none when the journal was empty).
    results: list[StepResult]
    #: Nothing kvtune wrote is left on the host: the journal is empty and the feature file gone.
    clean: bool


def revert_orphaned(
    fs: HostFS, systemd: Systemd, *, timeout: float, journal_path: str = JOURNAL_PATH
) -> OrphanRevert:
    """Restore the journal of a node whose HypervisorNodeState is gone; withdraw its features.

    What is held back or fails stays in the journal for the next call, and the node is not clean
    until a call restores it.
    """
    journal = Journal(fs, journal_path)
    results: list[StepResult] = []
    clean = True
    try:
        if journal.count():
            results = journal.revert(systemd, timeout=timeout,
                                     hold=_vf_hold(fs, approved=False, timeout=timeout))
        clean = not journal.count()
    except JournalError as err:
        results.append(StepResult(id="revert/journal", result="Failed", message=str(err)))
        clean = False
    try:
        nfd.withdraw(fs)
    except HostWriteError as err:
        results.append(StepResult(id="revert/nfd", result="Failed", message=str(err)))
        clean = False
    return OrphanRevert(results, clean)
