"""What the node agent's read-only probe found on a host: the facts later decisions start from.

The report is stored as HypervisorNodeState.status.host, so it stays bounded (CPU sets are cpulist
strings such as "0-3,8-11", lists are capped) and every field is described for `kubectl explain`.
A feature the host lacks is a value (No, Absent, NotInstalled, Unknown), never a missing section;
what could not be read or made sense of is listed in `problems`, with the path and what to do.
"""

from __future__ import annotations

import typing as t

from pydantic import Field

from .common import BaseModel, Opt

if t.TYPE_CHECKING:
    from ..features import FeatureName

#: Answers the probe can prove either way, or not.
Tri = t.Literal["Yes", "No", "Unknown"]
Severity = t.Literal["Error", "Warning", "Info"]
#: How KVM can run guests on a host (CpuReport.virtualization says what each value means).
Virtualization = t.Literal[
    "VMX", "SVM", "ARM", "SIE", "POWER", "RISCV", "LoongArch", "PVM", "None", "Unknown"
]
#: The kernel's cpulist format (/sys/devices/system/cpu/online); empty means no CPUs.
CpuList = t.Annotated[str, Field(pattern=r"^([0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)?$")]
#: Upper bounds that keep the report far below the apiserver's object size limit; they sit at
#: or above the kernel's own limits (1024 NUMA nodes) and far above real hosts otherwise.
MAX_NUMA_NODES = 1024
MAX_PROBLEMS = 100


class Problem(BaseModel):
    """A finding the text report highlights: something unreadable, odd, or bad for VMs."""

    severity: Severity = Field(
        description=(
            "Error: VMs cannot run well here until it is fixed. Warning: hurts VM isolation or "
            "performance, or a fact could not be established. Info: worth knowing."
        )
    )
    # Typed for mypy only: on the wire a plain string, so the CRD schema has no enum (an operator
    # must read the status of an agent that knows one more feature); see kvtune_api.features.
    if t.TYPE_CHECKING:
        feature: FeatureName
    else:
        feature: str = Field(
            description="The probe that found it: CPU, PLE, NUMA, Memory, KSM, Numad, SRIOV, "
            "Network, Block, Kubelet."
        )
    path: str = Field(default="", description="The host path the finding is about, if any.")
    message: str = Field(description="What was found, where, and what to do about it.")


class Evidence(BaseModel):
    """One observation a conclusion rests on, so a reader can check it on the host."""

    source: str = Field(description="Where it was read, e.g. /proc/cpuinfo or an MSR path.")
    observed: str = Field(description="What was found there.")


class PleReport(BaseModel):
    """Pause-Loop Exiting (Intel PLE, AMD pause filter): whether KVM makes spinning vCPUs yield."""

    supported: Tri = Field(default="Unknown", description="The CPU can exit on PAUSE loops.")
    enabled: Tri = Field(
        default="Unknown",
        description="KVM uses it for VMs (Unknown while the KVM module is not loaded).",
    )
    module: Opt[str] = Field(
        default=None, description="The KVM module whose parameters govern it: kvm_intel, kvm_amd."
    )
    applicable: bool = Field(
        default=True,
        description="False where KVM does not run guests with VT-x or AMD-V (arm64, s390x, "
        "POWER, riscv64, loongarch64, kvm_pvm): PLE is an x86 notion there, `supported` and "
        "`enabled` are No, and `equivalent` says what plays its part, if anything.",
    )
    equivalent: Opt[str] = Field(
        default=None,
        description="Where PLE is not applicable: what makes a waiting vCPU yield instead; "
        "absent where nothing does (kvm_pvm), and then vCPUs are not to be overcommitted.",
    )
    ple_gap: Opt[int] = Field(default=None, description="kvm_intel ple_gap; 0 turns PLE off.")
    ple_window: Opt[int] = Field(default=None, description="kvm_intel ple_window (cycles).")
    ple_window_grow: Opt[int] = Field(default=None, description="kvm_intel ple_window_grow.")
    ple_window_shrink: Opt[int] = Field(default=None, description="kvm_intel ple_window_shrink.")
    ple_window_max: Opt[int] = Field(default=None, description="kvm_intel ple_window_max.")
    pause_filter_count: Opt[int] = Field(
        default=None, description="kvm_amd pause_filter_count; 0 turns the filter off."
    )
    pause_filter_thresh: Opt[int] = Field(
        default=None, description="kvm_amd pause_filter_thresh; 0 turns the filter off."
    )
    evidence: list[Evidence] = Field(
        default_factory=list, max_length=16, description="The observations the answers rest on."
    )


