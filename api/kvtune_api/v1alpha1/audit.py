"""What the node agent's audit of running VMs found: is the isolation a profile promises real?

Settings on paper are not what the hypervisor did: a VMI can ask for dedicated CPUs and still share
a core with another VM, or be backed by hugepages of the wrong size. The agent reads each running
domain from libvirt and reports the result as HypervisorNodeState.status.vms, so it stays bounded
(CPU and node sets are cpulist strings, lists are capped with a `truncated` flag) and every field
is described for `kubectl explain`.
"""

from __future__ import annotations

import typing as t

from pydantic import Field

from .common import BaseModel, Opt
from .host import CpuList

#: Upper bounds that keep status.vms far below the apiserver's object size limit. A node runs
#: tens to a few hundred VMs; the counts always cover all of them.
MAX_VMS = 50
MAX_FINDINGS = 20
MAX_DEVICES = 16

FindingSeverity = t.Literal["Violation", "Warning", "Info"]
Rule = t.Literal[
    "Reachable",
    "DedicatedCpus",
    "EmulatorIsolation",
    "NumaLocality",
    "Hugepages",
    "Network",
    "Storage",
    "Memory",
    "CpuNoise",
]
VmState = t.Literal["Compliant", "Violation", "Unreachable"]


class VmFinding(BaseModel):
    """One thing the audit found about a VM, or about all VMs of the node together."""

    severity: FindingSeverity = Field(
        description=(
            "Violation: the VM does not get the isolation the profile promises. Warning: it could "
            "not be established, or it is at risk. Info: worth knowing."
        )
    )
    rule: Rule = Field(
        description=(
            "The promise concerned: Reachable, DedicatedCpus, EmulatorIsolation, NumaLocality, "
            "Hugepages, Network, Storage, Memory, CpuNoise (interrupts or other tasks on its "
            "dedicated CPUs, or those CPUs outside the isolated set)."
        )
    )
    message: str = Field(description="What was found, naming VMs, CPUs or devices, and what to do.")


class VmAudit(BaseModel):
    """One running VM as its libvirt reports it, and what the audit found."""

    name: str = Field(description="The VMI name (the libvirt domain name without its namespace).")
    namespace: str = Field(default="", description="The VMI namespace; empty if not a KubeVirt VM.")
    domain: str = Field(default="", description="The libvirt domain name, e.g. <namespace>_<name>.")
    launcher_pid: Opt[int] = Field(
        default=None, description="Host pid of its virt-launcher process; absent: found by URI."
    )
    state: VmState = Field(
        description=(
            "Compliant: no violation. Violation: at least one. Unreachable: its libvirt could "
            "not be asked, so nothing about it is known (see `error`)."
        )
    )
    error: Opt[str] = Field(default=None, description="Why its libvirt could not be asked.")
    vcpus: int = Field(default=0, ge=0, description="vCPUs the domain has.")
    cpus: CpuList = Field(
        default="", description="Host CPUs its vCPUs are pinned to; empty: they float."
    )
    emulator_cpus: CpuList = Field(
        default="", description="Host CPUs its emulator threads are pinned to; empty: they float."
    )
    cpu_nodes: CpuList = Field(
        default="", description="NUMA nodes of its pinned vCPUs (a node list, cpulist format)."
    )
    memory_nodes: CpuList = Field(
        default="",
        description="NUMA nodes its memory may come from (numatune, else the launcher's "
        "Mems_allowed); empty: unknown.",
    )
    memory_kib: int = Field(default=0, ge=0, description="Guest memory, KiB.")
    overhead_kib: int = Field(
        default=0,
        ge=0,
        description="Host memory counted for QEMU and its helpers beside the guest: KubeVirt's "
        "estimate for this domain, at least the profile's vmOverheadFloor, KiB.",
    )
    hugepage_size: Opt[str] = Field(
        default=None, description="Page size backing guest memory (2Mi, 1Gi); absent: none."
    )
    interfaces: list[str] = Field(
        default_factory=list,
        max_length=MAX_DEVICES,
        description="NICs as '<type> <source>': bridge br0, hostdev 0000:3b:02.0, direct ens1f0.",
    )
    disks: list[str] = Field(
        default_factory=list,
        max_length=MAX_DEVICES,
        description="Disks as '<type> <source>': block /dev/sdb, file /var/lib/x.img.",
    )
    findings: list[VmFinding] = Field(
        default_factory=list,
        max_length=MAX_FINDINGS,
        description="Findings, most severe first; the last says how many were left out.",
    )


