"""NUMA nodes and CPU topology, the facts `numactl -H` and `lscpu` show, as the kubelet sees them.

Each VM should live on one NUMA node; that needs every node's CPUs, memory and distances as the
kernel sees them, in each form a kernel writes them, including the awkward cases a planner must
not paper over: id gaps, nodes with memory but no CPUs (CXL or HBM memory, GPU memory, often
numbered far from the CPU nodes, e.g. 250-255), nodes with CPUs but no memory, offline and
isolated CPUs.

Online CPUs are /sys/devices/system/cpu/online. Kernels without it have a cpuN/online per CPU
that can be unplugged (a CPU without one, often cpu0, is online) over the present CPUs
(`present`, else the cpuN directories). A node's CPUs are its `cpulist`, or its `cpumap` on
kernels that lack the list, less the offline CPUs: some kernels (POWER) keep offline CPUs in
the list, and no VM can run on them. Where neither file gives them (unreadable, malformed),
the cpuN links the kernel makes in the node's directory do, as they do for the kubelet; a
node whose CPUs nothing gives is not taken for a memory-only one.

Nodes are the nodeN directories, the kernel's online nodes. A kernel built without NUMA
(CONFIG_NUMA=n) has no /sys/devices/system/node at all: the report then has no node, as
numactl has none, although cAdvisor gives the kubelet one memory-less node per
physical_package_id; the check says so. A node's `distance` holds one value per online node in
id order; a node without the file (old kernels), or with a list of another length, has no
distances in the report. A node meminfo without a MemTotal line leaves its memory unknown, not
absent.

The topology is counted as the kubelet's CPU manager counts it, because that is what pins VMs.
Its view comes from cAdvisor, which reads the same files for the online CPUs:
- sockets: distinct topology/physical_package_id (-1, where a platform gives none, is one);
- cores: distinct (physical_package_id, core_id) within each NUMA node, summed over the nodes
  (kubelet cpumanager/topology.Discover), so dies that are NUMA nodes of their own may repeat
  core_id; on s390 book_id and drawer_id are part of the key, as cAdvisor on s390x makes them
  (socket and core ids restart in each book). A CPU lacking core_id or physical_package_id is
  left out, as cAdvisor leaves it out; where every CPU lacks them (no cpuN/topology) the kubelet
  sees no CPU and its static CPU manager refuses to start, which the check says. die_id and
  cluster_id play no part, so where a kernel numbers core_id per die or cluster inside one NUMA
  node the kubelet takes threads of different cores for one core; `kernel_cores` (distinct
  thread_siblings_list, the kernel's own grouping) shows it, and the check says so;
- kernel_cores below cores: thread siblings with core_ids of their own (AMD family 15h compute
  units); the kubelet counts each CPU a core of one thread, and the check says what that means;
- threads per core: the most CPUs in one thread_siblings_list, and the fewest. Hybrid CPUs mix
  cores of 2 threads (P-cores) and of 1 (E-cores); the kubelet then works with online CPUs /
  cores, rounded down, as its CPUs per core, and the check says what that means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import MAX_NUMA_NODES, NumaNode, NumaReport, Problem, Severity

from ...host import cpulist
from ...host.cpulist import CPUS, layout
from ...host.hostfs import HostFS
from ...host.meminfo import NODES, node_ids, parse_meminfo

_CPU_DIR = re.compile(r"cpu([0-9]{1,4})")


def _present(fs: HostFS) -> set[int]:
    """The CPUs the kernel knows: `present`, else its cpuN directories."""
    present = cpulist.read(fs, f"{CPUS}/present")
    if present is not None:
        return present
    found = (_CPU_DIR.fullmatch(name) for name in fs.list_dir(CPUS))
    return {int(m.group(1)) for m in found if m and int(m.group(1)) < cpulist.MAX_IDS}


@dataclass(frozen=True)
class _CpuStates:
    online: set[int] | None
    """None when the kernel shows no CPU at all."""
    offline: set[int]
    """Present CPUs that are not online."""
    present: set[int]


def _cpu_states(fs: HostFS) -> _CpuStates:
    """Online, offline and present CPUs. The kernel's `offline` is `possible` minus `online`,
    so it names CPU slots no CPU fills (a firmware may declare 512 for 8 real ones): only the
    present ones are offline in any sense an operator can act on."""
    present = _present(fs)
    online = cpulist.read(fs, f"{CPUS}/online")
    offline = cpulist.read(fs, f"{CPUS}/offline")
    if online is None:
        # cpuN/online exists only for a CPU that can be unplugged; without one a CPU is online.
        up = {cpu: fs.read_int(f"{CPUS}/cpu{cpu}/online") != 0 for cpu in present}
        online = {cpu for cpu, is_up in up.items() if is_up} or None
        if offline is None:
            offline = {cpu for cpu, is_up in up.items() if not is_up}
    offline = offline or set()
    return _CpuStates(online, offline & present if present else offline, present)


def _distances(fs: HostFS, path: str, nodes: int) -> list[int]:
    """The node's distance to every node, in node id order; [] when absent or unusable."""
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
    # The kernel writes one distance per online node, and those are the nodeN directories; a
    # list of another length cannot be matched to the nodes (hwloc drops it too).
    if distances and len(distances) != nodes:
        fs.note(path, f"{len(distances)} distances for {nodes} nodes, so they cannot be "
                "matched to the nodes; left out")
        return []
    return distances


