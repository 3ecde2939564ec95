"""Hugepage pools every given host can hold, and how many VMs of a shape fit on each NUMA node.

The pools come from the memory budget the node agent itself enforces before it grows a pool
(kvtune_agent.features.memory_budget: a NUMA node's memory, less what the kubelet keeps from
pods there, less the profile's headroom), so a suggested pool is never one the agent would
refuse to grow.
Each NUMA node id gets the smallest count any host can spare there; hosts whose NUMA nodes are
numbered differently share a total split evenly instead (the profile's `count` form).

With a VM shape (`--vm 4cpu/16Gi`) a NUMA node holds as many VMs as both its CPUs and its memory
allow: dedicated CPUs are the vCPUs plus one for the isolated emulator thread, in whole cores,
out of the node's isolated CPUs where a partition is suggested;
memory is the guest's hugepages plus KubeVirt's own overhead estimate (kvtune_api.
kubevirt_overhead, at least the profile's vmOverheadFloor) outside them. Each VM stays on one
NUMA node, as the kubelet's topology manager places it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvtune_agent.features import kubelet_report, memory_budget
from kvtune_agent.features.cpu_partition import partition
from kvtune_agent.features.memory_budget import gib
from kvtune_agent.host import cpulist
from kvtune_api import kubevirt_overhead, quantity
from kvtune_api.v1alpha1.host import HostReport, NumaNode
from kvtune_api.v1alpha1.profile import CpuPartition, HostHeadroom, MemorySettings

from .hosts import ProbedHost
from .suggestion import Draft, SuggestError, VmShape

#: Page sizes in the order they are preferred: 1Gi pages cost the fewest TLB entries.
SIZES = (("1Gi", 1 << 20), ("2Mi", 2048))
POOLS = ("memory", "hugepages", "pages")
#: The profile's defaults the budget and the overhead floor are computed with.
HEADROOM = HostHeadroom()
OVERHEAD_FLOOR_KIB = quantity.parse_bytes(MemorySettings().vm_overhead_floor, "floor") // 1024


@dataclass(frozen=True)
class VmPlan:
    """What the pools are sized for: a VM shape, how many per host (None: as many as fit),
    whether they get dedicated CPUs (then one more for the emulator thread), and the CPU
    partition suggested (then only its isolated CPUs are the VMs')."""

    shape: VmShape
    per_host: int | None
    dedicated: bool
    partition: CpuPartition | None = None

    def pages(self, kib: int) -> int:
        """The hugepages of `kib` one VM's guest memory takes (rounded up to whole pages)."""
        return -(-self.shape.memory_kib // kib)


def vm_nodes(report: HostReport) -> list[NumaNode]:
    """The NUMA nodes VMs can run on: online CPUs and memory (not CXL, HBM or GPU memory)."""
    return [node for node in report.numa.nodes
            if node.cpu_count and not node.memoryless and node.memory_total_kib]


def _size(hosts: Sequence[ProbedHost], draft: Draft) -> tuple[str, int] | None:
    """The largest page size every VM node of every host has a readable pool of."""
    offered = []
    for host in hosts:
        pools = {(p.node, p.size) for p in host.report.memory.hugepages_per_node
                 if p.total is not None and p.free is not None}
        nodes = vm_nodes(host.report)
        offered.append({size for size, _ in SIZES
                        if nodes and all((node.id, size) in pools for node in nodes)})
    common = set.intersection(*offered)
    for size, kib in SIZES:
        if size in common:
            return size, kib
    lacking = [h.source for h, sizes in zip(hosts, offered, strict=True) if not sizes]
    if not lacking:  # each host offers a size, but none of them all
        raise SuggestError("these hosts have no hugepage size in common: " + "; ".join(
            f"{h.source} offers {', '.join(sorted(s))}"
            for h, s in zip(hosts, offered, strict=True))
            + ": suggest a profile for each kind of host")
    draft.leave_out(("memory",), "hugepages", (
        f"{', '.join(lacking)} has no NUMA node with CPUs and memory, or no readable pool of "
        "2Mi or 1Gi pages on each of them (see its numa.nodes, memory.hugepagesPerNode and "
        "problems)"))
    return None


def _other_pools(report: HostReport, node: int, size: str) -> int:
    """KiB the pools of the node's other page sizes hold: this profile leaves them as they
    are, and the agent counts them in the node's budget."""
    return sum((p.total or 0) * p.size_kib for p in report.memory.hugepages_per_node
               if p.node == node and p.size != size)


@dataclass(frozen=True)
class _NodeRoom:
    """One NUMA node of one host: the pages it can spare, and the VMs it can hold."""

    pages: int
    why: str
    vms: int | None = None
    vm_why: str = ""


def _reserved_cpus(report: HostReport, node: NumaNode, spec: CpuPartition | None
                   ) -> tuple[int, str]:
    """CPUs of `node` kept from VMs (by the kubelet, or the partition), and how that was
    found."""
    kubelet = report.kubelet
    cpus = cpulist.parse(node.cpus)
    if spec is not None:
        # The partition's housekeeping CPUs, and any the kubelet keeps beside them until its
        # reservedSystemCPUs are set to them (spec.cpu.kubelet).
        kept = cpus - partition(spec, report).isolated
        if kubelet_report.known(kubelet) and kubelet.reserved_system_cpus:
            kept |= cpus & cpulist.parse(kubelet.reserved_system_cpus)
        return len(kept), f"{len(kept)} kept for the host (the partition's housekeeping)"
    if kubelet_report.known(kubelet) and kubelet.reserved_system_cpus:
        kept = cpus & cpulist.parse(kubelet.reserved_system_cpus)
        return len(kept), f"reservedSystemCPUs keeps {len(kept)}"
    # The static CPU manager needs some CPUs reserved, and unknown is never zero: one whole
    # core per NUMA node, the housekeeping a partition would keep.
    core = max(1, report.numa.threads_per_core)
    return min(core, len(cpus)), f"{core} kept for the host (one core: no reservedSystemCPUs)"


def _vm_room(host: ProbedHost, node: NumaNode, budget: memory_budget.Budget, other: int,
             kib: int, vms: VmPlan) -> tuple[int, str]:
    """How many VMs of the shape the node holds, and what bounds it."""
    shape = vms.shape
    guest = vms.pages(kib) * kib
    overhead = max(OVERHEAD_FLOOR_KIB, kubevirt_overhead.estimate(
        guest_bytes=guest * 1024, vcpus=shape.vcpus,
        dedicated_or_guaranteed=vms.dedicated).total // 1024)
    by_pool = (budget.limit_kib - other) // guest
    outside = budget.memory_kib - budget.kubelet_kib - other
    by_memory = min(by_pool, max(0, outside) // (guest + overhead))
    threads = max(1, host.report.numa.threads_per_core)
    per_vm = shape.vcpus + 1 if vms.dedicated else shape.vcpus
    per_vm = math.ceil(per_vm / threads) * threads if vms.dedicated else per_vm
    kept, kept_why = _reserved_cpus(host.report, node, vms.partition)
    by_cpu = max(0, node.cpu_count - kept) // per_vm
    why = (f"CPUs: {node.cpu_count}, {kept_why}, {per_vm} per VM"
           + (" (vCPUs + the emulator thread, whole cores)" if vms.dedicated else "")
           + f" = {by_cpu}; memory: {gib(guest)} of pages + {gib(overhead)} KubeVirt overhead "
           f"per VM = {by_memory}")
    return min(by_cpu, by_memory), why


def _rooms(host: ProbedHost, size: str, kib: int, vms: VmPlan | None) -> dict[int, _NodeRoom]:
    """Each VM node's room on one host; raises BudgetUnknown."""
    report = host.report
    found = memory_budget.budgets(HEADROOM, report)
    rooms = {}
    for node in vm_nodes(report):
        budget = found.nodes.get(node.id)
        if budget is None:
            raise memory_budget.BudgetUnknown(f"the memory of NUMA node {node.id} is unknown")
        other = _other_pools(report, node.id, size)
        pages = max(0, budget.limit_kib - other) // kib
        why = budget.explain() + (f", less {gib(other)} in its pools of other page sizes"
                                  if other else "")
        if vms is None:
            rooms[node.id] = _NodeRoom(pages, why)
        else:
            fit, vm_why = _vm_room(host, node, budget, other, kib, vms)
            rooms[node.id] = _NodeRoom(pages, why, fit, vm_why)
    return rooms


def _spread(total: int, nodes: Sequence[int]) -> dict[int, int]:
    """`total` split evenly over `nodes`, the remainder to the lowest ids (as the agent does)."""
    share, extra = divmod(total, len(nodes))
    return {node: share + (rank < extra) for rank, node in enumerate(sorted(nodes))}


def suggest_hugepages(hosts: Sequence[ProbedHost], vms: VmPlan | None, draft: Draft) -> str | None:
    """Write memory.hugepages.pages into `draft`; the page size chosen, or None when left out."""
    chosen = _size(hosts, draft)
    if chosen is None:
        return None
    size, kib = chosen
    rooms: dict[str, dict[int, _NodeRoom]] = {}
    for host in hosts:
        try:
            rooms[host.source] = _rooms(host, size, kib, vms)
        except memory_budget.BudgetUnknown as err:
            draft.leave_out(("memory",), "hugepages", f"the memory budget of {host.source} is "
                            f"unknown ({err}); the agent would grow no pool there")
            return None
    node_sets = {tuple(sorted(r)) for r in rooms.values()}
    pages = (_per_node(hosts, rooms, size, kib, vms, draft) if len(node_sets) == 1
             else _split(hosts, rooms, size, kib, vms, draft))
    if pages is None:
        return None
    draft.note(("memory", "hugepages"), (
        f"{size} pages, the largest size every host offers on each NUMA node with CPUs; a "
        "running host may not find enough contiguous memory for all of them (1Gi pages "
        "especially): the agent retries, and the node's Hugepages condition says how far "
        "it got"))
    return size


def _vm_count(hosts: Sequence[ProbedHost], rooms: dict[str, dict[int, _NodeRoom]],
              vms: VmPlan, draft: Draft) -> dict[int, int]:
    """VMs per NUMA node id that every host can hold (perNode form), saying which host holds
    fewer than asked."""
    ids = sorted(next(iter(rooms.values())))
    asked = _spread(vms.per_host, ids) if vms.per_host is not None else None
    count = {}
    for node in ids:
        fits = [rooms[h.source][node].vms or 0 for h in hosts]
        count[node] = min(fits) if asked is None else min(asked[node], *fits)
    if asked is not None:
        for host in hosts:
            short = [(n, rooms[host.source][n]) for n in ids
                     if (rooms[host.source][n].vms or 0) < asked[n]]
            if short:
                held = sum(min(asked[n], rooms[host.source][n].vms or 0) for n in ids)
                draft.shortfalls.append(
                    f"{host.source} cannot hold {vms.per_host} VMs of {vms.shape} "
                    f"({', '.join(str(asked[n]) for n in ids)} on NUMA node"
                    f"{'s' * (len(ids) > 1)} {', '.join(map(str, ids))}), only {held}: "
                    + "; ".join(
                        f"NUMA node {n} holds {r.vms} ({r.vm_why})" for n, r in short))
    return count


def _per_node(hosts: Sequence[ProbedHost], rooms: dict[str, dict[int, _NodeRoom]], size: str,
              kib: int, vms: VmPlan | None, draft: Draft) -> dict[int, int] | None:
    ids = sorted(next(iter(rooms.values())))
    if vms is None:
        pages = {n: min(rooms[h.source][n].pages for h in hosts) for n in ids}
    else:
        guest = vms.pages(kib)
        pages = {n: c * guest for n, c in _vm_count(hosts, rooms, vms, draft).items()}
    floor = _in_use(hosts, size, ids)
    kept = [f"node {n}: kept at the {count} pages VMs hold on {holder}: fewer would wait for "
            "them to leave the node" for n, (count, holder) in floor.items() if count > pages[n]]
    for n, (count, _) in floor.items():
        pages[n] = max(pages[n], count)
    _fit_hosts(hosts, pages, kib, {n: count for n, (count, _) in floor.items()})
    if not any(pages.values()):
        draft.leave_out(("memory",), "hugepages", (
            f"no NUMA node can spare a {size} page on every host"
            + (f" for a VM of {vms.shape}" if vms else "")
            + ": " + "; ".join(f"{h.source} node {n}: {rooms[h.source][n].why}"
                               for h in hosts for n in ids)))
        return None
    entries = [{"node": n, "count": c} for n, c in pages.items()]
    draft.choose(POOLS, [{"size": size, "perNode": entries}], (
        f"sized for the VMs of {vms.shape} each NUMA node is to hold, within " if vms else
        "as large as allowed by ") + (
        "the memory budget the agent enforces before it grows a pool: per NUMA node, its "
        "memory less what the kubelet keeps there and the headroom (memory.hugepages."
        "hostHeadroom, default the larger of 10% and 4Gi)"))
    for n in ids:
        binding = min(hosts, key=lambda h: rooms[h.source][n].pages)
        line = (f"node {n}: {pages[n]} pages; {binding.source} can spare "
                f"{rooms[binding.source][n].pages} ({rooms[binding.source][n].why})")
        if vms is not None:
            fewest = min(hosts, key=lambda h: rooms[h.source][n].vms or 0)
            line += (f"; for {pages[n] // vms.pages(kib)} VMs of {vms.shape} "
                     f"({fewest.source}: {rooms[fewest.source][n].vm_why})")
        draft.note(POOLS, line)
    for line in kept:
        draft.note(POOLS, line)
    for host in hosts:
        _growth_in_use(host, pages, size, kib, draft)
    return pages


def _growth_in_use(host: ProbedHost, pages: dict[int, int], size: str, kib: int,
                   draft: Draft) -> None:
    """Say where growing a pool takes more than its NUMA node has free: the agent then waits
    for a drain of the node before it grows it (NeedsDrain)."""
    now = {p.node: p.total or 0 for p in host.report.memory.hugepages_per_node if p.size == size}
    free = {node.id: node.memory_free_kib for node in host.report.numa.nodes}
    short = [f"node {n} grows by {gib((c - now.get(n, 0)) * kib)} and has {gib(free[n])} free"
             for n, c in pages.items() if (c - now.get(n, 0)) * kib > free.get(n, 0)]
    if short:
        draft.note(POOLS, (
            f"on {host.source} {', '.join(short)}: the agent grows such a pool only on a "
            "drained node (NeedsDrain), as memory in use would be reclaimed under running VMs"))


def _in_use(hosts: Sequence[ProbedHost], size: str, ids: Sequence[int]
            ) -> dict[int, tuple[int, str]]:
    """Per NUMA node, the most pages of `size` held on any host (and that host): in use, or
    reserved (the kernel counts those host-wide, so any node may hold them, as the planner
    reckons). A smaller pool would be a shrink that waits for the VMs holding them to leave."""
    most: dict[int, tuple[int, str]] = {}
    for host in hosts:
        reserved = sum(p.reserved or 0 for p in host.report.memory.hugepages if p.size == size)
        for pool in host.report.memory.hugepages_per_node:
            if (pool.size == size and pool.node is not None and pool.node in ids
                    and pool.total and pool.free is not None):
                used = min(pool.total, pool.total - pool.free + reserved)
                if used > most.get(pool.node, (0, ""))[0]:
                    most[pool.node] = (used, host.source)
    return most


def _fit_hosts(hosts: Sequence[ProbedHost], pages: dict[int, int], kib: int,
               floor: Mapping[int, int] | None = None) -> None:
    """Lower the largest counts (not below `floor`) until every host's budget holds them all
    with every pool the profile leaves as it is: the agent checks the host's total too, against
    /proc/meminfo."""
    floor = floor or {}
    for host in hosts:
        found = memory_budget.budgets(HEADROOM, host.report)
        room = found.host.limit_kib - sum(
            (p.total or 0) * p.size_kib for p in host.report.memory.hugepages_per_node
            if p.node is not None and (p.node not in pages or p.size_kib != kib))
        while sum(pages.values()) * kib > room:
            lowerable = [n for n in pages if pages[n] > floor.get(n, 0)]
            if not lowerable:
                return  # the agent's own check has the last word (suggest_check)
            pages[max(lowerable, key=lambda n: pages[n])] -= 1


def _split(hosts: Sequence[ProbedHost], rooms: dict[str, dict[int, _NodeRoom]], size: str,
           kib: int, vms: VmPlan | None, draft: Draft) -> dict[int, int] | None:
    """Hosts with differently numbered NUMA nodes: one total, split evenly by each host."""
    def room(host: ProbedHost) -> int:
        nodes = rooms[host.source]
        if vms is None:
            per_node = min(r.pages for r in nodes.values())
        else:
            per_node = min(r.vms or 0 for r in nodes.values()) * vms.pages(kib)
        return per_node * len(nodes)

    count = min(room(h) for h in hosts)
    if vms is not None and vms.per_host is not None:
        asked = vms.per_host * vms.pages(kib)
        count = min(count, asked)
        for host in hosts:
            if room(host) < asked:
                draft.shortfalls.append(
                    f"{host.source} cannot hold {vms.per_host} VMs of {vms.shape} split over "
                    f"its {len(rooms[host.source])} NUMA nodes: " + "; ".join(
                        f"NUMA node {n} holds {r.vms} ({r.vm_why})"
                        for n, r in rooms[host.source].items()))
    spread = {h.source: _spread(count, sorted(rooms[h.source])) for h in hosts}
    for host in hosts:
        _fit_hosts([host], spread[host.source], kib)
    count = min(sum(s.values()) for s in spread.values())
    if not count:
        draft.leave_out(("memory",), "hugepages",
                        f"no host can spare {size} pages on every NUMA node with CPUs")
        return None
    draft.choose(POOLS, [{"size": size, "count": count}], (
        "the hosts number their NUMA nodes differently, so one total is split evenly over "
        "each host's NUMA nodes with CPUs; it is what the host with the least room per node "
        "can hold on all of them, within the memory budget the agent enforces"))
    for host in hosts:
        draft.note(POOLS, f"{host.source}: " + "; ".join(
            f"node {n} can spare {r.pages} ({r.why})" for n, r in rooms[host.source].items()))
    return {0: count}
