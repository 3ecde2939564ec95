"""The audit's judgement: does each running VM get the isolation its profile promises, and do all
of them together fit in the node's memory?

Pure functions of what discovery and libvirt found (`Observed`), the host probe (`HostReport`,
for NUMA nodes and memory) and the promises (`AuditPolicy`), so every rule is tested on hand-made
facts and the libvirt tests only have to show that the facts are read right. Findings say which
VMs, CPUs or devices are concerned and what to change, because that is what a person acts on.

Rules and what counts:
- Dedicated CPUs: pinned vCPU sets of two VMs never overlap, and no VM's emulator threads may run
  on another VM's pinned vCPUs. Floating (unpinned) VMs are not compared: KubeVirt confines them
  to the kubelet's shared CPU pool with cgroups, which libvirt does not show.
- Network: where each NIC reaches the outside. A KubeVirt VM's NICs are followed through its
  pod (tap, in-pod k6t-* bridge, the pod's veth or macvtap) to the host switch or NIC the host
  probe found them on, since its in-pod bridges have one name in every pod but are one bridge
  per pod; a host libvirt's VM names host bridges itself. A switch another VM also reaches is
  shared, and so is the pod network unless the profile says it carries only management traffic;
  SR-IOV VFs, whole NICs passed through and macvtap on a NIC no other VM uses are dedicated. A VM
  with only shared paths is a violation, one with a dedicated NIC beside them a warning.
- NUMA: a VM that fits on one node (a node with at least its vCPU count of CPUs and its guest
  memory) must have its pinned vCPUs on one node and its memory bound to that node. Memory is
  bound by numatune, else by the launcher's cgroup (Mems_allowed); bound to every node is not
  bound. A VM too big for any node may span nodes, and is warned about only if the guest cannot
  see that (no guest NUMA cells).
- Memory (see `account`): two budgets, ordinary memory and each hugepage pool, neither to be
  overcommitted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kvtune_api import kubevirt_overhead
from kvtune_api import quantity as kvtune_quantity
from kvtune_api.v1alpha1.audit import (
    MAX_DEVICES,
    MAX_FINDINGS,
    MAX_VMS,
    FindingSeverity,
    HugepageAccount,
    MemoryAccount,
    NodeVmAudit,
    Rule,
    VmAudit,
    VmFinding,
)
from kvtune_api.v1alpha1.host import HostReport, PodInterface, PodNetwork
from kvtune_api.v1alpha1.profile import HostSettings, VmiSettings

from ..features import memory_budget
from ..features.memory.probe import SIZE_KIB, size_name
from ..host import cpulist
from .domains import Domain, Nic

SEVERITY_ORDER: dict[FindingSeverity, int] = {"Violation": 0, "Warning": 1, "Info": 2}
#: NIC types whose traffic a host (or pod) switches in software, by source name.
SWITCHED = {
    "bridge": "software bridge",
    "network": "libvirt network (a software bridge)",
    "direct": "macvtap on the host device",
}
#: Disk types that are a raw device, not a file on a host filesystem or a network volume.
RAW_DISKS = frozenset({"block", "nvme"})
#: VMs named in one message; the rest are counted.
NAMED = 3
#: The pod network's interface in every virt-launcher pod.
POD_INTERFACE = "eth0"
#: The alias KubeVirt gives the <hostdev> of an SR-IOV interface (ua-: user alias).
SRIOV_ALIAS = "ua-sriov-"


@dataclass(frozen=True)
class AuditPolicy:
    """The promises the audit holds running VMs to.

    The defaults are what holds for any VM host (no shared dedicated CPUs, NUMA locality, no
    shared bridges, no memory overcommit); `from_settings` adds what a profile promises.
    """

    dedicated_cpus: bool = False
    """Every vCPU pinned (profile vmi.dedicatedCpus)."""
    isolate_emulator_thread: bool = False
    """Emulator threads pinned off the VM's vCPU cores (vmi.isolateEmulatorThread)."""
    hugepage_kib: int | None = None
    """Guest memory backed by hugepages of at least this size, KiB (vmi.hugepageSize)."""
    block_luns: bool = False
    """Data disks on raw block devices, never files on a host filesystem (storage.blockLuns)."""
    allow_memory_overcommit: bool = False
    """Memory overcommit is reported as Info rather than a violation (memory.allowOvercommit)."""
    overhead_floor_bytes: int = 0
    """Least overhead counted per VM, bytes (memory.vmOverheadFloor, which the webhook adds to
    each VMI it shapes; KubeVirt's own estimate when it is higher)."""
    pod_network_shared: bool = True
    """The pod network counts as a shared switch; False where the profile says it carries only
    management traffic (vmi.podNetwork: ManagementOnly)."""

    @classmethod
    def from_settings(cls, host: HostSettings, vmi: VmiSettings | None) -> AuditPolicy:
        """The promises of a profile: its host settings and, if it shapes VMIs, its vmi section."""
        floor = kvtune_quantity.parse_bytes(
            host.memory.vm_overhead_floor, "spec.memory.vmOverheadFloor")
        return cls(
            dedicated_cpus=vmi is not None and vmi.dedicated_cpus,
            isolate_emulator_thread=vmi is not None and vmi.isolate_emulator_thread,
            hugepage_kib=SIZE_KIB[vmi.hugepage_size] if vmi and vmi.hugepage_size else None,
            block_luns=host.storage.block_luns is not None,
            allow_memory_overcommit=host.memory.allow_overcommit,
            overhead_floor_bytes=floor,
            pod_network_shared=vmi is None or vmi.pod_network == "Shared",
        )


