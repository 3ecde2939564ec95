"""The block probe against real block devices, judged by the real tools: blkid, lsblk, wipefs.

Loop devices on sparse files carry what the real tools write (mkfs, pvcreate, cryptsetup,
sgdisk, mkswap), partitioned and not, mounted and not. One probe of the host sees them all, as
it would see a node's disks; each is then compared with what `blkid -p`, `lsblk -J` and
`wipefs` say about it, and a blank one is the only Eligible. Where the probe disagrees with the
tools, the test asserts the tools' answer and is an expected failure naming the fix.

The probe leaves loop devices out (they are never VM LUNs on a node); here they stand in for
disks, so the tier lets them through. This kernel has no partition-table parsers
(CONFIG_EFI_PARTITION and CONFIG_MSDOS_PARTITION unset): partitions are registered with
`partx -a` (libblkid), as a kernel with them would scan them.
"""

from __future__ import annotations

import json
import os
import typing as t
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kvtune_agent.features.block import probe as block
from kvtune_agent.host.hostfs import HostFS
from kvtune_api.v1alpha1.host import BlockDevice
from support.realhost import REALHOST

from .loops import Disk, Host, loops_as_disks, run

pytestmark = REALHOST

#: blkid's TYPE or PTTYPE -> the probe's signature name.
TOOL_NAMES = {
    "ext4": "ext2/3/4", "xfs": "xfs", "LVM2_member": "LVM2_member", "crypto_LUKS": "luks",
    "swap": "swap", "linux_raid_member": "linux_raid_member", "gpt": "gpt", "dos": "dos",
}


def _gpt(host: Host, disk: Disk, *partitions: str) -> None:
    run("sgdisk", *(f"-n{i}:0:{size}" for i, size in enumerate(partitions, 1)), disk.path)
    run("partx", "-a", disk.path)


def _blank(host: Host, disk: Disk) -> None:
    pass


def _ext4(host: Host, disk: Disk) -> None:
    run("mkfs.ext4", "-q", "-F", disk.path)


def _ext4_mounted(host: Host, disk: Disk) -> None:
    _ext4(host, disk)
    host.mount(disk, disk.path)


def _xfs(host: Host, disk: Disk) -> None:
    run("mkfs.xfs", "-q", "-f", disk.path)


def _lvm_pv(host: Host, disk: Disk) -> None:
    run("pvcreate", "-q", "-ff", "-y", disk.path)


def _luks(host: Host, disk: Disk) -> None:
    key = host.directory / "luks.key"
    key.write_text("kvtune realhost")
    # pbkdf2 at few iterations: the test wants the header, not a strong key.
    run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", "--key-file", key, disk.path)


def _swap(host: Host, disk: Disk) -> None:
    run("mkswap", "-q", disk.path)


def _swap_on(host: Host, disk: Disk) -> None:
    _swap(host, disk)
    run("swapon", "--priority", "-2", disk.path)  # below any swap the machine has
    disk.swap = True


def _gpt_partitions(host: Host, disk: Disk) -> None:
    _gpt(host, disk, "+16M", "0")


def _gpt_ext4_mounted(host: Host, disk: Disk) -> None:
    _gpt(host, disk, "+64M")
    run("mkfs.ext4", "-q", "-F", disk.part(1))
    host.mount(disk, disk.part(1))


def _gpt_primary_wiped(host: Host, disk: Disk) -> None:
    # The primary header (LBA 1) zeroed; the protective MBR and the backup at the end remain,
    # from which a kernel (and partx) rebuilds the partitions.
    run("sgdisk", "-n1:0:+16M", disk.path)
    run("dd", "if=/dev/zero", f"of={disk.path}", "bs=512", "seek=1", "count=1",
        "conv=notrunc,fsync", "status=none")
    run("partx", "-a", disk.path)


def _md(metadata: str) -> Callable[[Host, Disk], None]:
    def build(host: Host, disk: Disk) -> None:
        # A degraded mirror of one member: the superblock is what matters, at the start (1.2)
        # or at the end (1.0) of the member; the array is stopped again at once.
        array = f"/dev/md/kvtune-realhost-{metadata.replace('.', '')}"
        run("mdadm", "--create", array, "--run", "--level=1", "--raid-devices=2",
            f"--metadata={metadata}", disk.path, "missing")
        run("mdadm", "--stop", array)

    return build


def _no_md() -> str | None:
    if not os.path.exists("/proc/mdstat"):
        return ("this kernel has no md driver (/proc/mdstat is missing), so mdadm cannot create "
                "an array to write its superblock")
    return None


def _gpt_backup_only(host: Host, disk: Disk) -> None:
    # The first MiB zeroed (dd over the start of a disk): only the backup GPT at the end is left,
    # which wipefs still lists and gdisk restores the partitions from.
    run("sgdisk", "-n1:0:+16M", disk.path)
    run("dd", "if=/dev/zero", f"of={disk.path}", "bs=1M", "count=1", "conv=notrunc,fsync",
        "status=none")


@dataclass(frozen=True)
class Case:
    build: Callable[[Host, Disk], None]
    classification: str
    #: Words the probe's reason must hold (with {disk} for the device's name).
    reason: str
    xfail: str | None = None
    #: Why this machine cannot build the case, if it cannot (then the test skips with it).
    unavailable: Callable[[], str | None] = lambda: None


