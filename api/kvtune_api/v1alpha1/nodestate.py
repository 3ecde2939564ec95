"""HypervisorNodeState: one per node (name = node name); the operator writes spec, the agent status.

Keeping cluster intent (the profile) and per-node truth (this object) apart lets each agent write
only its own small object, and lets `kubectl get hvns` show every node at a glance.
"""

from __future__ import annotations

import datetime
import typing as t

from pydantic import Field

from .audit import NodeVmAudit
from .common import BaseModel, Condition, Opt, section
from .host import MAX_NUMA_NODES, CpuList, HostReport, Nic
from .interference import NodeInterference
from .profile import MAX_NICS, HostSettings, MacvtapResource, Mode, SriovResource, VmiSettings
from .resource import CustomResource, Scope

if t.TYPE_CHECKING:
    from ..features import ConditionFeature

Disruption = t.Literal["Live", "NeedsDrain", "NeedsReboot"]
SyncStatus = t.Literal["Pending", "InProgress", "Succeeded", "Failed"]


class ProfileRef(BaseModel):
    """The profile a node state was rendered from."""

    name: str = Field(description="HypervisorProfile name.")
    generation: int = Field(ge=0, description="The profile's metadata.generation rendered.")


class DisruptionGrant(BaseModel):
    """What the operator allows this node to do now; the agent never decides this alone."""

    allow_drain: bool = Field(default=False, description="The profile allows drains.")
    allow_reboot: bool = Field(default=False, description="The profile allows reboot staging.")
    approved: bool = Field(
        default=False,
        description=(
            "The operator has given this node its rollout slot (and drained it where needed): "
            "NeedsDrain steps may run now."
        ),
    )


#: SR-IOV Network Operator policies a node state carries: far more than any cluster defines for
#: one node (each policy is one NIC selection with one VF layout).
MAX_SRIOV_POLICIES = 256


class SriovOperatorPolicy(BaseModel):
    """A SriovNetworkNodePolicy of the SR-IOV Network Operator whose nodeSelector selects the
    node: its nicSelector, as the operator copied it. The PFs it selects there are that
    operator's: kvtune leaves them alone."""

    name: str = Field(description="<namespace>/<name> of the policy.")
    pf_names: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="nicSelector.pfNames, each without its #<first>-<last> VF range.",
    )
    root_devices: list[str] = Field(
        default_factory=list, max_length=64, description="nicSelector.rootDevices."
    )
    vendor: Opt[str] = Field(default=None, description="nicSelector.vendor, e.g. 8086.")
    device_id: Opt[str] = Field(default=None, description="nicSelector.deviceID, e.g. 159b.")

    def matches(self, nic: Nic) -> bool:
        """The policy's nicSelector selects the NIC: every criterion it gives matches, as the
        SR-IOV Network Operator matches them. One that gives none of these (only a netFilter,
        which names OpenStack networks kvtune cannot see) is taken to select every NIC."""
        return all((
            not self.pf_names or nic.name in self.pf_names,
            not self.root_devices or nic.pci_address in self.root_devices,
            self.vendor is None or (nic.vendor_id or "").lower() == self.vendor,
            self.device_id is None or (nic.device_id or "").lower() == self.device_id,
        ))


class SriovOperatorPf(BaseModel):
    """A PF the SR-IOV Network Operator manages on this node, which kvtune leaves alone."""

    name: str = Field(description="Interface name.")
    pci_address: Opt[str] = Field(default=None, description="PCI address.")
    policies: list[str] = Field(
        max_length=MAX_SRIOV_POLICIES, description="The policies that select it."
    )


