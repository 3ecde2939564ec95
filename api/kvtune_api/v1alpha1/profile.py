"""HypervisorProfile: the cluster-wide intent for how a set of nodes is prepared for VMs.

The host settings (cpu, numa, memory, network, storage) are copied verbatim into each matching
node's HypervisorNodeState, so they are defined once here as `HostSettings` and reused there.
"""

from __future__ import annotations

import math
import re
import typing as t

import pydantic
from pydantic import Field

from .common import (
    BaseModel,
    Condition,
    HugepageSize,
    LabelSelector,
    Opt,
    Rules,
    Size,
    cel,
    quantity_at_most,
    section,
    spelled,
)
from .host import MAX_NUMA_NODES
from .resource import CustomResource, Scope

Mode = t.Literal["Audit", "Enforce"]
Management = t.Literal["Enabled", "Disabled", "Unmanaged"]


#: A CPU list as the kernel writes one (/sys/devices/system/cpu/online): ids and ranges,
#: comma separated, ascending or not, e.g. 0-1,32-33.
_CPU_LIST = r"^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$"
CpuIds = t.Annotated[
    str,
    Field(min_length=1, max_length=1024, pattern=_CPU_LIST),
    spelled(_CPU_LIST, "a CPU list is CPU ids and ranges separated by commas, as in "
            "/sys/devices/system/cpu/online, e.g. 0-1,32-33"),
]
_GOVERNOR = r"^[a-z][a-z0-9_]{0,15}$"
#: A cpufreq governor's name as scaling_available_governors lists it (CPUFREQ_NAME_LEN is 16).
Governor = t.Annotated[
    str,
    Field(pattern=_GOVERNOR),
    spelled(_GOVERNOR, "a governor is a name from scaling_available_governors, e.g. "
            "performance or schedutil"),
]
#: Most housekeeping cores per NUMA node a profile may ask for: more than any node has.
MAX_HOUSEKEEPING_CORES = 64
#: What kvtune does about one CPU-isolation measure, once cpu.partition is set.
IsolationMeasure = t.Literal["Enforce", "Report", "Unmanaged"]
_MEASURE = (
    "Enforce: kvtune makes the change (in mode Enforce); Report: a node that differs shows "
    "it in its CPUIsolation condition, nothing is written; Unmanaged: not looked at. Only "
    "in effect where cpu.partition is set."
)


class CpuPartition(BaseModel):
    """The host's CPUs split in two: housekeeping CPUs for the host's own work (interrupts,
    kernel threads, system daemons, the kubelet, non-VM pods) and the rest, isolated, for VMs'
    dedicated vCPUs."""

    model_config = cel(
        (
            "has(self.housekeepingCpus) != has(self.housekeepingCoresPerNumaNode)",
            "cpu.partition: set exactly one of housekeepingCpus (a CPU list, e.g. 0-1,32-33) or "
            "housekeepingCoresPerNumaNode (whole cores on every NUMA node, e.g. 1)",
        ),
    )

    housekeeping_cpus: Opt[CpuIds] = Field(
        default=None,
        description=(
            "The housekeeping CPUs as a CPU list, e.g. 0-1,32-33 (NTO's cpu.reserved). Every "
            "CPU must be online on the node, and every NUMA node with CPUs must keep one; a "
            "node where that does not hold is Degraded and left as it is. Give SMT siblings "
            "together, or a VM's core is shared with the host."
        ),
    )
    housekeeping_cores_per_numa_node: Opt[
        t.Annotated[int, Field(ge=1, le=MAX_HOUSEKEEPING_CORES)]
    ] = Field(
        default=None,
        description=(
            "The housekeeping CPUs as this many whole cores (all their SMT siblings) on every "
            "NUMA node with CPUs, the lowest-numbered first: the same profile fits nodes of "
            "different sizes. A node with no CPU left to isolate on some NUMA node is Degraded "
            "and left as it is."
        ),
    )


class KubeletSettings(BaseModel):
    """The kubelet's CPU, memory and topology managers, as dedicated CPUs need them.

    kvtune writes them as a drop-in of the kubelet's own configuration (its --config-dir; for
    k3s, a config.yaml.d file of kubelet-arg entries), on a drained node, then restarts the
    kubelet and reverts the drop-in when it does not come back healthy. docs/kubelet.md.
    """

    management: t.Literal["Enforce", "Report", "Unmanaged"] = Field(
        default="Unmanaged",
        description=(
            "Unmanaged (default): the kubelet's configuration is only checked, as before. "
            "Report: the exact drop-in (or kubelet-arg entries) kvtune would write is shown in "
            "the Kubelet condition, nothing is written. Enforce: it is written on a drained node "
            "(rollout.allowDrain), the managers' state files removed and the kubelet restarted; "
            "a kubelet that does not come back healthy gets its old configuration back."
        ),
    )
    full_pcpus_only: bool = Field(
        default=True,
        description=(
            "cpuManagerPolicyOptions full-pcpus-only: a container gets whole cores only, so no "
            "VM shares a core's hyperthreads with another. A pod whose exclusive CPUs are not "
            "a multiple of the threads per core is then refused by the kubelet "
            "(SMTAlignmentError): see vmi.smtAlignment."
        ),
    )
    memory_manager_policy: t.Literal["Static", "None"] = Field(
        default="Static",
        description=(
            "memoryManagerPolicy. Static (default): a guaranteed VM's memory and hugepages come "
            "from the NUMA node of its CPUs; kvtune writes reservedMemory per NUMA node adding "
            "up, as the kubelet demands, to systemReserved + kubeReserved + the hard eviction "
            "threshold for memory.available. None: the kubelet's default, no NUMA guarantee."
        ),
    )
    topology_manager_scope: t.Literal["container", "pod"] = Field(
        default="pod",
        description=(
            "topologyManagerScope. pod (default): the whole virt-launcher pod is aligned to one "
            "NUMA node, as numa.topologyManagerPolicy (the policy written) asks. container: "
            "each container on its own."
        ),
    )


