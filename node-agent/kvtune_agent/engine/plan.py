"""The planner: what must change on this host to meet its HypervisorNodeState spec, and why.

A pure function of the spec, the probe report, the node's labels and annotations, and the few
host files the probe does not read (`HostFiles`): the same inputs give the same plan, and a host
that already matches gives none, so the agent writes nothing at steady state. Every step declares
its disruption class, Live, NeedsDrain (the VMs using the resource must leave first) or
NeedsReboot, because the operator, not the agent, decides when a node may be disrupted.

What no step can fix (a conflict with KubeVirt, hardware without a feature, a kubelet configured
otherwise, a spec that does not fit this host) is a `Finding`: it shows in the feature's condition
with what to do, instead of a write retried forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase

from kvtune_api import quantity as kvtune_quantity
from kvtune_api.v1alpha1.host import (
    BlockDevice,
    DaemonReport,
    HostReport,
    HugepagePool,
    KsmReport,
    Nic,
    NumaNode,
    PleReport,
)
from kvtune_api.v1alpha1.nodestate import Disruption, ExposedLun, HypervisorNodeStateSpec
from kvtune_api.v1alpha1.profile import (
    BlockLunSettings,
    CpuSettings,
    HugepagesAllocation,
    HugepagesSettings,
    LunSelector,
    MacvtapResource,
    Management,
    NetworkSettings,
    NumaSettings,
    PfSelector,
    SriovRule,
    VmiSettings,
)
from kvtune_api.wwid import canonical_wwid

from ..features import memory_budget
from ..features.base import ConditionFeature, Draft, Finding, NodeMeta, Plan
from ..features.block.probe import stable_id
from ..features.ksm.probe import KSM, KSM_RUN
from ..features.kubelet import probe as kubelet_probe
from ..features.memory.probe import HUGEPAGES, MEMINFO, NODES, SIZE_KIB, THP
from ..features.memory_budget import gib
from ..features.network.probe import IPV6_ADDRESSES, ROUTES
from ..features.sriov.probe import held
from ..host import cpulist
from ..host.names import BY_ID, SYS_BLOCK, attribute_path, numvfs_path
from ..host.systemd import UnitState

THP_ENABLED = f"{THP}/enabled"
#: Where a PLE fix is staged for the next boot (modprobe reads /etc/modprobe.d when it loads
#: kvm_intel or kvm_amd); `ple_options` says what it holds.
PLE_CONF = "/etc/modprobe.d/kvtune-ple.conf"
#: The kubelet's CPU manager option that hands out whole cores only, in a file and as a flag.
WHOLE_CORES = ('{full-pcpus-only: "true"}', "full-pcpus-only=true")
#: KubeVirt's virt-handler sets this annotation to "true" on nodes where it turned KSM on itself.
#: Its label kubevirt.io/ksm-enabled only mirrors whether KSM runs (whoever started it), so the
#: label alone is no sign that KubeVirt manages the node.
KSM_HANDLER_ANNOTATION = "kubevirt.io/ksm-handler-managed"
_KSM_RUN_VALUES = {"Stopped": "0", "Running": "1", "Unmerging": "2"}


def hugepage_step_id(node: int | None, size: str) -> str:
    """The id of the step that resizes one NUMA node's pool of one page size."""
    return f"hugepages/node{node}/{size}"


def scheduler_path(device: str) -> str:
    """The I/O scheduler file of a block device, by its kernel name."""
    return f"{SYS_BLOCK}/{device}/queue/scheduler"


@dataclass(frozen=True)
class Scheduler:
    """A block device's queue/scheduler file: the selected scheduler and those on offer."""

    current: str
    offered: tuple[str, ...]


@dataclass(frozen=True)
class HostFiles:
    """Host facts the planner needs that the probe report does not carry (read by the cycle)."""

    #: Block device name -> its I/O scheduler; devices whose file could not be read are absent.
    schedulers: Mapping[str, Scheduler] = field(default_factory=dict)
    #: Content of PLE_CONF; None when absent.
    ple_staged: str | None = None
    #: PLE_CONF was written before the host last booted (so a reboot has not helped).
    ple_staged_before_boot: bool = False


def plan(
    spec: HypervisorNodeStateSpec,
    host: HostReport,
    node: NodeMeta | None = None,
    files: HostFiles | None = None,
) -> Plan:
    """The changes that bring `host` to `spec`, with findings; empty when the host matches."""
    node = node or NodeMeta()
    files = files or HostFiles()
    settings = spec.host
    out = Draft()
    _hugepages(settings.memory.hugepages, host, out)
    _ksm(settings.memory.ksm, host.ksm, node, out)
    _numad(settings.numa, host, out)
    _thp(settings.memory.transparent_hugepages, host.memory.transparent_hugepage, out)
    _sriov(settings.network.sriov, host, out)
    _macvtap(spec.node_name, settings.network, host, out)
    _luns(settings.storage.block_luns, host, files, out)
    _kubelet(settings.numa, spec.vmi, host, out)
    _ple(settings.cpu, host.cpu.ple, files, spec, out)
    return out.done()


# -- hugepages ------------------------------------------------------------------------------


