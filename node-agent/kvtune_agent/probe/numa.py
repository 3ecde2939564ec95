"""NUMA nodes and CPU topology, the facts `numactl -H` and `lscpu` show.

Each VM should live on one NUMA node; that needs every node's CPUs, memory and distances as the
kernel sees them, including the awkward cases (id gaps, memoryless or CPU-less nodes, offline or
isolated CPUs) that a planner must not paper over.
"""

from __future__ import annotations

from kvtune_api.v1alpha1.host import NumaNode, NumaReport, Problem

from ..hostfs import HostFS
from . import cpulist
from .memory import NODES, node_ids, parse_meminfo

CPUS = "/sys/devices/system/cpu"


def _node(fs: HostFS, node_id: int) -> NumaNode:
    base = f"{NODES}/node{node_id}"
    cpus = cpulist.read(fs, f"{base}/cpulist") or set()
    meminfo = parse_meminfo(fs, f"{base}/meminfo")
    distance_text = fs.read_value(f"{base}/distance") or ""
    try:
        distances = [int(d) for d in distance_text.split()]
    except ValueError:
        fs.note(f"{base}/distance", f"expected distances, found {distance_text[:40]!r}")
        distances = []
    total = (meminfo or {}).get("MemTotal", 0)
    return NumaNode(
        id=node_id,
        cpus=cpulist.format_ids(cpus),
        cpu_count=len(cpus),
        memory_total_kib=total,
        memory_free_kib=(meminfo or {}).get("MemFree", 0),
        memoryless=meminfo is not None and total == 0,
        distances=distances,
    )


def _topology(fs: HostFS, online: set[int]) -> tuple[int, int, int]:
    """Sockets, cores and most threads per core among the online CPUs (offline ones hide theirs)."""
    packages: set[str] = set()
    cores: set[frozenset[int]] = set()
    for cpu in sorted(online):
        base = f"{CPUS}/cpu{cpu}/topology"
        package = fs.read_value(f"{base}/physical_package_id")
        siblings = cpulist.read(fs, f"{base}/thread_siblings_list")
        if package is None or siblings is None:
            continue
        packages.add(package)
        # Each core's sibling set is unique across the host, unlike core_id (repeated per die).
        cores.add(frozenset(siblings))
    return len(packages), len(cores), max(map(len, cores), default=0)


def probe(fs: HostFS) -> NumaReport:
    online = cpulist.read(fs, f"{CPUS}/online") or set()
    sockets, cores, threads = _topology(fs, online)
    return NumaReport(
        nodes=[_node(fs, i) for i in node_ids(fs)],
        online_cpus=cpulist.format_ids(online),
        offline_cpus=cpulist.format_ids(cpulist.read(fs, f"{CPUS}/offline") or ()),
        isolated_cpus=cpulist.format_ids(cpulist.read(fs, f"{CPUS}/isolated") or ()),
        sockets=sockets,
        cores=cores,
        threads_per_core=threads,
    )


def check(numa: NumaReport) -> list[Problem]:
    """Findings: no NUMA information, memoryless nodes with CPUs, offline CPUs."""
    if not numa.nodes:
        return [Problem(
            severity="Warning", feature="NUMA", path=NODES,
            message=f"no NUMA nodes under {NODES} (kernel without NUMA, or sysfs not mounted "
            "under --root): VM placement cannot be NUMA-aware",
        )]
    problems = [
        Problem(
            severity="Warning", feature="NUMA", path=f"{NODES}/node{node.id}/meminfo",
            message=f"NUMA node {node.id} has CPUs {node.cpus} but no memory: a VM on those "
            "CPUs reaches all its memory remotely; keep VMs off them (e.g. kubelet "
            "reservedSystemCPUs) or check the DIMM population",
        )
        for node in numa.nodes
        if node.memoryless and node.cpu_count
    ]
    if numa.offline_cpus:
        problems.append(Problem(
            severity="Info", feature="NUMA", path=f"{CPUS}/offline",
            message=f"CPUs {numa.offline_cpus} are offline and unusable by VMs; bring them "
            f"online (echo 1 > {CPUS}/cpuN/online) unless that is intended",
        ))
    return problems
