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
from .host import MAX_NUMA_NODES, HostReport
from .profile import HostSettings, MacvtapResource, Mode, VmiSettings
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