class CpuSettings(BaseModel):
    """How host CPUs are shared between VMs, and kept quiet for those with dedicated CPUs."""

    model_config = cel(
        (
            "!self.allowOvercommit || self.ple == 'Required'",
            "cpu.allowOvercommit: true needs cpu.ple: Required: with overcommitted vCPUs a guest "
            "spinning on a lock burns host CPU unless Pause-Loop Exiting makes KVM yield. Set "
            "cpu.ple to Required, or cpu.allowOvercommit to false.",
        ),
    )

    ple: t.Literal["Required", "Preferred", "Ignored"] = Field(
        default="Preferred",
        description=(
            "Pause-Loop Exiting (Intel PLE / AMD pause filter). Required: a node whose CPU "
            "lacks it or has it disabled (kvm_intel ple_gap=0) is Degraded. Preferred: "
            "reported as a warning. Ignored: not checked."
        ),
    )
    allow_overcommit: bool = Field(
        default=False,
        description=(
            "Whether VMs on these nodes may share physical CPUs (more vCPUs than host CPUs). "
            "Overcommit is only sane with PLE, so it requires ple: Required."
        ),
    )
    partition: Opt[CpuPartition] = Field(
        default=None,
        description=(
            "Housekeeping and isolated CPUs. Absent (default): kvtune does not isolate CPUs, "
            "and irqs, irqbalance, kernelNoise and bootIsolation do nothing."
        ),
    )
    irqs: IsolationMeasure = Field(
        default="Enforce",
        description=(
            "Device interrupts on the housekeeping CPUs: every IRQ the kernel lets move "
            "(/proc/irq/N/smp_affinity_list) and the default for new ones "
            "(/proc/irq/default_smp_affinity); IRQs that appear later (a hot-plugged VF) are "
            "moved at the next cycle. Managed IRQs, which the kernel spreads itself and "
            "refuses to move, are reported (bootIsolation's isolcpus=managed_irq keeps them "
            "off isolated CPUs). A live change. " + _MEASURE
        ),
    )
    irqbalance: t.Literal["BanIsolated", "Stop", "Unmanaged"] = Field(
        default="BanIsolated",
        description=(
            "The irqbalance daemon, which would move IRQs back onto isolated CPUs. BanIsolated "
            "(default): IRQBALANCE_BANNED_CPULIST (and IRQBALANCE_BANNED_CPUS for irqbalance "
            "before 1.8) in /etc/default/irqbalance or /etc/sysconfig/irqbalance names the "
            "isolated CPUs, and irqbalance is restarted to read it. Stop: irqbalance is "
            "stopped and disabled. Unmanaged: left as it is. Only in effect where "
            "cpu.partition is set and irqs is Enforce."
        ),
    )
    kernel_noise: IsolationMeasure = Field(
        default="Enforce",
        description=(
            "Kernel work off the isolated CPUs, live: kernel.numa_balancing 0 (it migrates "
            "pinned guests' memory, as numad does), the unbound workqueue mask "
            "(/sys/devices/virtual/workqueue/cpumask) and unbound kernel threads' affinity to "
            "the housekeeping CPUs; per-CPU kernel threads are left alone. " + _MEASURE
        ),
    )
    boot_isolation: IsolationMeasure = Field(
        default="Enforce",
        description=(
            "Kernel arguments for the next boot: nohz_full and rcu_nocbs on the isolated CPUs "
            "(no scheduler tick, RCU callbacks elsewhere), isolcpus=managed_irq,<isolated> "
            "(managed IRQs off them), systemd.cpu_affinity=<housekeeping> (host daemons), and "
            "where allowOvercommit is false and ple is not Required, Pause-Loop Exiting off "
            "(kvm_intel.ple_gap=0, kvm_amd.pause_filter_count=0): with dedicated CPUs a "
            "pause exit only adds latency. Enforce stages them as boot.settings says (a "
            "reboot-class change, only with rollout.allowReboot); kvtune never reboots. "
            + _MEASURE
        ),
    )
    governor: Opt[Governor] = Field(
        default=None,
        description=(
            "The CPU frequency governor of the isolated CPUs "
            "(/sys/devices/system/cpu/cpuN/cpufreq/scaling_governor), e.g. performance: a "
            "governor that lowers the clock of a CPU a vCPU just left idle makes it slow to "
            "answer. Absent (default): left as it is. Applied as kernelNoise says."
        ),
    )
    max_idle_latency_microseconds: Opt[t.Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default=None,
        description=(
            "The deepest idle states the isolated CPUs may enter, as an exit latency: every "
            "state whose /sys/devices/system/cpu/cpuN/cpuidle/stateK/latency is above it is "
            "disabled there, e.g. 10 keeps C1 and turns off C6. Costs power; for "
            "latency-sensitive guests. Absent (default): left as it is. Applied as kernelNoise "
            "says."
        ),
    )

    kubelet: KubeletSettings = section(
        KubeletSettings, "The kubelet's CPU, memory and topology managers (docs/kubelet.md)."
    )

    def turns_ple_off(self) -> bool:
        """CPU isolation turns Pause-Loop Exiting off (bootIsolation, staged or reported): VMs
        never share CPUs here and the profile does not require PLE. The PLE check takes PLE
        found off on such a node for what the profile asked."""
        return (self.partition is not None and self.boot_isolation != "Unmanaged"
                and not self.allow_overcommit and self.ple != "Required")


class NumaSettings(BaseModel):
    """Keeping each VM on one NUMA node."""

    numad: Management = Field(
        default="Disabled",
        description=(
            "The numad daemon. Disabled (default): with dedicated, NUMA-aligned CPUs from the "
            "kubelet's static CPU manager and topology manager, numad would migrate VM memory "
            "behind their back. Enabled: for nodes without CPU pinning. Unmanaged: left as is."
        ),
    )
    topology_manager_policy: Opt[
        t.Literal["none", "best-effort", "restricted", "single-numa-node"]
    ] = Field(
        default=None,
        description=(
            "The kubelet topology manager policy these nodes are expected to run. A node whose "
            "kubelet differs is reported Degraded; with cpu.kubelet.management Enforce, kvtune "
            "writes it in the kubelet's drop-in."
        ),
    )


