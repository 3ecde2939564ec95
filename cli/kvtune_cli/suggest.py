"""`kvtune profile suggest`: a HypervisorProfile that every given host can satisfy, from their
probes, each choice with the facts it rests on.

As OpenShift's performance-profile-creator proposes a PerformanceProfile from gathered node
data, this reads what the agent's own probe found on each host and proposes what all of them
offer alike: hugepage pools within the budget the agent enforces (suggest_memory), dedicated
CPUs and NUMA passthrough where every kubelet allows them, with a CPU partition where every
host can make it (the agent's own cpu_partition decides), SR-IOV and macvtap rules for NICs
every host has alike, a LUN rule for disk models every host offers free, KSM and numad off. The
result is then planned on each host by the agent's own planner (suggest_check), and whatever it
would refuse there is taken out again, with the planner's words, so that the profile leaves no
given node Degraded.
"""

from __future__ import annotations

import typing as t
from collections.abc import Sequence
from dataclasses import dataclass

import pydantic
from kvtune_agent.features import kubelet_report
from kvtune_agent.features.cpu_partition import PartitionRefused, partition
from kvtune_agent.host import cpulist
from kvtune_api.v1alpha1 import GROUP_VERSION
from kvtune_api.v1alpha1.host import HostReport, Nic
from kvtune_api.v1alpha1.profile import (
    MAX_LUN_TERMS,
    MAX_NICS,
    CpuPartition,
    InterfaceName,
    ResourceName,
)

from .hosts import ProbedHost
from .suggest_check import withdraw_refused, withdraw_refused_rules
from .suggest_memory import VmPlan, suggest_hugepages
from .suggestion import Draft, SuggestError, VmShape

#: Labels the namespaces whose VMIs the suggested profile shapes (the value: its name).
VMS_LABEL = "kvtune.io/vms"
HOSTNAME_LABEL = "kubernetes.io/hostname"
#: The longest device model a LUN selector takes (LunSelector.models).
MAX_MODEL = 64


@dataclass(frozen=True)
class Options:
    """What the person asked for on the command line."""

    name: str = "suggested"
    mode: t.Literal["Audit", "Enforce"] = "Audit"
    #: matchLabels for spec.nodeSelector; None: the given nodes by name, else a label to set.
    node_labels: dict[str, str] | None = None
    vm: VmShape | None = None
    vms_per_node: int | None = None


@dataclass(frozen=True)
class Suggestion:
    """The profile manifest, the comment lines above each of its spec's keys, and the hosts
    that cannot hold the VMs asked for."""

    manifest: dict[str, t.Any]
    why: dict[tuple[str | int, ...], list[str]]
    shortfalls: list[str]