class HypervisorNodeStateSpec(BaseModel):
    """The desired configuration of one node, rendered by the operator."""

    node_name: str = Field(min_length=1, description="The node (equal to metadata.name).")
    profile: ProfileRef = Field(description="Where this spec came from.")
    mode: Mode = Field(default="Audit", description="Audit: report only. Enforce: apply.")
    paused: bool = Field(default=False, description="Make no changes while true.")
    revert: bool = Field(
        default=False,
        description=(
            "The node left its profile: restore every value kvtune changed from the host journal, "
            "then report Reverted."
        ),
    )
    host: HostSettings = section(HostSettings, "The host settings copied from the profile.")
    vmi: Opt[VmiSettings] = Field(
        default=None,
        description=(
            "The profile's VMI settings, copied so the agent can audit that running VMs got what "
            "the profile promises (dedicated CPUs, hugepages); absent: VMIs are not shaped."
        ),
    )
    sriov_operator_policies: list[SriovOperatorPolicy] = Field(
        default_factory=list,
        max_length=MAX_SRIOV_POLICIES,
        description=(
            "The SR-IOV Network Operator's SriovNetworkNodePolicies that select this node "
            "(copied by the operator where that operator is installed): the PFs they select "
            "are left alone, and a spec.host.network.sriov rule selecting one is refused."
        ),
    )
    disruption: DisruptionGrant = section(DisruptionGrant, "What disruptive steps may do now.")


class PlannedStep(BaseModel):
    """One change to the host, computed by the agent's pure planner."""

    id: str = Field(description="Stable identifier, e.g. hugepages/node0/1Gi.")
    # Typed for mypy only, a plain string on the wire (see Problem.feature).
    if t.TYPE_CHECKING:
        feature: ConditionFeature
    else:
        feature: str = Field(description="Hugepages, KSM, Numad, THP, SRIOV, PLE, BlockDevices.")
    path: str = Field(description="What is changed: a sysfs path, a unit or a file.")
    current: str = Field(description="Value now on the host.")
    desired: str = Field(description="Value to write.")
    reason: str = Field(description="Why, in a sentence.")
    disruption: Disruption = Field(description="Live, NeedsDrain or NeedsReboot.")


class StepResult(BaseModel):
    """What happened when a step was applied."""

    id: str = Field(description="The PlannedStep id.")
    result: t.Literal["Applied", "Partial", "Failed", "Skipped", "Waiting"] = Field(
        description="Outcome."
    )
    message: str = Field(default="", description="Details, e.g. the kernel's error.")


class HugepageRetry(BaseModel):
    """A hugepage pool the kernel grew only in part, and when the agent asks it again."""

    step: str = Field(description="The PlannedStep id, e.g. hugepages/node0/1Gi.")
    path: str = Field(description="The pool's nr_hugepages file.")
    node: int = Field(ge=0, description="NUMA node.")
    size: str = Field(description="Page size: 2Mi or 1Gi.")
    wanted: int = Field(ge=0, description="Pages the spec wants in the pool.")
    allocated: int = Field(ge=0, description="Pages the kernel allocated at the last attempt.")
    attempts: int = Field(ge=1, description="Attempts so far that fell short of `wanted`.")
    last_attempt: datetime.datetime = Field(description="When the last attempt was made.")
    next_attempt: datetime.datetime = Field(
        description="No attempt before this time; the wait doubles with every attempt."
    )


class SriovRetry(BaseModel):
    """A VF count the kernel refused, and when the agent asks it again."""

    step: str = Field(description="The PlannedStep id, e.g. sriov/ens1f0.")
    path: str = Field(description="The PF's sriov_numvfs file, by PCI address.")
    pci_address: str = Field(description="PCI address of the physical function.")
    nic: str = Field(description="Its interface name when last seen.")
    wanted: int = Field(ge=0, description="VFs the spec wants.")
    error: str = Field(description="What the last attempt came to, as the kernel said.")
    attempts: int = Field(ge=1, description="Attempts so far that failed.")
    last_attempt: datetime.datetime = Field(description="When the last attempt was made.")
    next_attempt: datetime.datetime = Field(
        description="No attempt before this time; the wait doubles with every attempt."
    )


