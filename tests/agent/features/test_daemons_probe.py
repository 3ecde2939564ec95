"""The KSM and numad probes: sysfs state, processes from /proc, systemd units from their files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kvtune_agent.features.ksm import probe as ksm
from kvtune_agent.features.numad import probe as numad
from kvtune_agent.host import daemon
from kvtune_agent.host.hostfs import ProcessTable
from support.hosttree import HostTree


def test_running_ksm_and_ksmtuned_are_both_warned_about(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).ksm(1, shared=100, sharing=4000).process(1, "systemd")
    tree.process(812, "ksmtuned", "/bin/bash", "/usr/sbin/ksmtuned")
    tree.unit("ksmtuned.service", wanted_by=["multi-user.target"])

    fs = tree.fs()

    found = ksm.probe(fs, fs.processes())

    assert found.state == "Running"
    assert (found.pages_shared, found.pages_sharing, found.merge_across_nodes) == (100, 4000, 1)
    assert found.ksmtuned.pids == [812]
    assert found.ksmtuned.unit == "Enabled"
    problems = ksm.check(found)
    assert [p.path for p in problems] == [
        "/sys/kernel/mm/ksm/run", "/usr/lib/systemd/system/ksmtuned.service",
    ]
    assert "4000 pages sharing, across NUMA nodes" in problems[0].message


def test_a_script_started_through_its_interpreter_is_found(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(90, "bash", "bash", "/usr/sbin/ksmtuned")
    tree.process(91, "bash", "bash", "-c", "echo ksmtuned")

    fs = tree.fs()

    assert daemon.probe(fs, fs.processes(), "ksmtuned").pids == [90]


@pytest.mark.parametrize(
    ("build", "state"),
    [
        pytest.param(lambda t: t.ksm(0), "Stopped", id="run 0 is stopped"),
        pytest.param(lambda t: t.ksm(2), "Unmerging", id="run 2 is unmerging"),
        pytest.param(lambda t: None, "Absent", id="a kernel without KSM reports it absent"),
        pytest.param(lambda t: t.ksm(0).file("/sys/kernel/mm/ksm/run", 7), "Unknown",
                     id="an odd run value is unknown"),
    ],
)
def test_ksm_states(tmp_path: Path, build: Callable[[HostTree], object], state: str) -> None:
    tree = HostTree(tmp_path)
    build(tree)

    found = ksm.probe(tree.fs(), ProcessTable())

    assert found.state == state
    assert ksm.check(found) == []


def test_an_unreadable_ksm_run_file_is_an_issue_naming_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).unreadable("/sys/kernel/mm/ksm/run")
    fs = tree.fs()

    assert ksm.probe(fs, ProcessTable()).state == "Unknown"
    [issue] = fs.take_issues()
    assert (issue.path, issue.unreadable) == ("/sys/kernel/mm/ksm/run", True)


@pytest.mark.parametrize(
    ("build", "unit", "wanted_by"),
    [
        pytest.param(lambda t: t.unit("numad.service", wanted_by=["multi-user.target"]),
                     "Enabled", ["multi-user.target"], id="a .wants link enables the unit"),
        pytest.param(lambda t: t.unit("numad.service"), "Disabled", [],
                     id="a unit file without .wants links is disabled"),
        pytest.param(lambda t: t.unit("numad.service", masked=True), "Masked", [],
                     id="a /dev/null link in /etc masks the unit"),
        pytest.param(lambda t: t.unit("numad.service", directory="/lib/systemd/system"),
                     "Disabled", [], id="units under /lib/systemd/system are found too"),
        pytest.param(lambda t: None, "NotInstalled", [], id="no unit file is not installed"),
    ],
)
def test_unit_states(
    tmp_path: Path, build: Callable[[HostTree], object], unit: str, wanted_by: list[str]
) -> None:
    tree = HostTree(tmp_path)
    build(tree)

    found = numad.probe(tree.fs(), ProcessTable())

    assert (found.unit, found.wanted_by, found.running) == (unit, wanted_by, False)


@pytest.mark.parametrize(
    ("running", "enabled", "severities"),
    [
        pytest.param(True, True, ["Warning"], id="running numad is a warning"),
        pytest.param(False, True, ["Info"], id="enabled but stopped numad is noted"),
        pytest.param(False, False, [], id="installed and stopped numad is fine"),
    ],
)
def test_numad_findings(
    tmp_path: Path, running: bool, enabled: bool, severities: list[str]
) -> None:
    tree = HostTree(tmp_path).unit("numad.service",
                                   wanted_by=["multi-user.target"] if enabled else [])
    if running:
        tree.process(4242, "numad", "/usr/bin/numad", "-i", "15")

    fs = tree.fs()

    assert [p.severity for p in numad.check(numad.probe(fs, fs.processes()))] == severities
