"""The NUMA probe: nodes with gaps, memoryless and CPU-less nodes, offline and isolated CPUs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hosttree import HostTree, amd_eight_node
from kvtune_agent.probe import cpulist, numa


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
