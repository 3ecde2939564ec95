"""The NUMA probe: nodes with gaps, memoryless and CPU-less nodes, offline and isolated CPUs, every
form kernels write them in, and the topology as the kubelet's CPU manager counts it."""

from __future__ import annotations

import typing as t
from collections.abc import Callable
from pathlib import Path

import pytest
from kvtune_agent.features.numa import probe as numa
from kvtune_agent.host import cpulist
from support.hosttree import (
    HostTree,
    amd_eight_node,
    arm64_server,
    clustered,
    compute_units,
    hybrid,
    memory_tiers,
    multi_die,
    no_cpu_topology,
    no_package_id,
    old_kernel,
    overlapping_nodes,
    power_smt4,
    s390_books,
    without_numa,
)

CPUS = "/sys/devices/system/cpu"
NODES = "/sys/devices/system/node"
NODE0 = "/sys/devices/system/node/node0"


def test_an_eight_node_amd_host_lists_every_node_with_cpus_and_distances(tmp_path: Path) -> None:
    found = numa.probe(amd_eight_node(tmp_path).fs())

    assert [n.id for n in found.nodes] == list(range(8))
    assert found.nodes[1].cpus == "4-7,36-39"
    assert found.nodes[1].cpu_count == 8
    assert found.nodes[1].distances == [12, 10, 12, 12, 12, 12, 12, 12]
    assert found.nodes[7].memory_total_kib == 128 * 2**20
    assert (found.sockets, found.cores, found.threads_per_core) == (1, 32, 2)
    assert numa.check(found) == []


def test_node_ids_with_gaps_are_kept_as_the_kernel_numbers_them(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(2, 2)
    tree.numa_node(0, [0, 1], 2**20, distances=(10, 20)).numa_node(2, [2, 3], 2**20,
                                                                   distances=(20, 10))

    found = numa.probe(tree.fs())

    assert [n.id for n in found.nodes] == [0, 2]


@pytest.mark.parametrize(
    ("cpus", "mem_kib", "memoryless", "warned"),
    [
        pytest.param([2, 3], 0, True, True, id="a node with CPUs but no memory is warned about"),
        pytest.param([], 2**20, False, False, id="a CPU-less memory node is only reported"),
    ],
)
def test_unbalanced_nodes(
    tmp_path: Path, cpus: list[int], mem_kib: int, memoryless: bool, warned: bool
) -> None:
    tree = HostTree(tmp_path).cpus(1, 4).numa_node(0, [0, 1], 2**20)
    tree.numa_node(1, cpus, mem_kib)

    found = numa.probe(tree.fs())

    assert found.nodes[1].memoryless is memoryless
    assert found.nodes[1].cpus == cpulist.format_ids(cpus)
    problems = numa.check(found)
    assert [p.path for p in problems] == (
        ["/sys/devices/system/node/node1/meminfo"] if warned else []
    )


def test_offline_cpus_are_reported_and_left_out_of_the_topology(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, 2, offline=[6, 7]).numa_node(0, range(6), 2**20)

    found = numa.probe(tree.fs())

    assert (found.online_cpus, found.offline_cpus) == ("0-5", "6-7")
    assert (found.cores, found.threads_per_core) == (4, 2)
    [info] = numa.check(found)
    assert (info.severity, info.path) == ("Info", "/sys/devices/system/cpu/offline")


def test_isolated_cpus_are_reported(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 8, isolated=[2, 3, 4, 5]).numa_node(0, range(8), 2**20)

    assert numa.probe(tree.fs()).isolated_cpus == "2-5"


def test_a_malformed_cpulist_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).numa_node(0, [0], 2**20)
    tree.file("/sys/devices/system/node/node0/cpulist", "0-x")
    fs = tree.fs()

    found = numa.probe(fs)

    assert found.nodes[0].cpus == ""
    [issue] = fs.take_issues()
    assert issue.path == "/sys/devices/system/node/node0/cpulist"
    assert "cpulist" in issue.detail