def _hugepages(settings: HugepagesSettings, host: HostReport, out: Draft) -> None:
    if not settings.pages:
        return
    nodes = {node.id: node for node in host.numa.nodes}
    if not nodes:
        out.error("Hugepages", "NoNumaNodes", (
            f"memory.hugepages is set, but {NODES} lists no NUMA nodes, so no hugepage pool can "
            "be sized; check that the agent sees the host's /sys"))
        return
    pools, unknown = _readable_pools(host)
    reserved = {pool.size_kib: pool.reserved or 0 for pool in host.memory.hugepages}
    system_sizes = {pool.size_kib for pool in host.memory.hugepages}
    node_pools = bool(host.memory.hugepages_per_node)
    wanted: dict[tuple[int, int], _Wanted] = {}
    for index, alloc in enumerate(settings.pages):
        kib = SIZE_KIB[alloc.size]
        field_name = f"spec.host.memory.hugepages.pages[{index}]"
        for node_id, count, source in _hugepage_targets(alloc, field_name, nodes, out):
            path = f"{NODES}/node{node_id}/hugepages/hugepages-{kib}kB/nr_hugepages"
            if (node_id, kib) in unknown:
                out.error("Hugepages", "HugepagePoolUnknown", (
                    f"{source} asks for {count} {alloc.size} pages on NUMA node {node_id}, but "
                    f"{path} or its free_hugepages could not be read as a page count, so the "
                    "pool's size is unknown and it is left as it is; check what the agent's "
                    "problems say about that file"))
            elif (node_id, kib) in pools:
                wanted[(node_id, kib)] = _Wanted(count, source, path)
            elif kib in system_sizes and not node_pools:
                # Kernels before 2.6.33 keep hugepage pools system-wide only: the size exists,
                # but no node has a pool kvtune could size.
                out.error("Hugepages", "NoPerNodeHugepages", (
                    f"{source} asks for {count} {alloc.size} pages on NUMA node {node_id}, but "
                    f"{path} does not exist although {HUGEPAGES}/hugepages-{kib}kB does: this "
                    "kernel has no per-node hugepage pools (they came with Linux 2.6.33), so "
                    "kvtune cannot place pages on a node; run a newer kernel, or leave "
                    "memory.hugepages unset and size the pool with the hugepages= boot "
                    "argument, which spreads the pages over the nodes"))
            else:
                out.error("Hugepages", "HugepageSizeUnsupported", (
                    f"{source} asks for {count} {alloc.size} pages on NUMA node {node_id}, but "
                    f"{path} does not exist: this CPU or kernel offers no {alloc.size} pages "
                    "(1Gi pages need the pdpe1gb CPU flag); use another size for this node"))
    growing = _may_grow(settings, host, pools, wanted, out)
    for node_id in sorted({node for node, _ in unknown} & set(growing)):
        # What the node's pools hold in all is unknown, so its budget cannot be judged.
        del growing[node_id]
        out.error("Hugepages", "NodeHugepagesUnknown", (
            f"a hugepage pool of NUMA node {node_id} could not be read, so what its pools hold "
            "in all is unknown and none of them is grown (shrinking goes on)"))
    # Shrinks first: a node's growth is judged on its net need, so the memory its other pools
    # give back must be free before the growth is written (apply runs steps in order).
    for (node_id, kib), want in sorted(
            wanted.items(), key=lambda item: item[1].count > pools[item[0]].total):
        pool = pools[(node_id, kib)]
        if want.count != pool.total and (want.count < pool.total or node_id in growing):
            _resize(pool, want, reserved.get(kib, 0), growing.get(node_id, ""), out)


@dataclass(frozen=True)
class _Pool:
    """A per-node hugepage pool whose counts could be read (a HugepagePool's may be unknown)."""

    node: int
    size: str
    total: int
    free: int


def _readable_pools(
    host: HostReport,
) -> tuple[dict[tuple[int, int], _Pool], dict[tuple[int, int], HugepagePool]]:
    """The per-node pools by (node, page KiB): those whose counts were read, and the others."""
    pools: dict[tuple[int, int], _Pool] = {}
    unknown: dict[tuple[int, int], HugepagePool] = {}
    for pool in host.memory.hugepages_per_node:
        if pool.node is None:
            continue
        key = (pool.node, pool.size_kib)
        if pool.total is None or pool.free is None:
            unknown[key] = pool
        else:
            pools[key] = _Pool(pool.node, pool.size, pool.total, pool.free)
    return pools, unknown


@dataclass(frozen=True)
class _Wanted:
    """The size the spec wants for one pool, the field that says so, and its nr_hugepages."""

    count: int
    source: str
    path: str


def _may_grow(
    settings: HugepagesSettings, host: HostReport, pools: Mapping[tuple[int, int], _Pool],
    wanted: Mapping[tuple[int, int], _Wanted], out: Draft,
) -> dict[int, str]:
    """The NUMA nodes whose pools may grow, each with why growing takes memory in use there
    ("" when its free memory covers the growth).

    A node's pools may grow when all of them together, and all the host's, stay within what the
    node and the host can spare (memory_budget.py). A shrink needs no budget.
    """
    held: dict[int, int] = {}  # node -> KiB all its pools hold once the plan is done
    now: dict[int, int] = {}  # node -> KiB they hold today
    parts: dict[int, list[str]] = {}
    for (node_id, kib), pool in pools.items():
        want = wanted.get((node_id, kib))
        count = pool.total if want is None else want.count
        held[node_id] = held.get(node_id, 0) + count * kib
        now[node_id] = now.get(node_id, 0) + pool.total * kib
        parts.setdefault(node_id, []).append(
            f"{count} {pool.size} pages" + ("" if want else " not managed by this profile"))
    growing = {key[0] for key, want in wanted.items() if want.count > pools[key].total}
    if not growing:
        return {}
    try:
        budgets = memory_budget.budgets(settings.host_headroom, host)
    except memory_budget.BudgetUnknown as err:
        out.error("Hugepages", "HugepageBudgetUnknown", (
            f"{err}. Until it is known, hugepage pools are not grown (shrinking goes on)"))
        return {}
    for node_id in sorted(growing):
        budget = budgets.nodes.get(node_id)
        if budget is None:
            growing.discard(node_id)
            out.error("Hugepages", "NodeMemoryUnknown", (
                f"{NODES}/node{node_id}/meminfo cannot be read, so the memory of NUMA node "
                f"{node_id} is unknown and its hugepage pools are not grown; check that the "
                "agent sees the host's /sys"))
        elif held[node_id] > budget.limit_kib:
            growing.discard(node_id)
            out.error("Hugepages", "HugepagesExceedNodeMemory", (
                f"NUMA node {node_id} would hold {gib(held[node_id])} of hugepages "
                f"({', '.join(parts[node_id])}), but can spare at most {gib(budget.limit_kib)}: "
                f"{budget.explain()}. Its pools are not grown: lower spec.host.memory.hugepages."
                "pages for this node"))
    # Nodes refused above keep the pools they have; the host must hold all the others.
    total = sum(held[n] if n in growing else now[n] for n in held)
    if growing and total > budgets.host.limit_kib:
        out.error("Hugepages", "HugepagesExceedHostMemory", (
            f"the host would hold {gib(total)} of hugepages on all its NUMA nodes, but can spare "
            f"at most {gib(budgets.host.limit_kib)}: {budgets.host.explain()} ({MEMINFO}). No "
            "pool is grown: lower spec.host.memory.hugepages.pages"))
        return {}
    return _memory_in_use(host, budgets, {n: held[n] - now[n] for n in growing})