class CpuReport(BaseModel):
    """The processor as /proc/cpuinfo and the KVM modules describe it."""

    vendor: Opt[str] = Field(default=None, description="vendor_id, e.g. GenuineIntel.")
    model_name: Opt[str] = Field(default=None, description="The marketing model name.")
    family: Opt[int] = Field(default=None, description="CPU family number.")
    model: Opt[int] = Field(default=None, description="CPU model number.")
    stepping: Opt[int] = Field(default=None, description="CPU stepping.")
    logical_cpus: int = Field(
        default=0, ge=0, description="Processors listed in /proc/cpuinfo (the online CPUs)."
    )
    architecture: Opt[t.Literal["x86", "arm64", "s390", "power", "riscv", "loongarch"]] = Field(
        default=None,
        description="The processor architecture, from the shape of /proc/cpuinfo; absent: not "
        "recognised.",
    )
    virtualization: Virtualization = (
        Field(
            default="Unknown",
            description=(
                "How KVM can run guests here: VMX (Intel VT-x), SVM (AMD-V), ARM (the arm64 "
                "virtualization extensions, usable when the kernel booted at EL2), SIE (s390's "
                "Start Interpretive Execution facility), POWER (KVM on POWER: kvm_hv or kvm_pr), "
                "RISCV (the RISC-V hypervisor extension H), LoongArch (the LoongArch "
                "virtualization extension LVZ), "
                "PVM (kvm_pvm: guests run without hardware virtualization, e.g. inside a VM "
                "without nested VT-x), None (absent or disabled in firmware), Unknown "
                "(/proc/cpuinfo missing or not recognised)."
            ),
        )
    )
    kvm_module: Opt[str] = Field(
        default=None,
        description="The loaded KVM module that runs guests (/sys/module): kvm_intel, kvm_amd, "
        "kvm_pvm, kvm_hv, kvm_pr, or kvm on arm64, s390x, riscv64 and loongarch64, where KVM is "
        "one module or built in; absent: none is loaded.",
    )
    hypervisor_guest: bool = Field(
        default=False, description="The 'hypervisor' flag is set: this host is itself a VM."
    )
    kvm_device: bool = Field(default=False, description="/dev/kvm exists.")
    ple: PleReport = Field(default_factory=PleReport, description="Pause-Loop Exiting.")