def _linked_ids(fs: HostFS, node_id: int) -> set[int]:
    """The CPUs linked in the node's directory (cpuN entries), as cAdvisor finds them: the
    kernel links each CPU under one node (cpu_to_node), whatever the node cpulists say."""
    found = (_CPU_DIR.fullmatch(name) for name in fs.list_dir(f"{NODES}/node{node_id}"))
    return {int(m.group(1)) for m in found if m and int(m.group(1)) < cpulist.MAX_IDS}


def _listed_cpus(fs: HostFS, node_id: int) -> set[int] | None:
    """The CPUs the node lists; where neither its cpulist nor its cpumap gives them (absent,
    unreadable or malformed, which the read noted), the CPUs the kernel links under it; None
    when nothing tells."""
    base = f"{NODES}/node{node_id}"
    listed = cpulist.read_either(fs, f"{base}/cpulist", f"{base}/cpumap")
    if listed is not None:
        return listed
    linked = _linked_ids(fs, node_id)
    if linked:
        return linked
    if not fs.exists(f"{base}/cpulist") and not fs.exists(f"{base}/cpumap"):
        # A file that is there but unusable was noted by its read.
        fs.note(base, "has neither cpulist nor cpumap nor cpuN links, so its CPUs are "
                "unknown: the report shows none, and it is not taken for a memory-only node")
    return None


def _node(
    fs: HostFS, node_id: int, states: _CpuStates, nodes: int
) -> tuple[NumaNode, set[int]]:
    """The node, and its usable CPUs: those it lists that are online (all it lists when the
    online CPUs are unknown)."""
    base = f"{NODES}/node{node_id}"
    found = _listed_cpus(fs, node_id)
    listed = found or set()
    cpus = listed if states.online is None else listed & states.online
    down = listed - cpus
    meminfo = parse_meminfo(fs, f"{base}/meminfo")
    total = (meminfo or {}).get("MemTotal", 0)
    return NumaNode(
        id=node_id,
        cpus=cpulist.format_ids(cpus),
        cpu_count=len(cpus),
        cpus_unknown=found is None,
        offline_cpus=cpulist.format_ids(down & states.present if states.present else down),
        memory_total_kib=total,
        memory_free_kib=(meminfo or {}).get("MemFree", 0),
        # Without a MemTotal line the node's memory is unknown, not absent.
        memoryless=meminfo is not None and "MemTotal" in meminfo and total == 0,
        # A node whose CPUs are unknown is not known to have none.
        memory_only=bool(total) and not cpus and found is not None,
        distances=_distances(fs, f"{base}/distance", nodes),
    ), cpus


@dataclass(frozen=True)
class _Topology:
    sockets: int = 0
    cores: int = 0
    kernel_cores: int = 0
    threads_per_core: int = 0
    min_threads_per_core: int = 0
    no_package: frozenset[int] = frozenset()


def _sibling_files(fs: HostFS, first: int) -> tuple[str, str]:
    """The (list, mask) names of a CPU's core siblings on this kernel: core_cpus_list and
    core_cpus since 5.4, thread_siblings_list and thread_siblings (deprecated, and absent from
    kernels that drop them) before. As for book_id, one CPU tells which the kernel has."""
    top = f"{CPUS}/cpu{first}/topology"
    if fs.exists(f"{top}/core_cpus_list") or fs.exists(f"{top}/core_cpus"):
        return "core_cpus_list", "core_cpus"
    return "thread_siblings_list", "thread_siblings"