@dataclass(frozen=True)
class Observed:
    """One VM as discovery and libvirt saw it: its domain, or why it could not be read."""

    name: str
    namespace: str
    domain_name: str
    pid: int | None
    #: The network namespace its bridges live in; unique per VM when it could not be read.
    netns: str
    #: NUMA nodes its launcher's cgroup allows memory from; None: unknown.
    mems_allowed: frozenset[int] | None
    domain: Domain | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def _finding(severity: FindingSeverity, rule: Rule, message: str) -> VmFinding:
    return VmFinding(severity=severity, rule=rule, message=message)


def _ids(ids: Iterable[int]) -> str:
    return cpulist.format_ids(ids)


def _size(kib: int) -> str:
    """A memory size for a person: GiB with one decimal from 1 GiB, else MiB."""
    return f"{kib / 2**20:.1f} GiB" if abs(kib) >= 2**20 else f"{kib / 1024:.0f} MiB"


def _names(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:NAMED])
    return shown + (f" and {len(labels) - NAMED} more" if len(labels) > NAMED else "")


@dataclass(frozen=True)
class _Host:
    """The host facts the rules need, computed once."""

    node_of_cpu: dict[int, int]
    #: (id, CPU count, memory KiB) of each node with memory.
    nodes: tuple[tuple[int, int, int], ...]
    default_hugepage_kib: int | None

    @classmethod
    def of(cls, host: HostReport) -> _Host:
        # A CPU that several nodes list (wrong firmware tables) has no node to judge by.
        ambiguous = cpulist.parse(host.numa.overlapping_cpus)
        node_of_cpu = {cpu: node.id for node in host.numa.nodes
                       for cpu in cpulist.parse(node.cpus) - ambiguous}
        nodes = tuple(
            (node.id, node.cpu_count, node.memory_total_kib)
            for node in host.numa.nodes
            if node.memory_total_kib > 0
        )
        return cls(node_of_cpu, nodes, host.memory.default_hugepage_kib)

    def cpu_nodes(self, cpus: Iterable[int]) -> frozenset[int]:
        return frozenset(self.node_of_cpu[c] for c in cpus if c in self.node_of_cpu)

    def page_kib(self, dom: Domain) -> int | None:
        """The hugepage size backing the domain; None without hugepages or when unknown."""
        if not dom.hugepages:
            return None
        return dom.hugepage_kib or self.default_hugepage_kib

    def memory_nodes(self, vm: Observed, dom: Domain) -> frozenset[int] | None:
        """Nodes the VM's memory may come from; None when nothing binds it."""
        nodes = dom.numa_nodes if dom.numa_nodes is not None else vm.mems_allowed
        if nodes is None or nodes >= {node for node, _, _ in self.nodes}:
            return None
        return nodes


# -- per-VM rules ----------------------------------------------------------------------------

VmRule = Callable[[Observed, Domain, _Host, AuditPolicy], list[VmFinding]]