class NumaNode(BaseModel):
    """One NUMA node as /sys/devices/system/node/nodeN describes it."""

    id: int = Field(ge=0, description="Node id (ids may have gaps).")
    cpus: CpuList = Field(
        default="",
        description="Its online CPUs as a cpulist (from cpulist, or cpumap on old kernels, "
        "else the cpuN links the kernel makes in the node's directory); empty: CPU-less node, "
        "or unknown where the problems say so (then not `memoryOnly`).",
    )
    cpu_count: int = Field(default=0, ge=0, description="Number of CPUs in `cpus`.")
    cpus_unknown: bool = Field(
        default=False,
        description="Neither the node's cpulist, its cpumap nor the cpuN links under it give "
        "its CPUs (the problems say why): `cpus` is empty because they are unknown, not because "
        "the node has none, so kvtune splits no hugepage count across the host's nodes.",
    )
    offline_cpus: CpuList = Field(
        default="",
        description="CPUs the node lists that are offline (some kernels, e.g. on POWER, list "
        "them): not in `cpus`, unusable by VMs.",
    )
    memory_total_kib: int = Field(
        default=0,
        ge=0,
        description="MemTotal of the node, in KiB; 0 without `memoryless`: unknown (no "
        "readable meminfo, which the problems say).",
    )
    memory_free_kib: int = Field(default=0, ge=0, description="MemFree of the node, in KiB.")
    memoryless: bool = Field(
        default=False, description="The node has no memory: its CPUs only reach remote memory."
    )
    memory_only: bool = Field(
        default=False,
        description="The node has memory but no online CPU (CXL or HBM memory, GPU memory, or "
        "every CPU offline): its memory is remote to every CPU, so kvtune places no VM CPUs "
        "there and leaves it out of an even hugepage split.",
    )
    distances: list[int] = Field(
        default_factory=list,
        max_length=MAX_NUMA_NODES,
        description="Distance to each node, in the order of `nodes` (10 = local).",
    )
    linked_cpus: Opt[CpuList] = Field(
        default=None,
        description="Read only where nodes list the same CPUs: the CPUs whose cpuN link is in "
        "this node's directory, which is what the kubelet (cAdvisor) places CPUs by.",
    )


class NumaReport(BaseModel):
    """NUMA nodes and the CPU topology, counted as the kubelet's CPU manager counts it."""

    nodes: list[NumaNode] = Field(
        default_factory=list, max_length=MAX_NUMA_NODES, description="Nodes, by id."
    )
    online_cpus: CpuList = Field(
        default="",
        description="/sys/devices/system/cpu/online (on kernels without it: the present CPUs "
        "whose cpuN/online is not 0).",
    )
    offline_cpus: CpuList = Field(
        default="",
        description="The present CPUs that are offline: /sys/devices/system/cpu/offline, "
        "which also names CPU slots no CPU fills, less those (on kernels without it: the "
        "present CPUs whose cpuN/online is 0).",
    )
    isolated_cpus: CpuList = Field(
        default="", description="/sys/devices/system/cpu/isolated (isolcpus= on the cmdline)."
    )
    overlapping_cpus: CpuList = Field(
        default="",
        description="CPUs listed by more than one NUMA node (wrong firmware tables): where "
        "set, the node layout does not tell which memory is local to a CPU.",
    )
    no_package_cpus: CpuList = Field(
        default="",
        description="Online CPUs whose physical_package_id is -1 (the firmware names no "
        "socket); the kubelet takes them for one socket.",
    )
    sockets: int = Field(
        default=0, ge=0, description="Distinct physical_package_id of the online CPUs."
    )
    cores: int = Field(
        default=0,
        ge=0,
        description="Physical cores as the kubelet's CPU manager counts them: distinct (NUMA "
        "node, physical_package_id, core_id) of the online CPUs.",
    )
    kernel_cores: int = Field(
        default=0,
        ge=0,
        description="Physical cores as the kernel groups hardware threads (distinct "
        "core_cpus_list, thread_siblings_list on older kernels); above `cores` where core_id "
        "repeats across the dies or clusters of one NUMA node, which the kubelet then takes "
        "for one core.",
    )
    threads_per_core: int = Field(
        default=0, ge=0, description="Most hardware threads on one core (2 with SMT)."
    )
    min_threads_per_core: int = Field(
        default=0,
        ge=0,
        description="Fewest hardware threads on one core: below threadsPerCore on hybrid CPUs "
        "(P-cores with SMT, E-cores without) or with some threads offline.",
    )


