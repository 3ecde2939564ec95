"""Whole block devices, classified for use as raw VM LUNs: one LUN per VM disk, nothing underneath.

Handing a disk that holds data to a VM destroys that data, so the rule is conservative: a device
is Eligible only when it is proven free (no partitions, holders, mounts or swap on it or on
anything built on it; its first 64 KiB and last 256 KiB readable and all zero, since md 1.0 and
a GPT's backup keep their metadata at the end), when it is the only device on the node showing
its LUN (a LUN reached through several paths is one LUN: its multipath map, not a path), and
when a /dev/disk/by-id name links to it (a volume must not follow a kernel name to another disk
after a reboot). Everything else is InUse, System (backs the OS) or Unknown, each with the
reason a person can check.

No blkid library: the few on-disk magics that matter are read directly through HostFS. The
signature is read only from devices still in the running after the structural checks, so paths
of a multipath map (which can block on I/O) and disks in use are never opened. Even so a read can
hang (a LUN whose paths are down): it has a deadline, and a device that overruns it is Unknown.
"""

from __future__ import annotations

import os
import re
import typing as t
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import BlockClass, BlockDevice, BlockReport, Problem
from kvtune_api.wwid import canonical_wwid

from ...host.hostfs import HostFS, HungRead, Region
from ...host.names import (
    SYS_BLOCK,
    best_id,
    by_id_names,
)

#: Devices that are never VM LUNs (loop, ramdisk, zram, optical); counted, not listed.
_SKIPPED = re.compile(r"^(loop|ram|zram|sr)[0-9]+$")
#: Mountpoints that make a device part of the OS (plus swap).
SYSTEM_MOUNTS = frozenset({"/", "/boot", "/boot/efi", "/usr", "/var"})
SWAP = "[SWAP]"
#: /sys/block/*/size counts 512-byte sectors, whatever the device's own block size.
SECTOR = 512
#: dm uuid prefix of multipath maps (LVM volumes use LVM-, dm-crypt CRYPT-).
MPATH = "mpath-"
#: The md superblock magic 0xa92b4efc, little-endian as x86 writes it.
MD_MAGIC = b"\xfc\x4e\x2b\xa9"
#: A hidden NVMe path device (nvme0c1n1) and the namespace device it is a path of (nvme0n1).
_NVME_PATH = re.compile(r"^(nvme[0-9]+)c[0-9]+(n[0-9]+)$")
#: (name, offset, magic), filesystems and containers before partition tables: a disk with a
#: filesystem straight on it can still carry a stale 0x55AA at 510.
SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("xfs", 0, b"XFSB"),
    ("ext2/3/4", 1080, b"\x53\xef"),
    ("btrfs", 65600, b"_BHRfS_M"),
    ("swap", 4086, b"SWAPSPACE2"),
    ("swap", 65526, b"SWAPSPACE2"),  # kernels with 64 KiB pages
    ("luks", 0, b"LUKS\xba\xbe"),
    ("bluestore", 0, b"bluestore block device"),
    ("linux_raid_member", 0, MD_MAGIC),  # md superblock 1.1
    ("linux_raid_member", 4096, MD_MAGIC),  # md superblock 1.2
    *(("LVM2_member", sector * 512, b"LABELONE") for sector in range(4)),
    ("gpt", 512, b"EFI PART"),
    ("dos", 510, b"\x55\xaa"),
)
#: Enough to see every magic above (btrfs ends at 65608).
SIGNATURE_BYTES = 65608
#: (name, its 512-byte sector from the device's size in sectors, magic): metadata kept at the end
#: of a disk, which survives a wipe of its start (a GPT whose primary header was zeroed still has
#: its backup). Offsets as the kernel's md driver and libblkid compute them.
TAIL_SIGNATURES: tuple[tuple[str, t.Callable[[int], int], bytes], ...] = (
    ("linux_raid_member", lambda sectors: (sectors & ~7) - 16, MD_MAGIC),  # md superblock 1.0
    ("linux_raid_member", lambda sectors: (sectors & ~127) - 128, MD_MAGIC),  # md 0.90
    ("gpt", lambda sectors: sectors - 1, b"EFI PART"),  # backup header in the last LBA
    ("gpt", lambda sectors: sectors - 8, b"EFI PART"),  # the same with 4096-byte LBAs
    ("isw_raid_member", lambda sectors: sectors - 2, b"Intel Raid ISM Cfg Sig. "),
    ("ddf_raid_member", lambda sectors: sectors - 1, b"\xde\x11\xde\x11"),  # DDF anchor
)
#: The end of a device that must be all zero too: every magic above (md 0.90 lies in the last
#: 128 KiB), and the whole of ZFS's last label.
TAIL_BYTES = 256 * 1024
#: Seconds the reads of a device's first 64 KiB and last 256 KiB may take together. A healthy
#: disk answers in milliseconds, a cold spinning one well within a second; a device whose I/O
#: hangs may never answer (SCSI retries take minutes, a multipath map with queue_if_no_path waits
#: for good), and the agent's cycle would wait with it. A few seconds tell the two apart and keep
#: a cycle short. A disk spinning up from standby can take longer: it shows as hung until its
#: read returns.
READ_TIMEOUT = 5.0
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """Something on a block device: a mounted filesystem or swap."""

    device: str
    target: str