def _memory_in_use(
    host: HostReport, budgets: memory_budget.Budgets, needs: Mapping[int, int]
) -> dict[int, str]:
    """For each node that grows by `needs[node]` KiB, why that takes memory in use ("": not).

    A node's MemFree is what the kernel can hand out without reclaiming page cache or compacting
    memory under running processes; the host's MemAvailable must also stay above the kubelet's
    eviction threshold, or the kubelet starts evicting pods.
    """
    nodes = {node.id: node for node in host.numa.nodes}
    available = host.memory.available_kib or 0  # unknown: assume the growth takes memory in use
    total = sum(needs.values())
    host_short = (
        f"the host has {gib(available)} available ({MEMINFO} MemAvailable) and the growth on "
        f"all its NUMA nodes takes {gib(total)}, which would leave less than the kubelet's "
        f"eviction threshold ({gib(budgets.eviction_kib)})"
        if available - total < budgets.eviction_kib else "")
    return {node_id: host_short or (
        f"NUMA node {node_id} has {gib(nodes[node_id].memory_free_kib)} free and the growth "
        f"takes {gib(need)}" if need > nodes[node_id].memory_free_kib else "")
        for node_id, need in needs.items()}


def hugepage_counts(alloc: HugepagesAllocation, host: HostReport) -> dict[int, int] | None:
    """The pages one allocation wants on each NUMA node that can hold them (the planner's split;
    the nodes it refuses are its findings, not repeated here); None where the planner refuses
    the whole split, which must then not be made anywhere else either."""
    nodes = {node.id: node for node in host.numa.nodes}
    out = Draft()
    targets = _hugepage_targets(alloc, "", nodes, out)
    if alloc.per_node is None and out.findings:
        return None
    return {node: count for node, count, _ in targets}


def _hugepage_targets(
    alloc: HugepagesAllocation, field_name: str, nodes: Mapping[int, NumaNode], out: Draft
) -> list[tuple[int, int, str]]:
    """(NUMA node, pages wanted there, the spec field that says so) for one allocation."""
    if alloc.per_node is None:
        # VMs are pinned to the CPUs of a node and take its memory, so nodes without CPUs (CXL,
        # HBM or GPU memory) get no share. A node whose meminfo could not be read is not known
        # to lack memory: it keeps its share. A node whose CPUs are unknown may or may not be
        # owed one: moving its share to the others would be a guess acted on live.
        unknown = [node_id for node_id, node in sorted(nodes.items())
                   if node.cpus_unknown and not node.memoryless]
        if unknown:
            out.error("Hugepages", "NumaNodeCpusUnknown", (
                f"{field_name}.count is split evenly across the NUMA nodes with CPUs, but the "
                f"CPUs of NUMA node{'s' * (len(unknown) > 1)} {', '.join(map(str, unknown))} "
                "are unknown (neither "
                + ", ".join(f"{NODES}/node{node_id}/cpulist" for node_id in unknown)
                + " nor its cpumap or cpuN links give them; see the problems), so whether it "
                "is owed a share is unknown: no pool is resized for this count; fix the "
                "node's sysfs, or name the nodes in perNode"))
            return []
        with_memory = sorted(node_id for node_id, node in nodes.items()
                             if node.cpu_count and not node.memoryless)
        if not with_memory:
            out.error("Hugepages", "NoNumaMemory", (
                f"{field_name}.count: no NUMA node of this host has both online CPUs and "
                "memory, so there is nowhere VMs could use hugepages; name the nodes in "
                "perNode instead"))
            return []
        total = alloc.count or 0
        share, extra = divmod(total, len(with_memory))
        source = (f"{field_name}.count ({total}, split evenly across NUMA nodes "
                  f"{','.join(map(str, with_memory))})")
        return [(node_id, share + (1 if rank < extra else 0), source)
                for rank, node_id in enumerate(with_memory)]
    targets = []
    for j, entry in enumerate(alloc.per_node):
        source = f"{field_name}.perNode[{j}]"
        node = nodes.get(entry.node)
        if node is None:
            out.error("Hugepages", "HugepageNodeMissing", (
                f"{source}.node is {entry.node}, but this host has no NUMA node {entry.node} "
                f"(its nodes: {', '.join(map(str, sorted(nodes)))}); remove the entry, or give "
                "hosts with another topology their own profile"))
        elif node.memoryless:
            out.error("Hugepages", "HugepageNodeWithoutMemory", (
                f"{source}.node is {entry.node}, a NUMA node without memory: no hugepages can "
                "be allocated there; remove the entry"))
        else:
            targets.append((entry.node, entry.count, source))
    return targets


