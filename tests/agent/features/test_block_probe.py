"""The block probe: every class of disk, and the rule that only proven-free disks are Eligible."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from kvtune_agent.features.block import probe as block
from kvtune_agent.wiring import probe_host
from support.hosttree import HostTree

MPATH_UUID = "mpath-3600a098038303053453f463045535a31"
#: The LUN of MPATH_UUID as each of its paths shows it in device/wwid.
PATH_WWID = "naa.600a098038303053453f463045535a31"
WWID = "naa.5000c500a1b2c3d4"


def _at(offset: int, magic: bytes, size: int = 70_000) -> bytes:
    data = bytearray(size)
    data[offset:offset + len(magic)] = magic
    return bytes(data)


def _os_disk(tree: HostTree) -> None:
    tree.disk("sda").mount("/dev/sda", "/")


def _boot_and_swap_partitions(tree: HostTree) -> None:
    tree.disk("sda").partition("sda", "sda1").partition("sda", "sda2")
    tree.mount("/dev/sda1", "/boot", "vfat").swap("/dev/sda2")


def _root_on_lvm(tree: HostTree) -> None:
    tree.disk("sda").partition("sda", "sda1").holder("sda/sda1", "dm-0")
    tree.disk("dm-0", dm=("vg-root", "LVM-abc")).mount("/dev/mapper/vg-root", "/", "xfs")


def _data_mount(tree: HostTree) -> None:
    tree.disk("sda").mount("/dev/sda", "/srv/data", "xfs")


def _partitions_only(tree: HostTree) -> None:
    tree.disk("sda").partition("sda", "sda1").partition("sda", "sda2")


def _active_lvm_member(tree: HostTree) -> None:
    tree.disk("sda").holder("sda", "dm-1").disk("dm-1", dm=("vg-lv", "LVM-xyz"))


def _multipath(tree: HostTree) -> None:
    tree.disk("sda").disk("sdb").holder("sda", "dm-2").holder("sdb", "dm-2")
    tree.disk("dm-2", dm=("mpatha", MPATH_UUID))


CLASS_CASES = [
    pytest.param(_os_disk, "sda", "System", "/ on sda", id="a disk mounted at / backs the OS"),
    pytest.param(_boot_and_swap_partitions, "sda", "System", "/boot on sda1, [SWAP] on sda2",
                 id="a disk with /boot and swap partitions backs the OS"),
    pytest.param(_root_on_lvm, "sda", "System", "/ on dm-0",
                 id="a disk under the LVM volume holding / backs the OS"),
    pytest.param(_root_on_lvm, "dm-0", "System", "/ on dm-0",
                 id="the LVM volume holding / backs the OS"),
    pytest.param(_data_mount, "sda", "InUse", "mounted: /srv/data on sda",
                 id="a disk mounted elsewhere is in use"),
    pytest.param(_partitions_only, "sda", "InUse", "has partitions sda1, sda2",
                 id="a partitioned disk with nothing mounted is in use"),
    pytest.param(_active_lvm_member, "sda", "InUse", "held by dm-1 (vg-lv)",
                 id="an active LVM member is in use through its holder"),
    pytest.param(_active_lvm_member, "dm-1", "InUse", "an LVM logical volume, not a raw LUN",
                 id="an unmounted LVM volume is not a raw LUN"),
    pytest.param(_multipath, "sda", "InUse", "a path of multipath map dm-2 (mpatha)",
                 id="a multipath path is in use by its map"),
    pytest.param(_multipath, "dm-2", "Eligible", "a free raw LUN",
                 id="a free multipath map is an eligible LUN"),
    pytest.param(lambda t: t.disk("sda", wwid=WWID), "sda", "Eligible", "a free raw LUN",
                 id="a zeroed disk with nothing on it is an eligible LUN"),
    pytest.param(lambda t: t.disk("sda", content=None), "sda", "Unknown", "cannot read /dev/sda",
                 id="an unreadable device node is unknown, never eligible"),
    pytest.param(lambda t: t.file("/sys/block/sda/size", 1), "sda", "Unknown",
                 "cannot read /dev/sda", id="a missing device node is unknown, never eligible"),
    pytest.param(lambda t: t.disk("sda", content=b"\x01" * 4096), "sda", "Unknown",
                 "does not recognise", id="unrecognised data is unknown, never eligible"),
    pytest.param(lambda t: t.disk("sda", read_only=True), "sda", "Unknown", "read-only",
                 id="a read-only disk is unknown"),
    pytest.param(lambda t: t.disk("sda", size_bytes=0), "sda", "Unknown", "size 0",
                 id="an empty drive is unknown"),
]


@pytest.mark.parametrize(("build", "name", "classification", "reason"), CLASS_CASES)
def test_classification(
    tmp_path: Path, build: Callable[[HostTree], None], name: str, classification: str,
    reason: str,
) -> None:
    tree = HostTree(tmp_path)
    build(tree)

    devices = {d.name: d for d in block.probe(tree.fs()).devices}

    assert devices[name].classification == classification
    assert reason in devices[name].reason


@pytest.mark.parametrize(
    ("content", "signature"),
    [
        pytest.param(_at(0, b"LABELONE"), "LVM2_member", id="LVM label in sector 0"),
        pytest.param(_at(512, b"LABELONE"), "LVM2_member", id="LVM label in sector 1"),
        pytest.param(_at(1080, b"\x53\xef"), "ext2/3/4", id="ext magic at 1080"),
        pytest.param(_at(0, b"XFSB"), "xfs", id="xfs at 0"),
        pytest.param(_at(4086, b"SWAPSPACE2"), "swap", id="swap at 4086"),
        pytest.param(_at(65600, b"_BHRfS_M"), "btrfs", id="btrfs at 65600"),
        pytest.param(_at(512, b"EFI PART"), "gpt", id="gpt header at 512"),
        pytest.param(_at(510, b"\x55\xaa"), "dos", id="mbr boot signature at 510"),
        pytest.param(_at(0, b"LUKS\xba\xbe"), "luks", id="luks header"),
        pytest.param(_at(4096, b"\xfc\x4e\x2b\xa9"), "linux_raid_member", id="md superblock 1.2"),
    ],
)
def test_a_signature_makes_an_idle_disk_in_use(
    tmp_path: Path, content: bytes, signature: str
) -> None:
    tree = HostTree(tmp_path).disk("sdb", content=content)

    [device] = block.probe(tree.fs()).devices

    assert (device.classification, device.signature) == ("InUse", signature)
    assert "wipefs -a /dev/sdb" in device.reason


def test_an_unreadable_device_node_is_a_problem_naming_it(tmp_path: Path) -> None:
    report = probe_host(HostTree(tmp_path).disk("sdc", content=None).fs())

    paths = {p.path for p in report.problems if p.feature == "Block"}
    assert paths == {"/dev/sdc"}
    assert report.block.devices[0].signature is None


def test_devices_in_use_are_never_opened(tmp_path: Path) -> None:
    # A multipath path whose node would fail to open: classified from sysfs alone.
    tree = HostTree(tmp_path).disk("sda", content=None).holder("sda", "dm-2")
    tree.disk("dm-2", dm=("mpatha", MPATH_UUID))
    fs = tree.fs()

    block.probe(fs)

    assert fs.take_issues() == []


def test_identity_fields_are_reported(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sdd", wwid="0x5000c500a1b2c3d4", rotational=True,
                                   size_bytes=4 * 2**40)
    tree.disk("dm-2", dm=("mpatha", MPATH_UUID))

    devices = {d.name: d for d in block.probe(tree.fs()).devices}

    sdd = devices["sdd"]
    assert (sdd.path, sdd.kind, sdd.size_bytes, sdd.rotational) == (
        "/dev/sdd", "Disk", 4 * 2**40, True)
    assert (sdd.model, sdd.vendor, sdd.wwid) == ("PERC H755", "DELL", "0x5000c500a1b2c3d4")
    assert sdd.by_id == ["wwn-0x5000c500a1b2c3d4"]
    assert (devices["dm-2"].kind, devices["dm-2"].dm_name, devices["dm-2"].wwid) == (
        "Multipath", "mpatha", MPATH_UUID.removeprefix("mpath-"))


def test_loop_ram_zram_and_optical_devices_are_counted_not_listed(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sda")
    for name in ("loop0", "loop1", "ram0", "zram0", "sr0"):
        tree.disk(name)

    found = block.probe(tree.fs())

    assert [d.name for d in found.devices] == ["sda"]
    assert found.skipped == {"loop": 2, "ram": 1, "zram": 1, "sr": 1}


def test_mountpoints_with_escaped_spaces_are_decoded(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sda").mount("/dev/sda", "/mnt/my\\040disk")

    [device] = block.probe(tree.fs()).devices

    assert device.mountpoints == ["/mnt/my disk"]


def test_a_root_shown_as_dev_root_is_traced_through_its_device_number(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sda").partition("sda", "sda1").mount("/dev/root", "/")
    dev = os.stat(tmp_path).st_dev
    tree.link(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}", "/sys/block/sda/sda1")

    [device] = block.probe(tree.fs()).devices

    assert (device.classification, device.reason) == ("System", "backs the OS: / on sda1")


# -- one LUN, one candidate -----------------------------------------------------------------


def test_paths_of_one_lun_with_no_multipath_map_are_never_eligible(tmp_path: Path) -> None:
    # Before multipathd assembles its map: two paths, each looking like a free disk.
    tree = HostTree(tmp_path).disk("sda", wwid=PATH_WWID).disk("sdb", wwid=PATH_WWID)

    devices = block.probe(tree.fs()).devices

    assert [d.classification for d in devices] == ["Unknown", "Unknown"]
    assert "LUN 600a098038303053453f463045535a31 is on several devices: sda, sdb are paths " \
        "to it and no multipath map holds them" in devices[0].reason
    assert "configure multipathd" in devices[0].reason


def test_a_path_its_multipath_map_does_not_hold_yet_is_not_a_second_lun(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    _multipath(tree)
    tree.disk("sdc", wwid=PATH_WWID)  # a third path, just appeared: the map is not reloaded

    devices = {d.name: d for d in block.probe(tree.fs()).devices}

    assert devices["dm-2"].classification == "Eligible"
    assert (devices["sdc"].classification, devices["sdc"].reason) == ("InUse", (
        f"a path of LUN {PATH_WWID}, whose multipath map is dm-2 (mpatha), though the map does "
        "not hold it (yet): the map is the LUN; check multipath -ll"))


def test_hidden_nvme_paths_leave_their_namespace_the_one_lun(tmp_path: Path) -> None:
    # Native NVMe multipath: the namespace and its paths show one wwid; the paths are hidden.
    tree = HostTree(tmp_path).disk("nvme0n1", wwid="eui.0025388b91b2c3d4")
    for path in ("nvme0c0n1", "nvme0c1n1"):
        tree.disk(path, wwid="eui.0025388b91b2c3d4", content=None)
        tree.file(f"/sys/block/{path}/hidden", 1)

    devices = {d.name: d for d in block.probe(tree.fs()).devices}

    assert devices["nvme0n1"].classification == "Eligible"
    assert (devices["nvme0c1n1"].classification, devices["nvme0c1n1"].reason) == ("InUse", (
        "a hidden path of NVMe namespace nvme0n1 (/sys/block/nvme0c1n1/hidden = 1): the "
        "namespace device is the LUN"))


# -- a stable name ----------------------------------------------------------------------------


def test_a_free_disk_no_by_id_name_links_to_is_not_eligible(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).disk("sdt")  # no wwid, no serial: udev made no by-id link

    [device] = block.probe(tree.fs()).devices

    assert (device.classification, device.by_id) == ("Unknown", [])
    assert device.reason.startswith("no /dev/disk/by-id name links to /dev/sdt: its kernel name "
                                    "can belong to another disk after a reboot")
    assert "udevadm info /dev/sdt" in device.reason


# -- the end of the disk, and short reads -----------------------------------------------------

#: Not a multiple of 8 sectors, nor of 128: md rounds its superblock's place down.
ODD_SIZE = 100 * 2**30 + 5 * 512
SECTORS = ODD_SIZE // 512
MD_MAGIC = (0xA92B4EFC).to_bytes(4, "little")


def _tail(offset: int, magic: bytes, size: int = ODD_SIZE) -> bytes:
    """The end of a disk of `size` bytes, from `offset` on, starting with `magic`."""
    return magic + bytes(size - offset - len(magic))


@pytest.mark.parametrize(
    ("tail", "signature"),
    [
        pytest.param(_tail(((SECTORS & ~7) - 16) * 512, MD_MAGIC), "linux_raid_member",
                     id="md superblock 1.0, 8 to 12 KiB before the end"),
        pytest.param(_tail(((SECTORS & ~127) - 128) * 512, MD_MAGIC), "linux_raid_member",
                     id="md superblock 0.90, in the last 128 KiB"),
        pytest.param(_tail(ODD_SIZE - 512, b"EFI PART"), "gpt",
                     id="a backup GPT header in the last LBA"),
        pytest.param(_tail(ODD_SIZE - 4096, b"EFI PART" + bytes(3584)), "gpt",
                     id="a backup GPT header in the last 4096-byte LBA"),
        pytest.param(_tail(ODD_SIZE - 1024, b"Intel Raid ISM Cfg Sig. "), "isw_raid_member",
                     id="Intel Matrix RAID metadata"),
        pytest.param(_tail(ODD_SIZE - 512, b"\xde\x11\xde\x11"), "ddf_raid_member",
                     id="a DDF RAID anchor"),
    ],
)
def test_metadata_at_the_end_of_a_disk_whose_start_is_zero_makes_it_in_use(
    tmp_path: Path, tail: bytes, signature: str
) -> None:
    tree = HostTree(tmp_path).disk("sdb", wwid=WWID, size_bytes=ODD_SIZE, tail=tail)

    [device] = block.probe(tree.fs()).devices

    assert (device.classification, device.signature) == ("InUse", signature)
    assert device.reason == (
        f"carries a {signature} signature at its end; if it is free, wipe it (wipefs -a /dev/sdb; "
        f"dd if=/dev/zero of=/dev/sdb bs=512 count=512 seek={SECTORS - 512})")


def test_unrecognised_data_at_the_end_of_a_disk_is_unknown_with_the_command_to_zero_it(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).disk("sdb", wwid=WWID, size_bytes=ODD_SIZE,
                                   tail=b"\x01" + bytes(200 * 1024))

    [device] = block.probe(tree.fs()).devices

    assert (device.classification, device.signature) == ("Unknown", "unrecognised")
    assert device.reason.startswith("the last 256 KiB of /dev/sdb hold data kvtune does not "
                                    "recognise")
    assert f"dd if=/dev/zero of=/dev/sdb bs=512 count=512 seek={SECTORS - 512})" in device.reason


def test_a_disk_whose_start_reads_short_is_unknown_never_eligible(tmp_path: Path) -> None:
    # sysfs says 100 GiB; the node gives 4 KiB, all zero, and then end of file.
    tree = HostTree(tmp_path).disk("sdb", wwid=WWID).file("/dev/sdb", bytes(4096))

    [device] = block.probe(tree.fs()).devices

    assert (device.classification, device.signature) == ("Unknown", None)
    assert device.reason.startswith(
        "reading 65608 bytes at offset 0 of /dev/sdb returned only 4096, although "
        "/sys/block/sdb/size gives 107374182400 bytes")