#: Most pages of one size a profile may ask for: 2^24 pages is 32 TiB of 2Mi pages, more than
#: any host has; a count beyond it is a typo, not a plan.
MAX_HUGEPAGES = 2**24


class HugepagesPerNode(BaseModel):
    """A hugepage count for one NUMA node."""

    node: int = Field(
        ge=0,
        le=MAX_NUMA_NODES - 1,
        description="NUMA node id, as in /sys/devices/system/node/nodeN.",
    )
    count: int = Field(
        ge=0, le=MAX_HUGEPAGES, description="Number of pages of this size on that node."
    )


class HugepagesAllocation(BaseModel):
    """Hugepages of one size, either as a total split evenly across NUMA nodes or per node."""

    model_config = cel(
        (
            "has(self.count) != has(self.perNode)",
            "set exactly one of count (a total split evenly across NUMA nodes) or perNode (a "
            "count for each NUMA node)",
        ),
        (
            "!has(self.perNode) || "
            "self.perNode.all(a, self.perNode.exists_one(b, b.node == a.node))",
            "perNode lists a NUMA node more than once: give each node one entry",
        ),
        (
            "!has(self.perNode) || size(self.perNode) > 0",
            "perNode is empty, which allocates nothing: list each NUMA node with its count, or "
            "give count (a total split evenly across NUMA nodes)",
            ".perNode",
        ),
    )

    size: HugepageSize = Field(description="Page size: 2Mi or 1Gi.")
    count: Opt[t.Annotated[int, Field(ge=0, le=MAX_HUGEPAGES)]] = Field(
        default=None,
        description=(
            "Total pages of this size, split evenly across the NUMA nodes that have memory "
            "(the remainder goes to the lowest node ids)."
        ),
    )
    per_node: Opt[list[HugepagesPerNode]] = Field(
        default=None, max_length=64, description="Pages of this size for each listed NUMA node."
    )


class HostHeadroom(BaseModel):
    """Memory that hugepages leave to the host on each NUMA node, beyond the kubelet's reserves."""

    model_config = cel(
        (
            "self.percent > 0 || !isQuantity(self.minimum) || "
            "quantity(self.minimum).compareTo(quantity('0')) > 0",
            "memory.hugepages.hostHeadroom: percent 0 with minimum 0 leaves the host no memory "
            "beside hugepages: set percent above 0 or minimum to e.g. 4Gi",
            ".percent",
        ),
        quantity_at_most("minimum", "1Ti", "the headroom per NUMA node, e.g. 4Gi"),
    )

    percent: int = Field(
        default=10,
        ge=0,
        le=100,
        description=(
            "Share of each NUMA node's memory (and of the host's) that no hugepage pool may take, "
            "in percent. Default 10."
        ),
    )
    minimum: Size = Field(
        default="4Gi",
        description=(
            "The least headroom per NUMA node (and for the host), whatever the percentage gives. "
            "Default 4Gi: the kernel, system daemons, QEMU's overhead outside guest memory and "
            "page cache live here, and hugepages are never given back under pressure."
        ),
    )


class HugepagesSettings(BaseModel):
    """Hugepages reserved on the host for VM memory (cheaper than THP, never swapped)."""

    model_config = cel(
        (
            "!has(self.pages) || self.pages.all(a, self.pages.exists_one(b, b.size == a.size))",
            "memory.hugepages.pages lists a page size more than once: give each size one entry",
        ),
        (
            "!has(self.pages) || size(self.pages) == 0 || !has(self.hostHeadroom) || "
            "!has(self.hostHeadroom.percent) || self.hostHeadroom.percent < 100",
            "memory.hugepages.hostHeadroom.percent 100 keeps all memory from hugepages, so no "
            "pool of memory.hugepages.pages can be allocated: lower percent (default 10), or "
            "remove pages",
            ".hostHeadroom.percent",
        ),
    )

    pages: list[HugepagesAllocation] = Field(
        default_factory=list,
        max_length=2,
        description="Allocations, at most one per page size. Empty: hugepages are not managed.",
    )
    host_headroom: HostHeadroom = section(
        HostHeadroom,
        "What every NUMA node keeps out of hugepages: the larger of percent of its memory and "
        "minimum, on top of what the kubelet reserves there. A pool that would cut into it is "
        "not grown.",
    )


class MemorySettings(BaseModel):
    """Host memory: KSM, transparent hugepages, hugepages, overcommit and per-VM overhead."""

    model_config = cel(
        quantity_at_most(
            "vmOverheadFloor", "64Gi", "the least memory reserved per VM for QEMU, e.g. 1Gi"
        ),
    )

    ksm: Management = Field(
        default="Disabled",
        description=(
            "Kernel samepage merging. Disabled (default): pages are unmerged (run=2) and KSM and "
            "ksmtuned stopped, since merging costs CPU and latency when memory is sufficient. If "
            "KubeVirt's own KSM handler manages a node, kvtune reports the conflict and leaves it."
        ),
    )
    transparent_hugepages: t.Literal["always", "madvise", "never", "Unmanaged"] = Field(
        default="Unmanaged",
        description="Mode of /sys/kernel/mm/transparent_hugepage/enabled, or Unmanaged.",
    )
    hugepages: HugepagesSettings = section(
        HugepagesSettings, "Hugepages to reserve per NUMA node."
    )
    allow_overcommit: bool = Field(
        default=False,
        description=(
            "Whether VMs may be given more memory than the node has. False (default): host swap "
            "would stall guests, so selected VMIs get guaranteed memory and are checked against "
            "node capacity including overhead."
        ),
    )
    vm_overhead_floor: Size = Field(
        default="1Gi",
        description=(
            "Least host memory reserved per VM for QEMU and its helpers. When KubeVirt's own "
            "overhead estimate for a VMI is lower, the webhook reserves the difference: as memory "
            "requested above the guest's (memory.guest pinned), or, where KubeVirt's "
            "ReservedOverheadMemlock feature gate is on, as "
            "spec.domain.memory.reservedOverhead.addedOverhead."
        ),
    )