def _resize(
    pool: _Pool, want: _Wanted, reserved: int, in_use_taken: str, out: Draft
) -> None:
    """A step moving one pool to `want.count` pages; shrinking into pages VMs hold needs a drain,
    and so does growing into memory in use (`in_use_taken` says why it would).

    Reserved pages (resv_hugepages) are promised to a mapping but not yet touched; the kernel
    counts them host-wide, not per node, so any node of that size may hold them.
    """
    count = want.count
    in_use = pool.total - pool.free
    held = min(pool.total, in_use + reserved)
    disruption: Disruption = "Live"
    if count > pool.total:
        effect = f"this allocates {count - pool.total} more"
        if in_use_taken:
            # NeedsDrain is the one class the operator paces (at most rollout.maxUnavailable
            # nodes of a profile at a time, rollout.py), and a drained node has its VMs' memory
            # free, which is what the growth takes. Live would grow every node of the profile
            # at once, under running VMs; NeedsReboot only stages files for the next boot.
            disruption = "NeedsDrain"
            effect += (f", but {in_use_taken}: the kernel would reclaim and compact memory in "
                       "use under the running VMs, so it waits for a drain of the node, at most "
                       "rollout.maxUnavailable nodes at a time")
    elif count >= held:
        effect = f"this releases {pool.total - count} free pages to the host"
    else:
        disruption = "NeedsDrain"
        effect = (f"only {pool.total - held} can be released now ({in_use} are in use by VMs, "
                  f"{reserved} reserved host-wide): the VMs using them must leave the node "
                  "first (the kernel never frees a page in use)")
    out.step("sysfs", hugepage_step_id(pool.node, pool.size), "Hugepages", want.path,
             str(pool.total), str(count),
             f"{pool.size} hugepages on NUMA node {pool.node}: {want.source} wants {count}, "
             f"{pool.total} are allocated; {effect}", disruption)


# -- KSM, numad, THP ------------------------------------------------------------------------


def _ksm(mode: Management, ksm: KsmReport, node: NodeMeta, out: Draft) -> None:
    if mode == "Unmanaged":
        return
    if node.annotations.get(KSM_HANDLER_ANNOTATION) == "true":
        if mode == "Disabled":
            out.error("KSM", "KSMManagedByKubeVirt", (
                f"memory.ksm is Disabled, but KubeVirt's KSM handler turned KSM on here under "
                f"memory pressure (node annotation {KSM_HANDLER_ANNOTATION}=true); kvtune leaves "
                "KSM to it rather than fight it: exclude this node from the KubeVirt CR's "
                "spec.configuration.ksmConfiguration.nodeLabelSelector, or set memory.ksm: "
                "Unmanaged"))
        return
    if ksm.state == "Absent":
        if mode == "Enabled":
            out.error("KSM", "KSMUnsupported", (
                f"memory.ksm is Enabled, but this kernel has no KSM ({KSM} is "
                "missing); use a kernel built with CONFIG_KSM or set memory.ksm: Unmanaged"))
        return
    if ksm.state == "Unknown":
        out.error("KSM", "KSMUnreadable", (
            f"cannot read {KSM_RUN}, so KSM is left as it is; see the KSM problems of "
            "status.host"))
        return
    now = _KSM_RUN_VALUES[ksm.state]
    if mode == "Enabled":
        if now != "1":
            out.step("sysfs", "ksm/run", "KSM", KSM_RUN, now, "1",
                     "memory.ksm is Enabled: start merging identical pages (run=1)")
        return
    _unit(ksm.ksmtuned, UnitState(enabled=False, active=False), "KSM", "ksm/ksmtuned",
          "memory.ksm is Disabled and ksmtuned turns KSM back on under memory pressure",
          "spec.host.memory.ksm", out)
    if now != "0" or ksm.pages_shared:
        out.step("sysfs", "ksm/run", "KSM", KSM_RUN, now, "0",
                 f"memory.ksm is Disabled: unmerge the {ksm.pages_sharing or 0} shared pages "
                 "(run=2) and stop ksmd (run=0); merging costs host CPU and VM latency")


def _unit(
    daemon: DaemonReport, want: UnitState, feature: ConditionFeature, step_id: str, why: str,
    field_name: str, out: Draft,
) -> None:
    """A step bringing a daemon's systemd unit to `want`, or a finding when that is impossible."""
    unit = f"{daemon.name}.service"
    now = UnitState(enabled=daemon.unit == "Enabled", active=daemon.running)
    if now == want:
        return
    if daemon.unit == "NotInstalled":
        if want.active:
            out.error(feature, f"{feature}NotInstalled", (
                f"{field_name} wants {daemon.name} running, but {unit} is not installed on the "
                f"host; install the {daemon.name} package, or set {field_name} to Unmanaged"))
        else:
            out.warn(feature, f"{feature}WithoutUnit", (
                f"{daemon.name} runs (pid {', '.join(map(str, daemon.pids))}) without a systemd "
                f"unit, so kvtune cannot stop it for good; stop it on the host by hand"))
        return
    if daemon.unit == "Masked" and want.active:
        out.error(feature, f"{feature}Masked", (
            f"{field_name} wants {daemon.name} running, but {unit} is masked "
            f"({daemon.unit_path} links to /dev/null) and kvtune does not undo an "
            f"administrator's mask: `systemctl unmask {unit}`, or set {field_name} to Unmanaged"))
        return
    out.step("unit", step_id, feature, unit, str(now), str(want), f"{why} ({want})")


def _numad(settings: NumaSettings, host: HostReport, out: Draft) -> None:
    # The static CPU manager pins containers' CPUs; numad would move their memory (and threads)
    # elsewhere, so wherever both are in play it is flagged, whatever the profile leaves numad.
    pins = kubelet_probe.known(host.kubelet) and host.kubelet.cpu_manager_policy == "static"
    numad_on = host.numad.running or host.numad.unit == "Enabled"
    if pins and (settings.numad == "Enabled" or (settings.numad == "Unmanaged" and numad_on)):
        state = f"numa.numad is {settings.numad} and numad " + (
            "runs" if host.numad.running else "is enabled at boot")
        out.warn("Numad", "NumadWithStaticCpuManager", (
            f"{state} while the kubelet's static CPU manager pins CPUs (read from "
            f"{kubelet_probe.read_from(host.kubelet)}): numad migrates pinned VMs' memory "
            "behind the kubelet's back; set numa.numad: Disabled on nodes that give VMs "
            "dedicated CPUs"))
    if settings.numad == "Unmanaged":
        return
    on = settings.numad == "Enabled"
    why = ("numa.numad is Enabled: numad places the processes of VMs without pinned CPUs on one "
           "NUMA node" if on else "numa.numad is Disabled: numad would move VM memory between "
           "NUMA nodes behind the kubelet's CPU and topology managers")
    _unit(host.numad, UnitState(enabled=on, active=on), "Numad", "numad", why,
          "spec.host.numa.numad", out)