# -- kernel forms ----------------------------------------------------------------------------


def test_nodes_with_only_a_cpumap_get_their_cpus_from_it(tmp_path: Path) -> None:
    fs = old_kernel(tmp_path).fs()

    found = numa.probe(fs)

    assert [(n.cpus, n.cpu_count) for n in found.nodes] == [("0-3,8-11", 8), ("4-7,12-15", 8)]
    assert fs.take_issues() == []


def test_without_cpu_online_the_cpun_online_files_give_the_online_cpus(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(2, 4, 2, offline=[7, 15], online_file=False)
    tree.numa_node(0, range(16), 2**20)

    found = numa.probe(tree.fs())

    # cpu0 has no online file (it cannot be unplugged) and is online all the same
    assert (found.online_cpus, found.offline_cpus) == ("0-6,8-14", "7,15")
    assert (found.sockets, found.cores, found.threads_per_core) == (2, 7, 2)  # core 7 is off
    assert found.nodes[0].cpu_count == 14


def test_without_cpu_online_the_present_cpus_bound_the_cpun_directories(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, online_file=False).file(f"{CPUS}/present", "0-2")

    assert numa.probe(tree.fs()).online_cpus == "0-2"


def test_an_old_kernel_gets_its_topology_from_the_sibling_masks(tmp_path: Path) -> None:
    found = numa.probe(old_kernel(tmp_path).fs())

    assert found.online_cpus == "0-15"
    assert (found.sockets, found.cores, found.threads_per_core) == (2, 8, 2)


def test_offline_cpus_a_node_lists_are_not_its_cpus_and_are_reported(tmp_path: Path) -> None:
    found = numa.probe(power_smt4(tmp_path).fs())

    assert [(n.cpus, n.cpu_count) for n in found.nodes] == [
        ("0-3,8-11,16-19,24-27", 16), ("32-35,40-43,48-51,56-59", 16)]
    assert [n.offline_cpus for n in found.nodes] == [
        "4-7,12-15,20-23,28-31", "36-39,44-47,52-55,60-63"]
    assert (found.sockets, found.cores, found.threads_per_core) == (2, 8, 4)
    listing = [p for p in numa.check(found) if p.path.endswith("/cpulist")]
    assert [p.path for p in listing] == [
        "/sys/devices/system/node/node0/cpulist", "/sys/devices/system/node/node1/cpulist"]
    assert "CPUs 4-7,12-15,20-23,28-31 that are offline" in listing[0].message


def test_memory_only_nodes_far_from_the_cpu_nodes_are_kept_and_marked(tmp_path: Path) -> None:
    found = numa.probe(memory_tiers(tmp_path).fs())

    assert [n.id for n in found.nodes] == [0, 1, 2, 250, 251, 252, 253, 254, 255]
    assert [n.id for n in found.nodes if n.memory_only] == [2, 250, 251, 252, 253, 254, 255]
    assert not any(n.memoryless for n in found.nodes)
    assert found.nodes[-1].distances[:3] == [80, 80, 80]
    assert numa.check(found) == []


def test_a_node_whose_cpus_are_all_offline_is_memory_only(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, offline=[2, 3]).numa_node(0, [0, 1], 2**20)
    tree.numa_node(1, [2, 3], 2**20)

    found = numa.probe(tree.fs())

    assert (found.nodes[1].cpu_count, found.nodes[1].memory_only) == (0, True)


def test_a_node_without_cpulist_or_cpumap_is_noted(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).numa_node(0, [0], 2**20)
    (tmp_path / "sys/devices/system/node/node0/cpulist").unlink()
    fs = tree.fs()

    assert numa.probe(fs).nodes[0].cpus == ""
    [issue] = fs.take_issues()
    assert issue.path == "/sys/devices/system/node/node0"


def _unreadable(tree: HostTree, path: str) -> HostTree:
    (tree.root / path.lstrip("/")).unlink()
    return tree.unreadable(path)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda tree, path: tree.file(path, "4-\n"), id="a malformed cpulist"),
        pytest.param(lambda tree, path: _unreadable(tree, path), id="an unreadable cpulist"),
        pytest.param(lambda tree, path: tree.file(path, "\0garbage"), id="a cpulist of NULs"),
    ],
)
def test_a_node_whose_cpulist_gives_nothing_takes_its_cpus_from_its_cpun_links(
    tmp_path: Path, spoil: Callable[[HostTree, str], HostTree]
) -> None:
    tree = HostTree(tmp_path).cpus(2, 4).numa_node(0, range(4), 2**24)
    tree.numa_node(1, range(4, 8), 2**24)
    for cpu in range(8):  # the kernel links each CPU under its node, as cAdvisor reads them
        tree.link(f"{NODES}/node{cpu // 4}/cpu{cpu}", f"{CPUS}/cpu{cpu}")
    spoil(tree, f"{NODES}/node1/cpulist")
    fs = tree.fs()

    node = numa.probe(fs).nodes[1]

    assert (node.cpus, node.cpu_count, node.memory_only) == ("4-7", 4, False)
    assert [issue.path for issue in fs.take_issues()] == [f"{NODES}/node1/cpulist"]