def _dedicated(vm: Observed, dom: Domain, host: _Host, policy: AuditPolicy) -> list[VmFinding]:
    floating = [i for i, cpus in enumerate(dom.vcpu_cpus) if cpus is None]
    if not policy.dedicated_cpus or not floating:
        return []
    return [
        _finding(
            "Violation",
            "DedicatedCpus",
            f"vCPUs {_ids(floating)} of {dom.vcpus} are not pinned: they share the node's "
            "CPUs with other workloads. The profile asks for dedicated CPUs (KubeVirt's "
            "dedicatedCpuPlacement): check that the VMI was shaped by kvtune's webhook and that "
            "the kubelet runs the static CPU manager",
        )
    ]


def _emulator(vm: Observed, dom: Domain, host: _Host, policy: AuditPolicy) -> list[VmFinding]:
    if not policy.isolate_emulator_thread or not dom.fully_pinned:
        return []
    if dom.emulator_cpus is None:
        return [
            _finding(
                "Violation",
                "EmulatorIsolation",
                "emulator threads are not pinned, so QEMU's I/O and housekeeping can run on its "
                f"vCPU cores {_ids(dom.pinned_cpus)}. The profile asks for isolateEmulatorThread",
            )
        ]
    shared = dom.emulator_cpus & dom.pinned_cpus
    if not shared:
        return []
    return [
        _finding(
            "Violation",
            "EmulatorIsolation",
            f"emulator threads may run on CPUs {_ids(shared)}, which also carry its vCPUs: QEMU's "
            "I/O threads preempt the guest. The profile asks for isolateEmulatorThread (KubeVirt "
            "then gives the emulator a CPU of its own)",
        )
    ]


def _numa(vm: Observed, dom: Domain, host: _Host, policy: AuditPolicy) -> list[VmFinding]:
    if len(host.nodes) < 2:
        return []  # one node: everything is local
    if not dom.fully_pinned:
        return [
            _finding(
                "Info",
                "NumaLocality",
                "vCPUs float, so NUMA locality is left to the kernel (or numad): not checked",
            )
        ]
    cpu_nodes = host.cpu_nodes(dom.pinned_cpus)
    # One CPU without a node (listed by several, where nodes overlap even partly) leaves the
    # VM's nodes unknown: judging it by the others' nodes alone could call it local.
    unplaced = dom.pinned_cpus - host.node_of_cpu.keys()
    if unplaced:
        return [
            _finding(
                "Info",
                "NumaLocality",
                f"CPUs {_ids(unplaced)} of its CPUs {_ids(dom.pinned_cpus)} belong to no one "
                "NUMA node the host's lists agree on (see the NUMA problems of the node's "
                "report): locality not checked",
            )
        ]
    memory_nodes = host.memory_nodes(vm, dom)
    # Only a node with CPUs can hold a VM: memory-only nodes (CXL, HBM, GPU memory) never can.
    fitting = [n for n, cpus, kib in host.nodes
               if cpus and cpus >= dom.vcpus and kib >= dom.memory_kib]
    if not fitting:
        if len(cpu_nodes) > 1 and dom.guest_numa_cells < 2:
            return [
                _finding(
                    "Warning",
                    "NumaLocality",
                    f"too big for one NUMA node ({dom.vcpus} vCPUs, {_size(dom.memory_kib)}), it "
                    f"spans nodes {_ids(cpu_nodes)}, but the guest sees a single node and cannot "
                    "keep its threads near their memory: give it guest NUMA cells (KubeVirt's "
                    "guestMappingPassthrough, vmi.numaPassthrough in the profile)",
                )
            ]
        return []
    findings = []
    if len(cpu_nodes) > 1:
        findings.append(
            _finding(
                "Violation",
                "NumaLocality",
                f"vCPUs are on NUMA nodes {_ids(cpu_nodes)} (CPUs {_ids(dom.pinned_cpus)}) "
                f"though node {fitting[0]} could hold the whole VM: its threads reach memory "
                "across nodes. Set the kubelet's topology manager policy to single-numa-node",
            )
        )
    if memory_nodes is None:
        findings.append(
            _finding(
                "Warning",
                "NumaLocality",
                f"memory is not bound to node {_ids(cpu_nodes)} (no numatune, and the launcher may "
                "allocate on every node): the kernel places it locally at first but spills to "
                "other nodes under pressure. Use the kubelet's memory manager (Static) or "
                "numaPassthrough",
            )
        )
    elif not memory_nodes <= cpu_nodes:
        findings.append(
            _finding(
                "Violation",
                "NumaLocality",
                f"memory comes from NUMA nodes {_ids(memory_nodes)} while its vCPUs are on "
                f"{_ids(cpu_nodes)}: every access to it is remote. Align the kubelet's memory "
                "manager and CPU manager (topology manager single-numa-node)",
            )
        )
    return findings