class HugepagePool(BaseModel):
    """The pool of one hugepage size, system-wide or on one NUMA node."""

    size: str = Field(description="Page size as a quantity: 2Mi, 1Gi.")
    size_kib: int = Field(ge=0, description="Page size in KiB, as in hugepages-<kB>kB.")
    node: Opt[int] = Field(default=None, description="NUMA node id; absent: system-wide pool.")
    total: Opt[int] = Field(
        default=None, ge=0, description="nr_hugepages: pages allocated; absent: unknown."
    )
    free: Opt[int] = Field(
        default=None, ge=0, description="free_hugepages: pages not in use; absent: unknown."
    )
    surplus: int = Field(default=0, ge=0, description="surplus_hugepages: overcommitted pages.")
    reserved: Opt[int] = Field(
        default=None, description="resv_hugepages: promised but not yet faulted (system-wide)."
    )


class MemoryReport(BaseModel):
    """Host memory: totals, swap, transparent hugepages and hugepage pools."""

    total_kib: Opt[int] = Field(default=None, description="MemTotal of /proc/meminfo, KiB.")
    free_kib: Opt[int] = Field(default=None, description="MemFree, KiB.")
    available_kib: Opt[int] = Field(default=None, description="MemAvailable, KiB.")
    swap_total_kib: Opt[int] = Field(default=None, description="SwapTotal, KiB.")
    swap_free_kib: Opt[int] = Field(default=None, description="SwapFree, KiB.")
    default_hugepage_kib: Opt[int] = Field(default=None, description="Hugepagesize, KiB.")
    transparent_hugepage: Opt[str] = Field(
        default=None,
        description="The selected mode of /sys/kernel/mm/transparent_hugepage/enabled.",
    )
    transparent_hugepage_defrag: Opt[str] = Field(
        default=None, description="The selected mode of .../transparent_hugepage/defrag."
    )
    hugepages: list[HugepagePool] = Field(
        default_factory=list, max_length=16, description="System-wide pools, one per size."
    )
    hugepage_pools_known: bool = Field(
        default=True,
        description="False when /sys/kernel/mm/hugepages is missing (a kernel without "
        "hugetlbfs, or a /sys not mounted whole): `hugepages` is then unknown, not empty.",
    )
    hugepages_per_node: list[HugepagePool] = Field(
        default_factory=list,
        max_length=4 * MAX_NUMA_NODES,
        description="Pools per NUMA node and size.",
    )
    kernel_args: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Hugepage and THP arguments of /proc/cmdline (hugepages=, hugepagesz=, ...).",
    )


UnitState = t.Literal["Enabled", "Disabled", "Masked", "NotInstalled"]


class DaemonReport(BaseModel):
    """A host daemon that moves or merges VM memory behind the kubelet's back (numad, ksmtuned)."""

    name: str = Field(description="Process and systemd unit name.")
    running: bool = Field(default=False, description="A process of that name runs.")
    pids: list[int] = Field(default_factory=list, max_length=16, description="Its process ids.")
    unit: UnitState = Field(
        default="NotInstalled", description="State of its systemd unit, from the unit files."
    )
    unit_path: Opt[str] = Field(default=None, description="The unit file found.")
    wanted_by: list[str] = Field(
        default_factory=list, max_length=16, description="Targets whose .wants/ enable it."
    )


class KsmReport(BaseModel):
    """Kernel samepage merging, from /sys/kernel/mm/ksm."""

    state: t.Literal["Running", "Stopped", "Unmerging", "Absent", "Unknown"] = Field(
        default="Unknown",
        description="run = 1, 0, 2; Absent: kernel without KSM; Unknown: run unreadable.",
    )
    pages_shared: Opt[int] = Field(default=None, description="Shared pages in use.")
    pages_sharing: Opt[int] = Field(default=None, description="Pages merged into them.")
    merge_across_nodes: Opt[int] = Field(
        default=None, description="1: pages merge across NUMA nodes (remote memory for VMs)."
    )
    ksmtuned: DaemonReport = Field(
        default_factory=lambda: DaemonReport(name="ksmtuned"),
        description="The daemon that starts KSM under memory pressure.",
    )