def test_a_node_whose_cpus_nothing_gives_is_not_taken_for_a_memory_only_one(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).cpus(2, 4).numa_node(0, range(4), 2**24)
    _unreadable(tree.numa_node(1, range(4, 8), 2**24), f"{NODES}/node1/cpulist")

    node = numa.probe(tree.fs()).nodes[1]

    # Unknown, not none: its memory is not remote to every CPU as far as anyone knows.
    assert (node.cpus, node.memory_total_kib, node.memory_only) == ("", 2**24, False)
    assert node.cpus_unknown and not numa.probe(tree.fs()).nodes[0].cpus_unknown


def test_a_kernel_without_numa_has_no_nodes_and_says_what_the_kubelet_takes_instead(
    tmp_path: Path,
) -> None:
    found = numa.probe(without_numa(tmp_path).fs())

    # The kernel has no node: none is made up, though cAdvisor takes each socket for one
    assert (found.nodes, found.online_cpus, found.sockets, found.cores) == ([], "0-15", 2, 8)
    [warning] = numa.check(found)
    assert (warning.severity, warning.path) == ("Warning", "/sys/devices/system/node")
    assert "without NUMA" in warning.message
    assert "one NUMA node per socket" in warning.message


def test_no_sysfs_at_all_is_told_apart_from_a_kernel_without_numa(tmp_path: Path) -> None:
    [warning] = numa.check(numa.probe(HostTree(tmp_path).fs()))

    assert "--root" in warning.message and "without NUMA" not in warning.message


