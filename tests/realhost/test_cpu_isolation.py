"""CPU isolation on this machine's kernel: housekeeping CPU 0, isolated CPU 1.

The CPU isolation feature plans from the real /proc and /sys; its IRQ, default IRQ affinity,
workqueue mask and numa_balancing steps are applied through the journal, what the kernel then
shows is compared with the plan, and the journal's revert must put every value back as it read
before. `tunables` checks that again, and restores the host, whatever the test's outcome.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

import pytest
from agent.specs import node_spec
from kvtune_agent.engine.apply import apply
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features import FEATURES
from kvtune_agent.features.base import Plan
from kvtune_agent.host.systemd import Systemd
from kvtune_agent.wiring import SEQUENCE, plan, probe_host, read_facts
from kvtune_api.v1alpha1.nodestate import DisruptionGrant
from support.realhost import REALHOST, RecordingFS

pytestmark = REALHOST

BALANCING = "/proc/sys/kernel/numa_balancing"
DEFAULT = "/proc/irq/default_smp_affinity"
WORKQUEUE = "/sys/devices/virtual/workqueue/cpumask"
NO_SYSTEMD = Systemd(("systemctl",))


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def _targets() -> dict[str, str]:
    paths = [*sorted(glob.glob("/proc/irq/*/smp_affinity_list")), DEFAULT, WORKQUEUE, BALANCING]
    return {path: _read(path) for path in paths}


def _plan(fs: RecordingFS) -> Plan:
    host = probe_host(fs)
    spec = node_spec(cpu={"partition": {"housekeepingCpus": "0"}})
    return plan(spec, host, facts=read_facts(fs, host)).of("CPUIsolation")


def _settable(path: str) -> bool:
    """The kernel lets userspace move the IRQ: since 6.12 it makes the file read-only when not."""
    return bool(os.stat(path).st_mode & stat.S_IWUSR)


def test_irqs_workqueues_and_numa_balancing_move_to_cpu_0_and_come_back(
    tunables: RecordingFS, tmp_path: Path
) -> None:
    if _read("/sys/devices/system/cpu/online") != "0-1":
        pytest.fail("this test is written for a 2-CPU host (online 0-1)")
    # Switched on (it is off here) so that the step that turns it off has something to do;
    # put back as it was by the test itself, since the journal's original is the 1 set here.
    original = _read(BALANCING)
    Path(BALANCING).write_text("1\n")
    try:
        _isolate_and_revert(tunables, tmp_path)
    finally:
        Path(BALANCING).write_text(f"{original}\n")


def _isolate_and_revert(tunables: RecordingFS, tmp_path: Path) -> None:
    before = _targets()
    journal = Journal(tunables, str(tmp_path / "journal.json"))
    work = _plan(tunables)
    on_cpu1 = {path for path, value in before.items() if path.startswith("/proc/irq/")
               and path != DEFAULT and value in ("1", "0-1")}
    movable = {path for path in on_cpu1 if _settable(path)}

    results = {r.id: r for r in apply(FEATURES, work, tunables, journal, NO_SYSTEMD,
                                      DisruptionGrant(), timeout=10)}

    planned = {step.planned.path: step.planned.id for step in work.steps}
    assert set(planned) == movable | {DEFAULT, WORKQUEUE, BALANCING}, (
        "every IRQ the kernel lets move, none it does not")
    assert {r.result for r in results.values()} == {"Applied"}, results
    after = _targets()
    assert (after[BALANCING], after[DEFAULT], after[WORKQUEUE]) == ("0", "1", "1")
    assert {after[path] for path in movable} <= {"0"}
    assert {after[path] for path in on_cpu1 - movable} == {before[p] for p in on_cpu1 - movable}
    assert _plan(tunables).steps == (), "a settled host plans nothing"

    restored = journal.revert(NO_SYSTEMD, sequence=SEQUENCE, timeout=10)

    failed = [r for r in restored if r.result != "Applied"]
    assert not failed, failed
    assert _targets() == before
