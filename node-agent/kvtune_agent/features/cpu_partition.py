"""The CPU partition of one node: housekeeping CPUs for the host, the rest isolated for VMs.

A helper of several features (CPU isolation, the kubelet's reserved CPUs) and of `kvtune profile
suggest`, not a feature itself, as memory_budget is for hugepages and the kubelet.

A profile says what it wants once for many nodes (`spec.cpu.partition`): an explicit CPU list,
or N whole cores per NUMA node. Each node's real topology (the probe's NUMA nodes and cores)
turns that into two CPU sets, or into a refusal that names what does not fit, so that the node
is Degraded with the reason and nothing on it changes. Every reader of the partition (the IRQ,
kernel-noise and boot steps, the kubelet's reservedSystemCPUs, `kvtune profile suggest`) takes
it from here, so they never disagree about which CPUs are whose.

The rules, and why:
- whole cores: an SMT sibling of a VM's CPU shares its execution units, so a core split between
  the host and a VM gives the VM the host's noise. Cores per NUMA node are taken lowest CPU id
  first, as NTO and TuneD users write them and as CPU 0 (which often cannot go offline and takes
  the boot-time and timer work) is always housekeeping;
- every NUMA node with CPUs keeps housekeeping CPUs: its devices' IRQs and its memory's kernel
  threads (kswapd, kcompactd) then stay on the node, and the kubelet keeps CPUs there for
  non-VM pods; every such node must also keep a core for VMs, or it takes no VM at all;
- only online CPUs count, and a CPU that is offline or absent in an explicit list is refused:
  writing it into an IRQ mask or a kernel argument would mean something else after a hot-plug;
- unknown is never zero: a node whose CPUs or cores the probe could not read is refused.
A pure function of the profile field and the probe report.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import HostReport

from ..host import cpulist

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.profile import CpuPartition

FIELD = "spec.cpu.partition"


class PartitionRefused(Exception):
    """The partition cannot be made on this node; `reason` is CamelCase for the condition, the
    message names the field, the CPUs and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Partition:
    """The node's CPUs split in two, with what a person should know about the split."""

    housekeeping: frozenset[int]
    isolated: frozenset[int]
    #: Warnings that do not stop the partition (an SMT core split by an explicit list).
    warnings: tuple[str, ...] = ()

    @property
    def housekeeping_list(self) -> str:
        return cpulist.format_ids(self.housekeeping)

    @property
    def isolated_list(self) -> str:
        return cpulist.format_ids(self.isolated)


def _nodes(host: HostReport, online: set[int]) -> dict[int | None, set[int]]:
    """NUMA node -> its online CPUs; a host without NUMA nodes (CONFIG_NUMA=n) is one node,
    None. Raises PartitionRefused where a node's CPUs are unknown."""
    unknown = [node.id for node in host.numa.nodes if node.cpus_unknown]
    if unknown:
        raise PartitionRefused("NumaNodeCpusUnknown", (
            f"{FIELD} is not applied: the CPUs of NUMA node(s) {_ids(unknown)} are unknown (see "
            "the node's problems), so no housekeeping CPU can be placed there; fix the node's "
            "sysfs (/sys/devices/system/node)"))
    nodes: dict[int | None, set[int]] = {}
    for node in host.numa.nodes:
        cpus = cpulist.parse(node.cpus) & online
        if cpus:
            nodes[node.id] = cpus
    placed = set().union(*nodes.values()) if nodes else set()
    if not host.numa.nodes:
        nodes[None] = set(online)
    elif online - placed:
        raise PartitionRefused("CpusOutsideNumaNodes", (
            f"{FIELD} is not applied: online CPUs {cpulist.format_ids(online - placed)} are in "
            "no NUMA node's cpulist, so which node they belong to is unknown; check "
            "/sys/devices/system/node"))
    return nodes


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(ids)))


def _cores(host: HostReport, online: set[int]) -> list[frozenset[int]]:
    """The online cores, by lowest CPU id. Raises PartitionRefused where the topology is
    unknown or does not cover the online CPUs (a core taken for two would break the rule)."""
    cores = [frozenset(cpulist.parse(core.cpus) & online) for core in host.cpu_isolation.cores]
    cores = sorted((core for core in cores if core), key=min)
    covered = set().union(*cores) if cores else set()
    if covered != online or sum(map(len, cores)) != len(covered):
        missing = cpulist.format_ids(online - covered)
        raise PartitionRefused("CpuCoresUnknown", (
            f"{FIELD}.housekeepingCoresPerNumaNode is not applied: the kernel's core layout "
            "(/sys/devices/system/cpu/cpuN/topology/core_cpus_list or thread_siblings_list) "
            + (f"does not cover online CPUs {missing}" if missing else "lists a CPU in two "
               "cores") + ", so whole cores cannot be chosen; give housekeepingCpus instead"))
    return cores