#: A Linux interface name as the kernel's dev_valid_name takes it: 1 to 15 bytes, no "/", ":" or
#: blank, and neither "." nor "..".
_INTERFACE_NAME = r"^([^/:\s.][^/:\s]*|\.[^/:\s.][^/:\s]*|\.\.[^/:\s]+)$"
InterfaceName = t.Annotated[
    str,
    Field(min_length=1, max_length=15, pattern=_INTERFACE_NAME),
    spelled(
        _INTERFACE_NAME,
        "an interface name is 1 to 15 bytes without '/', ':' or blanks, and neither '.' nor "
        "'..', e.g. ens1f0",
    ),
]
#: NICs one selector may list, and rules per list: more than a host has ports.
MAX_NICS = 16
#: A PCI address as sysfs spells it (lower-case hex), so that it can match one.
_PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"
PciAddress = t.Annotated[
    str,
    Field(max_length=12, pattern=_PCI_ADDRESS),
    spelled(_PCI_ADDRESS, "a PCI address is domain:bus:device.function in lower-case hex, as "
            "in /sys/bus/pci/devices, e.g. 0000:3b:00.0"),
]
_PCI_ID = r"^[0-9a-f]{4}$"
PciId = t.Annotated[
    str,
    Field(max_length=4, pattern=_PCI_ID),
    spelled(_PCI_ID, "a PCI vendor or device id is 4 lower-case hex digits without 0x, as in "
            "/sys/bus/pci/devices/*/vendor, e.g. 8086"),
]


class PfSelector(BaseModel):
    """Which NICs a rule applies to (physical functions for sriov, lower devices for macvtap);
    all given criteria must match."""

    model_config = cel(
        (
            "(has(self.names) && size(self.names) > 0) || "
            "(has(self.pciAddresses) && size(self.pciAddresses) > 0) || has(self.vendor)",
            "a NIC selector (sriov's pfSelector, macvtap's nicSelector) needs at least one of "
            "names, pciAddresses or vendor",
        ),
        (
            "!has(self.device) || has(self.vendor)",
            "a NIC selector's device needs its vendor (device ids are per vendor)",
        ),
    )

    names: list[InterfaceName] = Field(
        default_factory=list, max_length=MAX_NICS, description="Interface names, e.g. ens1f0."
    )
    pci_addresses: list[PciAddress] = Field(
        default_factory=list, max_length=MAX_NICS, description="PCI addresses, e.g. 0000:3b:00.0."
    )
    vendor: Opt[PciId] = Field(
        default=None, description="PCI vendor id in hex, e.g. 8086."
    )
    device: Opt[PciId] = Field(
        default=None, description="PCI device id in hex, e.g. 159b."
    )


#: The drivers a rule may bind its VFs to: vfio-pci to pass them through to VMs (KubeVirt's
#: `sriov` interfaces), netdevice for the VF network driver of the PF's driver (iavf for ice,
#: ...), for pods; Unmanaged (default, as before) leaves the kernel's choice alone.
VfDriver = t.Literal["vfio-pci", "netdevice", "Unmanaged"]
#: The resource name of an SR-IOV network device plugin pool: its ValidResourceName takes only
#: letters, digits and '_' (pkg/utils); as part of an extended resource name it must also begin
#: and end with a letter or digit and be at most 63 characters.
_SRIOV_RESOURCE = r"^[A-Za-z0-9]([A-Za-z0-9_]*[A-Za-z0-9])?$"
SriovResourceName = t.Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=_SRIOV_RESOURCE),
    spelled(_SRIOV_RESOURCE, "an SR-IOV resource name is at most 63 letters, digits or '_' (no "
            "'-' or '.': the SR-IOV network device plugin refuses them), beginning and ending "
            "with a letter or digit, e.g. dataplane_vf"),
]
#: The prefix of every resource kvtune's device plugin configuration names, so that its pools
#: never take the name of one the SR-IOV Network Operator (openshift.io/...) or an
#: administrator's configuration (intel.com/...) offers.
SRIOV_RESOURCE_PREFIX = "sriov.kvtune.io"


class SriovRule(BaseModel):
    """Virtual functions to create on the selected NICs, the driver they are bound to, and the
    device plugin resource that offers them."""

    model_config = cel(
        (
            "!has(self.resourceName) || (has(self.driver) && self.driver != 'Unmanaged')",
            "sriov: resourceName needs driver vfio-pci (VMs) or netdevice (pods): the device "
            "plugin offers VFs by the driver they are bound to",
            ".resourceName",
        ),
    )

    pf_selector: PfSelector = Field(description="Which NICs this rule applies to.")
    num_vfs: int = Field(
        ge=0,
        le=256,
        alias="numVfs",
        description=(
            "VFs to create on each selected NIC (checked against its sriov_totalvfs). Changing a "
            "count while VFs are attached to VMs needs a drain."
        ),
    )
    driver: VfDriver = Field(
        default="Unmanaged",
        description=(
            "The driver the VFs are bound to. vfio-pci: for KubeVirt VMs (an `sriov` interface "
            "passes the VF through); needs the IOMMU on. netdevice: the VF network driver of the "
            "PF's driver (iavf for ice and i40e, mlx5_core, ...), for pods. Unmanaged (default): "
            "left as the kernel bound them. Only VFs nothing uses are rebound; one a VM or pod "
            "holds needs a drain. See docs/sriov.md."
        ),
    )
    resource_name: Opt[SriovResourceName] = Field(
        default=None,
        description=(
            "The SR-IOV network device plugin resource that offers these VFs: pods and VMs ask "
            f"for {SRIOV_RESOURCE_PREFIX}/<resourceName> (a NetworkAttachmentDefinition's "
            "k8s.v1.cni.cncf.io/resourceName). The operator writes the plugin's configuration "
            "into the ConfigMap kvtune-sriov-<profile>. Needs driver. Absent: not offered."
        ),
    )