def test_a_node_without_a_distance_file_is_reported(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(2, 2).numa_node(0, [0, 1], 2**20, distances=(10, 20))
    tree.numa_node(1, [2, 3], 2**20, distances=(20, 10))
    (tmp_path / "sys/devices/system/node/node1/distance").unlink()

    found = numa.probe(tree.fs())

    assert [n.distances for n in found.nodes] == [[10, 20], []]
    [info] = numa.check(found)
    assert (info.severity, info.path) == ("Info", "/sys/devices/system/node/node1/distance")


def test_distances_that_do_not_match_the_nodes_are_left_out_and_noted(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(2, 2).numa_node(0, [0, 1], 2**20, distances=(10, 20, 20))
    tree.numa_node(1, [2, 3], 2**20, distances=(20, 10))
    fs = tree.fs()

    found = numa.probe(fs)

    assert [n.distances for n in found.nodes] == [[], [20, 10]]
    [issue] = fs.take_issues()
    assert issue.path == "/sys/devices/system/node/node0/distance"
    assert "3 distances for 2 nodes" in issue.detail


def test_a_node_meminfo_without_memtotal_does_not_make_the_node_memoryless(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).cpus(1, 4).numa_node(0, range(4), 2**20)
    tree.file("/sys/devices/system/node/node0/meminfo", "")
    fs = tree.fs()

    found = numa.probe(fs)

    assert (found.nodes[0].memoryless, found.nodes[0].memory_total_kib) == (False, 0)
    [warning] = numa.check(found)
    assert (warning.severity, warning.path) == ("Warning", f"{NODE0}/meminfo")
    assert [i.path for i in fs.take_issues()] == ["/sys/devices/system/node/node0/meminfo"]


def test_a_node_without_meminfo_is_said_to_have_unknown_memory_not_none(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4).numa_node(0, range(4), 2**20, meminfo=False)

    found = numa.probe(tree.fs())

    assert (found.nodes[0].memoryless, found.nodes[0].memory_total_kib) == (False, 0)
    [warning] = numa.check(found)
    assert (warning.severity, warning.path) == ("Warning", f"{NODE0}/meminfo")
    assert "memory is unknown" in warning.message and "not none" in warning.message


# -- topology as the kubelet counts it ------------------------------------------------------


def test_a_hybrid_cpu_counts_p_and_e_cores_and_says_what_the_kubelet_makes_of_them(
    tmp_path: Path,
) -> None:
    found = numa.probe(hybrid(tmp_path).fs())

    assert (found.sockets, found.cores, found.kernel_cores) == (1, 16, 16)
    assert (found.threads_per_core, found.min_threads_per_core) == (2, 1)
    [info] = numa.check(found)
    assert info.severity == "Info"
    assert "24 CPUs / 16 cores = 1 CPU(s) per core" in info.message


def test_dies_that_are_numa_nodes_keep_their_cores_apart(tmp_path: Path) -> None:
    found = numa.probe(multi_die(tmp_path).fs())

    # core_id restarts on each die, but the CPU manager counts cores per NUMA node
    assert (found.sockets, found.cores, found.kernel_cores, found.threads_per_core) == (
        1, 16, 16, 2)
    assert numa.check(found) == []


def test_core_ids_repeating_within_a_node_count_as_the_kubelet_counts_them(
    tmp_path: Path,
) -> None:
    found = numa.probe(clustered(tmp_path).fs())

    assert (found.sockets, found.cores, found.threads_per_core) == (1, 4, 1)
    assert found.kernel_cores == 16
    [warning] = numa.check(found)
    assert (warning.severity, warning.path) == ("Warning", f"{CPUS}/cpuN/topology/core_id")
    assert "into 16 cores" in warning.message and "counts 4" in warning.message


# -- cpulists -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids", "formatted"),
    [
        pytest.param("0-3,8-11", {0, 1, 2, 3, 8, 9, 10, 11}, "0-3,8-11", id="two ranges"),
        pytest.param("5", {5}, "5", id="one cpu"),
        pytest.param("", set(), "", id="empty"),
        pytest.param("0,2,4", {0, 2, 4}, "0,2,4", id="single cpus stay apart"),
        pytest.param("0-1,2-3\n", {0, 1, 2, 3}, "0-3", id="adjacent ranges merge"),
    ],
)
def test_cpulists_round_trip(text: str, ids: set[int], formatted: str) -> None:
    assert cpulist.parse(text) == ids
    assert cpulist.format_ids(ids) == formatted


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        pytest.param("00000000,0000ff0f", {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15},
                     id="wider than the cpus"),
        pytest.param("1,00000000,00000001", {0, 64}, id="a short most significant word"),
        pytest.param("0", set(), id="empty"),
        pytest.param("ffffffff\n", set(range(32)), id="one full word"),
    ],
)
def test_cpumasks_parse_most_significant_word_first(text: str, ids: set[int]) -> None:
    assert cpulist.parse_mask(text) == ids


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("0-", "neither an id nor a range", id="an open range"),
        pytest.param("15-0", "runs backwards", id="a backwards range"),
        pytest.param("a-b", "neither an id nor a range", id="letters"),
        pytest.param("0-1000000", "above 8191", id="an id no kernel has"),
        pytest.param("9" * 5000, "above 8191", id="an id of 5000 digits"),
        pytest.param("1-2-3", "neither an id nor a range", id="two dashes"),
    ],
)
def test_a_malformed_cpulist_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        cpulist.parse(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("0000000g", "hex words", id="not hex"),
        pytest.param("1,ff", "hex words", id="a short lower word"),
        pytest.param(",".join(["00000000"] * 257), "wider than 8192", id="too wide"),
    ],
)
def test_a_malformed_cpumask_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        cpulist.parse_mask(text)