class BootRetry(BaseModel):
    """Kernel arguments the boot loader's tool failed to stage, and when the agent tries again."""

    step: str = Field(description="The PlannedStep id (boot/kernel-args).")
    path: str = Field(description="What was written: grubby, or kvtune's GRUB drop-in.")
    wanted: str = Field(description="The kernel arguments it was to stage.")
    error: str = Field(description="What the last attempt came to.")
    attempts: int = Field(ge=1, description="Attempts so far that failed.")
    last_attempt: datetime.datetime = Field(description="When the last attempt was made.")
    next_attempt: datetime.datetime = Field(
        description="No attempt before this time; the wait doubles with every attempt."
    )


class IrqRetry(BaseModel):
    """An IRQ whose affinity the kernel refused to set, and when the agent tries again."""

    step: str = Field(description="The PlannedStep id, e.g. irq/42.")
    path: str = Field(description="Its /proc/irq/N/smp_affinity_list.")
    wanted: str = Field(description="The CPUs it was to be moved to.")
    error: str = Field(
        description="What the kernel said: EIO for a managed IRQ, which its driver places."
    )
    attempts: int = Field(ge=1, description="Attempts so far that failed.")
    last_attempt: datetime.datetime = Field(description="When the last attempt was made.")
    next_attempt: datetime.datetime = Field(
        description="No attempt before this time; the wait doubles with every attempt."
    )


class KubeletRetry(BaseModel):
    """kvtune's kubelet configuration that the kubelet did not come back healthy with (it was
    put back), and when the agent tries it again: each attempt drains the node."""

    step: str = Field(description="The PlannedStep id (kubelet/config).")
    path: str = Field(description="The file kvtune wrote: its drop-in or k3s kubelet-args.")
    wanted: str = Field(max_length=8192, description="The file's content it was to write.")
    error: str = Field(description="The kubelet's own error, from its journal.")
    attempts: int = Field(ge=1, description="Attempts so far that failed.")
    last_attempt: datetime.datetime = Field(description="When the last attempt was made.")
    next_attempt: datetime.datetime = Field(
        description="No attempt before this time; the wait doubles with every attempt."
    )


class CpuPartitionStatus(BaseModel):
    """The node's CPU partition: spec.host.cpu.partition cut from its own topology."""

    housekeeping: CpuList = Field(
        description="The housekeeping CPUs: the host's own work, the kubelet's reserved CPUs."
    )
    isolated: CpuList = Field(description="The isolated CPUs, left to VMs' dedicated vCPUs.")


class ExposedLun(BaseModel):
    """A raw LUN the agent found eligible and selected by the profile, for a PersistentVolume."""

    name: str = Field(description="Kernel name, e.g. sdc or dm-4.")
    path: str = Field(
        description="Stable device path for the volume, e.g. /dev/disk/by-id/wwn-0x6000...: a "
        "by-id name survives reboots and rescans, a kernel name may not."
    )
    size_bytes: int = Field(ge=0, description="Size in bytes.")
    wwid: Opt[str] = Field(default=None, description="World wide id, when the device has one.")
    model: Opt[str] = Field(default=None, description="Device model.")