def suggest(hosts: Sequence[ProbedHost], options: Options) -> Suggestion:
    """The profile every host of `hosts` can satisfy; raises SuggestError when there is none."""
    if not hosts:
        raise SuggestError("no host given: name probe files, or --from-cluster")
    _same_kind(hosts)
    draft = Draft()
    _selector(hosts, options, draft)
    draft.choose(("mode",), options.mode, "Audit: the agents report what Enforce would change "
                 "and change nothing; switch to Enforce once the plan reads right"
                 if options.mode == "Audit" else "Enforce: the agents apply the plan")
    _cpu(hosts, draft)
    dedicated = _kubelet(hosts, draft)
    cpus = _partition(hosts, dedicated, draft)
    draft.choose(("numa", "numad"), "Disabled", (
        "numad would move VM memory between NUMA nodes behind the kubelet's CPU and "
        "topology managers" if dedicated else "numad would move VM memory away from the "
        "NUMA node whose hugepages back it"))
    draft.choose(("memory", "ksm"), "Disabled", (
        "merging pages costs host CPU and VM latency, and no VM memory is overcommitted"))
    draft.choose(("memory", "allowOvercommit"), False,
                 "host swap would stall guests: VMs get guaranteed memory")
    draft.leave_out(("memory",), "transparentHugepages", (
        "left to each host (Unmanaged): VM memory comes from hugepage pools, not THP"))
    if options.vms_per_node is not None and options.vm is None:
        raise SuggestError("--vms-per-node needs --vm, the shape of those VMs (e.g. 4cpu/16Gi)")
    vms = VmPlan(options.vm, options.vms_per_node, dedicated, cpus) if options.vm else None
    size = suggest_hugepages(hosts, vms, draft)
    _network(hosts, options, draft)
    _luns(hosts, options, draft)
    _vmi(hosts, options, dedicated, size, draft)
    draft.choose(("rollout", "maxUnavailable"), 1, "one node disrupted at a time")
    draft.choose(("rollout", "allowDrain"), False, (
        "a change that needs the node's VMs gone waits (DrainRequired) for a person"))
    draft.choose(("rollout", "allowReboot"), False, "kvtune stages nothing for a reboot")
    draft.choose(("boot", "settings"), "Report", (
        "what only a boot applies is reported with the exact command, never written"))
    withdraw_refused_rules(hosts, draft, _manifest(options, draft))
    withdraw_refused(hosts, draft, lambda: _manifest(options, draft))
    draft.prune()
    return Suggestion(_manifest(options, draft), draft.why, draft.shortfalls)


def _manifest(options: Options, draft: Draft) -> dict[str, t.Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "HypervisorProfile",
            "metadata": {"name": options.name}, "spec": draft.spec}


def _same_kind(hosts: Sequence[ProbedHost]) -> None:
    """Hosts of different architectures share no profile: PLE, page sizes and KVM differ."""
    kinds = {h.report.cpu.architecture or "unknown" for h in hosts}
    if len(kinds) > 1:
        raise SuggestError("these hosts have nothing in common to tune alike: " + "; ".join(
            f"{h.source} is {h.report.cpu.architecture or 'of an unrecognised architecture'}"
            for h in hosts) + ": suggest a profile for each architecture (kubernetes.io/arch)")


def _selector(hosts: Sequence[ProbedHost], options: Options, draft: Draft) -> None:
    path = ("nodeSelector",)
    if options.node_labels:
        draft.choose(path, {"matchLabels": options.node_labels}, "as --node-selector asked")
        return
    # A Node's hostname label, which its kubelet sets, may differ from its name.
    names = [h.labels.get(HOSTNAME_LABEL, h.node) for h in hosts]
    if all(names):
        draft.choose(path, {"matchExpressions": [
            {"key": HOSTNAME_LABEL, "operator": "In", "values": sorted(t.cast(list[str], names))}
        ]}, "the nodes probed, by their hostname label; give --node-selector for a pool that "
            "grows")
        return
    label = f"kvtune.io/{options.name}"
    draft.choose(path, {"matchLabels": {label: "true"}}, (
        f"probe files do not name their nodes: label those probed "
        f"(kubectl label node NODE {label}=true), or give --node-selector"))


def _cpu(hosts: Sequence[ProbedHost], draft: Draft) -> None:
    lacking = [h.source for h in hosts
               if h.report.cpu.ple.enabled != "Yes" and not h.report.cpu.ple.equivalent]
    if lacking:
        draft.choose(("cpu", "ple"), "Preferred", (
            f"{', '.join(lacking)} runs KVM without Pause-Loop Exiting (status.host.cpu.ple "
            "says why): reported as a warning; do not overcommit vCPUs there"))
    else:
        draft.choose(("cpu", "ple"), "Required", (
            "every host runs KVM with Pause-Loop Exiting (or its equivalent): a node that "
            "loses it (a kvm_intel ple_gap=0 option) is then Degraded"))
    draft.choose(("cpu", "allowOvercommit"), False,
                 "VMs get CPUs of their own: a vCPU waiting for a host CPU stalls its guest")


