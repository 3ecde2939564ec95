"""The names of host devices that stay the same across reboots: a NIC by its PCI address, a disk
by its /dev/disk/by-id name, never by kernel name (eth3 or sdb today may be another device after
a reboot). The journal records targets by these names, and finds them again here; journals from
before (kvtune 0.1 named devices by kernel name) are moved to them where provably the same.
"""

from __future__ import annotations

import re

from .hostfs import HostFS

NET = "/sys/class/net"
PCI_DEVICES = "/sys/bus/pci/devices"
SYS_BLOCK = "/sys/block"
BY_ID = "/dev/disk/by-id"
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


#: How kvtune before 0.2 named a PF's sriov_numvfs in its journal: by interface name.
_NAMED_NUMVFS = re.compile(rf"^{NET}/([^/]+)/device/sriov_numvfs$")


def numvfs_path(pci_address: str) -> str:
    """The sriov_numvfs file of a physical function, by its PCI address.

    Not by interface name: names change across reboots and driver reloads (eth3 today may be
    another NIC tomorrow), and a journal must restore the NIC it changed, not one renamed to it.
    """
    return f"{PCI_DEVICES}/{pci_address}/sriov_numvfs"


def renamed_numvfs(fs: HostFS, path: str) -> tuple[str, str] | None:
    """For a path naming a PF by interface name (`_NAMED_NUMVFS`), the interface and the same
    file by PCI address ("" when no such interface exists now); None for any other path."""
    match = _NAMED_NUMVFS.match(path)
    if match is None:
        return None
    pci = pci_dir(fs, f"{NET}/{match.group(1)}/device")
    return match.group(1), numvfs_path(pci.rsplit("/", 1)[1]) if pci else ""


def pci_dir(fs: HostFS, device: str) -> str | None:
    """The PCI device directory behind a netdev's `device` link.

    virtio and other bus drivers put their own device between the NIC and its PCI function,
    so the nearest path component shaped like a PCI address is the one that has sriov_* files.
    """
    resolved = fs.resolve(device)
    if resolved is None:
        return None
    parts = resolved.split("/")
    for end in range(len(parts), 0, -1):
        if PCI_ADDRESS.match(parts[end - 1]):
            return "/".join(parts[:end])
    return None


#: How kvtune before 0.2 named a disk's sysfs file in its journal: by kernel name.
_NAMED_ATTRIBUTE = re.compile(rf"^{SYS_BLOCK}/([^/]+)/(.+)$")


def best_id(ids: list[str]) -> str | None:
    return min(ids, key=lambda i: (not i.startswith("wwn-"), i.startswith("dm-name-"), i),
               default=None)


def attribute_path(by_id: str, attribute: str) -> str:
    """A sysfs attribute of a disk (e.g. queue/scheduler) named by its by-id name, not by its
    kernel name (sdb today may be another disk after a reboot); `sysfs_path` finds the file."""
    return f"{BY_ID}/{by_id}/{attribute}"


def sysfs_path(fs: HostFS, path: str) -> str | None:
    """The sysfs file an `attribute_path` means today (None: no such disk now); other paths
    are returned as they are."""
    if not path.startswith(f"{BY_ID}/"):
        return path
    name, _, attribute = path.removeprefix(f"{BY_ID}/").partition("/")
    device = fs.link_name(f"{BY_ID}/{name}")
    return f"{SYS_BLOCK}/{device}/{attribute}" if device else None


def renamed_attribute(fs: HostFS, path: str) -> tuple[str, str] | None:
    """For a path naming a disk by kernel name (`_NAMED_ATTRIBUTE`), the disk and the same file
    as an `attribute_path` ("" when the disk has no by-id name now); None for other paths."""
    match = _NAMED_ATTRIBUTE.match(path)
    if match is None:
        return None
    name, attribute = match.groups()
    best = best_id(by_id_names(fs).get(name, []))
    return name, attribute_path(best, attribute) if best else ""


def by_id_names(fs: HostFS) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for link in fs.list_dir(BY_ID):
        target = fs.link_name(f"{BY_ID}/{link}")
        if target is not None:
            names.setdefault(target, []).append(link)
    return names
