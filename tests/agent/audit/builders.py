"""Builders for the audit tests: libvirt domain XML as KubeVirt renders it, a two-node host,
virt-launcher processes laid out in a /proc tree and a connect function serving their sockets,
and what the rules are judged against (the strict policy, two VMs that keep every promise).

One domain builder serves both tiers: the pure tests parse its XML, the libvirt tests define it on
the test driver (`test:///default`, real libvirt with a fake hypervisor) and read it back.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import libvirt
from kvtune_agent.audit import AuditPolicy
from kvtune_agent.features.memory.probe import size_name
from kvtune_agent.host import launchers
from kvtune_api.v1alpha1.host import HostReport, HugepagePool, MemoryReport, NumaNode, NumaReport
from support.hosttree import HostTree

GiB_KIB = 1 << 20
#: The test host: node 0 holds CPUs 0-3, node 1 CPUs 4-7 (the test driver knows 8 CPUs), 8 GiB
#: each.
NODE_CPUS = {0: "0-3", 1: "4-7"}


def two_node_host(
    *, total_gib: int = 16, pools: Sequence[tuple[int, int]] = (), node_gib: int = 8
) -> HostReport:
    """The probe of a two-node host; `pools` are (page KiB, pages) system-wide hugepage pools."""
    return HostReport(
        numa=NumaReport(
            nodes=[
                NumaNode(id=n, cpus=cpus, cpu_count=4, memory_total_kib=node_gib * GiB_KIB)
                for n, cpus in NODE_CPUS.items()
            ],
            online_cpus="0-7",
        ),
        memory=MemoryReport(
            total_kib=total_gib * GiB_KIB,
            default_hugepage_kib=2048,
            hugepages=[
                HugepagePool(size=size_name(kib), size_kib=kib, total=pages) for kib, pages in pools
            ],
        ),
    )


#: The two-node host with 4096 2Mi pages.
HOST = two_node_host(pools=[(2048, 4096)])

#: What a profile with every promise asks: dedicated CPUs, isolated emulator, 2Mi hugepages,
#: raw LUNs.
STRICT = AuditPolicy(
    dedicated_cpus=True, isolate_emulator_thread=True, hugepage_kib=2048, block_luns=True
)
#: A VM that keeps every promise on node 0 (CPUs 0-3) ...
GOOD: dict[str, Any] = {
    "pins": ["0", "1"], "emulator": "2", "numatune": ("strict", "0"), "hugepage_kib": 2048,
    "nics": [("hostdev", "0000:3b:02.0")], "disks": [("block", "/dev/sdb")],
}  # fmt: skip
#: ... and one on node 1 (CPUs 4-7).
GOOD_NODE1: dict[str, Any] = {
    **GOOD, "pins": ["4", "5"], "emulator": "6", "numatune": ("strict", "1"),
    "nics": [("hostdev", "0000:3b:02.1")],
}  # fmt: skip


class Sockets:
    """A connect function that serves each launcher's socket URI from the test driver."""

    def __init__(self, tree: HostTree, *pids: int) -> None:
        fs = tree.fs()
        self.uris = {
            launchers.session_uri(fs, f"/proc/{pid}/root/var/run/libvirt/virtqemud-sock")
            for pid in pids
        }
        self.asked: list[str] = []

    def __call__(self, uri: str) -> Any:
        self.asked.append(uri)
        if uri not in self.uris:
            raise AssertionError(f"unexpected libvirt URI {uri}")
        return libvirt.openReadOnly("test:///default")