#: A NUMA node with more CPUs than this keeps two housekeeping cores: its devices' IRQs and
#: kernel threads grow with its CPUs (NTO's examples keep 2 to 4 CPUs per socket).
BUSY_NODE_CPUS = 32


def _partition(hosts: Sequence[ProbedHost], dedicated: bool, draft: Draft
               ) -> CpuPartition | None:
    """cpu.partition where every host can make it, decided by the agent's own partition();
    None where it is left out."""
    path = ("cpu",)
    if not dedicated:
        draft.leave_out(path, "partition", (
            "VMs get no dedicated CPUs here (see vmi), so there is no VM CPU to isolate"))
        return None
    most = max((n.cpu_count or 0 for h in hosts for n in h.report.numa.nodes), default=0)
    cores = 2 if most > BUSY_NODE_CPUS else 1
    wanted = CpuPartition(housekeeping_cores_per_numa_node=cores)
    split = []
    for host in hosts:
        try:
            part = partition(wanted, host.report)
        except PartitionRefused as refused:
            draft.leave_out(path, "partition", (
                f"housekeepingCoresPerNumaNode {cores} cannot be made on {host.source}: "
                f"{refused.message}"))
            return None
        split.append(f"{host.source}: CPUs {part.housekeeping_list} for the host, "
                     f"{part.isolated_list} ({len(part.isolated)}) left to VMs"
                     + _reserved_differs(host, part.housekeeping_list))
    draft.choose((*path, "partition"), {"housekeepingCoresPerNumaNode": cores}, (
        f"{cores} whole core(s) of every NUMA node for the host's own work (IRQs, kernel "
        f"threads, daemons, the kubelet, non-VM pods): 1, or 2 where a NUMA node has more "
        f"than {BUSY_NODE_CPUS} CPUs (the largest here: {most}); every other CPU is isolated "
        "for VMs' dedicated vCPUs. irqs and kernelNoise move the host's work off them live; "
        "bootIsolation stages kernel arguments (nohz_full, rcu_nocbs, isolcpus) that need a "
        "reboot, which this profile (boot.settings Report) only reports, with the command"))
    for line in split:
        draft.note((*path, "partition"), line)
    return wanted


def _reserved_differs(host: ProbedHost, housekeeping: str) -> str:
    """What to say where the host's kubelet reserves other CPUs than the housekeeping ones:
    it then hands VMs' pods CPUs of the host's, or keeps isolated ones idle."""
    kubelet = host.report.kubelet
    if not kubelet_report.known(kubelet):
        return ""
    reserved = kubelet.reserved_system_cpus or "none"
    try:
        if cpulist.parse(reserved) == cpulist.parse(housekeeping):
            return ""
    except ValueError:
        pass  # a list the kubelet would not take either: say it differs
    return (f"; its kubelet's reservedSystemCPUs are {reserved}: make them {housekeeping} "
            "(spec.cpu.kubelet, docs/kubelet.md), or VMs and the host share CPUs")