def _thp(mode: str, now: str | None, out: Draft) -> None:
    if mode == "Unmanaged" or now == mode:
        return
    if now is None:
        if mode != "never":  # a kernel without THP already never uses it
            out.error("THP", "THPUnavailable", (
                f"memory.transparentHugepages is {mode}, but {THP_ENABLED} is missing or "
                "unreadable: this kernel has no transparent hugepages; set it to Unmanaged"))
        return
    out.step("sysfs", "thp", "THP", THP_ENABLED, now, mode,
             f"memory.transparentHugepages is {mode}")


# -- SR-IOV ---------------------------------------------------------------------------------


def _selects(selector: PfSelector, nic: Nic) -> bool:
    """All criteria the selector gives must match."""
    return all((
        not selector.names or nic.name in selector.names,
        not selector.pci_addresses or nic.pci_address in selector.pci_addresses,
        selector.vendor is None or (nic.vendor_id or "").lower() == selector.vendor,
        selector.device is None or (nic.device_id or "").lower() == selector.device,
    ))


def _sriov(rules: list[SriovRule], host: HostReport, out: Draft) -> None:
    wanted: dict[str, tuple[int, int]] = {}  # NIC name -> (rule index, numVfs)
    conflicted: set[str] = set()
    for index, rule in enumerate(rules):
        matched = [nic for nic in host.sriov.nics if _selects(rule.pf_selector, nic)]
        if not matched:
            out.warn("SRIOV", "SriovRuleMatchesNothing", (
                f"spec.host.network.sriov[{index}].pfSelector matches no NIC on this node "
                f"(NICs here: {', '.join(n.name for n in host.sriov.nics) or 'none'})"))
        for nic in matched:
            first = wanted.setdefault(nic.name, (index, rule.num_vfs))
            if first[1] != rule.num_vfs and nic.name not in conflicted:
                conflicted.add(nic.name)
                out.error("SRIOV", "SriovRulesConflict", (
                    f"NIC {nic.name} is selected by spec.host.network.sriov[{first[0]}] "
                    f"(numVfs {first[1]}) and sriov[{index}] (numVfs {rule.num_vfs}); make their "
                    "pfSelectors disjoint. Its VFs are left as they are"))
    for nic in host.sriov.nics:
        if nic.name not in wanted or nic.name in conflicted:
            continue
        index, count = wanted[nic.name]
        field_name = f"spec.host.network.sriov[{index}]"
        total, now = nic.sriov_total_vfs, nic.sriov_num_vfs
        if total is not None and now is None:
            out.error("SRIOV", "SriovCountUnknown", (
                f"the VF count of NIC {nic.name} ({nic.pci_address}) could not be read (see the "
                "SRIOV problems of status.host: a write to it may hang in the driver), so its "
                "VFs are left as they are"))
        elif total is None or now is None or nic.pci_address is None:
            out.error("SRIOV", "SriovNotCapable", (
                f"NIC {nic.name} ({nic.pci_address}) is selected by {field_name}.pfSelector but "
                "is not SR-IOV capable (no readable sriov_totalvfs/sriov_numvfs); narrow the "
                "pfSelector, or enable SR-IOV in the firmware"))
        elif count > total:
            out.error("SRIOV", "SriovTooManyVfs", (
                f"{field_name}.numVfs is {count}, but NIC {nic.name} ({nic.pci_address}) "
                f"supports at most {total} VFs (sriov_totalvfs); lower numVfs"))
        elif count != now:
            in_use = [vf for vf in nic.vfs if vf.in_use]
            disruption: Disruption = "NeedsDrain" if now and in_use else "Live"
            effect = (f"VFs {held(in_use)} are in use (bound to a driver other than the VF "
                      "network driver) and are removed on the way (the count changes through "
                      "0): the VMs or programs holding them must leave the node first"
                      if disruption == "NeedsDrain" else "no VF is in use")
            out.step("sysfs", f"sriov/{nic.name}", "SRIOV", numvfs_path(nic.pci_address), str(now),
                     str(count), f"{field_name}.numVfs is {count} for NIC {nic.name}, which has "
                     f"{now}; {effect}", disruption)


# -- macvtap --------------------------------------------------------------------------------

MACVTAP_RESOURCE = "macvtap.network.kubevirt.io"


def _lower_device_refusals(nic: Nic, network: NetworkSettings, host: HostReport) -> list[str]:
    """Why `nic` must not be a VMs' macvtap lower device: what it carries for the host, or
    what else holds it. Empty: it may."""
    routing = host.network.routing
    why = []
    if routing.error:
        why.append(f"{routing.error}, so whether the node's own traffic uses it is unknown")
    if nic.name in routing.stacked:
        why.append(f"{routing.stacked[nic.name]}, stacked on it (VLAN, macvlan, bond, bridge, "
                   "team or Open vSwitch), carries the node's own traffic: VMs on it could put "
                   "frames, tagged or not, on the node's own network")
    if nic.name in routing.default_route:
        why.append(f"the node's default route leaves through it ({ROUTES} or ipv6_route)")
    if nic.name in routing.ipv4_routes or nic.name in routing.ipv6_addresses:
        why.append(f"it carries the node's own address (a route through it in {ROUTES}, or a "
                   f"global IPv6 address in {IPV6_ADDRESSES}), so the node's traffic would share "
                   "it with VMs, which cannot reach the node through it either")
    if nic.master:
        why.append(f"it is enslaved to {nic.master} (its master link), which takes every frame "
                   "it receives")
    for index, rule in enumerate(network.sriov):
        if _selects(rule.pf_selector, nic):
            why.append(f"it is an SR-IOV PF whose VFs spec.host.network.sriov[{index}] manages")
            break
    return why


