"""A CPU partition made for a while on the real host, and undone: every task that may move is
confined to the housekeeping CPUs, and every interrupt and unbound workqueue that may move is
sent there.

This is what a kvtune-shaped node has for good (the kubelet's reservedSystemCPUs and systemd's
CPUAffinity for tasks, smp_affinity_list for interrupts, the unbound workqueues' cpumask: the
CPU-isolation work), made here with the same kernel interfaces for the length of a test or a
benchmark (the realhost tier's interference tests, bench/interference.py), since this machine
is shared and must be left as it was. Per-CPU kernel threads refuse to move (EINVAL) and stay,
as they do on a partitioned node; so do managed interrupts.

Undone on the way out, whatever happened: each task moved gets its own affinity back (if it is
still the same task: its start time is compared), each interrupt its smp_affinity_list. A task
started meanwhile by a confined one inherited the housekeeping set; it gets the CPUs its parent
gets back, or every online CPU when its parent is gone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kvtune_agent.host import cpulist


def _tasks() -> list[tuple[int, int]]:
    """(tid, pid) of every task of the host now."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                found += [(int(tid), int(pid)) for tid in os.listdir(f"/proc/{pid}/task")]
    return found


def _start(tid: int) -> str | None:
    """A task's start time (field 22 of its stat): a tid reused by another task differs."""
    try:
        text = Path(f"/proc/{tid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[19]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Partition:
    """What was moved, to be put back."""

    housekeeping: frozenset[int]
    tasks: dict[int, tuple[frozenset[int], str | None, int]] = field(default_factory=dict)
    #: Kernel files written (IRQ affinities, the workqueue mask): their values before.
    irqs: dict[str, str] = field(default_factory=dict)
    refused_tasks: int = 0
    refused_irqs: int = 0

    def describe(self) -> str:
        return (f"{len(self.tasks)} tasks confined to CPU {sorted(self.housekeeping)} "
                f"({self.refused_tasks} refused: per-CPU kernel threads), {len(self.irqs)} IRQs "
                f"moved there ({self.refused_irqs} refused: managed or per-CPU)")


def _confine_tasks(made: Partition, spare: set[int]) -> None:
    for tid, pid in _tasks():
        if tid in spare:
            continue
        try:
            allowed = frozenset(os.sched_getaffinity(tid))
            if allowed <= made.housekeeping:
                continue
            start = _start(tid)
            os.sched_setaffinity(tid, made.housekeeping)
        except OSError:
            made.refused_tasks += 1
            continue
        made.tasks[tid] = (allowed, start, pid)


def _move_irqs(made: Partition) -> None:
    wanted = ",".join(map(str, sorted(made.housekeeping)))
    for entry in sorted(Path("/proc/irq").iterdir()):
        path = entry / "smp_affinity_list"
        if not path.exists():
            continue
        before = path.read_text().strip()
        if before == wanted:
            continue
        try:
            path.write_text(wanted + "\n")
        except OSError:
            made.refused_irqs += 1
            continue
        made.irqs[str(path)] = before


#: The unbound workqueues' CPU mask (hex): their kworkers (and, on recent kernels, rescuers)
#: follow it; they refuse sched_setaffinity.
WORKQUEUE_MASK = "/sys/devices/virtual/workqueue/cpumask"


def _move_workqueues(made: Partition) -> None:
    path = Path(WORKQUEUE_MASK)
    if not path.exists():
        return
    before = path.read_text().strip()
    wanted = f"{sum(1 << cpu for cpu in made.housekeeping):x}"
    try:
        path.write_text(wanted + "\n")
    except OSError:
        return
    made.irqs[str(path)] = before


def _restore(made: Partition) -> list[str]:
    """Put back what `made` moved; what could not be, in words."""
    problems = []
    for path, before in made.irqs.items():
        try:
            Path(path).write_text(before + "\n")
        except OSError as err:
            problems.append(f"{path}: {err}")
    known = set(made.tasks)
    for tid, (allowed, start, _) in made.tasks.items():
        if _start(tid) != start:
            continue  # gone, or another task now
        try:
            os.sched_setaffinity(tid, allowed)
        except OSError as err:
            if not isinstance(err, ProcessLookupError):
                problems.append(f"task {tid}: {err}")
    online = frozenset(cpulist.parse(Path("/sys/devices/system/cpu/online").read_text()))
    parents = {pid: allowed for _, (allowed, _, pid) in made.tasks.items()}
    for tid, pid in _tasks():
        if tid in known:
            continue
        with contextlib.suppress(OSError):
            if frozenset(os.sched_getaffinity(tid)) == made.housekeeping:
                parent = pid if tid != pid else _parent(pid)
                os.sched_setaffinity(tid, parents.get(parent or -1, online))
    return problems


@contextlib.contextmanager
def partitioned(housekeeping: frozenset[int], *, spare: frozenset[int] = frozenset(),
                irqs: bool = True) -> Iterator[Partition]:
    """Every task but those of `spare` (tids) confined to `housekeeping` and (with `irqs`)
    every movable interrupt sent there, until the block ends."""
    made = Partition(housekeeping)
    try:
        _confine_tasks(made, set(spare))
        if irqs:
            _move_irqs(made)
            _move_workqueues(made)
        yield made
    finally:
        problems = _restore(made)
        assert not problems, f"the partition could not be undone everywhere: {problems}"