class VirtualFunction(BaseModel):
    """One SR-IOV virtual function of a NIC."""

    index: int = Field(ge=0, description="N of the PF's virtfnN link.")
    pci_address: str = Field(description="PCI address, e.g. 0000:3b:02.0.")
    driver: Opt[str] = Field(default=None, description="Bound driver; absent: unbound.")
    netdev: Opt[str] = Field(default=None, description="Its interface name when a host driver.")
    assigned_to_vm: bool = Field(
        default=False, description="Bound to vfio-pci, i.e. passed through to a VM."
    )
    in_use: bool = Field(
        default=False,
        description="Bound to a driver other than its PF's VF network driver (vfio-pci, "
        "pci-stub, igb_uio, uio_pci_generic, ...): a VM or a user-space program holds it, and "
        "changing the PF's VF count takes it away.",
    )


class Nic(BaseModel):
    """A network interface backed by a PCI device, as `ip link` and sysfs show it."""

    name: str = Field(description="Interface name.")
    pci_address: Opt[str] = Field(default=None, description="PCI address of its device.")
    vendor_id: Opt[str] = Field(default=None, description="PCI vendor id in hex, e.g. 8086.")
    device_id: Opt[str] = Field(default=None, description="PCI device id in hex, e.g. 159b.")
    driver: Opt[str] = Field(default=None, description="Kernel driver of the device.")
    numa_node: Opt[int] = Field(
        default=None, description="NUMA node of the device; absent when firmware does not say."
    )
    operstate: Opt[str] = Field(default=None, description="up, down, ...")
    mac: Opt[str] = Field(default=None, description="Hardware address.")
    mtu: Opt[int] = Field(default=None, description="MTU in bytes.")
    master: Opt[str] = Field(
        default=None, description="The bridge, bond or ovs-system it is enslaved to, if any."
    )
    sriov_total_vfs: Opt[int] = Field(
        default=None, description="VFs the device can have; absent: not SR-IOV capable."
    )
    sriov_num_vfs: Opt[int] = Field(default=None, description="VFs enabled now.")
    vfs: list[VirtualFunction] = Field(
        default_factory=list, max_length=256, description="Its enabled VFs."
    )


class SriovReport(BaseModel):
    """PCI network interfaces and their SR-IOV virtual functions."""

    nics: list[Nic] = Field(
        default_factory=list,
        max_length=256,
        description="Interfaces backed by a device (VF interfaces are listed under their PF).",
    )
    virtual_interfaces: int = Field(
        default=0, ge=0, description="Interfaces without a device (lo, bridges, veths), counted."
    )


#: What kind of interface a netdev is, from what sysfs shows of it.
InterfaceKind = t.Literal[
    "Bridge", "OpenVSwitch", "Veth", "Tap", "Macvtap", "Macvlan", "VirtualFunction", "Physical",
    "Other",
]
MAX_PORTS = 256
MAX_PODS = 512


class SoftwareSwitch(BaseModel):
    """A switch the host runs in software: every packet through it costs host CPU and latency."""

    name: str = Field(
        description="The Linux bridge, or ovs-system for Open vSwitch's datapath (which carries "
        "every OVS bridge of the host)."
    )
    kind: t.Literal["Bridge", "OpenVSwitch"] = Field(description="Linux bridge or Open vSwitch.")
    bridges: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="OpenVSwitch: the bridges whose internal ports the host shows (OVS keeps "
        "which port is on which bridge in userspace; ovs-vsctl is not asked).",
    )
    ports: list[str] = Field(
        default_factory=list, max_length=MAX_PORTS, description="Host interfaces plugged in."
    )
    port_count: int = Field(default=0, ge=0, description="Ports, counting those not listed.")


