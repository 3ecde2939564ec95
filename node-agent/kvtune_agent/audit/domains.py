"""What one running libvirt domain actually got: pinning, NUMA binding, memory backing, devices.

The live XML (`XMLDesc(0)` of a running domain) is the definition the hypervisor runs, with every
pin libvirt applied; vcpuPinInfo, emulatorPinInfo and numaParameters then give libvirt's runtime
answer for the elements the XML has, and win where the driver supports them. Parsing is a pure
function of the XML text, so most of it is tested without libvirt.

The XML is parsed with the standard library's ElementTree, not defusedxml: it comes from libvirt
over a local socket and is libvirt's own serialisation of a definition it validated, with no DTD
and no entities, so the attacks defusedxml guards against (entity expansion, external entities)
cannot be carried by it; a guest cannot write into it.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from ..host import cpulist

#: libvirt's memory units, in bytes (docs: formatdomain.html#memory-allocation).
UNITS = {
    "b": 1, "bytes": 1,
    "KB": 10**3, "k": 2**10, "KiB": 2**10,
    "MB": 10**6, "M": 2**20, "MiB": 2**20,
    "GB": 10**9, "G": 2**30, "GiB": 2**30,
    "TB": 10**12, "T": 2**40, "TiB": 2**40,
}  # fmt: skip
#: virDomainNumatuneMemMode, as numaParameters() reports it.
NUMA_MODES = {0: "strict", 1: "preferred", 2: "interleave", 3: "restrictive"}
#: Where KubeVirt writes the images it generates for a VM (cloud-init, ConfigMaps, Secrets,
#: service account tokens): small files that are never a VM's data disk.
GENERATED_IMAGE_DIRS = (
    "/var/run/kubevirt-private/",
    "/var/run/kubevirt-ephemeral-disks/cloud-init-data/",
)


@dataclass(frozen=True)
class Nic:
    """A network interface: `type` as in the XML (bridge, network, hostdev, direct, ethernet...)
    and its source (bridge or network name, PCI address, host device), "" when it has none;
    `target` the tap or macvtap device it uses (KubeVirt's type='ethernet' NICs have only that)."""

    type: str
    source: str
    target: str = ""


@dataclass(frozen=True)
class HostDevice:
    """A PCI device passed through (<hostdev>): KubeVirt aliases its SR-IOV VFs ua-sriov-*."""

    address: str
    alias: str


@dataclass(frozen=True)
class Disk:
    """A disk: `type` (file, block, network, volume, nvme...), `device` (disk, lun, cdrom...)."""

    type: str
    device: str
    target: str
    source: str
    read_only: bool

    @property
    def generated(self) -> bool:
        """An image KubeVirt generated (cloud-init, ConfigMap...), not a data disk."""
        return self.source.startswith(GENERATED_IMAGE_DIRS)


@dataclass(frozen=True)
class Domain:
    """The facts of one domain the audit needs; None means "not set" (floating, unbound)."""

    name: str
    vcpus: int
    #: Host CPUs each vCPU is pinned to, by vCPU index; None for a vCPU that floats.
    vcpu_cpus: tuple[frozenset[int] | None, ...]
    emulator_cpus: frozenset[int] | None
    #: numatune: mode (strict, preferred, interleave, restrictive) and host nodes.
    numa_mode: str | None
    numa_nodes: frozenset[int] | None
    memory_kib: int
    hugepages: bool
    #: Page size of the hugepages; None with hugepages of the host's default size.
    hugepage_kib: int | None
    guest_numa_cells: int
    nics: tuple[Nic, ...]
    #: PCI devices passed through outside <interface> (KubeVirt's SR-IOV VFs, GPUs, NICs).
    hostdevs: tuple[HostDevice, ...]
    disks: tuple[Disk, ...]
    #: Devices passed through with VFIO (hostdev, hostdev interfaces): KubeVirt adds 1Gi for them.
    vfio: bool
    video: bool
    tpm: bool
    sev: bool
    arch: str

    @property
    def pinned_cpus(self) -> frozenset[int]:
        """Host CPUs of the vCPUs that are pinned."""
        return frozenset().union(*(cpus for cpus in self.vcpu_cpus if cpus is not None))

    @property
    def fully_pinned(self) -> bool:
        return bool(self.vcpu_cpus) and all(cpus is not None for cpus in self.vcpu_cpus)


class DomainXMLError(ValueError):
    """The domain XML is not what libvirt writes."""


def parse_cpuset(text: str) -> frozenset[int]:
    """libvirt's cpuset syntax: a cpulist whose `^N` entries exclude CPUs ("0-7,^3")."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    include = cpulist.parse(",".join(p for p in parts if not p.startswith("^")))
    exclude = cpulist.parse(",".join(p[1:] for p in parts if p.startswith("^")))
    return frozenset(include - exclude)


def _kib(element: ET.Element | None, size_attr: str | None = None) -> int:
    """A memory element (<memory unit='KiB'>N</memory>, or an attribute) in KiB."""
    if element is None:
        return 0
    raw = element.get(size_attr) if size_attr else element.text
    unit = element.get("unit", "KiB")
    if unit not in UNITS:
        raise DomainXMLError(f"unknown memory unit {unit!r} in <{element.tag}>")
    try:
        return -(-int((raw or "0").strip()) * UNITS[unit] // 1024)
    except ValueError:
        raise DomainXMLError(f"<{element.tag}> holds {raw!r}, not a number") from None


def _vcpus(root: ET.Element) -> tuple[int, frozenset[int] | None]:
    """The online vCPU count and the <vcpu cpuset> default pin of every vCPU and the emulator."""
    vcpu = root.find("vcpu")
    if vcpu is None:
        return 1, None
    count = int(vcpu.get("current") or (vcpu.text or "1").strip())
    cpuset = vcpu.get("cpuset")
    return count, parse_cpuset(cpuset) if cpuset else None


def _pci_address(source: ET.Element | None) -> str:
    """The PCI address of a <source><address type='pci' .../></source>, "" without one."""
    address = None if source is None else source.find("address")
    if address is None:
        return ""
    parts = [
        address.get(k, "0x0").removeprefix("0x") for k in ("domain", "bus", "slot", "function")
    ]
    domain, bus, slot, function = (int(p, 16) for p in parts)
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


def _nic(element: ET.Element) -> Nic:
    kind = element.get("type", "")
    source = element.find("source")
    target = element.find("target")
    dev = "" if target is None else target.get("dev", "")
    if source is None:
        return Nic(kind, "", dev)
    if kind == "hostdev" and _pci_address(source):
        return Nic(kind, _pci_address(source), dev)
    attr = next((a for a in ("bridge", "network", "dev") if source.get(a)), "")
    return Nic(kind, source.get(attr, "") if attr else "", dev)


def _hostdev(element: ET.Element) -> HostDevice:
    alias = element.find("alias")
    return HostDevice(_pci_address(element.find("source")),
                      "" if alias is None else alias.get("name", ""))


def _disk(element: ET.Element) -> Disk:
    source = element.find("source")
    path = ""
    if source is not None:
        path = next(
            (source.get(a, "") for a in ("file", "dev", "name", "dir", "volume") if source.get(a)),
            "",
        )
    target = element.find("target")
    return Disk(
        type=element.get("type", ""),
        device=element.get("device", "disk"),
        target="" if target is None else target.get("dev", ""),
        source=path,
        read_only=element.find("readonly") is not None,
    )


def parse_domain_xml(text: str) -> Domain:
    """The facts of a domain from its XML; DomainXMLError when it is not a libvirt domain."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise DomainXMLError(f"domain XML does not parse: {err}") from None
    if root.tag != "domain":
        raise DomainXMLError(f"expected a <domain>, found <{root.tag}>")
    try:
        return _parse(root)
    except ValueError as err:  # int() of an attribute, a cpuset that is not one
        raise DomainXMLError(f"domain {root.findtext('name', '?')}: {err}") from None


def _parse(root: ET.Element) -> Domain:
    count, default_pin = _vcpus(root)
    pins: list[frozenset[int] | None] = [default_pin] * count
    for pin in root.iterfind("cputune/vcpupin"):
        index = int(pin.get("vcpu", "-1"))
        if 0 <= index < count:  # pins of offline (hot-pluggable) vCPUs do not run
            pins[index] = parse_cpuset(pin.get("cpuset", ""))
    emulator = root.find("cputune/emulatorpin")
    memory = root.find("numatune/memory")
    nodeset = None if memory is None else memory.get("nodeset")
    hugepages = root.find("memoryBacking/hugepages")
    page = None if hugepages is None else hugepages.find("page")
    devices = root.find("devices")
    found = devices if devices is not None else ET.Element("devices")
    video = [v.find("model") for v in found.iterfind("video")]
    nics = tuple(_nic(e) for e in found.iterfind("interface"))
    os_type = root.find("os/type")
    return Domain(
        name=root.findtext("name", ""),
        vcpus=count,
        vcpu_cpus=tuple(pins),
        emulator_cpus=(
            parse_cpuset(emulator.get("cpuset", "")) if emulator is not None else default_pin
        ),
        numa_mode=None if memory is None else memory.get("mode", "strict"),
        numa_nodes=parse_cpuset(nodeset) if nodeset else None,
        memory_kib=_kib(root.find("memory")),
        hugepages=hugepages is not None,
        hugepage_kib=None if page is None else _kib(page, "size"),
        guest_numa_cells=len(root.findall("cpu/numa/cell")),
        nics=nics,
        hostdevs=tuple(_hostdev(e) for e in found.iterfind("hostdev[@type='pci']")),
        disks=tuple(_disk(e) for e in found.iterfind("disk")),
        vfio=found.find("hostdev") is not None or any(n.type == "hostdev" for n in nics),
        video=any(m is None or m.get("type") != "none" for m in video),
        tpm=found.find("tpm") is not None,
        sev=root.find("launchSecurity") is not None,
        arch="" if os_type is None else os_type.get("arch", ""),
    )


def _runtime_pins(answer: Any) -> frozenset[int]:
    """The CPUs of a vcpuPinInfo/emulatorPinInfo entry: one boolean per host CPU."""
    return frozenset(cpu for cpu, allowed in enumerate(answer) if allowed)


def _asked(call: Any) -> Any:
    """libvirt's answer, or None when this driver or version does not support the call."""
    try:
        return call(0)
    except libvirt.libvirtError:
        return None


def read_domain(dom: Any) -> Domain:
    """The facts of a running libvirt domain (a virDomain from a read-only connection).

    Runtime answers replace the XML only for what the XML pins or binds: for an unpinned vCPU
    libvirt answers "every CPU", which is no pin at all. An empty answer (a driver that knows
    fewer CPUs than the pin names) keeps the XML's value.
    """
    facts = parse_domain_xml(dom.XMLDesc(0))
    changes: dict[str, Any] = {}
    if any(cpus is not None for cpus in facts.vcpu_cpus):
        answer = _asked(dom.vcpuPinInfo) or []
        changes["vcpu_cpus"] = tuple(
            _runtime_pins(answer[i]) or xml_cpus
            if xml_cpus is not None and i < len(answer)
            else xml_cpus
            for i, xml_cpus in enumerate(facts.vcpu_cpus)
        )
    if facts.emulator_cpus is not None:
        changes["emulator_cpus"] = _runtime_pins(_asked(dom.emulatorPinInfo) or ()) or (
            facts.emulator_cpus
        )
    if facts.numa_nodes is not None:
        params: dict[str, Any] = _asked(dom.numaParameters) or {}
        if params.get("numa_nodeset"):
            changes["numa_nodes"] = parse_cpuset(params["numa_nodeset"])
            changes["numa_mode"] = NUMA_MODES.get(params.get("numa_mode", -1), facts.numa_mode)
    return dataclasses.replace(facts, **changes)