def _topology(fs: HostFS, online: set[int], node_of: Mapping[int, int]) -> _Topology:
    """The topology of the online CPUs, by the rule in the module docstring."""
    packages: set[int] = set()
    cores: set[tuple[int | None, int, int | None, int | None, int]] = set()
    siblings: set[frozenset[int]] = set()
    no_package: set[int] = set()
    # Only s390 kernels have book_id and drawer_id: the ids below them restart in each book,
    # and cAdvisor on s390x tells cores apart by them too. The kernel's topology attributes
    # are the same for every CPU, so one CPU tells whether to read them (two reads per CPU
    # saved everywhere else).
    books = bool(online) and fs.exists(f"{CPUS}/cpu{min(online)}/topology/book_id")
    list_name, mask_name = _sibling_files(fs, min(online)) if online else ("", "")
    for cpu in sorted(online):
        base = f"{CPUS}/cpu{cpu}/topology"
        package = fs.read_int(f"{base}/physical_package_id")
        core = fs.read_int(f"{base}/core_id")
        book = fs.read_int(f"{base}/book_id") if books else None
        drawer = fs.read_int(f"{base}/drawer_id") if books else None
        if package == -1:
            no_package.add(cpu)
        if package is not None and core is not None:
            packages.add(package)
            cores.add((node_of.get(cpu), package, book, drawer, core))
        threads = cpulist.read_either(fs, f"{base}/{list_name}", f"{base}/{mask_name}")
        if threads:
            siblings.add(frozenset(threads))
    sizes = [len(threads) for threads in siblings]
    return _Topology(len(packages), len(cores), len(siblings), max(sizes, default=0),
                     min(sizes, default=0), frozenset(no_package))


def _overlapping(nodes: list[tuple[NumaNode, set[int]]]) -> set[int]:
    """CPUs that more than one node lists."""
    seen: set[int] = set()
    twice: set[int] = set()
    for _, cpus in nodes:
        twice |= seen & cpus
        seen |= cpus
    return twice


def _linked(fs: HostFS, node: NumaNode) -> NumaNode:
    """The node with the CPUs its directory links (`_linked_ids`)."""
    linked = _linked_ids(fs, node.id)
    return node.model_copy(update={"linked_cpus": cpulist.format_ids(linked)})


