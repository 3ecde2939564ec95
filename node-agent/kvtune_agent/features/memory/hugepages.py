"""Hugepages: each NUMA node's pool of each page size sized to the profile, within what the node
can spare (memory_budget.py), never shrunk under VMs; pools the kernel fills only in part are
asked again at growing intervals and then given to the next boot (boot.py)."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.host import (
    HostReport,
    HugepagePool,
    NumaNode,
    Problem,
)

from ...host import bootloader, reboot
from ...host.hostfs import HostFS, ProcessTable
from ...host.meminfo import NODES
from ...host.paths import MEMINFO
from .. import memory_budget
from ..base import (
    Backoff,
    Draft,
    Feature,
    Finding,
    Plan,
    PlanInputs,
)
from ..memory_budget import gib
from ..page import Page
from . import boot, text
from . import probe as memory_probe
from .probe import HUGEPAGES, SIZE_KIB

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        BootRetry,
        Disruption,
        HugepageRetry,
        HypervisorNodeStateSpec,
        HypervisorNodeStateStatus,
        PlannedStep,
        StepResult,
    )
    from kvtune_api.v1alpha1.profile import (
        HugepagesAllocation,
        HugepagesSettings,
    )


def hugepage_step_id(node: int | None, size: str) -> str:
    """The id of the step that resizes one NUMA node's pool of one page size."""
    return f"hugepages/node{node}/{size}"


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


def _grows(step: PlannedStep) -> bool:
    return step.feature == "Hugepages" and int(step.desired) > int(step.current)


def _written(result: StepResult) -> bool:
    return result.result in ("Applied", "Partial")


def _pool_record(step: PlannedStep, result: StepResult, attempts: int, now: datetime.datetime,
                 following: datetime.datetime, host: HostReport) -> HugepageRetry:
    from kvtune_api.v1alpha1.nodestate import HugepageRetry
    pool = next(p for p in host.memory.hugepages_per_node
                if hugepage_step_id(p.node, p.size) == step.id)
    return HugepageRetry(
        step=step.id, path=step.path, node=pool.node, size=pool.size, wanted=int(step.desired),
        allocated=pool.total, attempts=attempts, last_attempt=now, next_attempt=following)


def _pool_findings(held: list[HugepageRetry]) -> list[Finding]:
    """One finding per page size: what the kernel gave on each NUMA node short of pages of
    that size, and what to do."""
    out = []
    for size in sorted({retry.size for retry in held}):
        retries = [retry for retry in held if retry.size == size]
        short = ", ".join(f"{r.allocated} of {r.wanted} on NUMA node {r.node} ({r.path})"
                          for r in retries)
        attempts = max(r.attempts for r in retries)
        following = min(r.next_attempt for r in retries).isoformat(timespec="seconds")
        out.append(Finding("Hugepages", "Error", "HugepagesPartlyAllocated", (
            f"the kernel allocated only part of the {size} hugepages wanted: {short}, after "
            f"{attempts} attempt(s); it finds too little contiguous free memory on the running "
            "host. Every attempt compacts "
            f"memory under the VMs, so the next is at {following}, each waiting twice as long. "
            # The kernel arguments themselves are boot.py's to say: it knows the running
            # kernel's form (per node or one total) and what is staged already.
            "Pages the running host cannot give are allocated at boot, before memory fragments: "
            "kvtune stages the kernel arguments where spec.host.boot.settings is Stage and "
            "spec.rollout.allowReboot is true, and otherwise says which to set (docs/boot.md)")))
    return out


def _stages_boot(step: PlannedStep) -> bool:
    return step.id == boot.STEP_ID


def _failed(result: StepResult) -> bool:
    return result.result == "Failed"


def _boot_record(step: PlannedStep, result: StepResult, attempts: int, now: datetime.datetime,
                 following: datetime.datetime, host: HostReport) -> BootRetry:
    from kvtune_api.v1alpha1.nodestate import BootRetry
    return BootRetry(step=step.id, path=step.path, wanted=step.desired, error=result.message,
                     attempts=attempts, last_attempt=now, next_attempt=following)


def _boot_findings(held: list[BootRetry]) -> list[Finding]:
    return [Finding("Hugepages", "Error", "BootStagingFailed", (
        f"staging `{r.wanted}` through {r.path} failed {r.attempts} time(s), the last: "
        f"{r.error}. Each attempt rewrites the boot configuration and runs the boot "
        "loader's tool, so the next is at "
        f"{r.next_attempt.isoformat(timespec='seconds')}, each waiting twice as long; fix "
        "what the error says (run the command by hand to see it), and other kernel "
        "arguments (a changed spec) are tried at once")) for r in held]


#: Pools the kernel grows only in part: every attempt compacts memory under the VMs.
POOL_BACKOFF = Backoff("hugepage_retries", _grows, _written, _pool_record, _pool_findings)
#: Kernel arguments the boot loader's tool failed to stage: each attempt rewrites the boot
#: configuration. Held after boot.stage, which plans the step from the pools' records.
BOOT_BACKOFF = Backoff("boot_retries", _stages_boot, _failed, _boot_record, _boot_findings,
                       late=True)


class Hugepages(Feature[t.Any, None]):
    condition = "Hugepages"
    section = "memory"
    problem_name = "Memory"
    volatile = ("host.memory.freeKib", "host.memory.availableKib", "host.memory.swapFreeKib",
                "host.memory.hugepages.free", "host.memory.hugepagesPerNode.free")
    backoffs = (POOL_BACKOFF, BOOT_BACKOFF)

    def probe(self, fs: HostFS, processes: ProcessTable) -> t.Any:
        return memory_probe.probe(fs)

    def check(self, found: t.Any) -> list[Problem]:
        return memory_probe.check(found)

    def plan(self, inputs: PlanInputs, facts: None, out: Draft) -> None:
        _hugepages(inputs.spec.host.memory.hugepages, inputs.host, out)

    def restage(self, plan: Plan, inputs: PlanInputs, records: Mapping[str, Sequence[t.Any]],
                fs: HostFS, journaled: Mapping[str, str], timeout: float) -> Plan:
        """The boot-time hugepages (boot.py); the boot configuration is read only when the spec
        allocates hugepages or kvtune has written it (to withdraw what it staged)."""
        if not inputs.spec.host.memory.hugepages.pages and not journaled:
            return plan
        facts = bootloader.read_facts(fs, timeout=timeout)
        facts = dataclasses.replace(facts, reboot_requested=reboot.requested(fs))
        return boot.stage(plan, inputs.spec, inputs.host,
                          records.get(POOL_BACKOFF.status_field, ()), facts, journaled)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return (None if spec.host.memory.hugepages.pages
                else "spec.host.memory.hugepages.pages is empty")

    def labels(self, spec: HypervisorNodeStateSpec,
               status: HypervisorNodeStateStatus) -> dict[str, str]:
        """Hugepages of a size count as ready when the spec allocates that size and the
        Hugepages condition is True (every pool at its count, nothing blocking)."""
        ready = "true" if cond.is_true(status.conditions, "Hugepages") else "false"
        return {f"hugepages-{alloc.size}": ready for alloc in spec.host.memory.hugepages.pages}

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Hugepages()