def _kubelet(hosts: Sequence[ProbedHost], draft: Draft) -> bool:
    """numa.topologyManagerPolicy where every kubelet agrees; whether VMs get dedicated CPUs."""
    unknown = [h for h in hosts if not kubelet_report.known(h.report.kubelet)]
    if unknown:
        why = "the kubelet's configuration is unknown on " + ", ".join(
            f"{h.source} ({h.report.kubelet.error or 'no kubelet process or config found'})"
            for h in unknown)
        draft.leave_out(("numa",), "topologyManagerPolicy", why)
        draft.leave_out(("vmi",), "dedicatedCpus and numaPassthrough", (
            f"{why}: whether it gives pods dedicated CPUs is unknown (it needs "
            "cpuManagerPolicy: static)"))
        return False
    policies = {h.report.kubelet.topology_manager_policy for h in hosts}
    if len(policies) == 1 and None not in policies:
        [policy] = policies
        draft.choose(("numa", "topologyManagerPolicy"), policy, (
            "every kubelet runs it; a node whose kubelet differs is Degraded"
            + ("; single-numa-node keeps each VM on one NUMA node" if policy != "single-numa-node"
               else "")))
    else:
        draft.leave_out(("numa",), "topologyManagerPolicy", "the kubelets run " + ", ".join(
            f"{h.report.kubelet.topology_manager_policy} ({h.source})" for h in hosts))
    static = [h for h in hosts if h.report.kubelet.cpu_manager_policy == "static"]
    if len(static) < len(hosts):
        others = ", ".join(f"{h.source} runs cpuManagerPolicy "
                           f"{h.report.kubelet.cpu_manager_policy}"
                           for h in hosts if h not in static)
        draft.leave_out(("vmi",), "dedicatedCpus and numaPassthrough", (
            f"the kubelet of {others}: VMIs asking for dedicated CPUs would stay Pending; set "
            "it to static"))
        return False
    return True


def _vmi(hosts: Sequence[ProbedHost], options: Options, dedicated: bool, size: str | None,
         draft: Draft) -> None:
    path = ("vmi",)
    draft.choose((*path, "namespaceSelector"), {"matchLabels": {VMS_LABEL: options.name}}, (
        f"the namespaces whose VMIs this profile shapes: kubectl label namespace NS "
        f"{VMS_LABEL}={options.name}"))
    draft.choose((*path, "dedicatedCpus"), dedicated, (
        "every kubelet runs the static CPU manager: VMs get pinned vCPUs of their own"
        if dedicated else "see above: the kubelets do not allow it"))
    draft.choose((*path, "isolateEmulatorThread"), dedicated, (
        "QEMU's own threads get a CPU beside the vCPUs" if dedicated
        else "needs dedicatedCpus"))
    if size is None:
        draft.leave_out(path, "hugepageSize", "no hugepage pool is suggested")
        return
    not_static = [h.source for h in hosts if h.report.kubelet.memory_manager_policy != "Static"]
    if dedicated and not_static:
        draft.leave_out(path, "hugepageSize and numaPassthrough", (
            f"the kubelet of {', '.join(not_static)} does not run memoryManagerPolicy Static, "
            "without which a VM's hugepages need not come from the NUMA node of its CPUs "
            "(the agent would report that node Degraded); the pools are still allocated"))
        return
    draft.choose((*path, "hugepageSize"), size, f"guest memory from the {size} pools above")
    if dedicated:
        draft.choose((*path, "numaPassthrough"), True, (
            "dedicated CPUs and hugepages allow it: the guest sees the host NUMA node its "
            "vCPUs and memory come from"))


def _alike(hosts: Sequence[ProbedHost], key: t.Callable[[HostReport], dict[str, t.Any]]
           ) -> tuple[list[str], list[str]]:
    """(names every host has alike, names some host lacks or has otherwise)."""
    found = [key(h.report) for h in hosts]
    names = set().union(*found)
    common = sorted(n for n in names if all(n in f and f[n] == found[0].get(n) for f in found))
    return common, sorted(names - set(common))


def _nic_kind(nic: Nic) -> tuple[str | None, str | None]:
    return nic.vendor_id, nic.device_id


def _named(names: list[str], kind: t.Any, what: str, draft: Draft) -> list[str]:
    """The names a profile can carry as `kind` (an interface or resource name), at most
    MAX_NICS of them; the others are left out, saying why."""
    adapter = pydantic.TypeAdapter(kind)
    fit = []
    for name in names:
        try:
            adapter.validate_python(name)
        except pydantic.ValidationError:
            draft.leave_out(("network",), f"{what} on {name}",
                            "a profile cannot name this NIC (see the field's form)")
            continue
        fit.append(name)
    if len(fit) > MAX_NICS:
        draft.leave_out(("network",), f"{what} on {', '.join(fit[MAX_NICS:])}",
                        f"a profile holds at most {MAX_NICS} rules of a kind")
    return fit[:MAX_NICS]