def _mounts(fs: HostFS, dm_names: dict[str, str], known: set[str]) -> dict[str, list[str]]:
    """Kernel device name -> its mountpoints (and "[SWAP]"), as the host's init sees them.

    /proc/1/mounts, not /proc/self/mounts: the agent's own mount namespace is a container's.
    A source that names no known device (the kernel shows "/dev/root" for a root= mounted
    without an initramfs) is traced through the device number of its mountpoint instead.
    """
    text = fs.read_text("/proc/1/mounts") or fs.read_text("/proc/self/mounts") or ""
    entries = [line.split()[:2] for line in text.splitlines() if line.startswith("/dev/")]
    swaps = (fs.read_text("/proc/swaps") or "").splitlines()[1:]
    entries += [[line.split()[0], SWAP] for line in swaps if line.startswith("/dev/")]
    found: dict[str, list[str]] = {}
    for source, escaped in entries:
        target = _MOUNT_ESCAPE.sub(lambda m: chr(int(m[1], 8)), escaped)
        resolved = fs.resolve(source)
        name = os.path.basename(resolved or source)
        name = dm_names.get(name, name)  # /dev/mapper/<name> when the link is not in the tree
        if resolved is None and name not in known and target != SWAP:
            number = fs.device_number(target)
            by_number = fs.resolve(f"/sys/dev/block/{number}") if number else None
            name = os.path.basename(by_number) if by_number else name
        found.setdefault(name, []).append(target)
    return found


def stable_id(device: BlockDevice) -> str | None:
    """The by-id name that names the device for good: a wwn- name first; a dm-name- name last:
    multipath's user_friendly_names (mpatha) come from a bindings file, not from the LUN, and
    name another LUN once that file differs."""
    return best_id(device.by_id)


def _match(data: bytes, magics: t.Iterable[tuple[str, int, bytes]]) -> str:
    for name, offset, magic in magics:
        if offset >= 0 and data[offset:offset + len(magic)] == magic:
            return name
    return "none" if data == bytes(len(data)) else "unrecognised"


def signature(data: bytes) -> str:
    """What the first 64 KiB of a device hold: a signature's name, "none" or "unrecognised"."""
    return _match(data, SIGNATURES)


