"""HostFS writes: deadline, read-back, refusals named with their path, atomic regular files."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path

import pytest
from kvtune_agent.host.hostfs import HostCommandError, HostFS, HostWriteError
from support.hosttree import HostTree, intel_two_socket

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
NR_1G_NODE0 = "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"


def test_a_value_is_written_and_read_back(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).file("/sys/kernel/mm/ksm/run", 1).fs()

    result = fs.write("/sys/kernel/mm/ksm/run", "0", timeout=5)

    assert (result.outcome, result.read_back) == ("Applied", "0")
    assert (tmp_path / "sys/kernel/mm/ksm/run").read_text() == "0\n"


def test_a_choice_file_reads_back_its_bracketed_selection(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).thp("never")

    result = tree.kernel().write(THP, "madvise", timeout=5)

    assert (result.outcome, result.read_back) == ("Applied", "madvise")
    assert (tmp_path / THP.lstrip("/")).read_text() == "always [madvise] never\n"


def test_a_missing_kernel_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    result = HostFS(tmp_path).write("/sys/kernel/mm/ksm/run", "0", timeout=5)

    assert result.outcome == "Failed"
    assert "/sys/kernel/mm/ksm/run" in result.message and "ENOENT" in result.message
    assert not (tmp_path / "sys/kernel/mm/ksm/run").exists()


def test_a_directory_in_place_of_the_file_is_refused_with_its_path(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).unreadable("/sys/kernel/mm/ksm/run").fs()

    result = fs.write("/sys/kernel/mm/ksm/run", "0", timeout=5)

    assert result.outcome == "Failed"
    assert result.message.startswith("writing '0' to /sys/kernel/mm/ksm/run failed")
    assert "EISDIR" in result.message


@pytest.mark.parametrize(("code", "advice"), [
    (errno.EINVAL, "out of range or not supported"),
    (errno.EBUSY, "drain the node"),
    (errno.EPERM, "run the agent privileged"),
    (errno.EROFS, "read-write"),
])
def test_a_write_the_kernel_refuses_says_why_and_what_to_do(
    tmp_path: Path, code: int, advice: str
) -> None:
    tree = HostTree(tmp_path).thp("never")

    result = tree.kernel(refuse={THP: code}).write(THP, "always", timeout=5)

    assert result.outcome == "Failed"
    assert THP in result.message and advice in result.message


def test_a_hugepage_count_the_kernel_only_partly_allocates_is_partial(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)

    result = tree.kernel(hugepage_limit=20).write(NR_1G_NODE0, "24", timeout=5)

    assert (result.outcome, result.read_back) == ("Partial", "20")
    assert "asked for 24" in result.message and "holds 20" in result.message


def test_a_write_that_reads_back_otherwise_fails(tmp_path: Path) -> None:
    class Stubborn(HostFS):
        def _store(self, path: str, value: str) -> None:
            pass  # the kernel ignored it

    HostTree(tmp_path).file("/sys/kernel/mm/ksm/run", 1)

    result = Stubborn(tmp_path).write("/sys/kernel/mm/ksm/run", "0", timeout=5)

    assert result.outcome == "Failed"
    assert "reads back '1'" in result.message


def test_a_write_that_blocks_past_its_deadline_fails_and_is_not_retried_while_it_hangs(
    tmp_path: Path,
) -> None:
    # A FIFO with no reader blocks open() for writing: a real write that does not return,
    # like a driver stuck creating VFs.
    path = "/sys/class/net/ens1f0/device/sriov_numvfs"
    real = tmp_path / path.lstrip("/")
    real.parent.mkdir(parents=True)
    os.mkfifo(real)
    fs = HostFS(tmp_path)

    started = time.monotonic()
    first = fs.write(path, "8", timeout=0.2)
    second = HostFS(tmp_path).write(path, "8", timeout=5)  # a new HostFS knows it hangs too

    assert time.monotonic() - started < 2
    assert first.outcome == "Failed" and "did not return within 0.2 s" in first.message
    assert second.outcome == "Failed" and "has not returned yet" in second.message
    assert path in first.message and path in second.message

    # Once the kernel returns, the path may be written again.
    assert _unblock(real) == b"8\n"
    deadline = time.monotonic() + 5
    while any(t.name == f"kvtune write {path}" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    real.unlink()
    real.write_text("0\n")
    assert fs.write(path, "8", timeout=5).outcome == "Applied"


def _unblock(fifo: Path) -> bytes:
    """Let the hung worker finish: a reader takes its write, a writer then ends its read-back."""
    deadline = time.monotonic() + 5
    data = b""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while not data.endswith(b"\n"):
            with contextlib.suppress(BlockingIOError):
                data += os.read(reader, 16)
            assert time.monotonic() < deadline
    finally:
        os.close(reader)
    while True:
        try:  # ENXIO until the worker waits to read back
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return data
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_a_regular_file_is_replaced_atomically_creating_its_directory(tmp_path: Path) -> None:
    fs = HostFS(tmp_path)

    fs.write_file("/var/lib/kvtune/journal.json", "{}\n")
    fs.write_file("/var/lib/kvtune/journal.json", '{"version": 1}\n')

    directory = tmp_path / "var/lib/kvtune"
    assert (directory / "journal.json").read_text() == '{"version": 1}\n'
    assert os.listdir(directory) == ["journal.json"]  # no temporary file left behind


def test_a_regular_file_that_cannot_be_written_raises_naming_it(tmp_path: Path) -> None:
    HostTree(tmp_path).file("/var/lib/kvtune", "a file where a directory should be")

    with pytest.raises(HostWriteError) as caught:
        HostFS(tmp_path).write_file("/var/lib/kvtune/journal.json", "{}\n")

    assert caught.value.path == "/var/lib/kvtune/journal.json"
    assert str(caught.value).startswith("writing /var/lib/kvtune/journal.json failed")


def test_removing_a_file_that_is_not_there_is_fine(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).file("/etc/modprobe.d/kvtune-ple.conf", "x").fs()

    fs.remove("/etc/modprobe.d/kvtune-ple.conf")
    fs.remove("/etc/modprobe.d/kvtune-ple.conf")

    assert not fs.exists("/etc/modprobe.d/kvtune-ple.conf")


# -- host commands ---------------------------------------------------------------------------


def test_a_host_command_that_hangs_is_killed_at_its_deadline(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file("/usr/sbin/tool", "#!/bin/sh\nsleep 30\n")
    os.chmod(tmp_path / "usr/sbin/tool", 0o755)

    with pytest.raises(HostCommandError, match=r"did not finish within 0\.5 s"):
        tree.fs().run(["/usr/sbin/tool", "--info"], timeout=0.5)


def test_a_host_root_other_than_slash_runs_commands_chrooted() -> None:
    assert HostFS(Path("/proc/1/root")).command_prefix == ("chroot", "/proc/1/root")
    assert HostFS(Path("/")).command_prefix == ()


def test_a_host_command_runs_the_trees_own_executable_and_reports_its_exit(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file("/usr/sbin/tool", "#!/bin/sh\necho \"got $1\"; exit 3\n")
    os.chmod(tmp_path / "usr/sbin/tool", 0o755)

    result = tree.fs().run(["/usr/sbin/tool", "x"], timeout=10)

    assert (result.code, result.output) == (3, "got x")
    assert result.failure() == "`/usr/sbin/tool x` failed (exit 3): got x"
