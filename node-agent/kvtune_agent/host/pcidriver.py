"""PCI functions' drivers: who holds a device, and binding it to another driver, through HostFS.

Binding a device to driver D is the kernel's documented sequence (Documentation/ABI/testing/
sysfs-bus-pci, driver_override): write D to the device's driver_override, so that only D may
take it; write the device's address to its current driver's `unbind`; write it to the bus's
`drivers_probe`; read the `driver` link back. The override is then left as asked (kept for
vfio-pci, so that a rescan binds the device to it again; cleared for a network driver). A probe
that fails is silent in the kernel (the write succeeds, the device stays unbound), so only the
read-back tells: it is checked after every bind.

A step's value is the bindings of a set of devices, `0000:3b:02.0=iavf 0000:3b:02.1=vfio-pci@
vfio-pci` (driver, then `@` and the override), which the journal records as the original and a
revert writes back (`apply`). All or nothing: when one device refuses its driver (a probe that
leaves it unbound, a write refused or hanging), every device the call changed, that one
included, goes back to the driver and override it had, and the result names the device and
why.

A device something uses is never rebound, whatever the plan said: `apply` checks again right
before it writes (a VM may have opened it since the plan was made) and leaves such a device as
it is, for a later pass after a drain. In use means: bound to vfio-pci and its VFIO device file
held open by a process (a VM's QEMU); or bound to a driver with a netdev in the host's network
namespace that is up; or bound to any driver with no netdev here at all (the SR-IOV CNI moved it
into a pod, or a user-space program such as DPDK drives it through uio). An opened VFIO device
is the one thing that must not even be tried: vfio-pci waits in `unbind` until every user has
closed it, which would hang the write.

`unbind` and `drivers_probe` are write-only (the kernel refuses to open them for reading), so
they are written without HostFS.write's read-back (`_poke`), under the same deadline.
"""

from __future__ import annotations

import re
import typing as t
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .hostfs import HostFS, refused

VFIO = "vfio-pci"
IOMMU_GROUPS = "/sys/kernel/iommu_groups"
PCI_DEVICES = "/sys/bus/pci/devices"
PCI_DRIVERS = "/sys/bus/pci/drivers"
DRIVERS_PROBE = "/sys/bus/pci/drivers_probe"
#: A VFIO device file: the group (/dev/vfio/12) or, with iommufd, the device (/dev/vfio/devices/
#: vfio3).
_VFIO_FILE = re.compile(r"^/dev/vfio/(devices/vfio\d+|\d+)$")
#: IFF_UP in a netdev's flags.
IFF_UP = 0x1
_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
#: A driver name as sysfs lists it, or "" for none.
_DRIVER = re.compile(r"^[A-Za-z0-9_-]{0,64}$")


def vf_drivers_path(pf_address: str) -> str:
    """The target of a step that binds a PF's VFs: their driver links, by the PF's address."""
    return f"{PCI_DEVICES}/{pf_address}/virtfn*/driver"


def pf_of(path: str) -> str | None:
    """The PF's PCI address in a `vf_drivers_path`; None for any other path."""
    head, _, pf = path.removesuffix("/virtfn*/driver").rpartition("/")
    return pf if head == PCI_DEVICES and path.endswith("/virtfn*/driver") else None


@dataclass(frozen=True)
class Binding:
    """A PCI function's driver and driver_override (None: unbound, no override)."""

    driver: str | None
    override: str | None = None

    def text(self) -> str:
        return (self.driver or "") + (f"@{self.override}" if self.override else "")


class BindingsError(ValueError):
    """A step value or journal entry that is not a list of `address=driver[@override]`."""


def encode(bindings: Mapping[str, Binding]) -> str:
    """`0000:3b:02.0=iavf 0000:3b:02.1=vfio-pci@vfio-pci 0000:3b:02.2=`, by address."""
    return " ".join(f"{address}={bindings[address].text()}" for address in sorted(bindings))


def decode(value: str) -> dict[str, Binding]:
    """The bindings of an `encode`d value. Raises BindingsError naming the word that is not
    one (a journal is a host file: it is read, never trusted)."""
    found: dict[str, Binding] = {}
    for word in value.split():
        address, equals, text = word.partition("=")
        driver, _, override = text.partition("@")
        if not equals or not _ADDRESS.match(address) or not all(
                _DRIVER.match(name) for name in (driver, override)):
            raise BindingsError(
                f"{word!r} is not <PCI address>=<driver>[@<driver_override>] (e.g. "
                "0000:3b:02.0=vfio-pci@vfio-pci)")
        found[address] = Binding(driver or None, override or None)
    return found


