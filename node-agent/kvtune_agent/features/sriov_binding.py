"""Reading VFs' drivers and holders, and binding VFs to a driver: the host side of
sriov_driver.py, all through HostFS.

Binding one VF to driver D is the kernel's documented sequence (Documentation/ABI/testing/
sysfs-bus-pci, driver_override): write D to the VF's driver_override, so that only D may take
it; write the VF's address to its current driver's `unbind`; write it to the bus's
`drivers_probe`; read the `driver` link back. The override is then left as the rule wants it (D
for vfio-pci, so that a rescan binds it to vfio-pci again; cleared for a network driver). A
probe that fails is silent in the kernel (the write succeeds, the VF stays unbound), so only
the read-back can tell: it is checked after every bind.

All or nothing, per PF: when one VF refuses its driver (a probe that leaves it unbound, a write
refused or hanging), every VF this call changed, that one included, goes back to the driver and
override it had, and the step fails naming the VF and why. A VF something uses is never
rebound, whatever the plan said: the check is made again right before the writes (a VM may have
opened it since the plan), and such a VF is left as it is, for a later pass after a drain. An
opened VFIO device is the one thing that must not be unbound at all: the kernel's vfio-pci
waits in `unbind` until every user has closed it, which would hang the write.

`unbind` and `drivers_probe` are write-only (the kernel refuses to open them for reading), so
they are written without a read-back (`_poke`), under the same deadline as every kernel write.
"""

from __future__ import annotations

import re
import typing as t
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import HostReport

from .. import bootloader
from ..hostfs import HostFS, refused
from .sriov_driver import (
    DRIVERS_PROBE,
    IOMMU_GROUPS,
    PCI_DEVICES,
    PCI_DRIVERS,
    VFIO,
    Binding,
    BindingsError,
    DriverFacts,
    VfState,
    decode,
    encode,
    in_use,
    netdev_driver,
    pf_of,
)

#: A VFIO device file: the group (/dev/vfio/12) or, with iommufd, the device (/dev/vfio/devices/
#: vfio3).
_VFIO_FILE = re.compile(r"^/dev/vfio/(devices/vfio\d+|\d+)$")
#: IFF_UP in a netdev's flags.
IFF_UP = 0x1


@dataclass(frozen=True)
class BindResult:
    """How binding a PF's VFs went (the engine's Outcome)."""

    result: t.Literal["Applied", "Partial", "Failed"]
    message: str = ""


def _binding(fs: HostFS, device: str) -> Binding:
    override = fs.read_value(f"{device}/driver_override")
    return Binding(fs.link_name(f"{device}/driver"),
                   None if override in (None, "", "(null)") else override)


def _vf_addresses(fs: HostFS, pf: str) -> dict[str, int]:
    """The PF's VFs now: PCI address -> index (its virtfnN links)."""
    found: dict[str, int] = {}
    for entry in fs.list_dir(f"{PCI_DEVICES}/{pf}"):
        if entry.startswith("virtfn") and entry[6:].isdigit():
            address = fs.link_name(f"{PCI_DEVICES}/{pf}/{entry}")
            if address:
                found[address] = int(entry[6:])
    return found


def _vfio_files(fs: HostFS, device: str, group: str | None) -> set[str]:
    """The device files through which a process uses a VF bound to vfio-pci."""
    files = {f"/dev/vfio/{group}"} if group else set()
    files |= {f"/dev/vfio/devices/{name}" for name in fs.list_dir(f"{device}/vfio-dev")}
    return files


def _holders(fs: HostFS) -> dict[str, list[str]]:
    """Every VFIO device file some process holds open -> "pid N (comm)" of each. /proc is read
    once a pass, and only when a VF is bound to vfio-pci."""
    held: dict[str, list[str]] = {}
    for pid in fs.pids():
        for fd in fs.list_dir(f"/proc/{pid}/fd"):
            target = fs.readlink(f"/proc/{pid}/fd/{fd}")
            if target and _VFIO_FILE.match(target):
                comm = fs.read_value(f"/proc/{pid}/comm") or "?"
                held.setdefault(target, []).append(f"pid {pid} ({comm})")
    return held


