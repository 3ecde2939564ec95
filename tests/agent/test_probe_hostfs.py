"""HostFS: reads that never raise, issues that name the path, links resolved inside the root."""

from __future__ import annotations

from pathlib import Path

from kvtune_agent.host.hostfs import Process
from support.hosttree import HostTree


def test_a_missing_file_is_none_and_no_issue(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).fs()

    assert fs.read_text("/proc/meminfo") is None
    assert fs.read_int("/sys/x/y") is None
    assert fs.read_bytes("/dev/sda") is None
    assert fs.list_dir("/sys/block") == []
    assert fs.readlink("/sys/class/net/eth0") is None
    assert fs.take_issues() == []


def test_an_unreadable_file_is_none_and_an_issue_naming_it(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).unreadable("/dev/cpu/0/msr").fs()

    assert fs.read_bytes("/dev/cpu/0/msr", 0x48B, 8) is None
    [issue] = fs.take_issues()
    assert (issue.path, issue.unreadable) == ("/dev/cpu/0/msr", True)
    assert issue.detail.startswith("cannot read")
    assert fs.take_issues() == []


def test_a_non_integer_is_none_and_an_issue_quoting_it(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).file("/sys/module/kvm_intel/parameters/ple_gap", "Y").fs()

    assert fs.read_int("/sys/module/kvm_intel/parameters/ple_gap") is None
    [issue] = fs.take_issues()
    assert (issue.unreadable, issue.detail) == (False, "expected an integer, found 'Y'")


def test_bytes_are_read_at_an_offset(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).file("/dev/sdb", b"0123456789").fs()

    assert fs.read_bytes("/dev/sdb", 4, 3) == b"456"


def test_absolute_links_resolve_inside_the_root_not_this_process_root(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file("/usr/lib/systemd/system/numad.service", "x")
    tree.link("/etc/systemd/system/numad.service", "/usr/lib/systemd/system/numad.service",
              absolute=True)

    assert tree.fs().resolve("/etc/systemd/system/numad.service") == (
        "/usr/lib/systemd/system/numad.service")


def test_relative_link_chains_resolve_like_sysfs(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0")

    assert tree.fs().resolve("/sys/class/net/ens1f0/device") == (
        "/sys/devices/pci0000:00/0000:3b:00.0")


def test_a_link_loop_resolves_to_none_with_an_issue(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).link("/a", "/b").link("/b", "/a")
    fs = tree.fs()

    assert fs.resolve("/a/x") is None
    assert [i.detail for i in fs.take_issues()] == ["too many levels of symbolic links"]


def test_glob_returns_host_paths_including_dangling_links(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).link("/etc/systemd/system/multi-user.target.wants/numad.service",
                                   "/nowhere", absolute=True)

    assert tree.fs().glob("/etc/systemd/system/*.wants/numad.service") == [
        "/etc/systemd/system/multi-user.target.wants/numad.service"]


def test_pids_are_the_numeric_entries_of_proc(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(10, "a").process(2, "b").file("/proc/meminfo", "x")

    assert tree.fs().pids() == [2, 10]


def test_the_process_table_holds_each_pids_comm_and_arguments_in_pid_order(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).process(812, "bash", "bash", "/usr/sbin/ksmtuned")
    tree.process(2, "kthreadd").file("/proc/2/cmdline", b"")  # a kernel thread: no arguments
    tree.file("/proc/900/status", "Name:\tgone")  # ended while /proc was read

    table = tree.fs().processes()

    assert list(table) == [
        Process(2, "kthreadd", ()), Process(812, "bash", ("bash", "/usr/sbin/ksmtuned")),
    ]
    assert table.issues == ()


def test_what_the_process_table_could_not_read_travels_with_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).unreadable("/proc/7/cmdline").file("/proc/7/comm", "numad")
    fs = tree.fs()

    table = fs.processes()

    assert list(table) == [Process(7, "numad", ())]
    assert [(i.path, i.unreadable) for i in table.issues] == [("/proc/7/cmdline", True)]
    assert fs.take_issues() == []  # the table's users report them, where they matter