def probe(fs: HostFS) -> NumaReport:
    states = _cpu_states(fs)
    ids = node_ids(fs)
    nodes = [_node(fs, i, states, len(ids)) for i in ids]
    node_of = {cpu: node.id for node, cpus in nodes for cpu in cpus}
    topology = _topology(fs, states.online or set(), node_of)
    overlapping = _overlapping(nodes)
    return NumaReport(
        # Only where the lists overlap are the links read: elsewhere they agree with them.
        nodes=[_linked(fs, node) if overlapping else node for node, _ in nodes],
        online_cpus=cpulist.format_ids(states.online or ()),
        offline_cpus=cpulist.format_ids(states.offline),
        isolated_cpus=cpulist.format_ids(cpulist.read(fs, f"{CPUS}/isolated") or ()),
        overlapping_cpus=cpulist.format_ids(overlapping),
        sockets=topology.sockets,
        cores=topology.cores,
        kernel_cores=topology.kernel_cores,
        threads_per_core=topology.threads_per_core,
        min_threads_per_core=topology.min_threads_per_core,
        no_package_cpus=cpulist.format_ids(topology.no_package),
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
        if not node.distances and len(numa.nodes) > 1:
            problems.append(_problem(
                "Info", f"{NODES}/node{node.id}/distance",
                f"NUMA node {node.id} gives no usable distances (no distance file, as on old "
                "kernels, or one that does not match the nodes): how far its memory is from "
                "the other nodes is unknown, and the report shows none for it",
            ))
        if node.memory_total_kib == 0 and not node.memoryless:
            problems.append(_problem(
                "Warning", f"{NODES}/node{node.id}/meminfo",
                f"NUMA node {node.id}'s memory is unknown: its meminfo is missing, unreadable "
                "or has no MemTotal line, so the report's 0 for it means unknown, not none, and "
                "no hugepage plan on this node can be checked against the memory there; check "
                "that the host's /sys is mounted whole under --root",
            ))
        if node.offline_cpus:
            problems.append(_problem(
                "Info", f"{NODES}/node{node.id}/cpulist",
                f"NUMA node {node.id} lists CPUs {node.offline_cpus} that are offline: "
                f"they are not counted among its CPUs ({node.cpu_count} usable)",
            ))
    return problems


def _layout_problems(numa: NumaReport, online: int) -> list[Problem]:
    """Sockets x cores x threads must be the online CPUs, or the report says why not."""
    problems = []
    if numa.no_package_cpus:
        problems.append(_problem(
            "Info", f"{CPUS}/cpuN/topology/physical_package_id",
            f"CPUs {numa.no_package_cpus} have physical_package_id -1: the firmware (ACPI PPTT "
            "or device tree) does not say which socket they are in, so the socket count "
            f"({numa.sockets}) is the kubelet's (cAdvisor takes -1 for one socket), not "
            "necessarily the hardware's; NUMA nodes and core groups are unaffected",
        ))
    sockets, per_socket, threads = layout(numa)
    if numa.min_threads_per_core < threads or not numa.kernel_cores:
        return problems  # hybrid cores (said below) or no sibling lists at all
    covered = numa.kernel_cores * threads
    offline = len(cpulist.parse(numa.offline_cpus))
    # Sibling lists that still name offline CPUs are explained by the offline finding.
    if covered != online and not online < covered <= online + offline:
        problems.append(_problem(
            "Info", f"{CPUS}/cpuN/topology",
            f"the CPU topology does not add up: the kernel's sibling lists give "
            f"{numa.kernel_cores} cores of {threads} threads ({covered} CPUs) for {online} "
            "online CPUs; some CPUs' topology files are missing or unreadable (see the other "
            "findings), or list CPUs that are offline; core counts here are a lower bound",
        ))
    elif per_socket != int(per_socket):
        problems.append(_problem(
            "Info", f"{CPUS}/cpuN/topology/physical_package_id",
            f"the {numa.kernel_cores} cores do not split evenly over the {sockets} sockets "
            "(physical_package_id): the sockets differ in size, or some CPUs give no socket; "
            "the kubelet spreads CPUs by socket as the ids say",
        ))
    return problems


def _topology_problems(numa: NumaReport) -> list[Problem]:
    online = len(cpulist.parse(numa.online_cpus))
    if online and not numa.cores:
        # cAdvisor leaves out every CPU without core_id or physical_package_id, and the
        # kubelet's topology.Discover refuses a machine with no CPU left.
        return [_problem(
            "Warning", f"{CPUS}/cpuN/topology",
            f"none of the {online} online CPUs has topology/core_id and "
            "topology/physical_package_id (the kernel exports no CPU topology), so the "
            "kubelet's CPU manager sees no CPU: with cpuManagerPolicy static the kubelet fails "
            "to start ('could not detect number of cpus'); dedicated CPUs cannot be used on "
            "this node until a kernel with CPU topology runs here",
        )]
    problems = _layout_problems(numa, online)
    if numa.kernel_cores and numa.kernel_cores < numa.cores:
        # AMD family 15h compute units: the kernel lists two integer cores, each with its own
        # core_id, as thread siblings; cAdvisor groups threads by core_id alone.
        problems.append(_problem(
            "Info", f"{CPUS}/cpuN/topology/thread_siblings_list",
            f"the kernel groups the CPUs into {numa.kernel_cores} sibling groups "
            f"(thread_siblings_list) whose CPUs have core_ids of their own (AMD compute "
            "units: two integer cores sharing a front end, FPU and L2), so the kubelet's CPU "
            f"manager counts {numa.cores} cores of one thread: full-pcpus-only does not keep "
            "the other CPU of a VM's unit away from other pods",
        ))
    if numa.kernel_cores > numa.cores:
        problems.append(_problem(
            "Warning", f"{CPUS}/cpuN/topology/core_id",
            f"the kernel groups the CPUs into {numa.kernel_cores} cores "
            "(thread_siblings_list) but their core_id repeats within a NUMA node (numbered per "
            f"die or cluster) or is missing, so the kubelet's CPU manager counts {numa.cores}: "
            "it takes threads of different cores for one core, and its full-pcpus-only option "
            "hands a VM CPUs of two cores as one; do not rely on it on this node",
        ))
    if numa.cores and numa.min_threads_per_core < numa.threads_per_core:
        problems.append(_problem(
            "Info", f"{CPUS}/cpuN/topology/thread_siblings_list",
            f"cores have {numa.min_threads_per_core} to {numa.threads_per_core} "
            "threads (a hybrid CPU with P-cores and E-cores, or SMT partly offline): the "
            f"kubelet's CPU manager works with {online} CPUs / {numa.cores} cores = "
            f"{online // numa.cores} CPU(s) per core, so its full-pcpus-only option does not "
            "keep a VM on whole SMT cores here",
        ))
    return problems


def _kubelet_on_overlap(numa: NumaReport, overlapping: set[int]) -> str:
    """What the kubelet makes of nodes whose cpulists overlap: cAdvisor places CPUs by the
    nodeN/cpuN links, and the kubelet's topology.Discover lets a later node overwrite an
    earlier one for a CPU while counting its core in each."""
    linked = {n.id: cpulist.parse(n.linked_cpus or "") for n in numa.nodes}
    homes = {cpu: [node for node, cpus in linked.items() if cpu in cpus] for cpu in overlapping}
    if all(len(nodes) == 1 for nodes in homes.values()):
        placed = "; ".join(f"node {node}: {cpulist.format_ids(cpus & overlapping)}"
                           for node, cpus in linked.items() if cpus & overlapping)
        return ("the kubelet (cAdvisor) places CPUs by the nodeN/cpuN links instead, which put "
                f"each in one node ({placed}), and aligns VMs to that layout, whose memory "
                "locality is just as unproven")
    unlinked = cpulist.format_ids(cpu for cpu, nodes in homes.items() if not nodes)
    return ("the kubelet (cAdvisor) places CPUs by the nodeN/cpuN links, which name several "
            "nodes for them too: it takes each such CPU to be on the last node that links it, "
            "counts its core once per node, and so aligns VMs to nodes that do not exist as "
            "described" + (f"; CPUs {unlinked} are linked under no node and left out"
                           if unlinked else ""))


def _overlap_problems(numa: NumaReport) -> list[Problem]:
    if not numa.overlapping_cpus:
        return []
    overlapping = cpulist.parse(numa.overlapping_cpus)
    listing = [n.id for n in numa.nodes if cpulist.parse(n.cpus) & overlapping]
    return [_problem(
        "Warning", f"{NODES}/nodeN/cpulist",
        f"CPUs {numa.overlapping_cpus} are listed in more than one NUMA node (nodes "
        f"{','.join(map(str, listing))}): the firmware's NUMA tables (ACPI SRAT, device tree) "
        "are wrong, as when every node lists every CPU, so this layout says nothing about which "
        "memory is local: kvtune does not judge VM placement by it (the VM audit leaves these "
        f"CPUs out of its NUMA checks); {_kubelet_on_overlap(numa, overlapping)}; update the "
        "firmware (BIOS/UEFI) or boot with numa=off, and do not use topologyManagerPolicy "
        "single-numa-node on this host until then",
    )]


def check(numa: NumaReport) -> list[Problem]:
    """Findings: no NUMA information, memoryless nodes with CPUs, nodes listing offline CPUs,
    offline CPUs, a topology the kubelet reads differently from the kernel. Memory-only nodes
    are normal (CXL, HBM, GPU memory): marked in the report, not a finding."""
    if not numa.nodes and numa.online_cpus:
        # sysfs is there (it shows CPUs) but has no node directory: CONFIG_NUMA=n. No node is
        # made up for the report, though cAdvisor then gives the kubelet one per package.
        return [_problem(
            "Warning", NODES,
            f"{NODES} is missing although sysfs shows CPUs: the kernel is built without NUMA "
            "(numactl says 'No NUMA available'), so VM placement cannot be NUMA-aware and no "
            "per-node hugepages can be planned; the kubelet (cAdvisor) then takes one NUMA "
            "node per socket (physical_package_id), without memory, so its topology manager "
            "aligns VMs to sockets only; use a kernel with CONFIG_NUMA on multi-socket hosts",
        ), *_topology_problems(numa)]
    if not numa.nodes:
        return [_problem(
            "Warning", NODES,
            f"no NUMA nodes under {NODES} and no CPUs under {CPUS}: sysfs is not mounted "
            "under --root; mount the host's /sys there",
        )]
    problems = _node_problems(numa) + _overlap_problems(numa)
    if numa.offline_cpus:
        problems.append(_problem(
            "Info", f"{CPUS}/offline",
            f"CPUs {numa.offline_cpus} are offline and unusable by VMs; bring them "
            f"online (echo 1 > {CPUS}/cpuN/online) unless that is intended",
        ))
    return problems + _topology_problems(numa)
