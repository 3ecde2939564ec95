"""How much memory hugepages may hold on each NUMA node and on the host without starving it.

Hugepages come out of the memory everything else lives in: the kernel, system daemons, the
kubelet and its pods, QEMU's overhead outside guest memory, page cache. A pool is never given back
under memory pressure, so a profile that asks for too much does not fail; the host does, with OOM
kills and evictions, on every node of the profile at once. A NUMA node's budget is its memory,
less what the kubelet keeps from pods there, less the profile's headroom
(spec.host.memory.hugepages.hostHeadroom); the host's budget is the same over /proc/meminfo. A
fact the budget needs that cannot be read makes it unknown, never unlimited.
"""

from __future__ import annotations

import math
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from kvtune_api import quantity as kvtune_quantity
from kvtune_api.v1alpha1.host import HostReport, KubeletReport

from ..host.paths import CONFIG_PATHS, MEMINFO

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.profile import HostHeadroom

HEADROOM_FIELD = "spec.host.memory.hugepages.hostHeadroom"
#: The kubelet's hard eviction threshold for memory.available when its config sets none. Older
#: kubelets drop it when evictionHard names other signals only; counting it anyway is the safe
#: reading of the two.
DEFAULT_EVICTION_HARD = "100Mi"


class BudgetUnknown(Exception):
    """A fact the budget needs is unknown; the message names where it comes from and the fix."""


def gib(kib: int) -> str:
    """KiB as GiB with one decimal, as the budget's messages show memory."""
    return f"{kib / 2**20:.1f} GiB"


@dataclass(frozen=True)
class Budget:
    """The memory of one NUMA node (or the host) and what hugepages must leave of it, in KiB."""

    memory_kib: int
    kubelet_kib: int
    headroom_kib: int

    @property
    def limit_kib(self) -> int:
        """The most that all hugepage pools together may hold."""
        return max(0, self.memory_kib - self.kubelet_kib - self.headroom_kib)

    def explain(self) -> str:
        return (f"{gib(self.memory_kib)} of memory, less {gib(self.kubelet_kib)} the kubelet "
                f"keeps from pods and {gib(self.headroom_kib)} of headroom ({HEADROOM_FIELD})")


@dataclass(frozen=True)
class Budgets:
    """The host's budget, and each NUMA node's whose memory is known (memoryless nodes: 0)."""

    host: Budget
    nodes: dict[int, Budget]
    #: The kubelet's hard eviction threshold for memory.available: MemAvailable must stay above.
    eviction_kib: int


def _kib(value: str, where: str, fix: str) -> int:
    """A memory quantity in KiB, rounded up; raises BudgetUnknown for anything but a finite,
    non-negative quantity: a negative reserve would make the budget larger, not unknown."""
    try:
        quantity = kvtune_quantity.parse(value, where)
    except kvtune_quantity.QuantityError as err:
        # The value is the kubelet's (hostile until proven otherwise): named, never quoted.
        raise BudgetUnknown(f"{where} is not a Kubernetes quantity; {fix}") from err
    if not quantity.is_finite() or quantity < 0:
        raise BudgetUnknown(f"{where} is not a finite, non-negative quantity; {fix}")
    return math.ceil(quantity / 1024)


