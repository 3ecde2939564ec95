"""The NUMA probe: nodes with gaps, memoryless and CPU-less nodes, offline and isolated CPUs, every
form kernels write them in, and the topology as the kubelet's CPU manager counts it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hosttree import (
    HostTree,
    amd_eight_node,
    clustered,
    compute_units,
    hybrid,
    memory_tiers,
    multi_die,
    no_cpu_topology,
    old_kernel,
    power_smt4,
    s390_books,
    without_numa,
)
from kvtune_agent.probe import cpulist, numa

CPUS = "/sys/devices/system/cpu"


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
    assert numa.check(found) == []
    assert [i.path for i in fs.take_issues()] == ["/sys/devices/system/node/node0/meminfo"]


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

    start = time.perf_counter()
    found = numa.probe(fs)

    assert time.perf_counter() - start < 0.5
    assert found.nodes[0].cpus == ""
    [issue] = fs.take_issues()
    assert issue.path == "/sys/devices/system/node/node0/cpulist"
    assert "above 8191" in issue.detail


def test_overlapping_ranges_cost_no_more_than_the_ids_they_name() -> None:
    start = time.perf_counter()

    assert cpulist.parse(",".join(["0-8191"] * 2000)) == set(range(8192))
    assert time.perf_counter() - start < 0.5


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