def test_a_huge_range_is_refused_at_once_and_noted_with_its_path(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 2).numa_node(0, [0, 1], 2**20)
    tree.file("/sys/devices/system/node/node0/cpulist", "0-1000000")
    fs = tree.fs()

    # That the refusal costs nothing is bench/probe_bench.py's to prove (its parser target).
    found = numa.probe(fs)

    assert found.nodes[0].cpus == ""
    [issue] = fs.take_issues()
    assert issue.path == "/sys/devices/system/node/node0/cpulist"
    assert "above 8191" in issue.detail


def test_overlapping_ranges_name_each_id_once() -> None:
    # Their cost, no more than the ids they name, is bench/probe_bench.py's to prove.
    assert cpulist.parse(",".join(["0-8191"] * 2000)) == set(range(8192))
    assert cpulist.parse("4-7,0-5,2-3,6-9") == set(range(10))


def test_a_malformed_online_list_falls_back_to_the_cpun_online_files(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, offline=[3]).file(f"{CPUS}/online", "0-")
    fs = tree.fs()

    found = numa.probe(fs)

    assert (found.online_cpus, found.cores) == ("0-2", 3)
    assert [i.path for i in fs.take_issues()] == [f"{CPUS}/online"]


def test_cpus_without_a_topology_directory_are_invisible_to_the_cpu_manager(
    tmp_path: Path,
) -> None:
    found = numa.probe(no_cpu_topology(tmp_path).fs())

    assert (found.online_cpus, found.sockets, found.cores, found.kernel_cores) == ("0-7", 0, 0, 0)
    [warning] = numa.check(found)
    assert (warning.severity, warning.path) == ("Warning", f"{CPUS}/cpuN/topology")
    assert "could not detect number of cpus" in warning.message


def test_s390_books_and_drawers_keep_cores_apart_as_the_kubelet_does(tmp_path: Path) -> None:
    found = numa.probe(s390_books(tmp_path).fs())

    # cAdvisor on s390x tells cores apart by book_id and drawer_id too
    assert (found.sockets, found.cores, found.kernel_cores, found.threads_per_core) == (
        2, 8, 8, 2)
    assert numa.check(found) == []


def test_compute_unit_siblings_with_their_own_core_id_are_reported(tmp_path: Path) -> None:
    found = numa.probe(compute_units(tmp_path).fs())

    # the kubelet counts each integer core (core_id) as a core of one thread
    assert (found.cores, found.kernel_cores, found.threads_per_core) == (16, 8, 2)
    [info] = numa.check(found)
    assert (info.severity, info.path) == ("Info", f"{CPUS}/cpuN/topology/thread_siblings_list")
    assert "16 cores of one thread" in info.message and "8 sibling groups" in info.message


# -- NUL-terminated values, current names, absent CPUs, firmware without a layout -------------


def test_an_arm64_server_with_nul_terminated_cpu_sets_reads_as_its_kernel_means(
    tmp_path: Path,
) -> None:
    fs = arm64_server(tmp_path).fs()

    found = numa.probe(fs)

    assert [(n.cpus, n.cpu_count) for n in found.nodes] == [("0-31", 32), ("32-63", 32)]
    assert (found.sockets, found.cores, found.kernel_cores, found.threads_per_core) == (
        2, 64, 64, 1)
    assert (found.online_cpus, found.offline_cpus) == ("0-63", "")
    assert fs.take_issues() == []
    assert numa.check(found) == []