#: The macvtap modes macvtap-cni's device plugin creates devices in (its ModeFromString takes
#: bridge, private and vepa, and refuses passthru, which would also allow one device per NIC).
MacvtapMode = t.Literal["bridge", "vepa", "private"]
#: The part after macvtap.network.kubevirt.io/ of an extended resource name (a qualified name).
_RESOURCE_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ResourceName = t.Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=_RESOURCE_NAME),
    spelled(_RESOURCE_NAME, "a macvtap resource name is at most 63 letters, digits, '-', '_' "
            "or '.', beginning and ending with a letter or digit, e.g. dataplane"),
]


class MacvtapRule(BaseModel):
    """A host NIC handed to VMs through macvtap-cni's device plugin, as one resource."""

    name: ResourceName = Field(
        description="The resource: VMs ask for macvtap.network.kubevirt.io/<name>, through a "
        "NetworkAttachmentDefinition annotated with k8s.v1.cni.cncf.io/resourceName. The same on "
        "every node, whatever the NIC is called there."
    )
    nic_selector: PfSelector = Field(
        description="Which NIC is the lower device. It must select exactly one NIC on each node "
        "(names, PCI addresses or vendor/device, as for sriov); a node where it selects none "
        "offers no such resource."
    )
    mode: MacvtapMode = Field(
        default="bridge",
        description="How the macvtap devices on the NIC reach each other: bridge (default, "
        "directly), vepa (through the external switch) or private (not at all). passthru is "
        "not offered: macvtap-cni refuses it.",
    )
    capacity: int = Field(
        default=1,
        ge=1,
        le=100,
        description="VMs that may share the NIC. 1 (default): a NIC of the VM's own, as the "
        "practice asks and as the VM audit counts dedicated. More: the VMs share the NIC's "
        "macvlan switch in the kernel and are reported sharing it. At most 100, macvtap-cni's "
        "own default.",
    )


class NetworkSettings(BaseModel):
    """VM networking: SR-IOV VFs or a NIC of the VM's own instead of a shared software bridge."""

    model_config = cel(
        (
            "!has(self.macvtap) || "
            "self.macvtap.all(a, self.macvtap.exists_one(b, b.name == a.name))",
            "network.macvtap names a resource more than once: give each rule its own name",
        ),
        (
            "!has(self.sriov) || self.sriov.all(a, !has(a.resourceName) || "
            "self.sriov.exists_one(b, has(b.resourceName) && b.resourceName == a.resourceName))",
            "network.sriov names a resourceName more than once: give each rule its own (the "
            "device plugin refuses a configuration that names a resource twice)",
        ),
        *(
            (
                f"!has(self.{rules}) || self.{rules}.all(a, !has(a.{sel}.{key}) || "
                f"a.{sel}.{key}.all(n, self.{rules}.exists_one(b, "
                f"has(b.{sel}.{key}) && n in b.{sel}.{key})))",
                f"network.{rules}: a NIC is listed in {sel}.{key} of more than one rule: give "
                f"each NIC one rule ({why})",
            )
            for rules, sel, why in (
                ("sriov", "pfSelector", "one VF count"),
                ("macvtap", "nicSelector", "one resource: VMs of two resources on one NIC would "
                 "share it, each counted as dedicated"),
            )
            for key in ("names", "pciAddresses")
        ),
        *(
            (
                f"!has(self.sriov) || !has(self.macvtap) || self.sriov.all(a, "
                f"!has(a.pfSelector.{key}) || a.pfSelector.{key}.all(n, !self.macvtap.exists(m, "
                f"has(m.nicSelector.{key}) && n in m.nicSelector.{key})))",
                f"network: a NIC is listed in both an sriov rule's pfSelector.{key} and a macvtap "
                f"rule's nicSelector.{key}: a NIC either carries VFs or is a macvtap lower "
                f"device; remove it from one of them",
            )
            for key in ("names", "pciAddresses")
        ),
    )

    sriov: list[SriovRule] = Field(
        default_factory=list,
        max_length=MAX_NICS,
        description="SR-IOV rules; empty: VFs not managed.",
    )
    macvtap: list[MacvtapRule] = Field(
        default_factory=list,
        max_length=MAX_NICS,
        description="NICs dedicated to VMs through KubeVirt's macvtap binding and macvtap-cni's "
        "device plugin; kvtune checks each node's lower devices and publishes the device "
        "plugin's configuration in the node state's status.macvtap. Empty: not managed.",
    )


#: Entries one LUN selector list may hold: a whole SAN's worth of ids, well under the size at
#: which kopf's annotations and a profile's PATCH stop fitting in etcd.
MAX_LUN_TERMS = 64
#: A DNS subdomain (IsDNS1123Subdomain), as a StorageClass name must be.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


#: A shell pattern for a /dev/disk/by-id name: a file name (no "/") that begins with a literal
#: character. One that begins with a wildcard or a [...] set ("*", "*-*", "[a-z]*") matches
#: disks of every kind, the host's own included.
_BY_ID_PATTERN = r"^[^/*?\[][^/]*$"
ByIdPattern = t.Annotated[
    str,
    Field(min_length=1, max_length=255, pattern=_BY_ID_PATTERN),
    spelled(_BY_ID_PATTERN, "a by-id pattern is a file name under /dev/disk/by-id (no '/') that "
            "begins with a literal part of the name, not a wildcard or [...], which would match "
            "disks of every kind, the host's own included: name a prefix, e.g. 'wwn-0x5000c5*'"),
]