def _hugepages(vm: Observed, dom: Domain, host: _Host, policy: AuditPolicy) -> list[VmFinding]:
    wanted = policy.hugepage_kib
    if wanted is None:
        return []
    if not dom.hugepages:
        return [
            _finding(
                "Violation",
                "Hugepages",
                "guest memory is not backed by hugepages; the profile asks for "
                f"{size_name(wanted)} pages (spec.domain.memory.hugepages.pageSize): the guest "
                "pays for TLB misses and its memory can be swapped or compacted",
            )
        ]
    size = host.page_kib(dom)
    if size is not None and size < wanted:
        return [
            _finding(
                "Violation",
                "Hugepages",
                f"guest memory is backed by {size_name(size)} pages; the profile asks for "
                f"{size_name(wanted)}",
            )
        ]
    return []


def _storage(vm: Observed, dom: Domain, host: _Host, policy: AuditPolicy) -> list[VmFinding]:
    if not policy.block_luns:
        return []
    findings = []
    for disk in dom.disks:
        if disk.device not in ("disk", "lun") or disk.read_only or disk.generated:
            continue
        if disk.type == "file":
            findings.append(
                _finding(
                    "Violation",
                    "Storage",
                    f"disk {disk.target} is the file {disk.source} on a host filesystem: host and "
                    "guest both journal every write. Give it a raw LUN (a Block-mode volume of the "
                    "profile's storage.blockLuns storage class)",
                )
            )
        elif disk.type not in RAW_DISKS:
            findings.append(
                _finding(
                    "Warning",
                    "Storage",
                    f"disk {disk.target} ({disk.type} {disk.source}) is not a raw LUN; the profile "
                    "provides raw LUNs (storage.blockLuns)",
                )
            )
    return findings


VM_RULES: tuple[VmRule, ...] = (_dedicated, _emulator, _numa, _hugepages, _storage)


# -- rules across VMs -----------------------------------------------------------------------


def _overlaps(vms: Sequence[Observed]) -> dict[int, list[VmFinding]]:
    """Pinned vCPUs shared between VMs, and emulator threads on another VM's pinned vCPUs."""
    owners: dict[int, list[int]] = defaultdict(list)
    for index, vm in enumerate(vms):
        for cpu in vm.domain.pinned_cpus if vm.domain else ():
            owners[cpu].append(index)
    found: dict[int, list[VmFinding]] = defaultdict(list)
    for index, vm in enumerate(vms):
        if vm.domain is None:
            continue
        for other, cpus in _sharers(index, vm.domain.pinned_cpus, owners).items():
            found[index].append(
                _finding(
                    "Violation",
                    "DedicatedCpus",
                    f"vCPUs are pinned to host CPUs {_ids(cpus)}, which are also pinned to VM "
                    f"{vms[other].label}'s vCPUs: the two VMs take turns on those cores",
                )
            )
        for other, cpus in _sharers(index, vm.domain.emulator_cpus or (), owners).items():
            found[index].append(
                _finding(
                    "Violation",
                    "DedicatedCpus",
                    f"emulator threads may run on CPUs {_ids(cpus)}, which are pinned to VM "
                    f"{vms[other].label}'s vCPUs: they preempt that VM",
                )
            )
            found[other].append(
                _finding(
                    "Violation",
                    "DedicatedCpus",
                    f"VM {vm.label}'s emulator threads may run on CPUs {_ids(cpus)}, which are "
                    "pinned to this VM's vCPUs",
                )
            )
    return found


