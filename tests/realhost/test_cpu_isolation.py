"""CPU isolation on this machine's kernel: housekeeping CPU 0, isolated CPU 1.

The plan's IRQ, default IRQ affinity, workqueue mask and numa_balancing steps are applied
through the journal to the real /proc and /sys, what the kernel then shows is compared with the
plan, and the journal's revert must put every value back as it read before; `tunables` checks
that again, and restores the host, whatever the test's outcome.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from kvtune_agent.apply import apply
from kvtune_agent.features.cpu_isolation.facts import read_facts
from kvtune_agent.features.cpu_isolation.plan import plan as isolation_plan
from kvtune_agent.journal import Journal
from kvtune_agent.plan import Plan, _Draft
from kvtune_agent.probe import probe_host
from kvtune_agent.systemd import Systemd
from kvtune_api.v1alpha1.nodestate import DisruptionGrant
from kvtune_api.v1alpha1.profile import CpuSettings

from .support import REALHOST, RecordingFS

pytestmark = REALHOST

BALANCING = "/proc/sys/kernel/numa_balancing"
DEFAULT = "/proc/irq/default_smp_affinity"
WORKQUEUE = "/sys/devices/virtual/workqueue/cpumask"
SETTINGS = CpuSettings.model_validate({"partition": {"housekeepingCpus": "0"}})


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def _targets() -> dict[str, str]:
    paths = [*sorted(glob.glob("/proc/irq/*/smp_affinity_list")), DEFAULT, WORKQUEUE, BALANCING]
    return {path: _read(path) for path in paths}


def _plan(fs: RecordingFS) -> Plan:
    out = _Draft()
    host = probe_host(fs)
    isolation_plan(SETTINGS, host, read_facts(fs, host), out)
    return Plan(tuple(out.steps), tuple(out.findings))


def test_irqs_workqueues_and_numa_balancing_move_to_cpu_0_and_come_back(
    tunables: RecordingFS, tmp_path: Path
) -> None:
    if _read("/sys/devices/system/cpu/online") != "0-1":
        pytest.fail("this test is written for a 2-CPU host (online 0-1)")
    # Off here: switched on so that the step that turns it off has something to do.
    Path(BALANCING).write_text("1\n")
    before = _targets()
    journal = Journal(tunables, str(tmp_path / "journal.json"))
    work = _plan(tunables)
    movable = {path for path, value in before.items()
               if path.startswith("/proc/irq/") and "1" in value.replace("0-1", "1").split(",")}

    results = apply(work, tunables, journal, Systemd(("systemctl",)),
                    DisruptionGrant(), timeout=10)

    applied = {r.id: r for r in results}
    assert {step.planned.path for step in work.steps} >= {DEFAULT, WORKQUEUE, BALANCING}
    after = _targets()
    assert after[BALANCING] == "0" and after[DEFAULT] == "1" and after[WORKQUEUE] == "1"
    for step in work.steps:
        if step.planned.id.startswith("irq/") and step.planned.id != "irq/default":
            # A managed IRQ is refused by the kernel (EIO): left as it was, said so.
            result = applied[step.planned.id]
            assert (result.result, after[step.planned.path]) in (
                ("Applied", "0"), ("Failed", before[step.planned.path])), result
    assert movable <= {s.planned.path for s in work.steps}
    assert not _plan(tunables).steps or all(
        applied[s.planned.id].result == "Failed" for s in _plan(tunables).steps)

    restored = journal.revert(Systemd(("systemctl",)), timeout=10)

    failed = [r for r in restored if r.result != "Applied"]
    assert not failed, failed
    assert _targets() == before