class PodInterface(BaseModel):
    """An interface inside a virt-launcher pod, and where it leads on the host."""

    name: str = Field(description="Its name in the pod: eth0 (the pod network), net1, tap0...")
    kind: InterfaceKind = Field(description="What it is.")
    master: Opt[str] = Field(
        default=None, description="The in-pod bridge it is plugged into (KubeVirt's k6t-*)."
    )
    link: Opt[str] = Field(
        default=None,
        description="Veth: its peer on the host. Macvtap, Macvlan: the host's lower device. "
        "VirtualFunction: the VF's PCI address.",
    )
    switch: Opt[str] = Field(
        default=None,
        description="Veth: the host switch its peer is plugged into; absent: routed by the host.",
    )


class PodNetwork(BaseModel):
    """The network namespace of one virt-launcher pod, seen through its root's /sys."""

    vmi: str = Field(description="namespace/name of the VMI the launcher runs.")
    pid: int = Field(ge=0, description="The launcher's pid (the audit matches VMs by it).")
    netns: Opt[str] = Field(default=None, description="Its network namespace, net:[inode].")
    interfaces: list[PodInterface] = Field(
        default_factory=list, max_length=64, description="Its interfaces but lo, by name."
    )


class LowerLink(BaseModel):
    """A macvtap or macvlan device of the host's own namespace and the NIC under it."""

    name: str = Field(description="Interface name, e.g. macvtap0.")
    kind: t.Literal["Macvtap", "Macvlan"] = Field(description="macvtap (a VM's tap) or macvlan.")
    lower: Opt[str] = Field(default=None, description="The lower device; absent: not found.")


class HostRouting(BaseModel):
    """Which interfaces carry the host's own traffic, as /proc/1/net shows the host's namespace.

    Linux keeps IPv4 addresses out of sysfs and procfs per device; an address normally brings a
    route of its subnet through its device, so an interface with an IPv4 route stands for one
    with an address (an address added with noprefixroute and no route is not seen).
    """

    default_route: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Interfaces an IPv4 or IPv6 default route leaves through.",
    )
    ipv4_routes: list[str] = Field(
        default_factory=list,
        max_length=MAX_PORTS,
        description="Interfaces with an IPv4 route of the main table (/proc/net/route).",
    )
    ipv6_addresses: list[str] = Field(
        default_factory=list,
        max_length=MAX_PORTS,
        description="Interfaces with a global or site IPv6 address (/proc/net/if_inet6).",
    )
    stacked: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_PORTS,
        description="Interfaces beneath one that carries the host's own traffic (a VLAN, "
        "macvlan, bond, team, bridge or Open vSwitch stacked on them, at any depth), each with "
        "the device above it that carries the traffic: the host uses them too.",
    )
    error: Opt[str] = Field(
        default=None,
        description="Why the host's routes could not be read; then which interfaces the host "
        "uses itself is unknown, and none is offered to VMs.",
    )


class NetworkReport(BaseModel):
    """Software switches and what virt-launcher pods are plugged into: the paths VM traffic takes
    through the host."""

    switches: list[SoftwareSwitch] = Field(
        default_factory=list, max_length=64, description="Linux bridges and OVS, by name."
    )
    pods: list[PodNetwork] = Field(
        default_factory=list, max_length=MAX_PODS, description="virt-launcher pods, by VMI."
    )
    macvtaps: list[LowerLink] = Field(
        default_factory=list,
        max_length=MAX_PORTS,
        description="macvtap and macvlan devices in the host's namespace (libvirt's direct NICs).",
    )
    passthrough_nics: list[str] = Field(
        default_factory=list,
        max_length=MAX_PORTS,
        description="PCI addresses of network controllers bound to vfio-pci that are not VFs: "
        "whole NICs passed through to VMs.",
    )
    routing: HostRouting = Field(
        default_factory=HostRouting, description="Interfaces the host's own traffic uses."
    )


BlockClass = t.Literal["Eligible", "InUse", "System", "Unknown"]