@dataclass(frozen=True)
class DeviceState:
    """One PCI function: its binding, IOMMU group, netdev and who holds it."""

    address: str
    binding: Binding
    #: Its IOMMU group's number; None: none (no IOMMU, or it could not be read).
    iommu_group: str | None = None
    #: Its netdev in the host's network namespace, when its driver gave it one.
    netdev: str | None = None
    #: That netdev is administratively up (IFF_UP in its flags; unreadable flags count as up).
    up: bool = False
    #: The processes holding its VFIO device files open, e.g. "pid 4242 (qemu-kvm)".
    holders: tuple[str, ...] = ()

    def in_use(self) -> str | None:
        """Who uses the device, in words; None when nothing does (see the module docstring)."""
        driver = self.binding.driver
        if driver is None:
            return None
        if driver == VFIO:
            return f"opened by {', '.join(self.holders)}" if self.holders else None
        if self.netdev is None:
            return (f"bound to {driver} with no netdev in the host's network namespace (a pod "
                    "took it, or a user-space program such as DPDK drives it)")
        return f"its netdev {self.netdev} is up" if self.up else None


def binding(fs: HostFS, address: str) -> Binding:
    device = f"{PCI_DEVICES}/{address}"
    override = fs.read_value(f"{device}/driver_override")
    return Binding(fs.link_name(f"{device}/driver"),
                   None if override in (None, "", "(null)") else override)


def vf_addresses(fs: HostFS, pf: str) -> list[str]:
    """The PF's VFs now, by PCI address in the order of their virtfnN links."""
    entries = [e for e in fs.list_dir(f"{PCI_DEVICES}/{pf}")
               if e.startswith("virtfn") and e[6:].isdigit()]
    found = (fs.link_name(f"{PCI_DEVICES}/{pf}/{e}") for e in sorted(entries, key=lambda e:
                                                                      int(e[6:])))
    return [address for address in found if address]


def holders(fs: HostFS) -> dict[str, list[str]]:
    """Every VFIO device file some process holds open -> "pid N (comm)" of each."""
    held: dict[str, list[str]] = {}
    for pid in fs.pids():
        for fd in fs.list_dir(f"/proc/{pid}/fd"):
            target = fs.readlink(f"/proc/{pid}/fd/{fd}")
            if target and _VFIO_FILE.match(target):
                comm = fs.read_value(f"/proc/{pid}/comm") or "?"
                held.setdefault(target, []).append(f"pid {pid} ({comm})")
    return held


def device_state(fs: HostFS, address: str, held: Mapping[str, list[str]]) -> DeviceState:
    """The device now; `held`: `holders`, read once for many devices."""
    device = f"{PCI_DEVICES}/{address}"
    group = fs.link_name(f"{device}/iommu_group")
    files = ({f"/dev/vfio/{group}"} if group else set()) | {
        f"/dev/vfio/devices/{name}" for name in fs.list_dir(f"{device}/vfio-dev")}
    netdevs = fs.list_dir(f"{device}/net")
    flags = fs.read_int(f"{device}/net/{netdevs[0]}/flags", 16) if netdevs else None
    return DeviceState(
        address=address, binding=binding(fs, address), iommu_group=group,
        netdev=netdevs[0] if netdevs else None,
        up=bool(netdevs) and (flags is None or bool(flags & IFF_UP)),
        holders=tuple(who for path in sorted(files) for who in held.get(path, ())),
    )


def device_states(fs: HostFS, addresses: Iterable[str]) -> list[DeviceState]:
    """The devices now; /proc is read (for VFIO holders) only when one is bound to vfio-pci."""
    addresses = list(addresses)
    vfio = any(binding(fs, a).driver == VFIO for a in addresses)
    held = holders(fs) if vfio else {}
    return [device_state(fs, a, held) for a in addresses]


def iommu_groups(fs: HostFS) -> int | None:
    """The IOMMU groups: the kernel leaves the directory empty without an IOMMU (and makes none
    without IOMMU support); anything but a directory there leaves it unknown."""
    if not fs.exists(IOMMU_GROUPS):
        return 0
    return len(fs.list_dir(IOMMU_GROUPS)) if fs.is_dir(IOMMU_GROUPS) else None