def _sharers(index: int, cpus: Iterable[int], owners: dict[int, list[int]]) -> dict[int, set[int]]:
    """Other VMs whose pinned vCPUs use some of `cpus`, with those CPUs."""
    shared: dict[int, set[int]] = defaultdict(set)
    for cpu in cpus:
        for other in owners.get(cpu, ()):
            if other != index:
                shared[other].add(cpu)
    return shared


@dataclass(frozen=True)
class _Path:
    """One way a VM's NIC reaches the outside."""

    what: str
    #: What VMs share it by: (scope, kind, name); scope "host" for the host's switches and
    #: NICs, a network namespace for what only exists in it. None: nothing to share.
    key: tuple[str, str, str] | None = None
    #: A device of its own: an SR-IOV VF, a NIC passed through.
    dedicated: bool = False
    #: The pod network, which the profile may count as management only.
    pod: bool = False
    passthrough: bool = False


def _switch_name(host: HostReport, name: str) -> str:
    ovs = next((s for s in host.network.switches if s.name == name and s.kind == "OpenVSwitch"),
               None)  # fmt: skip
    if ovs is None:
        return f"host bridge {name}"
    return f"Open vSwitch ({', '.join(ovs.bridges) or name})"


def _outward(host: HostReport, interface: PodInterface) -> _Path | None:
    """Where a pod's interface leads on the host; None when kvtune cannot tell."""
    if interface.kind == "VirtualFunction":
        return _Path(f"SR-IOV VF {interface.link} ({interface.name} in the pod)", dedicated=True)
    if interface.kind in ("Macvtap", "Macvlan") and interface.link:
        return _Path(f"macvtap on {interface.link}", ("host", "direct", interface.link))
    if interface.kind != "Veth":
        return None
    switch = ("host", "bridge", interface.switch) if interface.switch else None
    if interface.name == POD_INTERFACE:
        return _Path("the pod network", switch, pod=True)
    if switch is None:
        return None
    return _Path(_switch_name(host, switch[2]), switch)


def _pod_paths(host: HostReport, pod: PodNetwork, nic: Nic) -> list[_Path]:
    """The paths of a KubeVirt NIC: its tap (or macvtap) in the pod, the in-pod bridge that
    tap is on and that bridge's other ports; a bridge with no other port is masquerade (NAT
    to the pod network), as is a user (passt, slirp) NIC."""
    if nic.type == "user":
        return [_Path("the pod network", pod=True)]
    interfaces = {i.name: i for i in pod.interfaces}
    start = interfaces.get(nic.target if nic.type == "ethernet" else nic.source)
    if start is None:
        return []
    bridge = start.name if start.kind == "Bridge" else start.master if start.kind == "Tap" else None
    if bridge is None:
        found = _outward(host, start)
        return [] if found is None else [found]
    ports = [i for i in pod.interfaces if i.master == bridge and i.kind != "Tap"]
    if not ports:
        pod_network = interfaces.get(POD_INTERFACE)
        found = None if pod_network is None else _outward(host, pod_network)
        return [found or _Path("the pod network", pod=True)]
    return [p for p in (_outward(host, port) for port in ports) if p is not None]


def _host_devices(dom: Domain, host: HostReport) -> list[_Path]:
    """VFs and whole NICs passed through; other host devices (GPUs) are not NICs. An
    <interface type='hostdev'> is libvirt's way to pass an SR-IOV VF."""
    vfs = {vf.pci_address for nic in host.sriov.nics for vf in nic.vfs}
    whole = set(host.network.passthrough_nics)
    devices = [(d.address, d.alias.startswith(SRIOV_ALIAS)) for d in dom.hostdevs]
    devices += [(n.source, True) for n in dom.nics if n.type == "hostdev"]
    paths = []
    for address, vf in devices:
        if address in whole:
            paths.append(_Path(f"NIC {address} passed through", dedicated=True, passthrough=True))
        elif vf or address in vfs:
            paths.append(_Path(f"SR-IOV VF {address}", dedicated=True))
    return paths