def domain_xml(
    name: str,
    *,
    vcpus: int = 2,
    pins: Sequence[str] | None = None,
    emulator: str | None = None,
    numatune: tuple[str, str] | None = None,
    memory_mib: int = 2048,
    hugepage_kib: int | None = None,
    nics: Sequence[tuple[str, str]] = (),
    hostdevs: Sequence[tuple[str, str]] = (),
    disks: Sequence[tuple[str, str]] = (),
    video: bool = False,
    cells: int = 0,
) -> str:
    """A domain: `pins` one cpuset per vCPU, `numatune` (mode, nodeset), `nics` (type, source),
    `hostdevs` (PCI address, alias), `disks` (type, source); type 'hostdev' NICs take a PCI
    address as source, 'ethernet' NICs (KubeVirt's) the tap or macvtap device in the pod."""
    cputune = "".join(f"<vcpupin vcpu='{i}' cpuset='{c}'/>" for i, c in enumerate(pins or ()))
    if emulator is not None:
        cputune += f"<emulatorpin cpuset='{emulator}'/>"
    backing = (
        f"<memoryBacking><hugepages><page size='{hugepage_kib}' unit='KiB'/></hugepages>"
        "</memoryBacking>"
        if hugepage_kib
        else ""
    )
    numa = (
        f"<numatune><memory mode='{numatune[0]}' nodeset='{numatune[1]}'/></numatune>"
        if numatune
        else ""
    )
    guest_cells = "".join(
        f"<cell id='{i}' cpus='{i}' memory='{memory_mib * 1024 // cells}' unit='KiB'/>"
        for i in range(cells)
    )
    cpu = f"<cpu><numa>{guest_cells}</numa></cpu>" if cells else ""
    devices = "".join(_nic(kind, source) for kind, source in nics)
    devices += "".join(
        f"<hostdev mode='subsystem' type='pci' managed='no'><source>{_pci(address)}</source>"
        f"<alias name='{alias}'/></hostdev>"
        for address, alias in hostdevs
    )
    devices += "".join(_disk(i, kind, source) for i, (kind, source) in enumerate(disks))
    devices += "<video><model type='vga'/></video>" if video else ""
    return (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory>"
        f"{backing}<vcpu placement='static'>{vcpus}</vcpu><cputune>{cputune}</cputune>{numa}"
        f"{cpu}<os><type arch='x86_64'>hvm</type></os><devices>{devices}</devices></domain>"
    )


def _pci(address: str) -> str:
    domain, bus, slot_function = address.split(":")
    slot, function = slot_function.split(".")
    return (
        f"<address type='pci' domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' "
        f"function='0x{function}'/>"
    )


def _nic(kind: str, source: str) -> str:
    if kind == "hostdev":
        return f"<interface type='hostdev' managed='no'><source>{_pci(source)}</source></interface>"
    if kind == "ethernet":
        return f"<interface type='ethernet'><target dev='{source}' managed='no'/></interface>"
    if kind == "user":
        return "<interface type='user'/>"
    attr = {"bridge": "bridge", "network": "network", "direct": "dev"}[kind]
    return f"<interface type='{kind}'><source {attr}='{source}'/></interface>"


def _disk(index: int, kind: str, source: str) -> str:
    attr = {"file": "file", "block": "dev"}[kind]
    return (
        f"<disk type='{kind}' device='disk'><source {attr}='{source}'/>"
        f"<target dev='vd{chr(ord('a') + index)}' bus='virtio'/></disk>"
    )


@contextmanager
def libvirt_host(*domains: str) -> Iterator[Any]:
    """A fresh test:///default with `domains` running and the driver's own demo domain stopped.

    The driver's state lives as long as a connection to it is open: the audit's own read-only
    connections share it, and closing this one at the end gives the next test a fresh host.
    """
    conn = libvirt.open("test:///default")
    try:
        conn.lookupByName("test").destroy()
        for xml in domains:
            conn.createXML(xml, 0)
        yield conn
    finally:
        conn.close()


def launcher(
    tree: HostTree,
    pid: int,
    namespace: str,
    name: str,
    *,
    socket: str | None = "virtqemud-sock",
    netns: str | None = None,
    mems: str = "0-1",
    comm: str = "virt-launcher-m",
    program: str = "/usr/bin/virt-launcher-monitor",
    pod: int | None = None,
) -> HostTree:
    """A virt-launcher process as the host's /proc shows it: its KubeVirt command line, its root
    (a link to its container's rootfs) holding the libvirt socket as a socket inode (mknod: a
    bound socket's path would be too long for AF_UNIX), its network and mount namespace links
    (those of the pod `pod`, by default its own)."""
    pod = pid if pod is None else pod
    tree.process(
        pid, comm, program, "--qemu-timeout", "288s", "--name", name, "--uid", f"uid-{name}",
        "--namespace", namespace, "--kubevirt-share-dir", "/var/run/kubevirt",
    )  # fmt: skip
    rootfs = f"/run/containerd/rootfs/{pid}"
    tree.file(f"{rootfs}/etc/hostname", name).link(f"/proc/{pid}/root", rootfs)
    if socket is not None:
        path = tree.root / f"{rootfs}/var/run/libvirt/{socket}".lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(path, stat.S_IFSOCK | 0o600)
    tree.file(f"/proc/{pid}/status", f"Name:\t{comm}\nMems_allowed_list:\t{mems}")
    tree.link(f"/proc/{pid}/ns/mnt", f"mnt:[40266{pod}]", absolute=True)
    return tree.link(f"/proc/{pid}/ns/net", netns or f"net:[40265{pod}]", absolute=True)