def current(fs: HostFS, path: str) -> str | None:
    """A VF drivers step's value now: the bindings of the PF's VFs (`encode`); None when
    `path` is no such step's."""
    pf = pf_of(path)
    return None if pf is None else encode({a: binding(fs, a) for a in vf_addresses(fs, pf)})


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


def _set_override(fs: HostFS, address: str, override: str | None, timeout: float) -> str:
    path = f"{PCI_DEVICES}/{address}/driver_override"
    why = _poke(fs, path, override or "", timeout)
    if not why and binding(fs, address).override != override:
        why = (f"wrote {override or '(clear)'!r} to {path} but it reads back "
               f"{fs.read_value(path)!r}")
    return why


def bind(fs: HostFS, address: str, wanted: Binding, timeout: float) -> str:
    """Bind one device to `wanted` (driver and driver_override); "" when it reads back so, else
    what went wrong. Never partly undone here: the caller restores."""
    now = fs.link_name(f"{PCI_DEVICES}/{address}/driver")
    if now != wanted.driver:
        # Only `wanted.driver` may take it; with none, the device is to stay unbound.
        why = _set_override(fs, address, wanted.driver or wanted.override, timeout)
        if not why and now:
            why = _poke(fs, f"{PCI_DRIVERS}/{now}/unbind", address, timeout)
        if not why and wanted.driver:
            why = _poke(fs, DRIVERS_PROBE, address, timeout)
        if why:
            return why
        got = fs.link_name(f"{PCI_DEVICES}/{address}/driver")
        if got != wanted.driver:
            return (f"{address} is bound to {got or 'no driver'} after {DRIVERS_PROBE}, not "
                    f"{wanted.driver}: the driver refused it (see dmesg)")
    if binding(fs, address).override != wanted.override:
        return _set_override(fs, address, wanted.override, timeout)
    return ""


def _used(fs: HostFS, addresses: Iterable[str]) -> dict[str, str]:
    return {d.address: why for d in device_states(fs, addresses) if (why := d.in_use())}


def held(fs: HostFS, path: str, value: str) -> dict[str, str]:
    """The VFs that writing `value` to `path` would rebind and that something uses now, read
    afresh: address -> by whom (empty for a value that is no list of bindings: `apply` says
    why)."""
    pf = pf_of(path)
    try:
        wanted = decode(value)
    except BindingsError:
        return {}
    present = set(vf_addresses(fs, pf)) if pf else set()
    return _used(fs, [a for a, b in wanted.items() if a in present and binding(fs, a) != b])


Result = t.Literal["Applied", "Partial", "Failed"]


def apply(fs: HostFS, path: str, value: str, timeout: float) -> tuple[Result, str]:
    """Bring the VFs of the PF in `path` to the bindings in `value` (a step's desired value, or
    a journal's original), all or nothing: the result and what happened. VFs no longer there are
    skipped (their successors start as the kernel made them); VFs in use are left as they are
    (Partial), for a later pass."""
    pf = pf_of(path)
    try:
        wanted = decode(value)
    except BindingsError as err:
        return "Failed", f"{path}: {err}; kvtune leaves the VFs as they are"
    if pf is None:
        return "Failed", f"{path} names no PF's VF drivers (a kvtune bug)"
    present = set(vf_addresses(fs, pf))
    now = {a: binding(fs, a) for a in wanted if a in present}
    changes = {a: b for a, b in wanted.items() if a in now and now[a] != b}
    used = _used(fs, changes)
    done: list[str] = []
    for address in (a for a in sorted(changes) if a not in used):
        why = bind(fs, address, changes[address], timeout)
        if why:
            return "Failed", (f"VF {address} of PF {pf} did not take "
                              f"{changes[address].text() or 'no driver'}: {why}"
                              + _undo(fs, [*done, address], now, timeout))
        done.append(address)
    notes = [f"VF {a} is left as it is: {why}" for a, why in sorted(used.items())]
    gone = sorted(set(wanted) - present)
    if gone:
        notes.append(f"VFs {', '.join(gone)} are gone (the VF count changed): nothing to do")
    told = "".join(f"; {note}" for note in notes)
    return ("Partial" if used else "Applied"), f"bound {len(done)} VF(s) of PF {pf}{told}"


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