CASES: dict[str, Case] = {
    "blank": Case(_blank, "Eligible", "a free raw LUN"),
    "ext4": Case(_ext4, "InUse", "ext2/3/4 signature"),
    "ext4 mounted": Case(_ext4_mounted, "InUse", "mounted:"),
    "xfs": Case(_xfs, "InUse", "xfs signature"),
    "LVM PV": Case(_lvm_pv, "InUse", "LVM2_member signature"),
    "LUKS": Case(_luks, "InUse", "luks signature"),
    "swap": Case(_swap, "InUse", "swap signature"),
    "swap on": Case(_swap_on, "System", "[SWAP] on {disk}"),
    "md 1.2": Case(_md("1.2"), "InUse", "linux_raid_member signature", unavailable=_no_md),
    # md 1.0 keeps its superblock at the end of the member.
    "md 1.0": Case(_md("1.0"), "InUse", "linux_raid_member", unavailable=_no_md),
    "GPT": Case(_gpt_partitions, "InUse", "has partitions {disk}p1, {disk}p2"),
    "GPT, ext4 partition mounted": Case(_gpt_ext4_mounted, "InUse", "on {disk}p1"),
    "GPT, primary header wiped": Case(_gpt_primary_wiped, "InUse", "has partitions {disk}p1"),
    "GPT, only the backup left": Case(_gpt_backup_only, "InUse", "gpt"),
}


@dataclass(frozen=True)
class Seen:
    """One device as the probe and the real tools saw it."""

    disk: Disk
    probe: BlockDevice
    blkid: dict[str, str]
    wipefs: list[dict[str, t.Any]]
    lsblk: dict[str, t.Any]


def _blkid(path: str) -> dict[str, str]:
    found = run("blkid", "-p", "-o", "export", path, check=False)
    if found.returncode == 2:  # nothing found
        return {}
    assert found.returncode == 0, found.stderr
    return dict(line.split("=", 1) for line in found.stdout.splitlines() if "=" in line)


def _wipefs(path: str) -> list[dict[str, t.Any]]:
    # Without -a wipefs only lists; --no-act all the same, in case.
    listed = run("wipefs", "--no-act", "--json", path).stdout
    return list(json.loads(listed)["signatures"]) if listed.strip() else []


def _lsblk(path: str) -> dict[str, t.Any]:
    listed = run("lsblk", "--json", "--output", "NAME,TYPE,MOUNTPOINTS", path).stdout
    [device] = json.loads(listed)["blockdevices"]
    return dict(device)


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Seen]]:
    """Every case built on a loop device of its own, then one probe of the host."""
    host = Host(tmp_path_factory.mktemp("disks"))
    try:
        disks = {}
        for name, case in CASES.items():
            if case.unavailable():
                continue
            disks[name] = disk = host.disk(name.replace(" ", "-").replace(",", ""))
            case.build(host, disk)
        with loops_as_disks():  # see the module docstring
            report = block.probe(HostFS(Path("/")))
        probed = {device.path: device for device in report.devices}
        yield {name: Seen(disk, probed[disk.path], _blkid(disk.path), _wipefs(disk.path),
                          _lsblk(disk.path)) for name, disk in disks.items()}
    finally:
        host.close()


def _params() -> list[t.Any]:
    return [pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                         if c.xfail else []) for name, c in CASES.items()]


def _tools_see_nothing(seen: Seen) -> bool:
    return not seen.blkid.keys() - {"DEVNAME"} and not seen.wipefs and not seen.lsblk.get(
        "children") and seen.lsblk["mountpoints"] in ([], [None])


@pytest.mark.parametrize("case", _params())
def test_the_probe_classifies_a_real_disk_as_the_real_tools_see_it(
    seen: dict[str, Seen], case: str,
) -> None:
    expected = CASES[case]
    why = expected.unavailable()
    if why:
        pytest.skip(why)
    found = seen[case]
    device = found.probe

    assert (device.classification == "Eligible") == _tools_see_nothing(found), (
        device.reason, found.blkid, found.wipefs, found.lsblk)
    assert device.classification == expected.classification, device.reason
    assert expected.reason.format(disk=found.disk.name) in (device.reason or "")
    children = found.lsblk.get("children", [])
    assert device.partitions == [child["name"] for child in children]
    mounted = {m for d in [found.lsblk, *children] for m in d["mountpoints"] if m}
    assert set(device.mountpoints) == mounted
    if device.signature not in (None, "none"):  # read from the disk: as blkid names it
        # blkid -p gives up on a GPT whose primary header is gone; wipefs still lists it.
        listed = [s.get("type") for s in found.wipefs]
        tool = found.blkid.get("TYPE") or found.blkid.get("PTTYPE") or next(iter(listed), None)
        assert device.signature == TOOL_NAMES.get(tool or "", tool)


def test_a_blank_disk_is_the_only_eligible_one(seen: dict[str, Seen]) -> None:
    eligible = [name for name, found in seen.items() if found.probe.classification == "Eligible"]

    assert eligible == ["blank"]