def _by_cores(count: int, nodes: Mapping[int | None, set[int]],
              cores: list[frozenset[int]]) -> set[int]:
    housekeeping: set[int] = set()
    for node, cpus in sorted(nodes.items(), key=lambda item: min(item[1])):
        own = [core for core in cores if min(core) in cpus]
        where = "the host" if node is None else f"NUMA node {node}"
        if len(own) <= count:
            raise PartitionRefused("TooFewCpus", (
                f"{FIELD}.housekeepingCoresPerNumaNode is {count}, but {where} has "
                f"{len(own)} core(s) (CPUs {cpulist.format_ids(cpus)}), which would leave it "
                "no CPU for VMs; lower housekeepingCoresPerNumaNode, or give housekeepingCpus "
                "for nodes of this size in a profile of their own"))
        for core in own[:count]:
            housekeeping |= core
    return housekeeping


def _by_list(text: str, host: HostReport, online: set[int]) -> set[int]:
    try:
        wanted = cpulist.parse(text)
    except ValueError as err:
        raise PartitionRefused("InvalidCpuPartition", (
            f"{FIELD}.housekeepingCpus {text!r} is not a CPU list ({err}); write e.g. "
            "0-1,32-33")) from err
    offline = wanted & cpulist.parse(host.numa.offline_cpus)
    absent = wanted - online - offline
    if offline or absent:
        named = "; ".join(part for part in (
            offline and f"CPUs {cpulist.format_ids(offline)} are offline",
            absent and f"CPUs {cpulist.format_ids(absent)} do not exist on this node") if part)
        raise PartitionRefused("CpuPartitionOffline", (
            f"{FIELD}.housekeepingCpus {text} is not applied: {named} (online: "
            f"{host.numa.online_cpus}); name online CPUs only, or bring them online"))
    return wanted


def _split_cores(housekeeping: set[int], cores: Iterable[frozenset[int]]) -> list[str]:
    split = [core for core in cores if core & housekeeping and core - housekeeping]
    if not split:
        return []
    shown = "; ".join(f"{cpulist.format_ids(core & housekeeping)} with "
                      f"{cpulist.format_ids(core - housekeeping)}" for core in split[:4])
    return [f"{FIELD}.housekeepingCpus splits {len(split)} core(s) between the host and VMs "
            f"(SMT siblings {shown}{' ...' if len(split) > 4 else ''}): a VM on such a CPU "
            "shares its core's execution units with the host's work; list whole cores"]


def partition(spec: CpuPartition, host: HostReport) -> Partition:
    """The node's partition for `spec`, or PartitionRefused saying why it cannot be made."""
    online = cpulist.parse(host.numa.online_cpus)
    if not online:
        raise PartitionRefused("CpusUnknown", (
            f"{FIELD} is not applied: the node's online CPUs are unknown "
            "(/sys/devices/system/cpu/online); check that the agent sees the host's /sys"))
    nodes = _nodes(host, online)
    warnings: list[str] = []
    if spec.housekeeping_cores_per_numa_node is not None:
        housekeeping = _by_cores(spec.housekeeping_cores_per_numa_node, nodes,
                                 _cores(host, online))
    else:
        housekeeping = _by_list(spec.housekeeping_cpus or "", host, online)
        bare = [node for node, cpus in nodes.items() if not cpus & housekeeping]
        if bare:
            where = ", ".join(f"{node} (CPUs {cpulist.format_ids(nodes[node])})"
                              for node in bare if node is not None)
            raise PartitionRefused("NumaNodeWithoutHousekeeping", (
                f"{FIELD}.housekeepingCpus {spec.housekeeping_cpus} leaves NUMA node(s) "
                f"{where} without a housekeeping CPU: their devices' IRQs and kernel threads "
                "would run on another node, or on VMs' CPUs; add a core of each NUMA node, "
                "or use housekeepingCoresPerNumaNode"))
        warnings += _split_cores(housekeeping, (
            frozenset(cpulist.parse(core.cpus)) for core in host.cpu_isolation.cores))
    isolated = online - housekeeping
    if not isolated:
        raise PartitionRefused("TooFewCpus", (
            f"{FIELD} keeps every online CPU ({host.numa.online_cpus}) for housekeeping, so "
            "none is left for VMs; keep fewer CPUs"))
    return Partition(frozenset(housekeeping), frozenset(isolated), tuple(warnings))