class BlockDevice(BaseModel):
    """A whole block device and whether it could be handed to one VM as a raw LUN."""

    name: str = Field(description="Kernel name, e.g. sdb, nvme0n1, dm-3.")
    path: str = Field(description="Device node, e.g. /dev/sdb.")
    kind: t.Literal["Disk", "Multipath", "DeviceMapper", "Raid"] = Field(
        default="Disk",
        description="Disk, a multipath map (dm uuid mpath-*), another device-mapper target "
        "(LVM, crypt) or an md RAID array.",
    )
    dm_name: Opt[str] = Field(default=None, description="Device-mapper name (/dev/mapper/...).")
    size_bytes: int = Field(default=0, ge=0, description="Size in bytes.")
    rotational: Opt[bool] = Field(default=None, description="Spinning disk (queue/rotational).")
    read_only: bool = Field(default=False, description="The kernel marks it read-only.")
    vendor: Opt[str] = Field(default=None, description="device/vendor.")
    model: Opt[str] = Field(default=None, description="device/model.")
    serial: Opt[str] = Field(default=None, description="Serial number, where sysfs has it.")
    wwid: Opt[str] = Field(
        default=None,
        description="World wide id as the device spells it (wwid or device/wwid; a multipath "
        "map's from its dm uuid). kvtune compares ids in one canonical form, so naa.600a... "
        "and 3600a... are one LUN.",
    )
    by_id: list[str] = Field(
        default_factory=list, max_length=32, description="Its /dev/disk/by-id names."
    )
    partitions: list[str] = Field(default_factory=list, max_length=128, description="Partitions.")
    holders: list[str] = Field(
        default_factory=list, max_length=64, description="Devices built on it (holders/)."
    )
    mountpoints: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Where it, a partition or a device built on it is mounted or swapped on.",
    )
    signature: Opt[str] = Field(
        default=None,
        description=(
            "What the first 64 KiB and the last 256 KiB hold: ext4, xfs, btrfs, swap, "
            "LVM2_member, gpt, dos, luks, linux_raid_member, bluestore (at the start); "
            "linux_raid_member, gpt, isw_raid_member, ddf_raid_member (at the end); 'none' when "
            "all zero; 'unrecognised' for other data; absent when not read."
        ),
    )
    classification: BlockClass = Field(
        default="Unknown",
        description=(
            "Eligible: proven free, the one device of its LUN on the node and named by "
            "/dev/disk/by-id: a raw LUN a VM may own. InUse: holds data or is part of another "
            "device (a path of a multipath map). System: backs the OS (/, /boot, /usr, /var or "
            "swap). Unknown: not proven free; never handed out."
        ),
    )
    reason: str = Field(default="", description="Why it got its classification.")


class BlockReport(BaseModel):
    """Whole block devices under /sys/block, classified for use as raw VM LUNs."""

    devices: list[BlockDevice] = Field(
        default_factory=list, max_length=1024, description="Devices, by name."
    )
    skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Devices never handed to VMs and not listed, counted by kind (loop, zram...).",
    )


class ReservedMemory(BaseModel):
    """One entry of the kubelet's reservedMemory (memory manager, per NUMA node)."""

    numa_node: int = Field(ge=0, description="NUMA node.")
    limits: dict[str, str] = Field(
        default_factory=dict, description="Resource name to quantity, e.g. memory: 1Gi."
    )


