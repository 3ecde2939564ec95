"""Device reads under a deadline: a disk whose I/O hangs is Unknown, and never stalls the probe.

A FIFO with no writer blocks open() for reading for real, as a LUN whose paths are down blocks a
read: no mock. The `hanging` fixture opens each FIFO's write end at the end, so that no test
leaves a reader thread blocked behind it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvtune_agent.features.block import probe as block
from kvtune_agent.host.hostfs import HostFS, HungRead
from kvtune_agent.wiring import probe_host
from support.hosttree import HostTree

Hanging = Callable[[HostTree, str], None]
READER = "kvtune device reads"


def _readers() -> int:
    return sum(thread.name == READER for thread in threading.enumerate())


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    """Makes a device node of a tree one whose reads hang; unblocks them all at the end."""
    fifos: list[Path] = []

    def make(tree: HostTree, path: str) -> None:
        real = tree.root / path.lstrip("/")
        real.parent.mkdir(parents=True, exist_ok=True)
        real.unlink(missing_ok=True)
        os.mkfifo(real)
        fifos.append(real)

    yield make
    deadline = time.monotonic() + 5
    while _readers():
        for fifo in fifos:  # a writer lets a blocked open() return; its read then ends at EOF
            with contextlib.suppress(OSError):  # ENXIO: no reader waits there (any more)
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert time.monotonic() < deadline, "a device read is still blocked"
        time.sleep(0.01)


def test_a_device_whose_reads_hang_is_unknown_within_about_the_deadline(
    tmp_path: Path, hanging: Hanging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(block, "READ_TIMEOUT", 0.2)
    tree = HostTree(tmp_path).disk("sdb")
    hanging(tree, "/dev/sdb")

    started = time.monotonic()
    report = probe_host(tree.fs())

    # A read that did not give up would block until the fixture frees it: far above 3 s.
    assert 0.2 <= time.monotonic() - started < 3
    [device] = report.block.devices
    assert (device.classification, device.signature) == ("Unknown", None)
    assert device.reason.startswith("reading the first 64 KiB and last 256 KiB of /dev/sdb did "
                                    "not finish within 0.2 s: its I/O hangs")
    assert "multipath -ll" in device.reason and "iscsiadm -m session" in device.reason
    # One finding, with that reason; not a "cannot read, run as root" one.
    [problem] = [p for p in report.problems if p.feature == "Block"]
    assert (problem.path, problem.message) == ("/dev/sdb", f"sdb is not handed to VMs: "
                                                           f"{device.reason}")


def test_a_device_still_hanging_is_reported_the_same_at_once_without_a_second_read(
    tmp_path: Path, hanging: Hanging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(block, "READ_TIMEOUT", 1.0)
    tree = HostTree(tmp_path).disk("sdb")
    hanging(tree, "/dev/sdb")
    [first] = block.probe(tree.fs()).devices
    assert _readers() == 1

    started = time.monotonic()
    [second] = block.probe(HostFS(tmp_path)).devices  # a new HostFS knows it hangs too

    # Half the deadline, which a wait would take whole: room for a loaded machine.
    assert time.monotonic() - started < 0.5
    assert _readers() == 1  # the first read, still blocked; no other began
    assert (second.classification, second.reason) == ("Unknown", first.reason)


def test_devices_beside_a_hanging_one_are_classified_as_ever(
    tmp_path: Path, hanging: Hanging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(block, "READ_TIMEOUT", 0.2)
    lvm = bytearray(4096)
    lvm[512:520] = b"LABELONE"
    tree = HostTree(tmp_path).disk("sda", wwid="naa.5000c500a1b2c3d4").disk("sdb")
    tree.disk("sdc", content=bytes(lvm))
    tree.disk("sdd", content=None).disk("sde", content=None).mount("/dev/sde", "/srv")
    hanging(tree, "/dev/sdb")
    fs = tree.fs()

    devices = {d.name: d for d in block.probe(fs).devices}

    assert {name: (d.classification, d.signature) for name, d in devices.items()} == {
        "sda": ("Eligible", "none"),
        "sdb": ("Unknown", None),
        "sdc": ("InUse", "LVM2_member"),
        "sdd": ("Unknown", None),
        "sde": ("InUse", None),
    }
    assert "did not finish within 0.2 s" in devices["sdb"].reason
    assert "cannot read /dev/sdd" in devices["sdd"].reason
    assert [issue.path for issue in fs.take_issues()] == ["/dev/sdd"]  # sde was never opened


def test_devices_that_hang_together_cost_one_more_deadline_not_one_each(
    tmp_path: Path, hanging: Hanging
) -> None:
    tree = HostTree(tmp_path).file("/dev/sda", b"a").file("/dev/sdb", b"b")
    stuck = [f"/dev/sd{letter}" for letter in "pqrstu"]
    for path in stuck:
        hanging(tree, path)
    paths = [stuck[0], "/dev/sda", *stuck[1:], "/dev/sdb", "/dev/sdz"]

    started = time.monotonic()
    heads = tree.fs().read_devices(dict.fromkeys(paths, ((0, 1),)), timeout=0.5)

    # The first hang costs a deadline, the five after it one more between them (about 1 s in
    # all), not one each (3 s): 2 s leaves room for a loaded machine.
    assert time.monotonic() - started < 2
    assert heads == {
        **{path: HungRead(path, 0.5) for path in stuck},
        "/dev/sda": (b"a",), "/dev/sdb": (b"b",), "/dev/sdz": None,
    }
    assert list(heads) == paths


def test_a_device_is_read_again_once_its_hung_read_returns(
    tmp_path: Path, hanging: Hanging
) -> None:
    tree = HostTree(tmp_path)
    hanging(tree, "/dev/sdb")
    fs = tree.fs()
    assert fs.read_devices({"/dev/sdb": [(0, 8)]}, timeout=0.1) == {
        "/dev/sdb": HungRead("/dev/sdb", 0.1)}

    fifo = tmp_path / "dev/sdb"
    deadline = time.monotonic() + 5
    while _readers():  # the kernel returns at last: here, a writer comes and goes
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fifo.unlink()
    tree.file("/dev/sdb", b"12345678")

    assert fs.read_devices({"/dev/sdb": [(0, 8), (6, 4)]}, timeout=5) == {
        "/dev/sdb": (b"12345678", b"78")}  # the second region short: the device ends there


def test_a_device_whose_read_hangs_is_not_read_again_by_any_name_or_any_read(
    tmp_path: Path, hanging: Hanging
) -> None:
    # One registry of hung calls, keyed by the real path: a plain read of the device, or a
    # device read through its /dev/disk/by-id link, would block behind the hung one.
    tree = HostTree(tmp_path)
    hanging(tree, "/dev/sdb")
    link = tmp_path / "dev/disk/by-id/wwn-0x5000c500a1b2c3d4"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../sdb")
    fs = tree.fs()
    assert fs.read_devices({"/dev/sdb": [(0, 8)]}, timeout=0.1) == {
        "/dev/sdb": HungRead("/dev/sdb", 0.1)}

    started = time.monotonic()
    by_id = "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"
    assert fs.read_devices({by_id: [(0, 8)]}, timeout=2) == {by_id: HungRead(by_id, 2)}
    assert fs.read_bytes("/dev/sdb", 0, 8) is None

    # Well short of the 2 s a read behind the hung one would wait: nothing waited on.
    assert time.monotonic() - started < 1 and _readers() == 1
    [issue] = fs.take_issues()
    assert issue.path == "/dev/sdb" and "an earlier write or read of it has not returned" in (
        issue.detail)
