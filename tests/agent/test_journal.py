"""The host journal: originals recorded once, before a change; revert newest first, by entry."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from kvtune_agent.engine.journal import JOURNAL_PATH, Entry, Journal, JournalError
from kvtune_agent.host.systemd import UnitState
from kvtune_agent.wiring import SEQUENCE
from support.hosttree import HostTree

RUN = "/sys/kernel/mm/ksm/run"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
PLE_CONF = "/etc/modprobe.d/kvtune-ple.conf"


def _host(tmp_path: Path) -> HostTree:
    return HostTree(tmp_path).ksm(1).thp("always").systemctl()


def test_an_empty_host_has_an_empty_journal_and_no_file(tmp_path: Path) -> None:
    journal = Journal(HostTree(tmp_path).fs())

    assert journal.entries() == []
    assert not (tmp_path / JOURNAL_PATH.lstrip("/")).exists()


def test_the_first_original_recorded_wins(tmp_path: Path) -> None:
    journal = Journal(HostTree(tmp_path).fs())

    assert journal.record("sysfs", RUN, "1", "ksm/run")
    assert not journal.record("sysfs", RUN, "0", "ksm/run")  # kvtune's own value, later

    assert journal.entries() == [Entry("sysfs", RUN, "1", "ksm/run")]
    data = json.loads((tmp_path / JOURNAL_PATH.lstrip("/")).read_text())
    assert data == {"version": 1, "entries": [
        {"kind": "sysfs", "path": RUN, "original": "1", "step": "ksm/run"}]}


def test_revert_restores_every_original_newest_first_and_removes_the_journal(
    tmp_path: Path,
) -> None:
    tree = _host(tmp_path).unit("numad.service", wanted_by=["multi-user.target"])
    fs = tree.kernel()
    journal = Journal(fs)
    journal.record("sysfs", RUN, "1", "ksm/run")
    journal.record("sysfs", THP, "always", "thp")
    journal.record("unit", "numad.service", "enabled,inactive", "numad")
    journal.record("file", PLE_CONF, None, "ple/kvm_intel")
    fs.write(RUN, "0", timeout=5)
    fs.write(THP, "never", timeout=5)
    tree.systemd().set_state("numad.service", UnitState.parse("disabled,inactive"), timeout=10)
    fs.write_file(PLE_CONF, "options kvm_intel ple_gap=128\n")

    results = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=10)

    assert [(r.id, r.result) for r in results] == [
        ("revert/ple/kvm_intel", "Applied"), ("revert/numad", "Applied"),
        ("revert/thp", "Applied"), ("revert/ksm/run", "Applied")]
    assert fs.read_setting(RUN) == "1" and fs.read_setting(THP) == "always"
    assert tree.systemd().state("numad.service", timeout=10) == UnitState.parse("enabled,inactive")
    assert not fs.exists(PLE_CONF)
    assert journal.entries() == []
    assert not fs.exists(JOURNAL_PATH)


def test_reverting_an_empty_journal_does_nothing(tmp_path: Path) -> None:
    tree = _host(tmp_path)

    assert Journal(tree.fs()).revert(tree.systemd(), sequence=SEQUENCE, timeout=5) == []
    assert tree.systemctl_calls() == []


def test_a_restore_that_fails_keeps_its_entry_and_the_others_are_restored(
    tmp_path: Path,
) -> None:
    tree = _host(tmp_path)
    fs = tree.kernel(refuse={THP: errno.EINVAL})
    journal = Journal(fs)
    journal.record("sysfs", RUN, "1", "ksm/run")
    journal.record("sysfs", THP, "madvise", "thp")
    (tmp_path / RUN.lstrip("/")).write_text("0\n")

    results = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert [(r.id, r.result) for r in results] == [
        ("revert/thp", "Failed"), ("revert/ksm/run", "Applied")]
    assert THP in results[0].message and "EINVAL" in results[0].message
    assert fs.read_setting(RUN) == "1"
    assert journal.entries() == [Entry("sysfs", THP, "madvise", "thp")]


def test_a_held_entry_waits_and_stays(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    journal = Journal(tree.kernel())
    journal.record("sysfs", RUN, "1", "ksm/run")

    results = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5,
                             hold=lambda entry: "VMs still use it")

    assert [(r.result, r.message) for r in results] == [("Waiting", "VMs still use it")]
    assert len(journal.entries()) == 1


@pytest.mark.parametrize("content", [
    "{not json", '{"version": 2, "entries": []}', '{"version": 1}', '[]',
    '{"version": 1, "entries": {"kind": "sysfs"}}',
])
def test_a_malformed_journal_is_an_error_naming_it_and_what_to_do(
    tmp_path: Path, content: str
) -> None:
    journal = Journal(HostTree(tmp_path).file(JOURNAL_PATH, content).fs())

    with pytest.raises(JournalError) as caught:
        journal.record("sysfs", RUN, "1", "ksm/run")

    assert str(caught.value).startswith(f"the kvtune journal {JOURNAL_PATH} is malformed")
    assert "repair the file" in str(caught.value)
    assert (tmp_path / JOURNAL_PATH.lstrip("/")).read_text() == f"{content}\n"  # untouched


SDB = "/sys/devices/pci0000:00/0000:00:17.0/sdb"


def test_an_old_journal_naming_devices_by_kernel_name_still_reverts_by_stable_name(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0", total_vfs=8, vf_drivers=["iavf"] * 4)
    tree.disk("sdb", wwid="0x5000c500aaaa0001").file(f"{SDB}/queue/scheduler", "mq-deadline [none]")
    tree.file("/proc/stat", "btime 1700000000")  # booted before the journal was written
    tree.file(JOURNAL_PATH, json.dumps({"version": 1, "entries": [
        {"kind": "sysfs", "path": "/sys/class/net/ens1f0/device/sriov_numvfs", "original": "0",
         "step": "sriov/ens1f0"},
        {"kind": "sysfs", "path": "/sys/block/sdb/queue/scheduler", "original": "mq-deadline",
         "step": "block/sdb/scheduler"},
        {"kind": "sysfs", "path": "/sys/class/net/eth3/device/sriov_numvfs", "original": "2",
         "step": "sriov/eth3"},
    ]}))
    fs = tree.kernel()
    journal = Journal(fs)

    assert [e.path for e in journal.entries()] == [
        "/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs",
        "/dev/disk/by-id/wwn-0x5000c500aaaa0001/queue/scheduler",
        "/sys/class/net/eth3/device/sriov_numvfs"]
    results = {r.id: r for r in journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)}

    assert (results["revert/sriov/eth3"].result, results["revert/block/sdb/scheduler"].result,
            results["revert/sriov/ens1f0"].result) == ("Failed", "Applied", "Applied")
    assert "no device is called eth3 now" in results["revert/sriov/eth3"].message
    assert "Set '2' by hand on the device it came from" in results["revert/sriov/eth3"].message
    assert fs.read_setting("/sys/block/sdb/queue/scheduler") == "mq-deadline"
    assert fs.read_setting("/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs") == "0"
    # The vanished NIC's entry stays: its value is not restored, so the node is not done.
    assert [e.path for e in journal.entries()] == ["/sys/class/net/eth3/device/sriov_numvfs"]


def test_an_unreadable_entry_fails_alone_and_stays_while_the_others_are_reverted(
    tmp_path: Path,
) -> None:
    bad = {"kind": "sysfs", "path": THP, "original": 7, "step": "thp"}
    tree = _host(tmp_path).file(JOURNAL_PATH, json.dumps({"version": 1, "entries": [
        {"kind": "sysfs", "path": RUN, "original": "1", "step": "ksm/run"}, bad]}))
    (tmp_path / RUN.lstrip("/")).write_text("0\n")
    fs = tree.kernel()
    journal = Journal(fs)

    results = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert [(r.id, r.result) for r in results] == [
        ("revert/journal/entries[1]", "Failed"), ("revert/ksm/run", "Applied")]
    assert JOURNAL_PATH in results[0].message and "original" in results[0].message
    assert "Repair it" in results[0].message
    assert fs.read_setting(RUN) == "1"
    assert json.loads((tmp_path / JOURNAL_PATH.lstrip("/")).read_text())["entries"] == [bad]


def test_an_old_journal_is_saved_under_stable_names_as_soon_as_it_is_read(tmp_path: Path) -> None:
    # A settled node may not write its journal for months; the next reboot may give sdb to
    # another disk. The stable names must be on the host before that.
    tree = HostTree(tmp_path).disk("sdb", wwid="0x5000c500aaaa0001")
    tree.file(f"{SDB}/queue/scheduler", "mq-deadline [none]").file("/proc/stat", "btime 1700000000")
    tree.file(JOURNAL_PATH, json.dumps({"version": 1, "entries": [
        {"kind": "sysfs", "path": "/sys/block/sdb/queue/scheduler", "original": "mq-deadline",
         "step": "block/sdb/scheduler"}]}))
    fs = tree.kernel()

    Journal(fs).entries()

    saved = json.loads((tmp_path / JOURNAL_PATH.lstrip("/")).read_text())
    assert [e["path"] for e in saved["entries"]] == [
        "/dev/disk/by-id/wwn-0x5000c500aaaa0001/queue/scheduler"]


# -- migration only where the device is provably the same --------------------------------------


def _old_journal(tree: HostTree, *entries: tuple[str, str, str]) -> None:
    tree.file(JOURNAL_PATH, json.dumps({"version": 1, "entries": [
        {"kind": "sysfs", "path": path, "original": original, "step": step}
        for path, original, step in entries]}))


def test_kernel_names_from_before_the_boot_are_not_trusted_and_stay_pending(
    tmp_path: Path,
) -> None:
    # Two ports swapped names at the reboot: ens1f0 is now the port the admin runs 8 VFs on.
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.1", total_vfs=8, vf_drivers=["iavf"] * 8)
    _old_journal(tree, ("/sys/class/net/ens1f0/device/sriov_numvfs", "0", "sriov/ens1f0"))
    os_time = 1_700_000_000
    os.utime(tmp_path / JOURNAL_PATH.lstrip("/"), (os_time, os_time))
    tree.file("/proc/stat", f"btime {os_time + 3600}")  # booted an hour after the last write
    fs = tree.kernel()
    journal = Journal(fs)

    [result] = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert result.result == "Failed"
    assert "last written before the host booted" in result.message
    assert fs.read_setting("/sys/bus/pci/devices/0000:3b:00.1/sriov_numvfs") == "8"
    assert [e.path for e in journal.entries()] == ["/sys/class/net/ens1f0/device/sriov_numvfs"]


def test_a_disk_without_a_by_id_name_now_is_not_called_gone_and_stays(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sdb").file(f"{SDB}/queue/scheduler", "mq-deadline [none]")
    for link in (tmp_path / "dev/disk/by-id").glob("*"):
        link.unlink()
    tree.file("/proc/stat", "btime 1700000000")
    _old_journal(tree, ("/sys/block/sdb/queue/scheduler", "mq-deadline", "block/sdb/scheduler"))
    journal = Journal(tree.kernel())

    [result] = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert result.result == "Failed" and "sdb has no stable name" in result.message
    assert journal.count() == 1


def test_a_disk_that_is_gone_is_skipped_and_its_entry_dropped(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    _old_journal(tree, ("/dev/disk/by-id/wwn-0x5000c500aaaa0009/queue/scheduler", "none",
                        "block/wwn-0x5000c500aaaa0009/scheduler"))
    journal = Journal(tree.kernel())

    [result] = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert result.result == "Skipped" and "no longer exists" in result.message
    assert journal.count() == 0 and not (tmp_path / JOURNAL_PATH.lstrip("/")).exists()


def test_a_read_only_journal_never_writes_its_migration(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sdb", wwid="0x5000c500aaaa0001")
    tree.file("/proc/stat", "btime 1700000000")
    _old_journal(tree, ("/sys/block/sdb/queue/scheduler", "mq-deadline", "block/sdb/scheduler"))
    before = (tmp_path / JOURNAL_PATH.lstrip("/")).read_bytes()

    Journal(tree.fs(), read_only=True).entries()

    assert (tmp_path / JOURNAL_PATH.lstrip("/")).read_bytes() == before


# -- the journal is data, never a command --------------------------------------------------------


@pytest.mark.parametrize("target", ["/bin/sh", "/usr/sbin/update-grub", "/etc/default/grub"])
def test_a_bootargs_entry_naming_anything_but_kvtunes_targets_is_not_run(
    tmp_path: Path, target: str,
) -> None:
    marker = tmp_path / "ran"
    tree = _host(tmp_path).file(target, f"#!/bin/sh\ntouch {marker}\n")
    (tmp_path / target.lstrip("/")).chmod(0o755)
    tree.file(JOURNAL_PATH, json.dumps({"version": 1, "entries": [
        {"kind": "bootargs", "path": target, "original": "", "step": "boot/kernel-args"}]}))
    journal = Journal(tree.fs())

    [result] = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert result.result == "Failed" and "was not written by kvtune" in result.message
    assert not marker.exists() and journal.count() == 1


@pytest.mark.parametrize("content", [
    '{"version": true, "entries": []}', '{"version": 1.0, "entries": []}',
    '{"version": "1", "entries": []}',
])
def test_a_version_that_is_not_the_integer_1_is_malformed(tmp_path: Path, content: str) -> None:
    journal = Journal(HostTree(tmp_path).file(JOURNAL_PATH, content).fs())

    with pytest.raises(JournalError, match="is malformed"):
        journal.entries()
