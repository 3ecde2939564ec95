"""One cycle of the node agent over the registered features: probe, plan, apply, probe again,
report.

The agent process (which talks to the API) calls `run_cycle` on every spec change and on a
timer, so drift is found and corrected the same way as a new spec. The status it returns is
computed from a fresh probe after applying, never from what apply hoped it did: a write the
kernel took only in part shows up as a step still to do.

Revert restores what kvtune itself changed, from the host journal, in any mode; it waits while
paused, and it never takes VFs away from running VMs unless the operator has approved (drained)
the node (each feature's `hold_restore`).

The probe runs under one deadline for the whole pass (PROBE_SECONDS), in a thread of its own:
a read of a kernel file can block in the kernel (a driver that hangs, a process's cmdline
behind its memory lock), and no deadline can interrupt it, but the cycle need not wait with it.
A probe past its deadline is left to its read; the cycle reports `ProbeHung` naming the path it
is stuck on, and no later cycle probes until that thread has returned (one stuck thread, not
one more each cycle). A thread per read would cost thousands of threads a pass; the reads that
do hang in practice (devices, sriov_numvfs, files on network filesystems) have their own.
"""

from __future__ import annotations

import datetime
import threading
import typing as t
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import (
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
    StepResult,
)

from .. import metrics
from ..features.base import Feature, NodeMeta, Plan, PlanInputs
from ..host.hostfs import HostFS, HostWriteError, ProcessTable
from ..host.systemd import Systemd
from . import change, retry
from .apply import apply, settle
from .journal import JOURNAL_PATH, Entry, Journal, JournalError
from .plan import plan, read_facts
from .probe import probe_host
from .status import node_status, probe_hung_status

#: The registered features (kvtune_agent.features.FEATURES), handed in by the caller: the engine
#: never imports a feature.
Features = Sequence[Feature[t.Any, t.Any]]


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


def _probe(features: Features, fs: HostFS) -> tuple[HostReport, ProcessTable]:
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
            found.append((_timed_probe(features, fs, processes), processes))
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


def _timed_probe(
    features: Features, fs: HostFS, processes: ProcessTable | None = None,
) -> HostReport:
    """probe_host, timed for kvtune_agent_probe_duration_seconds.

    Timed here rather than in the probe package: `kvtune probe` has no metrics to serve and
    should not pay for importing prometheus_client.
    """
    with metrics.PROBE_SECONDS.time():
        return probe_host(features, fs, processes)


def run_cycle(
    features: Features,
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
        return _cycle(features, fs, spec, generation, node_meta, previous, journal, systemd,
                      now, timeout)
    except ProbeHung as err:
        return Cycle(probe_hung_status(previous, str(err), now), None)


def _cycle(
    features: Features, fs: HostFS, spec: HypervisorNodeStateSpec, generation: int,
    node_meta: NodeMeta, previous: HypervisorNodeStateStatus, journal: Journal,
    systemd: Systemd, now: datetime.datetime, timeout: float,
) -> Cycle:
    """run_cycle's work; raises ProbeHung."""
    host, processes = _probe(features, fs)
    if spec.revert:
        return _revert_cycle(features, fs, spec, generation, host, processes, journal, previous,
                             systemd, now, timeout)
    found = plan(features, spec, host, node_meta, read_facts(features, fs, host))
    before = retry.previous(features, previous)
    work = _settle(features, found, spec, host, node_meta, before, fs, journal, now, timeout)
    results = None
    if spec.mode == "Enforce" and not spec.paused and work.steps:
        results = apply(features, work, fs, journal, systemd, spec.disruption, timeout=timeout)
        host, processes = _probe(features, fs)
        found = plan(features, spec, host, node_meta, read_facts(features, fs, host))
    # The back-offs held before the restage hooks are tracked against the plan from the last
    # probe, those held after them (boot staging) against the plan the hooks made.
    records = retry.track_all(features, before, results or [], found, host, now, late=False)
    held = retry.hold_all(found, features, records, now, late=False)
    work = _restage(features, held, spec, host, node_meta, records, fs, journal, timeout)
    records |= retry.track_all(features, before, results or [], work, host, now, late=True)
    work = retry.hold_all(work, features, records, now, late=True)
    status = node_status(features, spec, generation, host, work, results, previous, now,
                         retries=records)
    return Cycle(status, processes)


def _settle(
    features: Features, found: Plan, spec: HypervisorNodeStateSpec, host: HostReport,
    node_meta: NodeMeta, records: retry.Records, fs: HostFS, journal: Journal,
    now: datetime.datetime, timeout: float,
) -> Plan:
    """What to apply of `found`: without the steps the back-offs hold, restaged."""
    held = retry.hold_all(found, features, records, now, late=False)
    work = _restage(features, held, spec, host, node_meta, records, fs, journal, timeout)
    return retry.hold_all(work, features, records, now, late=True)


def _restage(
    features: Features, work: Plan, spec: HypervisorNodeStateSpec, host: HostReport,
    node_meta: NodeMeta, records: retry.Records, fs: HostFS, journal: Journal, timeout: float,
) -> Plan:
    """`work` after every feature's second look (features/base.py `restage`)."""
    try:
        journaled = {e.path: e.original or "" for e in journal.entries() if e.kind == "bootargs"}
    except JournalError:
        journaled = {}  # nothing known to withdraw; apply reports the journal
    inputs = PlanInputs(spec, host, node_meta)
    for feature in features:
        work = feature.restage(work, inputs, records, fs, journaled, timeout)
    return work


def _revert_cycle(
    features: Features, fs: HostFS, spec: HypervisorNodeStateSpec, generation: int,
    host: HostReport, processes: ProcessTable, journal: Journal,
    previous: HypervisorNodeStateStatus,
    systemd: Systemd, now: datetime.datetime, timeout: float,
) -> Cycle:
    results: list[StepResult] | None = None
    try:
        if journal.count() and not spec.paused:
            hold = restore_hold(features, fs, spec.disruption.approved, timeout)
            results = journal.revert(
                systemd, timeout=timeout, sequence=change.sequences(features), hold=hold,
                settle=lambda entry: settle(features, fs, systemd, entry.path, timeout))
            host, processes = _probe(features, fs)
        elif not spec.paused:
            journal.tidy()
        left: int | None = journal.count()
    except (JournalError, HostWriteError) as err:
        results, left = [StepResult(id="revert/journal", result="Failed", message=str(err))], None
    status = node_status(features, spec, generation, host, Plan(), results, previous, now,
                         journal_entries=left)
    return Cycle(status, processes)


def restore_hold(
    features: Features, fs: HostFS, approved: bool, timeout: float,
) -> Callable[[Entry], str | None]:
    """Why a journal entry must wait before it is restored: asks every feature, right before
    each restore (features/base.py `hold_restore`), so what it reads is current."""

    def hold(entry: Entry) -> str | None:
        for feature in features:
            why = feature.hold_restore(fs, entry.path, entry.original, approved, timeout)
            if why:
                return why
        return None

    return hold