def tail_signature(data: bytes, size_bytes: int) -> str:
    """What `data`, the last bytes of a device of `size_bytes`, hold: as `signature`."""
    start = size_bytes - len(data)
    return _match(data, ((name, sector(size_bytes // SECTOR) * SECTOR - start, magic)
                         for name, sector, magic in TAIL_SIGNATURES))


def regions(size_bytes: int) -> tuple[Region, Region]:
    """(offset, length) of the head and of the tail of a device that are read."""
    tail = min(size_bytes, TAIL_BYTES)
    return (0, min(size_bytes, SIGNATURE_BYTES)), (size_bytes - tail, tail)


class _Tree:
    """The holder graph of /sys/block: which devices are built on which, and what is mounted."""

    def __init__(self, fs: HostFS, names: list[str]) -> None:
        self.fs = fs
        self.partitions = {name: self._partitions(name) for name in names}
        self.holders: dict[str, list[str]] = {}
        for disk, parts in self.partitions.items():
            self.holders[disk] = fs.list_dir(f"{SYS_BLOCK}/{disk}/holders")
            for part in parts:
                self.holders[part] = fs.list_dir(f"{SYS_BLOCK}/{disk}/{part}/holders")
        self.dm_names = {
            name: dm for name in names if (dm := fs.read_value(f"{SYS_BLOCK}/{name}/dm/name"))
        }
        self.dm_uuids = {name: fs.read_value(f"{SYS_BLOCK}/{name}/dm/uuid") or ""
                         for name in self.dm_names}
        #: Paths of native NVMe multipath (nvme0c1n1): their namespace device is the LUN.
        self.hidden = {name for name in names if fs.read_int(f"{SYS_BLOCK}/{name}/hidden") == 1}
        known = set(self.partitions) | {p for parts in self.partitions.values() for p in parts}
        self.mounts = _mounts(fs, {dm: name for name, dm in self.dm_names.items()}, known)

    def _partitions(self, disk: str) -> list[str]:
        # Partition directories are named after their disk (sda1, nvme0n1p1).
        return [
            entry for entry in self.fs.list_dir(f"{SYS_BLOCK}/{disk}")
            if entry.startswith(disk) and self.fs.exists(f"{SYS_BLOCK}/{disk}/{entry}/partition")
        ]

    def uses(self, disk: str) -> list[Mount]:
        """Mounts and swap on the disk, its partitions, and every device built on them."""
        found: list[Mount] = []
        seen: set[str] = set()
        pending = [disk, *self.partitions.get(disk, [])]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            found += [Mount(name, target) for target in self.mounts.get(name, [])]
            pending += self.holders.get(name, [])
            pending += self.partitions.get(name, [])
        return sorted(found, key=lambda m: (m.device, m.target))

    def all_holders(self, disk: str) -> list[str]:
        """Holders of the disk and of its partitions."""
        return sorted({h for n in [disk, *self.partitions[disk]] for h in self.holders.get(n, [])})


def _named(tree: _Tree, name: str) -> str:
    dm = tree.dm_names.get(name)
    return f"{name} ({dm})" if dm else name


def _structure(
    tree: _Tree, device: BlockDevice, uses: list[Mount]
) -> tuple[BlockClass, str] | None:
    """(classification, reason) from sysfs and the mounts; None when only its data can tell."""
    if device.name in tree.hidden:
        namespace = _NVME_PATH.sub(r"\1\2", device.name)
        return "InUse", (
            f"a hidden path of NVMe namespace {namespace} ({SYS_BLOCK}/{device.name}/hidden = "
            "1): the namespace device is the LUN")
    system = [m for m in uses if m.target in SYSTEM_MOUNTS or m.target == SWAP]
    if system:
        return "System", "backs the OS: " + ", ".join(
            f"{m.target} on {m.device}" for m in system)
    if uses:
        return "InUse", "mounted: " + ", ".join(f"{m.target} on {m.device}" for m in uses)
    multipath = [h for h in device.holders if tree.dm_uuids.get(h, "").startswith(MPATH)]
    if multipath:
        return "InUse", f"a path of multipath map {_named(tree, multipath[0])}"
    if device.holders:
        return "InUse", "held by " + ", ".join(_named(tree, h) for h in device.holders)
    if device.partitions:
        return "InUse", "has partitions " + ", ".join(device.partitions)
    if device.kind == "DeviceMapper":
        what = {"LVM": "an LVM logical volume", "CRYPT": "a dm-crypt mapping"}.get(
            tree.dm_uuids[device.name].partition("-")[0], "a device-mapper target")
        return "InUse", f"{what}, not a raw LUN"
    if device.kind == "Raid":
        return "InUse", "an md RAID array, not a raw LUN"
    if device.read_only:
        return "Unknown", f"read-only ({SYS_BLOCK}/{device.name}/ro = 1): a VM cannot write"
    if device.size_bytes == 0:
        return "Unknown", "size 0: no medium, or the LUN is not mapped"
    return None


def _contents(
    device: BlockDevice, found: tuple[bytes, ...] | HungRead | None
) -> tuple[BlockClass, str, str | None]:
    """(classification, reason, signature) of a device the structure left open, from its head
    and its tail (`regions`)."""
    if isinstance(found, HungRead):
        return "Unknown", (
            f"reading the first 64 KiB and last 256 KiB of {device.path} did not finish within "
            f"{found.timeout:g} s: its I/O hangs (a LUN whose paths or session are down, a "
            "failing disk?); check dmesg, multipath -ll, iscsiadm -m session. kvtune does not "
            "read it again until that read returns"), None
    if found is None:
        return "Unknown", (
            f"cannot read {device.path} to look for filesystem, LVM or partition signatures; "
            "run the agent privileged with the host's /dev"), None
    for (offset, length), data in zip(regions(device.size_bytes), found, strict=True):
        if len(data) < length:
            # The device ends before sysfs says it does, or its I/O failed part-way: what was
            # not read may hold anything.
            return "Unknown", (
                f"reading {length} bytes at offset {offset} of {device.path} returned only "
                f"{len(data)}, although {SYS_BLOCK}/{device.name}/size gives "
                f"{device.size_bytes} bytes: kvtune cannot tell what it holds; check dmesg and "
                "the device's size (blockdev --getsize64)"), None
    head, tail = found
    return _data(device, signature(head), tail_signature(tail, device.size_bytes))


def _data(device: BlockDevice, at_start: str, at_end: str) -> tuple[BlockClass, str, str]:
    """(classification, reason, signature) from what the head and the tail hold."""
    # wipefs erases only the magics it knows: what lies beside them (a backup GPT's partition
    # entries) stays, and the end of a disk must be all zero.
    zero_end = (f"dd if=/dev/zero of={device.path} bs=512 count={TAIL_BYTES // SECTOR} "
                f"seek={device.size_bytes // SECTOR - TAIL_BYTES // SECTOR}")
    if at_start not in ("none", "unrecognised"):
        return "InUse", (
            f"carries a {at_start} signature; if it is free, wipe it "
            f"(wipefs -a {device.path})"), at_start
    if at_end not in ("none", "unrecognised"):
        return "InUse", (
            f"carries a {at_end} signature at its end; if it is free, wipe it "
            f"(wipefs -a {device.path}; {zero_end})"), at_end
    if at_start == "unrecognised":
        return "Unknown", (
            f"the first 64 KiB of {device.path} hold data kvtune does not recognise; if it is "
            f"free, wipe it (wipefs -a {device.path}; dd zeros over the first 64 KiB)"), at_start
    if at_end == "unrecognised":
        return "Unknown", (
            f"the last 256 KiB of {device.path} hold data kvtune does not recognise; if it is "
            f"free, wipe it (wipefs -a {device.path}; {zero_end})"), at_end
    if not device.by_id:
        return "Unknown", (
            f"no /dev/disk/by-id name links to {device.path}: its kernel name can belong to "
            "another disk after a reboot or rescan, so a volume on it could reach the wrong "
            f"disk; check that udev runs on the host (udevadm info {device.path}) and that the "
            "agent sees the host's /dev/disk"), at_start
    return "Eligible", "no partitions, holders, mounts or signatures: a free raw LUN", at_start


def _one_device_per_lun(devices: Sequence[BlockDevice]) -> dict[str, tuple[BlockClass, str]]:
    """(classification, reason) of each device that shows a LUN another device on the node
    shows too (the same `canonical_wwid`): paths to one LUN, of which only its multipath map
    may become a volume. A volume on a path bypasses multipath, and one on each identity lets
    two VMs write the LUN at once."""
    lun: dict[str, list[BlockDevice]] = {}
    for device in devices:
        if device.wwid:
            lun.setdefault(canonical_wwid(device.wwid), []).append(device)
    verdicts: dict[str, tuple[BlockClass, str]] = {}
    for wwid, group in lun.items():
        if len(group) < 2:
            continue
        maps = [d for d in group if d.kind == "Multipath"]
        if len(maps) == 1:
            [lun_map] = maps
            verdicts |= {d.name: ("InUse", (
                f"a path of LUN {d.wwid}, whose multipath map is {lun_map.name} "
                f"({lun_map.dm_name}), though the map does not hold it (yet): the map is the "
                "LUN; check multipath -ll")) for d in group if d is not lun_map}
            continue
        names = ", ".join(d.name for d in group)
        how = (f"the multipath maps {names} all show it" if maps
               else f"{names} are paths to it and no multipath map holds them")
        verdicts |= {d.name: ("Unknown", (
            f"LUN {wwid} is on several devices: {how}. A volume on a path would bypass "
            "multipath, and a volume on each would let two VMs write the LUN at once; "
            "configure multipathd for it (multipath -ll shows its map), or unzone the extra "
            "paths")) for d in group}
    return verdicts


def _device(
    fs: HostFS, tree: _Tree, name: str, by_id: dict[str, list[str]]
) -> tuple[BlockDevice, tuple[BlockClass, str] | None]:
    """The device, not yet classified, and its class when the structure alone gives it."""
    base = f"{SYS_BLOCK}/{name}"
    uuid = tree.dm_uuids.get(name, "")
    kind: t.Literal["Disk", "Multipath", "DeviceMapper", "Raid"] = "Disk"
    if name in tree.dm_names:
        kind = "Multipath" if uuid.startswith(MPATH) else "DeviceMapper"
    elif fs.is_dir(f"{base}/md"):
        kind = "Raid"
    rotational = fs.read_int(f"{base}/queue/rotational")
    uses = tree.uses(name)
    device = BlockDevice(
        name=name,
        path="/dev/" + name.replace("!", "/"),  # cciss!c0d0 is /dev/cciss/c0d0
        kind=kind,
        dm_name=tree.dm_names.get(name),
        size_bytes=(fs.read_int(f"{base}/size") or 0) * SECTOR,
        rotational=None if rotational is None else rotational == 1,
        read_only=fs.read_int(f"{base}/ro") == 1,
        vendor=fs.read_value(f"{base}/device/vendor"),
        model=fs.read_value(f"{base}/device/model"),
        serial=fs.read_value(f"{base}/serial") or fs.read_value(f"{base}/device/serial"),
        wwid=(uuid.removeprefix(MPATH) if kind == "Multipath" else None)
        or fs.read_value(f"{base}/wwid") or fs.read_value(f"{base}/device/wwid"),
        by_id=by_id.get(name, [])[:32],
        partitions=tree.partitions[name],
        holders=tree.all_holders(name),
        mountpoints=sorted({m.target for m in uses})[:32],
    )
    return device, _structure(tree, device, uses)


def probe(fs: HostFS) -> BlockReport:
    kept: list[str] = []
    skipped: Counter[str] = Counter()
    for name in fs.list_dir(SYS_BLOCK):
        match = _SKIPPED.match(name)
        if match:
            skipped[match[1]] += 1
        else:
            kept.append(name)
    tree = _Tree(fs, kept)
    by_id = by_id_names(fs)
    examined = [_device(fs, tree, name, by_id) for name in kept]
    same_lun = _one_device_per_lun([d for d, _ in examined if d.name not in tree.hidden])
    examined = [(device, known or same_lun.get(device.name)) for device, known in examined]
    # All in one call: HostFS reads them on one thread, and bounds each device by the deadline.
    reads = fs.read_devices({device.path: regions(device.size_bytes)
                             for device, known in examined if known is None},
                            timeout=READ_TIMEOUT)
    devices = []
    for device, known in examined:
        if known is None:
            classification, reason, found = _contents(device, reads[device.path])
        else:
            (classification, reason), found = known, None
        devices.append(device.model_copy(update={
            "classification": classification, "reason": reason, "signature": found}))
    return BlockReport(devices=devices, skipped=dict(skipped))


def check(block: BlockReport) -> list[Problem]:
    """Findings: devices that could not be proven free or in use."""
    return [
        Problem(
            severity="Warning", feature="Block", path=device.path,
            message=f"{device.name} is not handed to VMs: {device.reason}",
        )
        for device in block.devices
        if device.classification == "Unknown"
    ]
