"""Host systemd units, through a fake systemctl that changes the test tree as systemd would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kvtune_agent.host import daemon
from kvtune_agent.host.systemd import HOST_SYSTEMCTL, Systemd, SystemdError, UnitState
from support.hosttree import HostTree

OFF = UnitState(enabled=False, active=False)
ON = UnitState(enabled=True, active=True)


def _numad(tmp_path: Path, *, running: bool, enabled: bool) -> HostTree:
    tree = HostTree(tmp_path).systemctl()
    tree.unit("numad.service", wanted_by=["multi-user.target"] if enabled else [])
    return tree.process(812, "numad") if running else tree


def test_production_enters_pid_1s_namespaces_to_run_the_hosts_systemctl() -> None:
    assert Systemd().command == HOST_SYSTEMCTL
    assert HOST_SYSTEMCTL[:3] == ("nsenter", "--target", "1")
    assert HOST_SYSTEMCTL[-2:] == ("--", "systemctl")


def test_a_running_enabled_unit_is_stopped_then_disabled_and_the_probe_sees_it(
    tmp_path: Path,
) -> None:
    tree = _numad(tmp_path, running=True, enabled=True)

    before = tree.systemd().set_state("numad.service", OFF, timeout=10)

    assert before == ON
    fs = tree.fs()
    found = daemon.probe(fs, fs.processes(), "numad")
    assert (found.running, found.unit) == (False, "Disabled")
    changes = [c for c in tree.systemctl_calls() if not c.startswith("is-")]
    assert changes == ["stop numad.service", "disable numad.service"]


def test_a_stopped_disabled_unit_is_enabled_then_started(tmp_path: Path) -> None:
    tree = _numad(tmp_path, running=False, enabled=False)

    tree.systemd().set_state("numad.service", ON, timeout=10)

    fs = tree.fs()
    found = daemon.probe(fs, fs.processes(), "numad")
    assert (found.running, found.unit) == (True, "Enabled")
    changes = [c for c in tree.systemctl_calls() if not c.startswith("is-")]
    assert changes == ["enable numad.service", "start numad.service"]


def test_a_unit_already_in_the_wanted_state_is_only_queried(tmp_path: Path) -> None:
    tree = _numad(tmp_path, running=False, enabled=False)

    tree.systemd().set_state("numad.service", OFF, timeout=10)

    assert all(call.startswith("is-") for call in tree.systemctl_calls())


def test_a_unit_that_is_not_installed_is_an_error_naming_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).systemctl()

    with pytest.raises(SystemdError, match=r"numad\.service is not installed"):
        tree.systemd().state("numad.service", timeout=10)


def test_a_masked_unit_cannot_be_started_and_the_error_says_so(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).systemctl().unit("numad.service", masked=True)

    with pytest.raises(SystemdError, match=r"systemctl enable numad.service failed.*masked"):
        tree.systemd().set_state("numad.service", ON, timeout=10)


def test_a_host_without_systemd_is_unsupported_not_a_crash(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).systemctl(booted_with_systemd=False)

    with pytest.raises(SystemdError) as caught:
        tree.systemd().state("numad.service", timeout=10)

    assert caught.value.unsupported
    assert "does not run systemd" in str(caught.value) and "Unmanaged" in str(caught.value)


def test_a_missing_command_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(SystemdError) as caught:
        Systemd([str(tmp_path / "no-such-nsenter")]).state("numad.service", timeout=10)

    assert caught.value.unsupported and "nsenter" in str(caught.value)


def test_a_systemctl_that_hangs_is_killed_at_its_deadline(tmp_path: Path) -> None:
    hanging = Systemd(["sh", "-c", "sleep 30", "sh"])

    started = time.monotonic()
    with pytest.raises(SystemdError, match=r"is-enabled numad.service did not finish within 0.3 s"):
        hanging.state("numad.service", timeout=0.3)

    assert time.monotonic() - started < 5


@pytest.mark.parametrize("text", ["enabled,active", "disabled,inactive", "enabled,inactive"])
def test_a_unit_state_reads_back_what_it_writes(text: str) -> None:
    assert str(UnitState.parse(text)) == text


def test_a_malformed_unit_state_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not a unit state: 'on'"):
        UnitState.parse("on")


@pytest.mark.parametrize(("is_enabled", "is_active"), [
    pytest.param('echo "Failed to get unit file state for numad.service: Connection timed out"; '
                 "exit 1", "echo active", id="is-enabled fails with a bus timeout"),
    pytest.param('echo "Access denied"; exit 4', "echo active", id="is-enabled is denied"),
    pytest.param("printf '\\0garbage'", "echo active", id="is-enabled says garbage, exit 0"),
    pytest.param("echo enabled", 'echo "Failed to connect: Connection timed out"; exit 1',
                 id="is-active fails"),
    pytest.param("echo enabled", "exit 3", id="is-active says nothing"),
])
def test_a_systemctl_whose_answer_is_no_unit_state_is_unknown_never_disabled(
    tmp_path: Path, is_enabled: str, is_active: str,
) -> None:
    script = tmp_path / "systemctl"
    script.write_text(f'#!/bin/sh\nif [ "$1" = is-enabled ]; then {is_enabled}; '
                      f"else {is_active}; fi\n")
    script.chmod(0o755)

    # Read as "disabled,inactive", a failing query would be journaled as the admin's original
    # and a revert would disable a unit the admin runs.
    with pytest.raises(SystemdError, match=r"numad\.service answered") as caught:
        Systemd([str(script)]).state("numad.service", timeout=10)

    assert not caught.value.unsupported


@pytest.mark.parametrize("output", [
    pytest.param("printf '\\377\\376 not UTF-8'", id="bytes that are not UTF-8"),
    pytest.param("head -c 30000000 /dev/zero | tr '\\0' x", id="30 MB of output"),
])
def test_a_systemctl_that_prints_garbage_is_an_error_not_a_crash_or_megabytes(
    tmp_path: Path, output: str,
) -> None:
    with pytest.raises(SystemdError, match=r"numad\.service answered") as caught:
        Systemd(["sh", "-c", f"{output}; exit 1", "sh"]).state("numad.service", timeout=10)

    assert len(str(caught.value)) < 1000