class HugepageAccount(BaseModel):
    """Guest memory backed by one hugepage size against that size's pool."""

    size: str = Field(description="Page size: 2Mi, 1Gi.")
    capacity_kib: int = Field(ge=0, description="The host's pool: nr_hugepages x size, KiB.")
    demand_kib: int = Field(
        ge=0, description="Guest memory of the VMs backed by this size (whole pages), KiB."
    )
    headroom_kib: int = Field(description="capacity - demand; negative: overcommitted.")


class MemoryAccount(BaseModel):
    """Host memory the running VMs need against what the node can give them.

    Hugepages are carved out of MemTotal at allocation, whether VMs use them or not, so the two
    kinds are separate budgets: VMs without hugepages take guest RAM plus overhead from ordinary
    memory (MemTotal minus every hugepage pool); VMs backed by hugepages take guest RAM from
    their size's pool and only the overhead from ordinary memory.
    """

    guest_kib: int = Field(default=0, ge=0, description="Guest RAM of VMs without hugepages, KiB.")
    overhead_kib: int = Field(default=0, ge=0, description="Overhead of all VMs, KiB.")
    demand_kib: int = Field(
        default=0, ge=0, description="guest + overhead: what VMs take from ordinary memory, KiB."
    )
    capacity_kib: Opt[int] = Field(
        default=None,
        description="MemTotal minus all hugepage pools and what the kubelet keeps from pods "
        "(kubeletReservedKib), KiB; absent: MemTotal, a pool or the kubelet's reserves unknown.",
    )
    kubelet_reserved_kib: Opt[int] = Field(
        default=None,
        description="What the kubelet keeps from pods, KiB: systemReserved + kubeReserved memory "
        "+ evictionHard memory.available (or reservedMemory's total, when larger); absent: "
        "unknown.",
    )
    headroom_kib: Opt[int] = Field(
        default=None,
        description="capacity - demand, KiB; negative: overcommitted. Other pods also live in "
        "this headroom.",
    )
    hugepages: list[HugepageAccount] = Field(
        default_factory=list, max_length=16, description="One entry per page size in use or pooled."
    )
    overcommitted: bool = Field(
        default=False, description="Some headroom, ordinary or hugepage, is negative."
    )


class NodeVmAudit(BaseModel):
    """The audit of every running VM on one node."""

    vms: int = Field(default=0, ge=0, description="Running VMs found.")
    compliant: int = Field(default=0, ge=0, description="VMs with no violation.")
    violations: int = Field(default=0, ge=0, description="VMs with at least one violation.")
    unreachable: int = Field(default=0, ge=0, description="VMs whose libvirt could not be asked.")
    memory: MemoryAccount = Field(
        default_factory=MemoryAccount, description="Memory of reachable VMs against capacity."
    )
    findings: list[VmFinding] = Field(
        default_factory=list,
        max_length=MAX_FINDINGS,
        description="Findings about the node as a whole, e.g. memory overcommit.",
    )
    items: list[VmAudit] = Field(
        default_factory=list,
        max_length=MAX_VMS,
        description=f"Up to {MAX_VMS} VMs, unreachable and violating ones first.",
    )
    truncated: bool = Field(
        default=False, description=f"More than {MAX_VMS} VMs ran: `items` lists only some."
    )