def _headroom(settings: HostHeadroom, memory_kib: int) -> int:
    minimum = _kib(settings.minimum, f"{HEADROOM_FIELD}.minimum", "write e.g. 4Gi")
    return max(memory_kib * settings.percent // 100, minimum)


@dataclass(frozen=True)
class KubeletReservation:
    """What the kubelet keeps from pods, in KiB: host-wide, and per NUMA node where it says."""

    #: systemReserved + kubeReserved memory + the hard eviction threshold.
    host_wide_kib: int
    #: The hard eviction threshold for memory.available: MemAvailable must stay above it.
    eviction_kib: int
    #: reservedMemory's memory per NUMA node (the memory manager's split).
    per_node: dict[int, int]

    @property
    def kib(self) -> int:
        """What the kubelet really keeps: the memory manager wants reservedMemory to add up to
        the host-wide reserves; where it does not, the larger of the two."""
        return max(self.host_wide_kib, sum(self.per_node.values()))


def kubelet_reservation(kubelet: KubeletReport, host_kib: int) -> KubeletReservation:
    """What the kubelet reserves on a host of `host_kib`; raises BudgetUnknown.

    Without a kubelet the defaults apply (only the eviction threshold); a kubelet whose
    configuration cannot be read may reserve anything, so that is unknown.
    """
    def where(key: str) -> str:
        return kubelet.origins.get(key) or kubelet.config_path or CONFIG_PATHS[0]

    if kubelet.error is not None:
        raise BudgetUnknown(
            f"the kubelet's configuration cannot be used ({kubelet.error}), so what the kubelet "
            "reserves is unknown; fix it")
    eviction = kubelet.eviction_hard_memory or DEFAULT_EVICTION_HARD
    eviction_at = f"evictionHard memory.available in {where('evictionHard')}"
    if eviction.endswith("%"):
        try:
            percent = Decimal(eviction[:-1])
        except ArithmeticError as err:
            raise BudgetUnknown(f"{eviction_at} is not a percentage; fix it") from err
        if not percent.is_finite() or not 0 <= percent <= 100:
            raise BudgetUnknown(f"{eviction_at} is not a percentage from 0 to 100; fix it")
        eviction_kib = math.ceil(host_kib * percent / 100)
    else:
        eviction_kib = _kib(eviction, eviction_at, "fix it")
    reserved = sum(_kib(value, f"{key}.memory in {where(key)}", "fix it") for key, value in (
        ("systemReserved", kubelet.system_reserved_memory),
        ("kubeReserved", kubelet.kube_reserved_memory)) if value is not None)
    per_node = {entry.numa_node: _kib(
        entry.limits["memory"],
        f"reservedMemory[numaNode={entry.numa_node}] in {where('reservedMemory')}", "fix it")
        for entry in kubelet.reserved_memory if "memory" in entry.limits}
    return KubeletReservation(reserved + eviction_kib, eviction_kib, per_node)


def refusal(settings: HostHeadroom, host: HostReport, held: Mapping[int, int]) -> str:
    """Why hugepage pools holding `held` (NUMA node -> KiB) would starve the host; "" when
    every node and the host can spare it.

    The one judgement for every way pages come to be reserved that is not the live path's own
    step-by-step check (hugepages.py): the counts staged on the kernel command line, which the
    kernel reserves at boot before anything else can run. An unknown fact refuses.
    """
    try:
        found = budgets(settings, host)
    except BudgetUnknown as err:
        return str(err)
    why = []
    for node_id, kib in sorted(held.items()):
        budget = found.nodes.get(node_id)
        if budget is None:
            why.append(f"the memory of NUMA node {node_id} is unknown (its meminfo cannot be "
                       "read)")
        elif kib > budget.limit_kib:
            why.append(f"NUMA node {node_id} would hold {gib(kib)} of hugepages but can spare "
                       f"at most {gib(budget.limit_kib)}: {budget.explain()}")
    total = sum(held.values())
    if total > found.host.limit_kib:
        why.append(f"the host would hold {gib(total)} of hugepages but can spare at most "
                   f"{gib(found.host.limit_kib)}: {found.host.explain()} ({MEMINFO})")
    return "; ".join(why)


def budgets(settings: HostHeadroom, host: HostReport) -> Budgets:
    """The budgets of `host` under `settings`; raises BudgetUnknown when a fact is unknown.

    NUMA nodes whose meminfo could not be read are left out of `nodes`.
    """
    total = host.memory.total_kib
    if not total:  # None, or a MemTotal of 0 that no running host has
        raise BudgetUnknown(
            f"{MEMINFO} cannot be read (or gives no MemTotal), so the host's memory is unknown; "
            "check that --root points at the host's / with /proc mounted")
    kubelet = kubelet_reservation(host.kubelet, total)
    reserved, per_node = kubelet.kib, kubelet.per_node
    nodes = {}
    for node in host.numa.nodes:
        if node.memory_total_kib == 0 and not node.memoryless:
            continue  # its meminfo could not be read
        # The host-wide reserves are split in proportion to each node's memory, as the kernel
        # spreads the host's own allocations over the nodes that have memory; a node's
        # reservedMemory, when larger, is the administrator's own split and wins.
        share = reserved * node.memory_total_kib // total
        nodes[node.id] = Budget(node.memory_total_kib, max(share, per_node.get(node.id, 0)),
                                _headroom(settings, node.memory_total_kib))
    return Budgets(Budget(total, reserved, _headroom(settings, total)), nodes,
                   kubelet.eviction_kib)