class LunSelector(BaseModel):
    """Which raw block devices become VM volumes; all given criteria must match."""

    model_config = cel(
        (
            "(has(self.wwns) && size(self.wwns) > 0) || "
            "(has(self.byIdPatterns) && size(self.byIdPatterns) > 0) || "
            "(has(self.models) && size(self.models) > 0)",
            "storage.blockLuns.selector needs at least one of wwns, byIdPatterns or models, so "
            "that no disk is handed to VMs by accident",
        ),
        (
            "!has(self.minSize) || !has(self.maxSize) || !isQuantity(self.minSize) || "
            "!isQuantity(self.maxSize) || "
            "quantity(self.minSize).compareTo(quantity(self.maxSize)) <= 0",
            "storage.blockLuns.selector: minSize is larger than maxSize, so no LUN can match: "
            "swap them or raise maxSize",
            ".minSize",
        ),
    )

    wwns: list[t.Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=MAX_LUN_TERMS,
        description="World wide names / wwids, in any of their forms: naa.600a..., 0x600a..., "
        "wwn-0x600a..., scsi_id's 3600a...; compared in one canonical form.",
    )
    by_id_patterns: list[ByIdPattern] = Field(
        default_factory=list,
        max_length=MAX_LUN_TERMS,
        description="Shell patterns matched against /dev/disk/by-id names, e.g. 'wwn-0x5000c5*'.",
    )
    models: list[t.Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_LUN_TERMS, description="Device models, exact match."
    )
    min_size: Opt[Size] = Field(default=None, description="Smallest size to accept.")
    max_size: Opt[Size] = Field(default=None, description="Largest size to accept.")


class BlockLunSettings(BaseModel):
    """Raw LUNs exposed as Block-mode PersistentVolumes: one LUN per VM disk, no host FS or LVM."""

    selector: LunSelector = Field(description="Which devices qualify.")
    storage_class_name: t.Annotated[
        str,
        spelled(
            DNS_SUBDOMAIN,
            "storageClassName must be a DNS subdomain: lower-case letters, digits, '-' and '.', "
            "beginning and ending with a letter or digit, e.g. local-luns",
        ),
    ] = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="storageClassName of the PersistentVolumes created: a DNS subdomain "
        "(lower-case letters, digits, '-' and '.'), as StorageClass names are.",
    )
    io_scheduler: t.Literal["none", "mq-deadline", "Unmanaged"] = Field(
        default="Unmanaged",
        description=(
            "I/O scheduler for LUNs handed to VMs. The guest schedules its own I/O, so 'none' "
            "avoids doing it twice."
        ),
    )


class StorageSettings(BaseModel):
    """VM storage."""

    block_luns: Opt[BlockLunSettings] = Field(
        default=None, description="Raw LUNs to expose as volumes; absent: not managed."
    )


class BootSettings(BaseModel):
    """Settings that only a boot applies: kernel arguments and KVM module options."""

    settings: t.Literal["Stage", "Report"] = Field(
        default="Stage",
        description=(
            "What kvtune does when the running host cannot reach the spec and only the next "
            "boot can: 1Gi (or 2Mi) hugepages the kernel cannot find at run time (kernel "
            "arguments hugepagesz=, hugepages=, default_hugepagesz=) and PLE / pause-filter "
            "parameters of kvm_intel / kvm_amd (a modprobe.d file). Stage (default): write them "
            "through the host's own mechanism (grubby on BLS hosts; a GRUB drop-in in "
            "/etc/default/grub.d plus update-grub or grub-mkconfig) as journaled NeedsReboot "
            "steps, but only where rollout.allowReboot is true; otherwise, and on hosts whose "
            "command line kvtune cannot edit (ostree, systemd-boot), they are reported. Report: "
            "never written; the node's condition gives the exact command. kvtune never reboots."
        ),
    )


class AuditSettings(BaseModel):
    """Thresholds of the interference the agent measures on running VMs (condition VMsIsolated).

    Each is judged over one agent cycle (the window between two readings); absent: not judged.
    """

    max_cpu_wait_percent: Opt[t.Annotated[float, Field(ge=0, le=100)]] = Field(
        default=5.0,
        description="Most share of wall time a VM's vCPUs may wait for a physical CPU (the "
        "guest's steal), averaged over its vCPUs, percent. Dedicated CPUs idle of other work "
        "give well under 1.",
    )
    max_remote_memory_percent: Opt[t.Annotated[float, Field(ge=0, le=100)]] = Field(
        default=10.0,
        description="Most share of a VM's resident memory on NUMA nodes away from its vCPUs, "
        "percent.",
    )
    max_irqs_per_second: Opt[t.Annotated[int, Field(ge=0)]] = Field(
        default=2000,
        description="Most interrupts per second on any dedicated CPU of a VM, every "
        "/proc/interrupts line counted (the scheduler tick is up to CONFIG_HZ, 1000, of them "
        "without nohz_full).",
    )


class HostSettings(BaseModel):
    """Everything a node agent changes or checks on its host."""

    cpu: CpuSettings = section(CpuSettings, "CPU sharing and Pause-Loop Exiting.")
    numa: NumaSettings = section(NumaSettings, "NUMA placement.")
    memory: MemorySettings = section(MemorySettings, "KSM, hugepages, overcommit, overhead.")
    network: NetworkSettings = section(
        NetworkSettings, "SR-IOV virtual functions and NICs dedicated through macvtap."
    )
    storage: StorageSettings = section(StorageSettings, "Raw LUNs for VM disks.")
    boot: BootSettings = section(BootSettings, "Boot-time settings: staged or reported.")
    audit: AuditSettings = section(
        AuditSettings, "Thresholds of the interference measured on running VMs."
    )