def _nul_host(tmp_path: Path, *, lists: bool, core_cpus: bool, cpumap_only: bool) -> HostTree:
    tree = HostTree(tmp_path, nul_terminated=True)
    tree.file(f"{CPUS}/online", "0-7").file(f"{CPUS}/offline", "").file(f"{CPUS}/present", "0-7")
    for cpu in range(8):
        core = cpu % 4
        tree.cpu(cpu, package=0, core=core, siblings=[core, core + 4], lists=lists,
                 core_cpus=core_cpus, thread_siblings=not core_cpus)
    return tree.numa_node(0, range(8), 2**20, cpumap_only=cpumap_only)


@pytest.mark.parametrize(
    ("lists", "core_cpus", "cpumap_only"),
    [
        pytest.param(True, True, False, id="node cpulist and core_cpus_list"),
        pytest.param(False, True, True, id="node cpumap and core_cpus"),
        pytest.param(True, False, False, id="node cpulist and thread_siblings_list"),
        pytest.param(False, False, True, id="node cpumap and thread_siblings"),
    ],
)
def test_every_cpu_set_file_may_end_in_a_nul_as_binary_attributes_do(
    tmp_path: Path, lists: bool, core_cpus: bool, cpumap_only: bool
) -> None:
    fs = _nul_host(tmp_path, lists=lists, core_cpus=core_cpus, cpumap_only=cpumap_only).fs()

    found = numa.probe(fs)

    assert (found.nodes[0].cpus, found.kernel_cores, found.threads_per_core) == ("0-7", 4, 2)
    assert fs.take_issues() == []


@pytest.mark.parametrize("parse", [cpulist.parse, cpulist.parse_mask])
@pytest.mark.parametrize("ending", ["\n\0", "\0", "\n\0\0"])
def test_both_parsers_take_a_value_with_the_nul_a_binary_attribute_copies(
    parse: t.Callable[[str], set[int]], ending: str
) -> None:
    text = "0-3,8-11" if parse is cpulist.parse else "00000000,00000f0f"

    assert parse(text + ending) == {0, 1, 2, 3, 8, 9, 10, 11}