def _paths(vm: Observed, dom: Domain, host: HostReport) -> list[_Path]:
    pods = {pod.pid: pod for pod in host.network.pods}
    pod = pods.get(vm.pid) if vm.pid is not None else None
    paths = _host_devices(dom, host)
    for nic in dom.nics:
        if nic.type == "hostdev":
            continue
        if pod is not None:
            paths += _pod_paths(host, pod, nic)
        elif nic.type in SWITCHED and nic.source:
            # A host libvirt's VM is in the host's namespace: its bridges are the host's.
            scope = "host" if vm.pid is None else vm.netns
            what = (_switch_name(host, nic.source) if nic.type == "bridge" and scope == "host"
                    else f"{SWITCHED[nic.type]} {nic.source}")  # fmt: skip
            paths.append(_Path(what, (scope, nic.type, nic.source)))
    return paths


def _network(
    vms: Sequence[Observed], host: HostReport, policy: AuditPolicy
) -> dict[int, list[VmFinding]]:
    """VMs whose NICs reach the outside through a software switch (a bridge, OVS, a libvirt
    network, a macvtap lower device) another VM also uses, or through the pod network; SR-IOV
    VFs, whole NICs passed through and macvtap on a NIC of the VM's own are dedicated."""
    paths = {i: _paths(vm, vm.domain, host) for i, vm in enumerate(vms) if vm.domain is not None}
    users: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for index, found in paths.items():
        for path in found:
            if path.key is not None:
                users[path.key].add(index)
    findings: dict[int, list[VmFinding]] = defaultdict(list)
    for index, found in paths.items():
        shared, dedicated = [], []
        for path in found:
            sharing = users[path.key] if path.key is not None else set()
            others = sorted({vms[i].label for i in sharing if i != index})
            if path.pod and not policy.pod_network_shared:
                continue
            if path.dedicated or (path.key and path.key[1] == "direct" and not others):
                dedicated.append(path)
            elif others:
                shared.append(f"{path.what} (shared with VM {_names(others)})")
            elif path.pod:
                shared.append(f"{path.what}, which every pod of the node shares")
        pod = policy.pod_network_shared and any(p.pod for p in found)
        findings[index] += _network_findings(shared, dedicated, pod)
    return findings


def _network_findings(shared: list[str], dedicated: list[_Path], pod: bool) -> list[VmFinding]:
    findings = [
        _finding("Info", "Network", f"{path.what} (PCI passthrough): the fastest path, but "
                 "KubeVirt cannot live-migrate a VM with a host device")
        for path in dedicated if path.passthrough
    ]  # fmt: skip
    if not shared:
        return findings
    advice = ("Give it an SR-IOV VF (hostdev) or a NIC of its own via macvtap"
              + ("; if the pod network carries only management traffic, say so in the profile "
                 "(vmi.podNetwork: ManagementOnly)" if pod else ""))  # fmt: skip
    if dedicated:
        severity: FindingSeverity = "Warning"
        message = (f"besides {', '.join(p.what for p in dedicated)}, a NIC goes through "
                   f"{'; '.join(shared)}: what it carries there costs the other VMs latency and "
                   f"host CPU. {advice}")  # fmt: skip
    else:
        severity = "Violation"
        message = ("every NIC reaches the network through a software switch shared with others: "
                   f"{'; '.join(shared)}: their traffic costs each other latency and host CPU. "
                   f"{advice}")  # fmt: skip
    return [*findings, _finding(severity, "Network", message)]


# -- memory -----------------------------------------------------------------------------------