class VmiSettings(BaseModel):
    """How the admission webhook shapes the VirtualMachineInstances this profile selects."""

    model_config = cel(
        (
            "!self.numaPassthrough || (self.dedicatedCpus && has(self.hugepageSize))",
            "vmi.numaPassthrough needs vmi.dedicatedCpus: true and a vmi.hugepageSize "
            "(KubeVirt's guestMappingPassthrough requires both)",
        ),
        (
            "!self.isolateEmulatorThread || self.dedicatedCpus",
            "vmi.isolateEmulatorThread needs vmi.dedicatedCpus: true",
        ),
    )

    namespace_selector: LabelSelector = Field(
        description="Namespaces whose VMIs are selected (an empty selector selects all)."
    )
    selector: LabelSelector = section(
        LabelSelector, "VMI labels that select it (empty: all VMIs in the selected namespaces)."
    )
    dedicated_cpus: bool = Field(
        default=True, description="Set spec.domain.cpu.dedicatedCpuPlacement (pinned vCPUs)."
    )
    isolate_emulator_thread: bool = Field(
        default=True,
        description="Set spec.domain.cpu.isolateEmulatorThread (QEMU's own threads off the vCPUs).",
    )
    hugepage_size: Opt[HugepageSize] = Field(
        default=None,
        description="Back guest memory with hugepages of this size (must be allocated in memory).",
    )
    numa_passthrough: bool = Field(
        default=False,
        description="Set spec.domain.cpu.numa.guestMappingPassthrough (guest sees host NUMA).",
    )
    dedicated_networking: t.Literal["Off", "Warn", "Require"] = Field(
        default="Warn",
        description=(
            "Whether VMIs must reach the network through a NIC of their own (an SR-IOV VF, or "
            "macvtap on a dedicated host NIC) rather than a software switch shared with other "
            "pods. Warn (default): such VMIs get an admission warning. Require: they are refused. "
            "Off: not checked."
        ),
    )
    smt_alignment: t.Literal["Refuse", "Warn", "Off"] = Field(
        default="Refuse",
        description=(
            "VMIs with dedicated CPUs on nodes whose kubelet hands out whole cores only "
            "(cpuManagerPolicyOptions full-pcpus-only): the kubelet refuses a pod whose "
            "exclusive CPUs (vCPUs, plus one for an isolated emulator thread) are not a multiple "
            "of the threads per core (SMTAlignmentError). Where KubeVirt's AlignCPUs feature "
            "gate is on, kvtune annotates such a VMI "
            "alpha.kubevirt.io/EmulatorThreadCompleteToEvenParity, and KubeVirt gives the "
            "emulator thread the CPU that evens the count. Otherwise: Refuse (default) refuses "
            "the VMI with the fix, Warn admits it with a warning, Off does not check."
        ),
    )
    pod_network: t.Literal["Shared", "ManagementOnly"] = Field(
        default="Shared",
        description=(
            "What the pod network carries for these VMIs. Shared (default): it is a software "
            "switch like any other, and an interface on it counts against dedicatedNetworking. "
            "ManagementOnly: it carries only management traffic (SSH, probes) beside a dedicated "
            "data interface, and is not counted."
        ),
    )


#: rollout.maxUnavailable as a string: a whole percentage from 1% to 100%.
_PERCENT = re.compile(r"^(100|[1-9][0-9]?)%$")
_MAX_UNAVAILABLE_FORM = (
    "rollout.maxUnavailable must be a whole number of nodes, at least 1 (e.g. 1), or a whole "
    "percentage of the matched nodes from 1% to 100% (e.g. 10%)"
)


def max_unavailable_nodes(value: int | str, matched: int) -> int:
    """Nodes that may be disrupted at once: a count, or a percentage of the matched nodes
    rounded down but at least one (as a Deployment's maxUnavailable, so rollouts progress).

    ValueError, naming the field and the form, for what the schema refuses (a profile stored
    before the schema did)."""
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        return max(1, math.floor(matched * int(value[:-1]) / 100))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"{value!r}: {_MAX_UNAVAILABLE_FORM}")


def _max_unavailable(value: int | str) -> int | str:
    max_unavailable_nodes(value, 0)
    return value


#: A count or a percentage (e.g. 1 or "10%"), kept as given so `1` stays an integer in the API.
MaxUnavailable = t.Annotated[
    int | str,
    pydantic.WithJsonSchema({"x-kubernetes-int-or-string": True}),
    Rules((
        "type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",
        _MAX_UNAVAILABLE_FORM,
    )),
    pydantic.AfterValidator(_max_unavailable),
]
#: Longest drain kvtune waits for: a week. Beyond, a typo (10^15 s overflows a timedelta).
MAX_DRAIN_SECONDS = 7 * 24 * 3600


class RolloutSettings(BaseModel):
    """How disruptive host changes (drain or reboot) are rolled out."""

    max_unavailable: MaxUnavailable = Field(
        default=1,
        description="Nodes (e.g. 1) or percent of matched nodes (e.g. 10%) disrupted at a time.",
    )
    allow_drain: bool = Field(
        default=False,
        description=(
            "Let the operator cordon a node and evict its VM pods (honouring PDBs) when a change "
            "needs it. False: the node waits with a DrainRequired condition for an administrator."
        ),
    )
    allow_reboot: bool = Field(
        default=False,
        description=(
            "Let reboot-class changes be staged (boot.settings: kernel arguments, modprobe.d; "
            "/var/run/reboot-required for a reboot daemon such as kured). kvtune itself never "
            "reboots a node."
        ),
    )
    drain_timeout_seconds: int = Field(
        default=600,
        ge=30,
        le=MAX_DRAIN_SECONDS,
        description="Give up a drain after this long (at most a week); the node is uncordoned.",
    )