def _network(hosts: Sequence[ProbedHost], options: Options, draft: Draft) -> None:
    path = ("network",)
    sriov, uneven = _alike(hosts, lambda r: {
        n.name: _nic_kind(n) for n in r.sriov.nics if n.sriov_total_vfs})
    taken = set(sriov)
    sriov = _named(sriov, InterfaceName, "SR-IOV", draft)
    if uneven:
        draft.leave_out(path, f"SR-IOV on {', '.join(uneven)}",
                        "not on every host, or a different device on some")
    rules = []
    for name in sriov:
        nics = [next(n for n in h.report.sriov.nics if n.name == name) for h in hosts]
        most = min(n.sriov_total_vfs or 0 for n in nics)
        now = {n.sriov_num_vfs for n in nics}
        if options.vms_per_node is not None:
            count = min(most, -(-options.vms_per_node // len(sriov)))
            why = (f"one VF per VM: {options.vms_per_node} VMs over {len(sriov)} NIC(s)"
                   + (f", at most {most} (sriov_totalvfs)" if count == most else ""))
        elif len(now) == 1 and (only := now.pop()):
            count, why = only, "the VFs every host has now (give --vms-per-node to size them)"
        else:
            draft.leave_out(path, f"SR-IOV on {name}", (
                "VFs are sized per VM: give --vm and --vms-per-node"))
            continue
        rules.append({"pfSelector": {"names": [name]}, "numVfs": count})
        draft.note((*path, "sriov"), f"{name}: {why}")
    if rules:
        draft.choose((*path, "sriov"), rules, "NICs every host has alike (name and device)")
    lower, _ = _alike(hosts, lambda r: {
        n.name: _nic_kind(n) for n in r.sriov.nics
        if n.name not in taken and n.operstate == "up" and not n.master})
    # The NIC's name is also the resource's (macvtap.network.kubevirt.io/<name>).
    lower = _named(_named(lower, InterfaceName, "macvtap", draft), ResourceName, "macvtap", draft)
    macvtap = [{"name": name, "nicSelector": {"names": [name]}, "capacity": 1}
               for name in lower]
    if macvtap:
        draft.choose((*path, "macvtap"), macvtap, (
            "NICs every host has alike, up, not SR-IOV: each a NIC of one VM's own "
            "(capacity 1); one the agent would refuse (the host's own traffic uses it) is "
            "left out, saying why"))
    else:
        draft.leave_out(path, "macvtap", "no NIC is up, alike and free on every host")


def _lun_models(report: HostReport) -> set[str]:
    """The models of the disks proven free (a disk without a model, or with one longer than a
    selector takes, cannot be selected by it)."""
    return {d.model for d in report.block.devices
            if d.classification == "Eligible" and d.model and len(d.model) <= MAX_MODEL}


def _luns(hosts: Sequence[ProbedHost], options: Options, draft: Draft) -> None:
    path = ("storage",)
    found = [_lun_models(h.report) for h in hosts]
    models = sorted(set.intersection(*found)) if found else []
    if not models:
        seen = sorted(set().union(*found))
        draft.leave_out(path, "blockLuns", (
            f"no free disk model is on every host (free here and there: {', '.join(seen)})"
            if seen else "no host has a disk proven free (see status.host.block)"))
        return
    draft.choose((*path, "blockLuns"), {
        "selector": {"models": models[:MAX_LUN_TERMS]},
        "storageClassName": f"{options.name}-luns",
        "ioScheduler": "none",
    }, (f"disk models every host has proven free (no partition, filesystem, holder or "
        f"mount): {', '.join(models)}; each becomes one VM's raw LUN, and the guest schedules "
        "its own I/O (ioScheduler none)"))
