"""NUMA nodes and CPU topology, the facts `numactl -H` and `lscpu` show.

Each VM should live on one NUMA node; that needs every node's CPUs, memory and distances as the
kernel sees them, in each form a kernel writes them, including the awkward cases a planner must
not paper over: id gaps, nodes with memory but no CPUs (CXL or HBM memory, GPU memory, often
numbered far from the CPU nodes, e.g. 250-255), nodes with CPUs but no memory, offline and
isolated CPUs.

Online CPUs are /sys/devices/system/cpu/online. Kernels without it have a cpuN/online per CPU
that can be unplugged (a CPU without one, often cpu0, is online) over the present CPUs
(`present`, else the cpuN directories). A node's CPUs are its `cpulist`, or its `cpumap` on
kernels that lack the list, less the offline CPUs: some kernels (POWER) keep offline CPUs in
the list, and no VM can run on them.
"""

from __future__ import annotations

import re

from kvtune_api.v1alpha1.host import MAX_NUMA_NODES, NumaNode, NumaReport, Problem, Severity

from ..hostfs import HostFS
from . import cpulist
from .memory import NODES, node_ids, parse_meminfo

CPUS = "/sys/devices/system/cpu"
_CPU_DIR = re.compile(r"cpu([0-9]{1,4})")


def _present(fs: HostFS) -> set[int]:
    """The CPUs the kernel knows: `present`, else its cpuN directories."""
    present = cpulist.read(fs, f"{CPUS}/present")
    if present is not None:
        return present
    found = (_CPU_DIR.fullmatch(name) for name in fs.list_dir(CPUS))
    return {int(m.group(1)) for m in found if m and int(m.group(1)) < cpulist.MAX_IDS}


def _cpu_states(fs: HostFS) -> tuple[set[int] | None, set[int]]:
    """Online and offline CPUs; online is None when the kernel shows no CPU at all."""
    online = cpulist.read(fs, f"{CPUS}/online")
    offline = cpulist.read(fs, f"{CPUS}/offline")
    if online is None:
        # cpuN/online exists only for a CPU that can be unplugged; without one a CPU is online.
        up = {cpu: fs.read_int(f"{CPUS}/cpu{cpu}/online") != 0 for cpu in _present(fs)}
        online = {cpu for cpu, is_up in up.items() if is_up} or None
        if offline is None:
            offline = {cpu for cpu, is_up in up.items() if not is_up}
    return online, offline or set()


def _distances(fs: HostFS, path: str) -> list[int]:
    text = fs.read_value(path) or ""
    try:
        distances = [int(d) for d in text.split()]
    except ValueError:
        fs.note(path, f"expected distances, found {text[:40]!r}")
        return []
    if len(distances) > MAX_NUMA_NODES:
        fs.note(path, f"{len(distances)} distances, more than the {MAX_NUMA_NODES} nodes a "
                "kernel can have")
        return []
    return distances


def _listed_cpus(fs: HostFS, base: str) -> set[int]:
    listed = cpulist.read_either(fs, f"{base}/cpulist", f"{base}/cpumap")
    if listed is None and not fs.exists(f"{base}/cpulist") and not fs.exists(f"{base}/cpumap"):
        fs.note(base, "has neither cpulist nor cpumap, so its CPUs are unknown; it is taken "
                "for a node without CPUs")
    return listed or set()


def _node(fs: HostFS, node_id: int, online: set[int] | None) -> tuple[NumaNode, set[int]]:
    """The node, and its usable CPUs: those it lists that are online (all it lists when the
    online CPUs are unknown)."""
    base = f"{NODES}/node{node_id}"
    listed = _listed_cpus(fs, base)
    cpus = listed if online is None else listed & online
    meminfo = parse_meminfo(fs, f"{base}/meminfo")
    total = (meminfo or {}).get("MemTotal", 0)
    return NumaNode(
        id=node_id,
        cpus=cpulist.format_ids(cpus),
        cpu_count=len(cpus),
        offline_cpus=cpulist.format_ids(listed - cpus),
        memory_total_kib=total,
        memory_free_kib=(meminfo or {}).get("MemFree", 0),
        memoryless=meminfo is not None and total == 0,
        memory_only=bool(total) and not cpus,
        distances=_distances(fs, f"{base}/distance"),
    ), cpus


def _topology(fs: HostFS, online: set[int]) -> tuple[int, int, int]:
    """Sockets, cores and most threads per core among the online CPUs (offline ones hide theirs)."""
    packages: set[str] = set()
    cores: set[frozenset[int]] = set()
    for cpu in sorted(online):
        base = f"{CPUS}/cpu{cpu}/topology"
        package = fs.read_value(f"{base}/physical_package_id")
        siblings = cpulist.read_either(
            fs, f"{base}/thread_siblings_list", f"{base}/thread_siblings")
        if package is None or siblings is None:
            continue
        packages.add(package)
        # Each core's sibling set is unique across the host, unlike core_id (repeated per die).
        cores.add(frozenset(siblings))
    return len(packages), len(cores), max(map(len, cores), default=0)


def probe(fs: HostFS) -> NumaReport:
    online, offline = _cpu_states(fs)
    nodes = [_node(fs, i, online) for i in node_ids(fs)]
    sockets, cores, threads = _topology(fs, online or set())
    return NumaReport(
        nodes=[node for node, _ in nodes],
        online_cpus=cpulist.format_ids(online or ()),
        offline_cpus=cpulist.format_ids(offline),
        isolated_cpus=cpulist.format_ids(cpulist.read(fs, f"{CPUS}/isolated") or ()),
        sockets=sockets,
        cores=cores,
        threads_per_core=threads,
    )


def _problem(severity: Severity, path: str, message: str) -> Problem:
    return Problem(severity=severity, feature="NUMA", path=path, message=message)


def _node_problems(numa: NumaReport) -> list[Problem]:
    problems = []
    for node in numa.nodes:
        if node.memoryless and node.cpu_count:
            problems.append(_problem(
                "Warning", f"{NODES}/node{node.id}/meminfo",
                f"NUMA node {node.id} has CPUs {node.cpus} but no memory: a VM on those "
                "CPUs reaches all its memory remotely; keep VMs off them (e.g. kubelet "
                "reservedSystemCPUs) or check the DIMM population",
            ))
        if node.offline_cpus:
            problems.append(_problem(
                "Info", f"{NODES}/node{node.id}/cpulist",
                f"NUMA node {node.id} lists CPUs {node.offline_cpus} that are offline: "
                f"they are not counted among its CPUs ({node.cpu_count} usable)",
            ))
    return problems


def check(numa: NumaReport) -> list[Problem]:
    """Findings: no NUMA information, memoryless nodes with CPUs, nodes listing offline CPUs,
    offline CPUs. Memory-only nodes are normal (CXL, HBM, GPU memory): marked in the report,
    not a finding."""
    if not numa.nodes:
        return [_problem(
            "Warning", NODES,
            f"no NUMA nodes under {NODES} (kernel without NUMA, or sysfs not mounted "
            "under --root): VM placement cannot be NUMA-aware",
        )]
    problems = _node_problems(numa)
    if numa.offline_cpus:
        problems.append(_problem(
            "Info", f"{CPUS}/offline",
            f"CPUs {numa.offline_cpus} are offline and unusable by VMs; bring them "
            f"online (echo 1 > {CPUS}/cpuN/online) unless that is intended",
        ))
    return problems