def _macvtap(node: str, network: NetworkSettings, host: HostReport, out: Draft) -> None:
    """The device plugin's resources for this node: one NIC per rule, refused where the host
    uses it itself or something else holds it."""
    taken: dict[str, str] = {}  # NIC -> the resource it is offered as
    for index, rule in enumerate(network.macvtap):
        field_name = f"spec.host.network.macvtap[{index}]"
        resource = f"{MACVTAP_RESOURCE}/{rule.name}"
        matched = [nic for nic in host.sriov.nics if _selects(rule.nic_selector, nic)]
        if not matched:
            out.warn("Macvtap", "MacvtapRuleMatchesNothing", (
                f"{field_name}.nicSelector matches no NIC on node {node} (NICs here: "
                f"{', '.join(n.name for n in host.sriov.nics) or 'none'}), so it offers no "
                f"{resource}"))
            continue
        if len(matched) > 1:
            out.error("Macvtap", "MacvtapRuleMatchesSeveral", (
                f"{field_name}.nicSelector matches NICs {', '.join(n.name for n in matched)} on "
                f"node {node}, but {resource} has one lower device per node; narrow the "
                "nicSelector (names or pciAddresses), or give each NIC a rule of its own"))
            continue
        [nic] = matched
        if nic.name in taken:
            out.error("Macvtap", "MacvtapRulesConflict", (
                f"NIC {nic.name} of node {node} is already offered as {taken[nic.name]}, and "
                f"{field_name} selects it again for {resource}: VMs of both would share it; "
                "make the nicSelectors disjoint"))
            continue
        refusals = _lower_device_refusals(nic, network, host)
        if refusals:
            out.error("Macvtap", "MacvtapLowerDeviceInUse", (
                f"NIC {nic.name} of node {node}, selected by {field_name} for {resource}, is "
                f"not offered to VMs: {'; '.join(refusals)}. Select a NIC the node does not use "
                "otherwise, or free this one"))
            continue
        if nic.operstate not in (None, "up"):
            out.warn("Macvtap", "MacvtapLowerDeviceDown", (
                f"NIC {nic.name} of node {node} ({resource}) is {nic.operstate}: VMs given it "
                "get no link until it is cabled and up"))
        if rule.capacity > 1:
            out.warn("Macvtap", "MacvtapShared", (
                f"{field_name}.capacity is {rule.capacity}: up to {rule.capacity} VMs share NIC "
                f"{nic.name} of node {node} through its macvlan switch, and the VM audit "
                "reports them as sharing it; capacity 1 gives each VM a NIC of its own"))
        taken[nic.name] = resource
        out.publish("macvtap", MacvtapResource(
            name=rule.name, lower_device=nic.name, mode=rule.mode, capacity=rule.capacity))


# -- block LUNs -----------------------------------------------------------------------------


def _size_bounds(selector: LunSelector) -> tuple[Decimal | None, Decimal | None]:
    bounds: list[Decimal | None] = []
    for name, value in (("minSize", selector.min_size), ("maxSize", selector.max_size)):
        try:
            bounds.append(None if value is None else kvtune_quantity.parse(value, name))
        except kvtune_quantity.QuantityError as err:
            raise ValueError(
                f"spec.host.storage.blockLuns.selector.{name} is {value!r}, not a quantity "
                f"({err}); write e.g. 100Gi") from err
    return bounds[0], bounds[1]


def exposed_lun(device: BlockDevice) -> ExposedLun:
    """How a selected LUN is published: with the by-id path that names it for good, which every
    Eligible device has (the block probe's rule: a kernel name can reach another disk after a
    reboot; `stable_id` says which name)."""
    by_id = stable_id(device)
    path = f"{BY_ID}/{by_id}" if by_id else device.path
    return ExposedLun(name=device.name, path=path, size_bytes=device.size_bytes,
                      wwid=device.wwid, model=device.model)


def matching_luns(settings: BlockLunSettings, host: HostReport) -> list[BlockDevice]:
    """The eligible raw LUNs the selector matches (all criteria it gives must match).

    Raises ValueError, naming the field, when minSize or maxSize is not a quantity.
    """
    selector = settings.selector
    smallest, largest = _size_bounds(selector)
    # Either side may spell an id its own way (naa.600a..., 3600a..., wwn-0x600a...).
    wwns = {canonical_wwid(wwn) for wwn in selector.wwns}
    return [device for device in host.block.devices if device.classification == "Eligible"
            and all((
                not wwns or canonical_wwid(device.wwid or "") in wwns,
                not selector.by_id_patterns or any(
                    fnmatchcase(name, pattern)
                    for name in device.by_id for pattern in selector.by_id_patterns),
                not selector.models or (device.model or "") in selector.models,
                smallest is None or device.size_bytes >= smallest,
                largest is None or device.size_bytes <= largest,
            ))]