class HypervisorNodeStateStatus(BaseModel):
    """What the node agent found and did."""

    observed_generation: Opt[int] = Field(
        default=None, description="The spec generation this status describes."
    )
    sync_status: SyncStatus = Field(default="Pending", description="Where the node stands.")
    last_sync_error: str = Field(default="", description="The last failure, for a person.")
    last_probe_time: Opt[datetime.datetime] = Field(
        default=None, description="When the host was last probed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Degraded, and one per feature (PLE, NUMA, Hugepages, KSM, ...).",
    )
    host: Opt[HostReport] = Field(default=None, description="The latest probe of the host.")
    vms: Opt[NodeVmAudit] = Field(default=None, description="The latest audit of running VMs.")
    interference: Opt[NodeInterference] = Field(
        default=None,
        description="The interference measured on running VMs over the last cycle (condition "
        "VMsIsolated); the figures are refreshed when the status is written for another reason.",
    )
    plan: list[PlannedStep] = Field(
        default_factory=list, description="Changes still needed (in Audit: all of them)."
    )
    results: list[StepResult] = Field(
        default_factory=list, description="The outcome of the last apply, step by step."
    )
    luns: list[ExposedLun] = Field(
        default_factory=list,
        max_length=256,
        description="Eligible raw LUNs selected by spec.host.storage.blockLuns; the operator "
        "exposes each as a Block-mode PersistentVolume pinned to this node.",
    )
    macvtap: list[MacvtapResource] = Field(
        default_factory=list,
        max_length=32,
        description="The NICs of spec.host.network.macvtap this node offers VMs, checked: "
        "macvtap-cni's device plugin configuration for this node (the JSON of DP_MACVTAP_CONF).",
    )
    sriov: list[SriovResource] = Field(
        default_factory=list,
        max_length=MAX_NICS,
        description="The SR-IOV network device plugin pools this node offers (rules of "
        "spec.host.network.sriov with a resourceName, on the PFs kvtune manages here, VFs "
        "bound to the rule's driver): entries of the plugin's config.json resourceList.",
    )
    sriov_operator_pfs: list[SriovOperatorPf] = Field(
        default_factory=list,
        max_length=256,
        description="PFs of this node that the SR-IOV Network Operator manages (its policies in "
        "spec.sriovOperatorPolicies select them): kvtune changes nothing on them, only audits.",
    )
    hugepage_retries: list[HugepageRetry] = Field(
        default_factory=list,
        max_length=2 * MAX_NUMA_NODES,  # two page sizes per node
        description="Hugepage pools the kernel grew only in part: the agent asks again at "
        "growing intervals rather than every cycle (each attempt compacts memory under the VMs).",
    )
    sriov_retries: list[SriovRetry] = Field(
        default_factory=list,
        max_length=256,
        description="VF counts the kernel refused (ENOMEM, EBUSY, a hung driver): each NIC is "
        "put back to its count and asked again at growing intervals, not every cycle.",
    )
    boot_retries: list[BootRetry] = Field(
        default_factory=list,
        max_length=1,
        description="Kernel arguments the boot loader's tool (grubby, update-grub, "
        "grub2-mkconfig) failed to stage: tried again at growing intervals, not every cycle.",
    )
    cpu_partition: list[CpuPartitionStatus] = Field(
        default_factory=list,
        max_length=1,
        description="The node's CPU partition, one entry where spec.host.cpu.partition is set "
        "and can be made here (else empty; the CPUIsolation condition says why): what the "
        "operator and the webhook read, as they cannot see the node's topology.",
    )
    irq_retries: list[IrqRetry] = Field(
        default_factory=list,
        max_length=4096,
        description="IRQs the kernel refused to move (managed IRQs, whose drivers place them): "
        "reported, and tried again only at growing intervals, not every cycle.",
    )
    kubelet_retries: list[KubeletRetry] = Field(
        default_factory=list,
        max_length=1,
        description="kvtune's kubelet configuration the kubelet did not come back healthy with: "
        "put back, and tried again at growing intervals rather than draining the node every "
        "cycle.",
    )
    reboot_required: bool = Field(default=False, description="A staged change needs a reboot.")
    drain_required: bool = Field(default=False, description="A pending change needs a drain.")


class HypervisorNodeState(
    CustomResource,
    scope=Scope.CLUSTER,
    short_names=["hvns"],
    subresources={"status": {}},
    printer_columns=[
        {"name": "Profile", "type": "string", "jsonPath": ".spec.profile.name"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Sync", "type": "string", "jsonPath": ".status.syncStatus"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
    ],
):
    """Desired and observed preparation of one node."""

    spec: HypervisorNodeStateSpec = Field(description="Written by the operator.")
    status: HypervisorNodeStateStatus = Field(
        default_factory=HypervisorNodeStateStatus, description="Written by the node agent."
    )