class KubeletReport(BaseModel):
    """The kubelet settings that decide whether VMs can get dedicated, NUMA-local resources.

    Read as the kubelet reads them: the file its --config flag names, then the drop-in files of
    its --config-dir in lexical order (maps merged, lists and values replaced), then its
    command-line flags, which override both. The running kubelet's command line
    (/proc/<pid>/cmdline) names them; without a kubelet process, the distributions' usual paths
    are read. A setting none of them sets is reported with the kubelet's default.
    """

    pid: Opt[int] = Field(
        default=None,
        description="The kubelet process whose command line was read (for k3s, the k3s process "
        "that runs it, with its --kubelet-arg flags); absent: none runs, the usual paths were "
        "read.",
    )
    config_path: Opt[str] = Field(
        default=None, description="The config file read; absent: none found or named."
    )
    drop_in_dir: Opt[str] = Field(
        default=None, description="The drop-in directory (--config-dir) read, if any."
    )
    drop_in_paths: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Its *.conf files, merged over the config file in this (lexical) order.",
    )
    flags: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="The kubelet's command-line flags read, which override the files, as given "
        "(e.g. --cpu-manager-policy=static).",
    )
    flag_files: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Files the flags were read from: for k3s, which runs the kubelet inside "
        "its own process, its configuration file and the config.yaml.d drop-ins, whose "
        "kubelet-arg entries come before its --kubelet-arg flags.",
    )
    origins: dict[str, str] = Field(
        default_factory=dict,
        description="Where each setting read was set: KubeletConfiguration key to the file or "
        "flag that set it last (for k3s, \"kubelet-arg in <file>\" or --kubelet-arg); a key "
        "left out has the kubelet's default.",
    )
    other_config_paths: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Other kubelet config files present that the kubelet does not read.",
    )
    error: Opt[str] = Field(
        default=None, description="Why the configuration could not be used, naming the file."
    )
    cpu_manager_policy: Opt[str] = Field(
        default=None, description="cpuManagerPolicy: none or static (dedicated CPUs need static)."
    )
    topology_manager_policy: Opt[str] = Field(
        default=None, description="topologyManagerPolicy: none, best-effort, restricted, ..."
    )
    topology_manager_scope: Opt[str] = Field(
        default=None, description="topologyManagerScope: container or pod."
    )
    memory_manager_policy: Opt[str] = Field(
        default=None, description="memoryManagerPolicy: None or Static."
    )
    cpu_manager_policy_options: dict[str, str] = Field(
        default_factory=dict,
        description="cpuManagerPolicyOptions, e.g. full-pcpus-only: \"true\" (whole cores only).",
    )
    reserved_system_cpus: Opt[str] = Field(
        default=None, description="reservedSystemCPUs, a cpulist kept from pods."
    )
    system_reserved_memory: Opt[str] = Field(default=None, description="systemReserved.memory.")
    kube_reserved_memory: Opt[str] = Field(default=None, description="kubeReserved.memory.")
    eviction_hard_memory: Opt[str] = Field(
        default=None,
        description="evictionHard's memory.available, a quantity or a percentage of the host's "
        "memory; absent when the kubelet's configuration leaves it out.",
    )
    reserved_memory: list[ReservedMemory] = Field(
        default_factory=list, max_length=MAX_NUMA_NODES, description="reservedMemory."
    )


class HostReport(BaseModel):
    """The full read-only probe of one host."""

    cpu: CpuReport = Field(default_factory=CpuReport, description="Processor, KVM and PLE.")
    numa: NumaReport = Field(default_factory=NumaReport, description="NUMA and CPU topology.")
    memory: MemoryReport = Field(
        default_factory=MemoryReport, description="Memory, swap, THP and hugepages."
    )
    ksm: KsmReport = Field(default_factory=KsmReport, description="Kernel samepage merging.")
    numad: DaemonReport = Field(
        default_factory=lambda: DaemonReport(name="numad"),
        description="The numad daemon, which moves processes and memory between NUMA nodes.",
    )
    sriov: SriovReport = Field(default_factory=SriovReport, description="NICs and their VFs.")
    network: NetworkReport = Field(
        default_factory=NetworkReport, description="Software switches and VM pods' paths."
    )
    block: BlockReport = Field(default_factory=BlockReport, description="Block devices.")
    kubelet: KubeletReport = Field(
        default_factory=KubeletReport, description="The kubelet's resource managers."
    )
    problems: list[Problem] = Field(
        default_factory=list,
        max_length=MAX_PROBLEMS,
        description="Findings, most severe first; the last says how many were left out.",
    )