def _vf(fs: HostFS, address: str, held: Mapping[str, list[str]]) -> VfState:
    device = f"{PCI_DEVICES}/{address}"
    binding = _binding(fs, device)
    group = fs.link_name(f"{device}/iommu_group")
    netdevs = fs.list_dir(f"{device}/net")
    flags = fs.read_int(f"{device}/net/{netdevs[0]}/flags", 16) if netdevs else None
    holders = [who for path in sorted(_vfio_files(fs, device, group)) for who in held.get(path, ())]
    return VfState(address=address, binding=binding, iommu_group=group,
                   netdev=netdevs[0] if netdevs else None,
                   # Unknown flags are taken for up: in use is the cautious reading.
                   up=bool(netdevs) and (flags is None or bool(flags & IFF_UP)),
                   holders=tuple(holders))


def _iommu_groups(fs: HostFS) -> int | None:
    """The IOMMU groups: the kernel leaves the directory empty without an IOMMU (and has none
    without IOMMU support); anything but a directory there leaves it unknown."""
    if not fs.exists(IOMMU_GROUPS):
        return 0
    return len(fs.list_dir(IOMMU_GROUPS)) if fs.is_dir(IOMMU_GROUPS) else None


def read(fs: HostFS, host: HostReport) -> DriverFacts:
    """The VFs of every PF of the probe report, their IOMMU and who holds them."""
    pfs = [nic.pci_address for nic in host.sriov.nics if nic.pci_address and nic.vfs]
    vfio = any(vf.driver == VFIO for nic in host.sriov.nics for vf in nic.vfs)
    held = _holders(fs) if vfio else {}
    return DriverFacts(
        iommu_groups=_iommu_groups(fs),
        loaded=frozenset(fs.list_dir(PCI_DRIVERS)),
        vfs={pf: tuple(_vf(fs, address, held) for address in _vf_addresses(fs, pf))
             for pf in pfs},
        vf_devices={pf: device.removeprefix("0x") for pf in pfs
                    if (device := fs.read_value(f"{PCI_DEVICES}/{pf}/sriov_vf_device"))},
        loader=bootloader.find_loader(fs),
    )


def current(fs: HostFS, path: str) -> str | None:
    """The step's value now: the bindings of the PF's VFs (`encode`); None when `path` is not a
    driver step's."""
    pf = pf_of(path)
    if pf is None:
        return None
    return encode({address: _binding(fs, f"{PCI_DEVICES}/{address}")
                   for address in _vf_addresses(fs, pf)})


def _poke(fs: HostFS, path: str, value: str, timeout: float) -> str:
    """Write `value` to a write-only kernel file within `timeout` s; "" or why not.

    HostFS's own write and deadline (its _store and _within, so that a test tree's kernel plays
    these files as it plays the others), without the read-back the kernel would refuse."""
    errors: list[OSError] = []

    def work() -> None:
        try:
            fs._store(path, value)
        except OSError as err:
            errors.append(err)

    late = fs._within(path, "write", f"writing {value!r} to", timeout, work)
    return late or (refused(path, f"writing {value!r} to", errors[0]) if errors else "")


def _set_override(fs: HostFS, device: str, override: str | None, timeout: float) -> str:
    path = f"{device}/driver_override"
    why = _poke(fs, path, override or "", timeout)
    shown = fs.read_value(path)
    if not why and (None if shown in (None, "(null)") else shown) != override:
        why = f"wrote {override or '(clear)'!r} to {path} but it reads back {shown!r}"
    return why