class HypervisorProfileSpec(HostSettings):
    """Which nodes, how they are prepared, and how VMs on them are shaped."""

    model_config = cel(
        (
            "(has(self.nodeSelector.matchLabels) && size(self.nodeSelector.matchLabels) > 0) || "
            "(has(self.nodeSelector.matchExpressions) && "
            "size(self.nodeSelector.matchExpressions) > 0)",
            "spec.nodeSelector is empty and would take every node of the cluster: give "
            "matchLabels or matchExpressions (for every Linux node on purpose: matchExpressions "
            "[{key: kubernetes.io/os, operator: In, values: [linux]}])",
            ".nodeSelector",
        ),
        (
            "!has(self.vmi) || !has(self.vmi.hugepageSize) || "
            "(has(self.memory.hugepages.pages) && "
            "self.memory.hugepages.pages.exists(p, p.size == self.vmi.hugepageSize))",
            "vmi.hugepageSize names a page size that memory.hugepages.pages does not allocate: "
            "add a pages entry of that size, or remove vmi.hugepageSize",
        ),
    )

    node_selector: LabelSelector = Field(
        description="The nodes this profile prepares. A node may match only one profile."
    )
    mode: Mode = Field(
        default="Audit",
        description=(
            "Audit (default): probe and report the plan, change nothing. Enforce: apply it."
        ),
    )
    paused: bool = Field(
        default=False,
        description="Stop all changes for this profile (also: annotation kvtune.io/paused=true).",
    )
    vmi: Opt[VmiSettings] = Field(
        default=None, description="VMIs to shape with the webhook; absent: VMIs are not touched."
    )
    rollout: RolloutSettings = section(RolloutSettings, "Pace of drains and reboots.")


class MacvtapResource(BaseModel):
    """One resource of macvtap-cni's device plugin, in the shape DP_MACVTAP_CONF takes: a list
    of them is the device plugin's configuration."""

    name: str = Field(description="Resource macvtap.network.kubevirt.io/<name>.")
    lower_device: str = Field(description="The NIC the macvtap devices are created on.")
    mode: MacvtapMode = Field(description="bridge, vepa or private.")
    capacity: int = Field(ge=1, description="macvtap devices offered: VMs that may use the NIC.")


class SriovSelectors(BaseModel):
    """Which VFs one pool of the SR-IOV network device plugin takes (its netDevice selectors);
    every list given must hold the VF's value."""

    vendors: list[str] = Field(
        default_factory=list, max_length=8, description="VF vendor ids in hex, e.g. 8086."
    )
    devices: list[str] = Field(
        default_factory=list, max_length=8, description="VF device ids in hex, e.g. 1889."
    )
    drivers: list[str] = Field(
        default_factory=list, max_length=2, description="The driver the VFs are bound to."
    )
    pf_names: list[str] = Field(
        default_factory=list, max_length=MAX_NICS, description="Their PFs' interface names."
    )
    root_devices: list[str] = Field(
        default_factory=list, max_length=MAX_NICS, description="Their PFs' PCI addresses."
    )


class SriovResource(BaseModel):
    """One resource pool of the SR-IOV network device plugin, in the shape of an entry of its
    config.json `resourceList`."""

    resource_name: str = Field(description="The pool: <resourcePrefix>/<resourceName>.")
    resource_prefix: str = Field(description=f"Always {SRIOV_RESOURCE_PREFIX}.")
    selectors: SriovSelectors = Field(description="The VFs of the pool.")


class FailingNode(BaseModel):
    """A node that is not Ready, with why."""

    node: str = Field(description="Node name.")
    reason: str = Field(description="CamelCase reason from the node's conditions.")
    message: str = Field(default="", description="What is wrong and what to do.")


class HypervisorProfileStatus(BaseModel):
    """Rolled-up truth from the matched nodes, written by the operator."""

    observed_generation: Opt[int] = Field(
        default=None, description="The spec generation this status describes."
    )
    matched_nodes: int = Field(default=0, description="Nodes matching nodeSelector.")
    ready_nodes: int = Field(default=0, description="Matched nodes whose host matches the spec.")
    progressing_nodes: int = Field(default=0, description="Nodes with changes under way.")
    degraded_nodes: int = Field(default=0, description="Nodes that failed or cannot comply.")
    waiting_nodes: int = Field(default=0, description="Nodes waiting for a drain or a reboot.")
    differing_nodes: int = Field(
        default=0,
        description="Nodes in Audit mode (or paused) whose host differs from the spec: "
        "Enforce would change them (each node state's status.plan says how).",
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Degraded."
    )
    failing_nodes: list[FailingNode] = Field(
        default_factory=list, max_length=20, description="Up to 20 nodes that are not Ready."
    )
    macvtap: list[MacvtapResource] = Field(
        default_factory=list,
        max_length=32,
        description="The resources of spec.network.macvtap that every node reporting offers "
        "with the same lower device (each node's own are in its state's status.macvtap): a "
        "DP_MACVTAP_CONF that is right on all of them, also kept in the ConfigMap "
        "kvtune-macvtap-<profile> of the operator's namespace. See the MacvtapConfig condition.",
    )
    sriov: list[SriovResource] = Field(
        default_factory=list,
        max_length=32,
        description="The SR-IOV network device plugin pools of spec.network.sriov (rules with a "
        "resourceName) that every node reporting offers alike (each node's own are in its "
        "state's status.sriov): the plugin's resourceList, also kept as config.json in the "
        "ConfigMap kvtune-sriov-<profile> of the operator's namespace. See the SriovConfig "
        "condition.",
    )


class HypervisorProfile(
    CustomResource,
    scope=Scope.CLUSTER,
    short_names=["hvp"],
    subresources={"status": {}},
    printer_columns=[
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Nodes", "type": "integer", "jsonPath": ".status.matchedNodes"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyNodes"},
        {"name": "Degraded", "type": "integer", "jsonPath": ".status.degradedNodes"},
    ],
):
    """How a set of KubeVirt nodes is prepared to run many VMs side by side."""

    spec: HypervisorProfileSpec = Field(description="The desired preparation.")
    status: HypervisorProfileStatus = Field(
        default_factory=HypervisorProfileStatus,
        description="Observed state, written by the operator.",
    )
