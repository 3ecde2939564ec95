"""The software switches of a KubeVirt node and which VM pod is plugged into which.

Each virt-launcher pod has a network namespace of its own, so a VM's domain only names in-pod
devices (its tap, KubeVirt's k6t-* bridge); whether two VMs share a switch is decided on the
host, where the pods' veths are plugged into Linux bridges or Open vSwitch, and where their
macvtap devices have their lower NICs. This probe joins the two sides by interface index, as
`ip link` does: a pod-side veth's iflink is its host peer's ifindex, a macvtap's iflink its
lower device's. A container's /sys shows its own namespace, so each pod is read through
/proc/<launcher pid>/root/sys/class/net.

What an interface is, sysfs tells without a netlink socket: bridge/ (a Linux bridge), tun_flags
with IFF_TAP (a tap; without it an L3 tun), macvtap/ (a macvtap), device/physfn (an SR-IOV VF),
device (a NIC), DEVTYPE=openvswitch (an OVS device), an iflink to another index (a veth, or a
macvlan when that index is not a veth).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvtune_api.v1alpha1.host import (
    MAX_PODS,
    MAX_PORTS,
    HostRouting,
    InterfaceKind,
    LowerLink,
    NetworkReport,
    PodInterface,
    PodNetwork,
    Problem,
    SoftwareSwitch,
)

from ...host import launchers
from ...host.hostfs import HostFS, ProcessTable

NET = "/sys/class/net"
#: Open vSwitch's kernel datapath: the master of every port of every OVS bridge.
OVS_DATAPATH = "ovs-system"
VFIO_DRIVER = "/sys/bus/pci/drivers/vfio-pci"
#: PCI class of network controllers (the top byte of /sys/bus/pci/devices/*/class).
NETWORK_CLASS = "0x02"
#: The host's own network namespace is PID 1's: /proc/net would be the reader's (the agent's).
ROUTES = "/proc/1/net/route"
IPV6_ROUTES = "/proc/1/net/ipv6_route"
IPV6_ADDRESSES = "/proc/1/net/if_inet6"
#: if_inet6 scopes that reach beyond the link: global (00) and site (40); link (20) addresses
#: exist on every IPv6 interface that is up, and host (10) is the loopback's.
_ROUTABLE_SCOPES = {"00", "40"}
#: The tun driver's flag for a tap (Ethernet frames); without it the device is an L3 tun.
IFF_TAP = 0x0002


@dataclass(frozen=True)
class _Device:
    """One interface of a namespace, as its sysfs directory shows it."""

    name: str
    kind: InterfaceKind
    ifindex: int | None
    iflink: int | None
    master: str | None
    lower: str | None
    #: Nothing in sysfs marks what it is, as nothing marks a veth.
    plain: bool

    @property
    def peer_index(self) -> int | None:
        """The index its iflink names when that is another interface (a veth's peer, a
        macvtap's lower device)."""
        return _peer_index(self.ifindex, self.iflink)


def _peer_index(ifindex: int | None, iflink: int | None) -> int | None:
    return iflink if ifindex is not None and iflink != ifindex else None


def _devtype(fs: HostFS, base: str) -> str | None:
    for line in (fs.read_text(f"{base}/uevent") or "").splitlines():
        key, _, value = line.partition("=")
        if key == "DEVTYPE":
            return value.strip()
    return None


def _kind(fs: HostFS, base: str) -> InterfaceKind | None:
    """What sysfs says the interface at `base` is; None when it says nothing (a veth, a
    macvlan, or a device of a driver it has no mark for, such as ifb)."""
    if fs.exists(f"{base}/bridge"):
        return "Bridge"
    if fs.exists(f"{base}/macvtap"):
        return "Macvtap"
    tun_flags = fs.read_int(f"{base}/tun_flags", 16)
    if tun_flags is not None:
        return "Tap" if tun_flags & IFF_TAP else "Other"  # an L3 tun carries no Ethernet
    if fs.exists(f"{base}/device/physfn"):
        return "VirtualFunction"
    if fs.exists(f"{base}/device"):
        return "Physical"
    devtype = _devtype(fs, base)
    if devtype == "openvswitch":
        return "OpenVSwitch"
    return None if devtype is None else "Other"  # vxlan, wireguard, ...


def _devices(fs: HostFS, root: str = "") -> dict[str, _Device]:
    """The interfaces of the namespace whose sysfs is under `root`, but lo."""
    found = {}
    for name in fs.list_dir(f"{root}{NET}"):
        if name == "lo":
            continue
        base = f"{root}{NET}/{name}"
        ifindex, iflink = fs.read_int(f"{base}/ifindex"), fs.read_int(f"{base}/iflink")
        linked = _peer_index(ifindex, iflink) is not None
        lowers = [e.removeprefix("lower_") for e in fs.list_dir(base) if e.startswith("lower_")]
        marked = _kind(fs, base)
        # Unmarked: a veth, or a macvlan (told apart by its peer, see _interface)...
        kind = marked or ("Veth" if linked else "Other")
        if marked is None and linked and lowers:  # ... that is on a device of this namespace
            kind = "Macvlan"
        found[name] = _Device(
            name=name, kind=kind, ifindex=ifindex, iflink=iflink,
            master=fs.link_name(f"{base}/master"), plain=marked is None,
            lower=lowers[0] if kind in ("Macvtap", "Macvlan") and lowers else None,
        )  # fmt: skip
    return found


def _switches(fs: HostFS, host: dict[str, _Device]) -> list[SoftwareSwitch]:
    switches = []
    for device in host.values():
        if device.kind == "Bridge":
            ports = fs.list_dir(f"{NET}/{device.name}/brif")
            switches.append(SoftwareSwitch(
                name=device.name, kind="Bridge", ports=ports[:MAX_PORTS], port_count=len(ports),
            ))  # fmt: skip
    ovs = [d.name for d in host.values() if d.master == OVS_DATAPATH]
    if OVS_DATAPATH in host or ovs:
        bridges = [d.name for d in host.values()
                   if d.kind == "OpenVSwitch" and d.name != OVS_DATAPATH]  # fmt: skip
        switches.append(SoftwareSwitch(
            name=OVS_DATAPATH, kind="OpenVSwitch", bridges=bridges[:64],
            ports=[p for p in ovs if p not in bridges][:MAX_PORTS],
            port_count=len([p for p in ovs if p not in bridges]),
        ))  # fmt: skip
    return sorted(switches, key=lambda s: s.name)


def _interface(fs: HostFS, root: str, device: _Device, host: dict[int, _Device]) -> PodInterface:
    """A pod's interface, followed to the host device its iflink names.

    Interface indexes are per namespace, so a veth's own index may equal its peer's: a veth is
    known by its peer on the host naming it back (each one's iflink is the other's ifindex),
    where neither is marked as something else. Low indexes are taken in every namespace, so a
    pod's tun and a host's vxlan of one index would otherwise pass for a pair; two unmarked
    devices of one index (a pod's veth to elsewhere, a host's ifb) still can.
    """
    kind, link, switch = device.kind, None, None
    peer = host.get(device.iflink) if device.iflink is not None else None
    if kind == "VirtualFunction":
        link = fs.link_name(f"{root}{NET}/{device.name}/device")
    elif device.plain and peer is not None and peer.plain and peer.iflink == device.ifindex:
        kind, link, switch = "Veth", peer.name, peer.master
    elif kind == "Veth" and peer is not None and peer.kind != "Veth":
        kind, link = "Macvlan", peer.name  # its iflink is its lower device, not a peer
    elif kind == "Macvtap" and peer is not None:
        link = peer.name
    return PodInterface(name=device.name, kind=kind, master=device.master, link=link,
                        switch=switch)  # fmt: skip


def _pods(fs: HostFS, processes: ProcessTable, host: dict[str, _Device]) -> list[PodNetwork]:
    by_index = {d.ifindex: d for d in host.values() if d.ifindex is not None}
    pods = []
    for launcher in launchers.discover(fs, processes):
        root = f"/proc/{launcher.pid}/root"
        pods.append(PodNetwork(
            vmi=f"{launcher.namespace}/{launcher.name}", pid=launcher.pid, netns=launcher.netns,
            interfaces=[_interface(fs, root, d, by_index) for d in _devices(fs, root).values()],
        ))  # fmt: skip
    return pods[:MAX_PODS]


def _passthrough_nics(fs: HostFS) -> list[str]:
    """Network controllers bound to vfio-pci that are not VFs (whole NICs given to VMs)."""
    found = []
    for address in fs.list_dir(VFIO_DRIVER):
        device = f"{VFIO_DRIVER}/{address}"
        if (fs.read_value(f"{device}/class") or "").startswith(NETWORK_CLASS) and not fs.exists(
            f"{device}/physfn"
        ):
            found.append(address)
    return found[:MAX_PORTS]


class _Unreadable(Exception):
    """A routing file that cannot be read or parsed; the message names it."""


def _fields(fs: HostFS, path: str, *, required: bool) -> list[list[str]]:
    """The rows of a /proc/net table; raises _Unreadable when it cannot be read (or, when
    `required`, is absent: the host's namespace is not visible at all)."""
    text = fs.read_text(path)
    if text is None and (required or fs.exists(path)):
        raise _Unreadable(f"{path} cannot be read (the agent needs hostPID and the host's /proc)")
    return [line.split() for line in (text or "").splitlines()]


def _routing(fs: HostFS, host: dict[str, _Device]) -> HostRouting:
    """Which interfaces the host's routes and IPv6 addresses use, and the ones beneath them.

    /proc/net/route: a header, then Iface Destination Gateway Flags ... Mask, in hex; a default
    route has destination and mask 0. /proc/net/ipv6_route: destination, prefix length, ...,
    the device last; an unreachable default is on lo. /proc/net/if_inet6: address, ifindex,
    prefix length, scope, flags, device. A line that does not read so makes the routing
    unknown, not shorter: a default route missed would hand the node's own NIC to VMs.
    """
    try:
        ipv4, default = _ipv4_routes(fs)
        default |= _ipv6_defaults(fs)
        ipv6 = _ipv6_addresses(fs)
    except _Unreadable as err:
        return HostRouting(error=f"{err}; which interfaces the node uses itself is unknown")
    carriers = default | ipv4 | ipv6
    above = _stacking(fs, host)
    stacked = {name: upper for name in host
               if name not in carriers and (upper := _carrier_above(above, name, carriers))}
    return HostRouting(default_route=sorted(default)[:64], ipv4_routes=sorted(ipv4)[:MAX_PORTS],
                       ipv6_addresses=sorted(ipv6)[:MAX_PORTS],
                       stacked=dict(sorted(stacked.items())[:MAX_PORTS]))  # fmt: skip


def _ipv4_routes(fs: HostFS) -> tuple[set[str], set[str]]:
    """The interfaces with an IPv4 route of the main table, and those with its default.

    /proc/net/route shows the main table only: a default route in another table (policy
    routing) is not seen, and its interface counts only through the prefix route its address
    puts in the main table; an address added with noprefixroute puts none (see docs/safety.md).
    """
    routed: set[str] = set()
    default: set[str] = set()
    for row in _fields(fs, ROUTES, required=True)[1:]:
        if len(row) < 8:
            raise _Unreadable(f"{ROUTES} has a line of {len(row)} fields: {' '.join(row)[:80]!r}")
        routed.add(row[0])
        if row[1] == "00000000" and row[7] == "00000000":
            default.add(row[0])
    return routed, default


def _ipv6_defaults(fs: HostFS) -> set[str]:
    """The interfaces with an IPv6 default route (not the unreachable one on lo)."""
    default = set()
    for row in _fields(fs, IPV6_ROUTES, required=False):
        if len(row) < 10 or not all(_hex(field) for field in row[:9]):
            raise _Unreadable(f"{IPV6_ROUTES} has a malformed line: {' '.join(row)[:80]!r}")
        if row[-1] != "lo" and int(row[0], 16) == 0 and row[1] == "00":
            default.add(row[-1])
    return default


def _ipv6_addresses(fs: HostFS) -> set[str]:
    """The interfaces with a global or site IPv6 address."""
    found = set()
    for row in _fields(fs, IPV6_ADDRESSES, required=False):
        if len(row) != 6 or not all(_hex(field) for field in row[:5]):
            raise _Unreadable(f"{IPV6_ADDRESSES} has a malformed line: {' '.join(row)[:80]!r}")
        if row[3] in _ROUTABLE_SCOPES:
            found.add(row[5])
    return found


def _hex(field: str) -> bool:
    try:
        int(field, 16)
    except ValueError:
        return False
    return True


def _stacking(fs: HostFS, host: dict[str, _Device]) -> dict[str, set[str]]:
    """Each device's devices stacked directly on it: from its upper_* links and the lower_*
    links of the devices above (VLAN, macvlan, bond, team, bridge; kernels link one side or
    both), its master, a macvlan's or VLAN's iflink, and for a port of Open vSwitch's datapath
    every other device of it (OVS switches in userspace: any of its bridges may forward the
    port's frames). One listing of each device's directory."""
    above: dict[str, set[str]] = {name: set() for name in host}
    by_index = {d.ifindex: d.name for d in host.values() if d.ifindex is not None}
    ovs = {d.name for d in host.values() if d.master == OVS_DATAPATH}
    for name, device in host.items():
        for entry in fs.list_dir(f"{NET}/{name}"):
            if entry.startswith("upper_"):
                above[name].add(entry.removeprefix("upper_"))
            elif entry.startswith("lower_") and entry.removeprefix("lower_") in above:
                above[entry.removeprefix("lower_")].add(name)
        if device.master:
            above[name].add(device.master)
        if device.master == OVS_DATAPATH:
            above[name] |= ovs
        lower = by_index.get(device.peer_index or -1)
        if device.kind in ("Macvlan", "Macvtap", "Other") and lower is not None:
            above[lower].add(name)
    for name, devices in above.items():
        devices.discard(name)
    return above


def _carrier_above(above: dict[str, set[str]], name: str, carriers: set[str]) -> str | None:
    """A device stacked on `name`, at any depth, that carries the host's traffic; None."""
    seen, pending = {name}, [name]
    while pending:
        for upper in sorted(above.get(pending.pop(), ())):
            if upper in carriers:
                return upper
            if upper not in seen:
                seen.add(upper)
                pending.append(upper)
    return None


def probe(fs: HostFS, processes: ProcessTable) -> NetworkReport:
    host = _devices(fs)
    by_index = {d.ifindex: d.name for d in host.values() if d.ifindex is not None}
    macvtaps = [
        LowerLink(name=d.name, kind="Macvtap" if d.kind == "Macvtap" else "Macvlan",
                  lower=d.lower or by_index.get(d.peer_index or 0))
        for d in host.values()
        if d.kind in ("Macvtap", "Macvlan")
    ]  # fmt: skip
    return NetworkReport(
        switches=_switches(fs, host),
        pods=_pods(fs, processes, host),
        macvtaps=macvtaps[:MAX_PORTS],
        passthrough_nics=_passthrough_nics(fs),
        routing=_routing(fs, host),
    )


def check(network: NetworkReport) -> list[Problem]:
    """No findings of its own: whether a switch is shared by VMs is the VM audit's to say."""
    return []