def bind(fs: HostFS, address: str, wanted: Binding, timeout: float) -> str:
    """Bind one VF to `wanted` (driver and driver_override); "" when it reads back so, else
    what went wrong. Never partly undone here: the caller restores."""
    device = f"{PCI_DEVICES}/{address}"
    now = fs.link_name(f"{device}/driver")
    if now != wanted.driver:
        # Only `wanted.driver` may take it, and no driver when it is to stay unbound.
        why = _set_override(fs, device, wanted.driver or wanted.override, timeout)
        if not why and now:
            why = _poke(fs, f"{PCI_DRIVERS}/{now}/unbind", address, timeout)
        if not why and wanted.driver:
            why = _poke(fs, DRIVERS_PROBE, address, timeout)
        if why:
            return why
        got = fs.link_name(f"{device}/driver")
        if got != wanted.driver:
            return (f"{address} is bound to {got or 'no driver'} after {DRIVERS_PROBE}, not "
                    f"{wanted.driver}: the driver refused it (see dmesg)")
    if _binding(fs, device).override != wanted.override:
        return _set_override(fs, device, wanted.override, timeout)
    return ""


def _used(fs: HostFS, pf: str, addresses: Iterable[str]) -> dict[str, str]:
    """The VFs among `addresses` something uses now, read afresh: address -> by whom."""
    addresses = list(addresses)
    states = {a: _binding(fs, f"{PCI_DEVICES}/{a}") for a in addresses}
    held = _holders(fs) if any(b.driver == VFIO for b in states.values()) else {}
    pf_netdev = netdev_driver(fs.link_name(f"{PCI_DEVICES}/{pf}/driver"))
    return {a: why for a in addresses
            if (why := in_use(_vf(fs, a, held), pf_netdev))}


def apply(fs: HostFS, path: str, value: str, timeout: float) -> BindResult:
    """Bring the PF's VFs to the bindings in `value` (a step's desired value, or a journal's
    original), all or nothing; VFs no longer there are skipped (their successors start as the
    kernel made them), VFs in use are left for a later pass."""
    pf = pf_of(path)
    try:
        wanted = decode(value)
    except BindingsError as err:
        return BindResult("Failed", f"{path}: {err}; kvtune leaves the VFs as they are")
    if pf is None:
        return BindResult("Failed", f"{path} names no PF's VF drivers (a kvtune bug)")
    present = _vf_addresses(fs, pf)
    now = {a: _binding(fs, f"{PCI_DEVICES}/{a}") for a in wanted if a in present}
    changes = {a: b for a, b in wanted.items() if a in now and now[a] != b}
    used = _used(fs, pf, changes)
    done: list[str] = []
    for address in (a for a in sorted(changes) if a not in used):
        why = bind(fs, address, changes[address], timeout)
        if why:
            return BindResult("Failed", f"VF {address} of PF {pf} did not take "
                              f"{changes[address].text() or 'no driver'}: {why}"
                              + _undo(fs, [*done, address], now, timeout))
        done.append(address)
    notes = [f"VF {a} is left as it is: {why}" for a, why in sorted(used.items())]
    gone = sorted(set(wanted) - set(present))
    if gone:
        notes.append(f"VFs {', '.join(gone)} are gone (the VF count changed): nothing to do")
    if used:
        return BindResult("Partial", f"bound {len(done)} VF(s) of PF {pf}; " + "; ".join(notes))
    return BindResult("Applied", f"bound {len(done)} VF(s) of PF {pf}"
                      + (f"; {'; '.join(notes)}" if notes else ""))


def _undo(fs: HostFS, addresses: list[str], before: Mapping[str, Binding],
          timeout: float) -> str:
    """Put these VFs back to their bindings `before`, last changed first; what that came to,
    for the message."""
    restored, failed = [], []
    for address in reversed(addresses):
        why = bind(fs, address, before[address], timeout)
        if why:
            failed.append(f"{address} ({why})")
        else:
            restored.append(address)
    told = f"; VFs {', '.join(sorted(restored))} are back as they were" if restored else ""
    if failed:
        told += (f"; restoring {', '.join(failed)} failed too: kvtune's journal keeps their "
                 "original drivers, and a revert puts them back")
    return told
