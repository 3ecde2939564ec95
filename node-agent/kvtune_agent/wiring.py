"""The engine bound to the registered features: what the agent process, the CLI and the tests
call. The engine never imports a feature (import-linter keeps it so); this module hands it
FEATURES, and adds what lies above the engine (the NFD feature file) to an orphan's revert."""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import (
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
    StepResult,
)

from . import nfd
from .engine import change
from .engine import cycle as engine_cycle
from .engine import plan as engine_plan
from .engine import probe as engine_probe
from .engine.cycle import Cycle
from .engine.journal import JOURNAL_PATH, Journal, JournalError
from .features import FEATURES
from .features.base import NodeMeta, Plan
from .host.hostfs import HostFS, HostWriteError, ProcessTable
from .host.systemd import Systemd

#: The write sequences of the registered features' kernel files (change.sequences).
SEQUENCE = change.sequences(FEATURES)


def probe_host(fs: HostFS, processes: ProcessTable | None = None) -> HostReport:
    """The probe report of the host behind `fs` (engine/probe.py)."""
    return engine_probe.probe_host(FEATURES, fs, processes)


def read_facts(fs: HostFS, host: HostReport) -> engine_plan.Facts:
    """The host facts the features' planners need beyond the report."""
    return engine_plan.read_facts(FEATURES, fs, host)


def plan(
    spec: HypervisorNodeStateSpec, host: HostReport, node: NodeMeta | None = None,
    facts: Mapping[t.Any, t.Any] | None = None,
) -> Plan:
    """The plan of every registered feature (engine/plan.py)."""
    return engine_plan.plan(FEATURES, spec, host, node, facts)


def run_cycle(
    fs: HostFS, spec: HypervisorNodeStateSpec, generation: int, node_meta: NodeMeta,
    previous: HypervisorNodeStateStatus, *, systemd: Systemd, now: datetime.datetime,
    timeout: float, journal_path: str = JOURNAL_PATH,
) -> Cycle:
    """One cycle over every registered feature (engine/cycle.py)."""
    return engine_cycle.run_cycle(FEATURES, fs, spec, generation, node_meta, previous,
                                  systemd=systemd, now=now, timeout=timeout,
                                  journal_path=journal_path)


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
            results = journal.revert(systemd, timeout=timeout, sequence=SEQUENCE,
                                     hold=engine_cycle.restore_hold(FEATURES, fs, approved=False,
                                                                   timeout=timeout))
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