def overhead_kib(dom: Domain, floor_bytes: int = 0) -> int:
    """Host memory counted for a domain beside its guest RAM: KubeVirt's estimate for what the
    domain shows, at least `floor_bytes` (which also covers what the domain cannot show: exec
    probes, reservedOverhead.addedOverhead, the overhead ratio)."""
    estimate = kubevirt_overhead.estimate(
        guest_bytes=dom.memory_kib * 1024,
        vcpus=dom.vcpus,
        video=dom.video,
        arm64=dom.arch == "aarch64",
        vfio=dom.vfio,
        sev=dom.sev,
        tpm=dom.tpm,
        dedicated_or_guaranteed=dom.fully_pinned,
    )
    return -(-max(estimate.total, floor_bytes) // 1024)


def account(
    domains: Sequence[Domain], host: HostReport, policy: AuditPolicy
) -> tuple[MemoryAccount, list[VmFinding]]:
    """The memory the domains need against what the node can give them, with findings.

    Hugepages are taken out of MemTotal when the pool is allocated, used or not, so ordinary
    memory is MemTotal minus every pool, less what the kubelet keeps from pods (its reserves
    and eviction threshold, as the hugepage budget counts them). A VM without hugepages needs
    guest + overhead of it; a VM with hugepages needs its guest memory (in whole pages) from its
    size's pool and only its overhead from ordinary memory.
    """
    facts = _Host.of(host)
    pools = {pool.size_kib: pool.total * pool.size_kib for pool in host.memory.hugepages
             if pool.total is not None}
    guest = overhead = 0
    huge: dict[int, int] = defaultdict(int)
    findings = []
    for dom in domains:
        overhead += overhead_kib(dom, policy.overhead_floor_bytes)
        size = facts.page_kib(dom)
        if not dom.hugepages:
            guest += dom.memory_kib
        elif size is None:
            findings.append(
                _finding(
                    "Warning",
                    "Memory",
                    f"domain {dom.name} is backed by hugepages of the host's default size, which "
                    "/proc/meminfo does not give: its guest memory is not counted",
                )
            )
        else:
            huge[size] += -(-dom.memory_kib // size) * size
    capacity = headroom = kubelet = None
    kubelet_unknown = ""
    if host.memory.total_kib is not None:
        try:
            kubelet = memory_budget.kubelet_reservation(host.kubelet, host.memory.total_kib).kib
        except memory_budget.BudgetUnknown as err:
            kubelet_unknown = str(err)
    # A pool of unknown size leaves ordinary memory unknown too: it is MemTotal minus the pools.
    if (host.memory.total_kib is not None and kubelet is not None
            and len(pools) == len(host.memory.hugepages)):
        capacity = max(0, host.memory.total_kib - sum(pools.values()) - kubelet)
        headroom = capacity - guest - overhead
    accounts = [
        HugepageAccount(
            size=size_name(size),
            capacity_kib=pools.get(size, 0),
            demand_kib=huge[size],
            headroom_kib=pools.get(size, 0) - huge[size],
        )
        for size in sorted(set(pools) | set(huge))
    ]
    memory = MemoryAccount(
        guest_kib=guest,
        overhead_kib=overhead,
        demand_kib=guest + overhead,
        capacity_kib=capacity,
        kubelet_reserved_kib=kubelet,
        headroom_kib=headroom,
        hugepages=accounts,
        overcommitted=(headroom or 0) < 0 or any(a.headroom_kib < 0 for a in accounts),
    )
    return memory, findings + _overcommit(memory, host, policy, kubelet_unknown)


def _overcommit(
    memory: MemoryAccount, host: HostReport, policy: AuditPolicy, kubelet_unknown: str
) -> list[VmFinding]:
    severity: FindingSeverity = "Info" if policy.allow_memory_overcommit else "Violation"
    advice = (
        "the profile allows it (memory.allowOvercommit)"
        if policy.allow_memory_overcommit
        else "the host will swap or OOM-kill; move VMs off this node or give it memory"
    )
    findings = []
    if memory.capacity_kib is None:
        unknown = ", ".join(p.size for p in host.memory.hugepages if p.total is None)
        if host.memory.total_kib is None:
            why = "host MemTotal is unknown (/proc/meminfo unreadable)"
        elif kubelet_unknown:
            why = kubelet_unknown
        else:
            why = (f"the size of the {unknown} hugepage pool(s) is unknown (nr_hugepages "
                   "unreadable)")
        findings.append(
            _finding("Warning", "Memory", f"{why}: memory overcommit is not checked")
        )
    elif memory.headroom_kib is not None and memory.headroom_kib < 0:
        hugepages = sum(p.total * p.size_kib for p in host.memory.hugepages if p.total)
        findings.append(
            _finding(
                severity,
                "Memory",
                f"VMs need {_size(memory.demand_kib)} of ordinary memory (guest "
                f"{_size(memory.guest_kib)} + overhead {_size(memory.overhead_kib)}) but the node "
                f"has {_size(memory.capacity_kib)} (MemTotal minus {_size(hugepages)} of hugepage "
                f"pools and {_size(memory.kubelet_reserved_kib or 0)} the kubelet keeps from "
                f"pods): overcommitted by {_size(-memory.headroom_kib)}; {advice}",
            )
        )
    findings += [
        _finding(
            severity,
            "Memory",
            f"VMs backed by {pool.size} pages need {_size(pool.demand_kib)} but the pool holds "
            f"{_size(pool.capacity_kib)}: overcommitted by {_size(-pool.headroom_kib)}; {advice}",
        )
        for pool in memory.hugepages
        if pool.headroom_kib < 0
    ]
    return findings


# -- the audit --------------------------------------------------------------------------------


def bounded(findings: list[VmFinding]) -> list[VmFinding]:
    """Most severe first, cut to the limit with a last entry saying how many were cut."""
    ordered = sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity])
    if len(ordered) <= MAX_FINDINGS:
        return ordered
    cut = len(ordered) - (MAX_FINDINGS - 1)
    return [
        *ordered[: MAX_FINDINGS - 1],
        _finding(
            "Info",
            ordered[-1].rule,
            f"{cut} more findings were left out (the audit keeps {MAX_FINDINGS})",
        ),
    ]