def _luns(
    settings: BlockLunSettings | None, host: HostReport, files: HostFiles, out: Draft
) -> None:
    if settings is None:
        return
    try:
        luns = matching_luns(settings, host)
    except ValueError as err:
        out.error("BlockDevices", "InvalidLunSelector", str(err))
        return
    out.publish("luns", *[exposed_lun(lun) for lun in luns])
    if not luns:
        out.warn("BlockDevices", "NoLunsMatched", (
            "spec.host.storage.blockLuns.selector matches no eligible (proven free) device on "
            "this node; see status.host.block for each device's classification and reason"))
    want = settings.io_scheduler
    if want == "Unmanaged":
        return
    for lun in luns:
        path = scheduler_path(lun.name)
        scheduler = files.schedulers.get(lun.name)
        by_id = stable_id(lun)
        if by_id is None:
            out.warn("BlockDevices", "SchedulerWithoutStableId", (
                f"LUN {lun.name} has no /dev/disk/by-id name, so kvtune could not tell it from "
                f"another disk given its kernel name after a reboot; its I/O scheduler ({path}) "
                "is left as it is"))
        elif scheduler is None:
            out.warn("BlockDevices", "SchedulerUnreadable",
                     f"cannot read {path}; the I/O scheduler of {lun.name} is left as it is")
        elif want not in scheduler.offered:
            out.warn("BlockDevices", "SchedulerUnavailable", (
                f"{lun.name} offers the I/O schedulers {', '.join(scheduler.offered)}, not "
                f"{want} ({path}); load its module (modprobe {want}) or choose another"))
        elif scheduler.current != want:
            # The path names the disk by id, so that the journal restores this disk's scheduler.
            out.step("sysfs", f"block/{lun.name}/scheduler", "BlockDevices",
                     attribute_path(by_id, "queue/scheduler"), scheduler.current, want,
                     f"storage.blockLuns.ioScheduler is {want} for LUN {lun.name} ({path}): the "
                     "guest schedules its own I/O")


# -- kubelet and PLE: checked, never changed live ---------------------------------------------


def _kubelet(
    settings: NumaSettings, vmi: VmiSettings | None, host: HostReport, out: Draft
) -> None:
    """What the profile asks of the kubelet, against what it is configured to give.

    kvtune does not rewrite kubelet configuration, so each gap is a finding naming the file or
    flag to change; a gap that keeps VMs from getting what the profile promises is an Error
    (Degraded).
    """
    kubelet = host.kubelet
    want_topology = settings.topology_manager_policy
    wants = [want_topology is not None, vmi is not None and vmi.dedicated_cpus]
    if not any(wants):
        return
    if not kubelet_probe.known(kubelet):
        out.warn("Kubelet", "KubeletConfigUnknown", (
            "the profile asks the kubelet for "
            f"{'a topology manager policy' if wants[0] else 'dedicated CPUs'}, but the kubelet's "
            f"configuration is unknown ({kubelet.error or 'no kubelet process or config found'}"
            "), so it is not checked"))
        return
    read = f"the kubelet reads {kubelet_probe.read_from(kubelet)}"
    restart = "restart the kubelet on a drained node"
    if want_topology is not None and kubelet.topology_manager_policy != want_topology:
        out.error("Kubelet", "KubeletTopologyPolicyMismatch", (
            f"numa.topologyManagerPolicy is {want_topology}, but the kubelet runs "
            f"{kubelet.topology_manager_policy!r} ({read}); kvtune does not rewrite kubelet "
            f"configuration: {kubelet_probe.fix(kubelet, 'topologyManagerPolicy', want_topology)}"
            f" and {restart}"))
    if vmi is None or not vmi.dedicated_cpus:
        return
    _kubelet_cpus(vmi, host, read, restart, out)
    if vmi.hugepage_size is not None or vmi.numa_passthrough:
        _kubelet_memory(vmi, host, read, restart, out)


def _kubelet_cpus(
    vmi: VmiSettings, host: HostReport, read: str, restart: str, out: Draft
) -> None:
    kubelet = host.kubelet
    if kubelet.cpu_manager_policy != "static":
        out.error("Kubelet", "KubeletCpuManagerNotStatic", (
            f"vmi.dedicatedCpus is true, but the kubelet's cpuManagerPolicy is "
            f"{kubelet.cpu_manager_policy!r} ({read}): VMIs with dedicated CPUs stay Pending; "
            f"{kubelet_probe.fix(kubelet, 'cpuManagerPolicy', 'static')}, remove "
            f"/var/lib/kubelet/cpu_manager_state and {restart}"))
        return
    online = cpulist.parse(host.numa.online_cpus)  # the report's cpulists are validated
    try:
        reserved = cpulist.parse(kubelet.reserved_system_cpus or "")
    except ValueError as err:
        out.error("Kubelet", "KubeletReservedCpusInvalid", (
            f"the kubelet's reservedSystemCPUs {kubelet.reserved_system_cpus!r} ({read}) is not "
            f"a CPU list ({err}); "
            f"{kubelet_probe.fix(kubelet, 'reservedSystemCPUs', '<a CPU list such as 0-1>')}"))
        reserved = set()
    if online and reserved - online:
        out.error("Kubelet", "KubeletReservedCpusOffline", (
            f"the kubelet's reservedSystemCPUs {kubelet.reserved_system_cpus} ({read}) name "
            f"CPUs {cpulist.format_ids(reserved - online)} that are not online on this host "
            f"(online: {host.numa.online_cpus}): the CPUs kept from VMs are not the ones "
            f"meant; {kubelet_probe.fix(kubelet, 'reservedSystemCPUs', '<online CPUs>')}"))
    whole_cores = kubelet.cpu_manager_policy_options.get("full-pcpus-only") == "true"
    if host.numa.threads_per_core > 1 and not whole_cores:
        out.warn("Kubelet", "KubeletSharesCores", (
            f"the kubelet's static CPU manager runs without full-pcpus-only ({read}) on a host "
            f"with {host.numa.threads_per_core} threads per core: a VM's dedicated vCPUs may "
            "share a core with another container's, which costs both; "
            f"{kubelet_probe.fix(kubelet, 'cpuManagerPolicyOptions', *WHOLE_CORES)} and {restart}"))