def test_core_cpus_list_is_read_where_the_deprecated_thread_siblings_are_gone(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file(f"{CPUS}/online", "0-7").file(f"{CPUS}/offline", "")
    for cpu in range(8):
        tree.cpu(cpu, package=0, core=cpu % 4, siblings=[cpu % 4, cpu % 4 + 4],
                 core_cpus=True, thread_siblings=False)
    tree.numa_node(0, range(8), 2**20)

    found = numa.probe(tree.fs())

    assert (found.kernel_cores, found.threads_per_core, found.min_threads_per_core) == (4, 2, 2)
    assert numa.check(found) == []


def test_core_cpus_list_is_read_before_thread_siblings_list(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file(f"{CPUS}/online", "0-3").file(f"{CPUS}/offline", "")
    for cpu in range(4):
        tree.cpu(cpu, package=0, core=cpu // 2, siblings=[cpu - cpu % 2, cpu - cpu % 2 + 1],
                 core_cpus=True)
        # a stale deprecated file that disagrees: the current one is the kernel's word
        tree.file(f"{CPUS}/cpu{cpu}/topology/thread_siblings_list", str(cpu))
    tree.numa_node(0, range(4), 2**20)

    found = numa.probe(tree.fs())

    assert (found.kernel_cores, found.threads_per_core) == (2, 2)


def test_offline_names_only_present_cpus_not_the_empty_slots_of_possible(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).cpus(1, 8, offline=[7], possible=512)
    tree.numa_node(0, range(8), 2**20)

    found = numa.probe(tree.fs())

    # the kernel's offline says 7-511: possible minus online
    assert cpulist.parse((tmp_path / "sys/devices/system/cpu/offline").read_text()) == set(
        range(7, 512))
    assert found.offline_cpus == "7"
    offline = [p for p in numa.check(found) if p.path == f"{CPUS}/offline"]
    assert [p.message.split(" are offline")[0] for p in offline] == ["CPUs 7"]


def test_a_host_whose_cpus_are_all_online_but_possible_is_larger_says_nothing_offline(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).cpus(2, 4, 2, possible=256)
    tree.numa_node(0, range(16), 2**20)

    found = numa.probe(tree.fs())

    assert found.offline_cpus == ""
    assert numa.check(found) == []


def test_cpus_listed_by_several_nodes_are_warned_about_with_what_the_kubelet_does(
    tmp_path: Path,
) -> None:
    found = numa.probe(overlapping_nodes(tmp_path).fs())

    assert found.overlapping_cpus == "0-15"
    assert [n.linked_cpus for n in found.nodes] == ["0-3", "4-7", "8-11", "12-15"]
    [warning] = [p for p in numa.check(found) if "more than one NUMA node" in p.message]
    assert warning.severity == "Warning"
    assert "nodes 0,1,2,3" in warning.message
    assert "node 0: 0-3; node 1: 4-7; node 2: 8-11; node 3: 12-15" in warning.message


def test_cpus_linked_under_several_nodes_too_are_said_to_land_on_the_last(
    tmp_path: Path,
) -> None:
    found = numa.probe(overlapping_nodes(tmp_path, linked_everywhere=True).fs())

    [warning] = [p for p in numa.check(found) if "more than one NUMA node" in p.message]
    assert "takes each such CPU to be on the last node that links it" in warning.message


def test_nodes_that_share_no_cpu_are_not_overlapping(tmp_path: Path) -> None:
    found = numa.probe(amd_eight_node(tmp_path).fs())

    assert found.overlapping_cpus == ""
    assert all(n.linked_cpus is None for n in found.nodes)  # the links are read only then


def test_cpus_without_a_package_are_said_to_give_the_kubelets_socket_count(
    tmp_path: Path,
) -> None:
    found = numa.probe(no_package_id(tmp_path).fs())

    assert (found.sockets, found.no_package_cpus) == (1, "0-7")
    [info] = numa.check(found)
    assert (info.severity, info.path) == ("Info", f"{CPUS}/cpuN/topology/physical_package_id")
    assert "physical_package_id -1" in info.message


def test_a_topology_that_does_not_add_up_to_the_online_cpus_says_so(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, 2).numa_node(0, range(8), 2**20)
    for cpu in (1, 5):  # both threads of core 1: their sibling lists cannot be read
        (tmp_path / f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").unlink()
        tree.unreadable(f"{CPUS}/cpu{cpu}/topology/thread_siblings_list")

    found = numa.probe(tree.fs())

    assert (found.kernel_cores, found.threads_per_core) == (3, 2)
    [info] = [p for p in numa.check(found) if "does not add up" in p.message]
    assert info.severity == "Info"
    assert "3 cores of 2 threads (6 CPUs) for 8 online CPUs" in info.message


@pytest.mark.parametrize(
    "build", [amd_eight_node, arm64_server, compute_units, hybrid, multi_die, power_smt4,
              s390_books, old_kernel],
)
def test_sockets_cores_and_threads_multiply_out_to_the_online_cpus(
    tmp_path: Path, build: t.Callable[[Path], HostTree]
) -> None:
    found = numa.probe(build(tmp_path).fs())

    sockets, per_socket, threads = cpulist.layout(found)
    online = len(cpulist.parse(found.online_cpus))
    if found.min_threads_per_core == threads:
        assert sockets * per_socket * threads == online
    assert not [p for p in numa.check(found) if "does not add up" in p.message]