def _vm_audit(vm: Observed, host: _Host, findings: list[VmFinding], floor: int) -> VmAudit:
    base = VmAudit(
        name=vm.name,
        namespace=vm.namespace,
        domain=vm.domain_name,
        launcher_pid=vm.pid,
        state="Unreachable",
        error=vm.error,
    )
    dom = vm.domain
    if dom is None:
        return base
    memory_nodes = dom.numa_nodes if dom.numa_nodes is not None else vm.mems_allowed
    size = host.page_kib(dom)
    return base.model_copy(
        update={
            "state": "Violation"
            if any(f.severity == "Violation" for f in findings)
            else "Compliant",
            "vcpus": dom.vcpus,
            "cpus": _ids(dom.pinned_cpus),
            "emulator_cpus": _ids(dom.emulator_cpus or ()),
            "cpu_nodes": _ids(host.cpu_nodes(dom.pinned_cpus)),
            "memory_nodes": _ids(memory_nodes or ()),
            "memory_kib": dom.memory_kib,
            "overhead_kib": overhead_kib(dom, floor),
            "hugepage_size": None if size is None else size_name(size),
            "interfaces": [f"{n.type} {n.source}".strip() for n in dom.nics][:MAX_DEVICES],
            "disks": [f"{d.type} {d.source}".strip() for d in dom.disks][:MAX_DEVICES],
            "findings": bounded(findings),
        }
    )


STATE_ORDER = {"Unreachable": 0, "Violation": 1, "Compliant": 2}


def audit(
    observed: Sequence[Observed],
    host: HostReport,
    policy: AuditPolicy,
    notes: Sequence[VmFinding] = (),
) -> NodeVmAudit:
    """The node's VM audit; `notes` are node findings from discovery (unreadable /proc files)."""
    facts = _Host.of(host)
    per_vm: dict[int, list[VmFinding]] = defaultdict(list)
    for cross in (_overlaps(observed), _network(observed, host, policy)):
        for index, found in cross.items():
            per_vm[index] += found
    for index, vm in enumerate(observed):
        if vm.domain is not None:
            for rule in VM_RULES:
                per_vm[index] += rule(vm, vm.domain, facts, policy)
    vms = [
        _vm_audit(vm, facts, per_vm[i], policy.overhead_floor_bytes)
        for i, vm in enumerate(observed)
    ]
    reachable = [vm.domain for vm in observed if vm.domain is not None]
    memory, memory_findings = account(reachable, host, policy)
    node_findings = [*notes, *memory_findings]
    unreachable = sum(vm.state == "Unreachable" for vm in vms)
    if unreachable:
        node_findings.append(
            _finding(
                "Warning",
                "Reachable",
                f"{unreachable} VMs could not be inspected; their memory is not counted above",
            )
        )
    ordered = sorted(vms, key=lambda vm: (STATE_ORDER[vm.state], vm.namespace, vm.name))
    return NodeVmAudit(
        vms=len(vms),
        compliant=sum(vm.state == "Compliant" for vm in vms),
        violations=sum(vm.state == "Violation" for vm in vms),
        unreachable=unreachable,
        memory=memory,
        findings=bounded(node_findings),
        items=ordered[:MAX_VMS],
        truncated=len(vms) > MAX_VMS,
    )