def _kubelet_memory(
    vmi: VmiSettings, host: HostReport, read: str, restart: str, out: Draft
) -> None:
    kubelet = host.kubelet
    asks = ("vmi.numaPassthrough is true" if vmi.numa_passthrough
            else f"vmi.hugepageSize is {vmi.hugepage_size}")
    if kubelet.memory_manager_policy != "Static":
        out.error("Kubelet", "KubeletMemoryManagerNotStatic", (
            f"{asks}, but the kubelet's memoryManagerPolicy is "
            f"{kubelet.memory_manager_policy!r} ({read}): only the Static memory manager gives "
            "a guaranteed VM its memory and hugepages from the NUMA node of its CPUs; "
            f"{kubelet_probe.fix(kubelet, 'memoryManagerPolicy', 'Static')} with reservedMemory "
            f"per NUMA node, remove /var/lib/kubelet/memory_manager_state and {restart}"))
        return
    nodes = {node.id for node in host.numa.nodes}
    unknown = sorted(set(e.numa_node for e in kubelet.reserved_memory) - nodes)
    if nodes and unknown:
        out.error("Kubelet", "KubeletReservedMemoryMismatch", (
            f"the kubelet's reservedMemory ({read}) names NUMA node(s) "
            f"{', '.join(map(str, unknown))}, which this host does not have (nodes "
            f"{', '.join(map(str, sorted(nodes)))}); "
            f"{kubelet_probe.fix(kubelet, 'reservedMemory', '<one entry per NUMA node>')}"))
    if host.memory.total_kib is None:
        return
    try:
        reservation = memory_budget.kubelet_reservation(kubelet, host.memory.total_kib)
    except memory_budget.BudgetUnknown as err:
        out.warn("Kubelet", "KubeletReservedMemoryUnknown", str(err))
        return
    split = sum(reservation.per_node.values())
    if split != reservation.host_wide_kib:
        out.error("Kubelet", "KubeletReservedMemoryMismatch", (
            f"the Static memory manager needs reservedMemory's memory over all NUMA nodes "
            f"({gib(split)}) to equal systemReserved + kubeReserved + evictionHard "
            f"memory.available ({gib(reservation.host_wide_kib)}), and the kubelet refuses to "
            f"start otherwise ({read}); "
            f"{kubelet_probe.fix(kubelet, 'reservedMemory', '<entries adding up to that>')}"))


def stages_boot(spec: HypervisorNodeStateSpec) -> bool:
    """Boot-time settings are written (boot.settings Stage) rather than only reported: Stage is
    the default, so it takes rollout.allowReboot to write anything."""
    return spec.host.boot.settings == "Stage" and spec.disruption.allow_reboot


def ple_options(ple: PleReport) -> str | None:
    """The modprobe.d line that turns pause exits back on, from the kernel's own defaults:
    Intel's ple_gap, AMD's pause_filter_count / pause_filter_thresh where they are 0."""
    if ple.module == "kvm_intel" and ple.ple_gap == 0:
        return "options kvm_intel ple_gap=128\n"
    amd = [name for name, value in (("pause_filter_count=3000", ple.pause_filter_count),
                                    ("pause_filter_thresh=128", ple.pause_filter_thresh))
           if value == 0]
    if ple.module == "kvm_amd" and amd:
        return f"options kvm_amd {' '.join(amd)}\n"
    return None


def _ple(
    settings: CpuSettings, ple: PleReport, files: HostFiles, spec: HypervisorNodeStateSpec,
    out: Draft,
) -> None:
    """PLE cannot change at run time: findings, and for Required a fix staged for the next boot.

    Only a parameter that turns pause exits off (Intel's ple_gap=0, AMD's pause filter at 0) on
    hardware that has them gets a step; hardware without them never does (the kernel would
    force them back to 0 anyway).
    """
    # Off VT-x/AMD-V PLE does not apply; where something stands in for it (arm64's WFE trap,
    # s390's and POWER's directed yield) there is nothing to check, under kvm_pvm nothing does.
    if settings.ple == "Ignored" or ple.enabled == "Yes" or ple.equivalent:
        return
    required = settings.ple == "Required"
    field_name = f"spec.host.cpu.ple is {settings.ple}"
    if ple.supported == "No":
        out.find(required, "PLE", "PLEUnsupported", (
            f"{field_name}, but this CPU has no Pause-Loop Exiting (see status.host.cpu.ple."
            "evidence): do not overcommit vCPUs on this node; move such VMs to nodes whose CPU "
            "has it"))
        return
    if ple.enabled == "Unknown":
        out.warn("PLE", "PLEUnknown", (
            f"{field_name}, but whether KVM uses Pause-Loop Exiting is unknown (see "
            "status.host.cpu.ple.evidence): the KVM module may not be loaded yet"))
        return
    options = ple_options(ple) if required and ple.supported == "Yes" else None
    line = f"`{(options or '').strip()}` in {PLE_CONF}"
    if options and files.ple_staged == options:
        if files.ple_staged_before_boot:
            off = " / ".join(f"{ple.module}.{word.partition('=')[0]}=0"
                             for word in options.split()[2:])
            out.error("PLE", "PLEOverridden", (
                f"kvtune staged {line} before the last boot, but pause exits are still off: "
                f"something else sets them; remove {off} from the kernel command line or the "
                "other /etc/modprobe.d file that sets it, and reboot"))
        else:
            out.findings.append(Finding("PLE", "Pending", "PLERebootPending", (
                f"Pause-Loop Exiting is off ({ple.module} parameters in status.host.cpu.ple); "
                f"{line} is staged and takes effect at the next reboot of the node")))
    elif options and stages_boot(spec):
        out.step("file", f"ple/{ple.module}", "PLE", PLE_CONF, files.ple_staged or "", options,
                 f"{field_name} and {ple.module} runs with pause exits off on a CPU that has "
                 "them; the module cannot be reloaded under VMs, so the fix is staged for the "
                 "next boot", "NeedsReboot")
    else:
        how = ""
        if options:
            why = ("spec.host.boot.settings is Report" if spec.host.boot.settings == "Report"
                   else "spec.rollout.allowReboot is false")
            how = f"{why}, so kvtune does not stage {line}: write it yourself, or "
        out.find(required, "PLE", "PLEDisabled", (
            f"{field_name}, but KVM runs with Pause-Loop Exiting off ({ple.module} "
            f"parameters in status.host.cpu.ple); {how}remove the option that turns it off "
            "from /etc/modprobe.d and reboot the node"))
