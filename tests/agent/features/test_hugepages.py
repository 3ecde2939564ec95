"""The hugepages planner: pools per NUMA node within the memory budget, never shrunk under VMs."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from support.hosttree import (
    HostTree,
    intel_two_socket,
    memory_tiers,
    no_node_hugepages,
)

from ..specs import node_spec
from .planning import GiB, finding_of, pages, plan_of, steps_of

HUGE_1G = "/sys/devices/system/node/node{}/hugepages/hugepages-1048576kB/nr_hugepages"


def test_a_count_is_split_evenly_with_the_remainder_on_the_lowest_node(tmp_path: Path) -> None:
    found = plan_of(intel_two_socket(tmp_path), node_spec(memory=pages(count=35)))

    steps = steps_of(found)
    assert sorted(steps) == ["hugepages/node0/1Gi", "hugepages/node1/1Gi"]
    assert (steps["hugepages/node0/1Gi"].current, steps["hugepages/node0/1Gi"].desired) == (
        "16", "18")
    assert steps["hugepages/node1/1Gi"].desired == "17"
    assert steps["hugepages/node0/1Gi"].path == HUGE_1G.format(0)
    assert all(s.disruption == "Live" and s.feature == "Hugepages" for s in steps.values())
    assert "pages[0].count (35, split evenly across NUMA nodes 0,1)" in (
        steps["hugepages/node0/1Gi"].reason)


def test_a_count_skips_memoryless_nodes_and_follows_id_gaps(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(64 * GiB)
    tree.numa_node(0, range(4), 32 * GiB, hugepages={2048: (0, 0)})
    tree.numa_node(1, range(4, 8), 0, hugepages={2048: (0, 0)})  # CPUs, no memory
    tree.numa_node(4, range(8, 12), 32 * GiB, hugepages={2048: (0, 0)})

    steps = steps_of(plan_of(tree, node_spec(memory=pages("2Mi", count=5))))

    assert {i: s.desired for i, s in steps.items()} == {
        "hugepages/node0/2Mi": "3", "hugepages/node4/2Mi": "2"}


def test_a_count_leaves_out_memory_only_nodes(tmp_path: Path) -> None:
    steps = steps_of(plan_of(memory_tiers(tmp_path), node_spec(memory=pages("2Mi", count=4))))

    # CXL memory (node 2) and GPU memory (250-255) have no CPUs for a VM to use it from
    assert {i: s.desired for i, s in steps.items()} == {
        "hugepages/node0/2Mi": "2", "hugepages/node1/2Mi": "2"}


def test_a_count_leaves_out_nodes_whose_cpus_are_all_offline(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, offline=[2, 3]).meminfo(64 * GiB)
    tree.numa_node(0, [0, 1], 32 * GiB, hugepages={2048: (0, 0)})
    tree.numa_node(1, [2, 3], 32 * GiB, hugepages={2048: (0, 0)})

    steps = steps_of(plan_of(tree, node_spec(memory=pages("2Mi", count=4))))

    assert {i: s.desired for i, s in steps.items()} == {"hugepages/node0/2Mi": "4"}


def _spoil_cpulist(tree: HostTree, path: str, content: str | None) -> None:
    if content is None:
        (tree.root / path.lstrip("/")).unlink()
        tree.unreadable(path)
    else:
        tree.file(path, content)


@pytest.mark.parametrize("content", [pytest.param("4-\n", id="malformed"),
                                     pytest.param(None, id="unreadable"),
                                     pytest.param("\0garbage", id="NULs")])
def test_a_count_is_not_split_when_a_node_s_cpus_are_unknown(
    tmp_path: Path, content: str | None
) -> None:
    tree = intel_two_socket(tmp_path)
    cpulist_path = "/sys/devices/system/node/node1/cpulist"
    _spoil_cpulist(tree, cpulist_path, content)

    found = plan_of(tree, node_spec(memory=pages(count=40)))

    # Unknown is not none: node 1's share does not move to node 0 as a Live step.
    assert not [s for s in found.steps if s.planned.feature == "Hugepages"]
    message = finding_of(found, "NumaNodeCpusUnknown").message
    assert "NUMA node 1 " in message and cpulist_path in message
    assert "pages[0].count" in message


def test_a_count_named_per_node_is_planned_where_a_node_s_cpus_are_unknown(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path)
    _spoil_cpulist(tree, "/sys/devices/system/node/node1/cpulist", "4-\n")

    found = plan_of(tree, node_spec(memory=pages(perNode=[{"node": 0, "count": 20},
                                                          {"node": 1, "count": 20}])))

    assert {i: s.desired for i, s in steps_of(found).items()} == {
        "hugepages/node0/1Gi": "20", "hugepages/node1/1Gi": "20"}
    assert not [f for f in found.findings if f.reason == "NumaNodeCpusUnknown"]


@pytest.mark.parametrize("content", [pytest.param("-3", id="negative"),
                                     pytest.param(None, id="unreadable")])
def test_a_pool_of_unknown_size_plans_no_step_and_says_why(
    tmp_path: Path, content: str | None
) -> None:
    tree = intel_two_socket(tmp_path)
    path = HUGE_1G.format(1)
    if content is None:
        (tmp_path / path.lstrip("/")).unlink()
        tree.unreadable(path)
    else:
        tree.file(path, content)

    found = plan_of(tree, node_spec(memory=pages(count=40)))

    assert list(steps_of(found)) == ["hugepages/node0/1Gi"]
    unknown = finding_of(found, "HugepagePoolUnknown")
    assert path in unknown.message
    assert unknown.message.startswith("spec.host.memory.hugepages.pages[0].count (40")


def test_a_node_with_an_unreadable_pool_grows_none_of_its_pools(tmp_path: Path) -> None:
    # Node 1's 1Gi pool is unknown, so what node 1 holds in all is unknown: its 2Mi pool may not
    # grow either (the budget would be judged on a guess). Node 0 grows as asked.
    tree = intel_two_socket(tmp_path)
    tree.file(HUGE_1G.format(1), "garbage")

    found = plan_of(tree, node_spec(memory=pages("2Mi", count=4096)))  # 1024 -> 2048 a node

    assert list(steps_of(found)) == ["hugepages/node0/2Mi"]
    assert "NUMA node 1" in finding_of(found, "NodeHugepagesUnknown").message


def test_a_per_node_entry_for_a_missing_node_is_an_error_naming_the_field_and_node(
    tmp_path: Path,
) -> None:
    spec = node_spec(memory=pages(perNode=[{"node": 1, "count": 20}, {"node": 3, "count": 4}]))

    found = plan_of(intel_two_socket(tmp_path), spec)

    error = finding_of(found, "HugepageNodeMissing")
    assert (error.feature, error.severity) == ("Hugepages", "Error")
    assert error.message.startswith("spec.host.memory.hugepages.pages[0].perNode[1].node is 3")
    assert "its nodes: 0, 1" in error.message
    assert list(steps_of(found)) == ["hugepages/node1/1Gi"]  # the valid entry is still planned


@pytest.mark.parametrize(("wanted", "disruption"), [
    pytest.param(20, "Live", id="growing is live"),
    pytest.param(12, "Live", id="shrinking into free unreserved pages is live"),
    pytest.param(11, "NeedsDrain", id="shrinking into reserved pages needs a drain"),
    pytest.param(4, "NeedsDrain", id="shrinking below the pages in use needs a drain"),
])
def test_a_pool_never_shrinks_into_pages_in_use_or_reserved_without_a_drain(
    tmp_path: Path, wanted: int, disruption: str
) -> None:
    # Each node: 16 pages, 8 free (8 in use); 4 reserved host-wide.
    spec = node_spec(memory=pages(perNode=[{"node": 0, "count": wanted}]))

    step = steps_of(plan_of(intel_two_socket(tmp_path), spec))["hugepages/node0/1Gi"]

    assert (step.desired, step.disruption) == (str(wanted), disruption)
    if disruption == "NeedsDrain":
        assert "8 are in use by VMs, 4 reserved host-wide" in step.reason
        assert "must leave the node first" in step.reason


def _per_node(*pools: tuple[str, int, int]) -> dict[str, t.Any]:
    """memory.hugepages with, per (size, node, count), a perNode entry."""
    sizes: dict[str, list[dict[str, int]]] = {}
    for size, node, count in pools:
        sizes.setdefault(size, []).append({"node": node, "count": count})
    return {"hugepages": {"pages": [{"size": s, "perNode": n} for s, n in sizes.items()]}}


@pytest.mark.parametrize("pools", [
    pytest.param([("1Gi", 0, 200), ("2Mi", 0, 40000)], id="all sizes together exceed the node"),
    pytest.param([("1Gi", 0, 256)], id="the whole node"),
    pytest.param([("1Gi", 0, 231)], id="the node less the kubelet's reserve, but no headroom"),
])
def test_pools_that_would_leave_a_node_too_little_memory_are_not_grown(
    tmp_path: Path, pools: list[tuple[str, int, int]]
) -> None:
    spec = node_spec(memory=_per_node(*pools, ("1Gi", 1, 20)))

    found = plan_of(intel_two_socket(tmp_path), spec)  # 256 GiB per node, 2Mi pools of 2 GiB

    assert list(steps_of(found)) == ["hugepages/node1/1Gi"]
    message = finding_of(found, "HugepagesExceedNodeMemory").message
    assert message.startswith("NUMA node 0 would hold ")
    assert "256.0 GiB of memory, less 0.0 GiB the kubelet keeps from pods" in message
    assert "25.6 GiB of headroom (spec.host.memory.hugepages.hostHeadroom" in message


@pytest.mark.parametrize("kubelet", [
    pytest.param("reservedMemory:\n- numaNode: 0\n  limits: {memory: 20Gi}\n",
                 id="reservedMemory of that node"),
    pytest.param("systemReserved: {memory: 30Gi}\nkubeReserved: {memory: 8Gi}\n"
                 "evictionHard: {memory.available: 2Gi}\n", id="its share of host-wide reserves"),
])
def test_what_the_kubelet_reserves_on_a_node_is_not_given_to_hugepages(
    tmp_path: Path, kubelet: str
) -> None:
    # 212 + 2 GiB fit in 256 GiB less 25.6 GiB of headroom, not also less 20 GiB for the kubelet.
    tree = intel_two_socket(tmp_path).kubelet_config(kubelet)

    found = plan_of(tree, node_spec(memory=_per_node(("1Gi", 0, 212))))

    assert found.steps == ()
    assert "less 20.0 GiB the kubelet keeps from pods" in (
        finding_of(found, "HugepagesExceedNodeMemory").message)


def test_a_profile_may_state_a_smaller_headroom(tmp_path: Path) -> None:
    memory = _per_node(("1Gi", 0, 250))
    memory["hugepages"]["hostHeadroom"] = {"percent": 1, "minimum": "1Gi"}

    found = plan_of(intel_two_socket(tmp_path), node_spec(memory=memory))

    assert list(steps_of(found)) == ["hugepages/node0/1Gi"]


def test_pools_that_fit_each_node_but_not_the_host_are_not_grown(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).meminfo(400 * GiB)  # /proc/meminfo: less than the nodes

    found = plan_of(tree, node_spec(memory=pages(count=400)))

    assert found.steps == ()
    assert "the host would hold 404.0 GiB of hugepages" in (
        finding_of(found, "HugepagesExceedHostMemory").message)


def _unreadable(tree: HostTree, path: str) -> HostTree:
    (tree.root / path.lstrip("/")).unlink()
    return tree.unreadable(path)


@pytest.mark.parametrize(("unknown", "path"), [
    pytest.param(lambda tree: _unreadable(tree, "/sys/devices/system/node/node0/meminfo"),
                 "/sys/devices/system/node/node0/meminfo", id="a node's meminfo"),
    pytest.param(lambda tree: _unreadable(tree, "/proc/meminfo"), "/proc/meminfo",
                 id="the host's meminfo"),
    pytest.param(lambda tree: tree.kubelet_config("systemReserved: [\n"),
                 "/var/lib/kubelet/config.yaml", id="the kubelet's reservations"),
])
def test_unknown_memory_grows_no_pool_and_says_which_file_to_fix(
    tmp_path: Path, unknown: t.Callable[[HostTree], object], path: str
) -> None:
    tree = intel_two_socket(tmp_path)
    unknown(tree)

    found = plan_of(tree, node_spec(memory=_per_node(("1Gi", 0, 20), ("1Gi", 1, 12))))

    assert list(steps_of(found)) == ["hugepages/node1/1Gi"]  # shrinking needs no budget
    [error] = [f for f in found.findings if f.feature == "Hugepages"]
    assert error.severity == "Error" and path in error.message
    assert "not grown" in error.message


@pytest.mark.parametrize(("tree_free", "count", "why"), [
    pytest.param({"node": 100 * GiB}, 130, "NUMA node 0 has 100.0 GiB free",
                 id="more than the node's free memory"),
    pytest.param({"host": 10 * GiB}, 30, "the host has 10.0 GiB available",
                 id="more than the host's available memory"),
])
def test_growing_into_memory_in_use_waits_for_a_drain(
    tmp_path: Path, tree_free: dict[str, int], count: int, why: str
) -> None:
    tree = intel_two_socket(tmp_path)
    if "host" in tree_free:
        tree.meminfo(512 * GiB, free_kib=tree_free["host"])
    else:
        tree.numa_node(0, range(16), 256 * GiB, distances=(10, 21), free_kib=tree_free["node"])

    step = steps_of(plan_of(tree, node_spec(memory=_per_node(("1Gi", 0, count)))))[
        "hugepages/node0/1Gi"]

    assert step.disruption == "NeedsDrain"
    assert why in step.reason and "rollout.maxUnavailable" in step.reason


def test_a_node_shrinks_one_pool_before_it_grows_another(tmp_path: Path) -> None:
    spec = node_spec(memory=_per_node(("1Gi", 0, 30), ("2Mi", 0, 0)))

    found = plan_of(intel_two_socket(tmp_path), spec)

    assert list(steps_of(found)) == ["hugepages/node0/2Mi", "hugepages/node0/1Gi"]


def test_a_page_size_the_host_does_not_offer_is_an_error(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(64 * GiB).numa_node(0, range(4), 64 * GiB,
                                                           hugepages={2048: (0, 0)})

    found = plan_of(tree, node_spec(memory=pages("1Gi", count=2)))

    assert found.steps == ()
    assert "hugepages-1048576kB/nr_hugepages does not exist" in (
        finding_of(found, "HugepageSizeUnsupported").message)


def test_a_kernel_without_per_node_pools_is_told_apart_from_a_missing_size(
    tmp_path: Path,
) -> None:
    found = plan_of(no_node_hugepages(tmp_path), node_spec(memory=pages("2Mi", count=64)))

    assert found.steps == ()
    findings = [f for f in found.findings if f.reason == "NoPerNodeHugepages"]
    assert [f.severity for f in findings] == ["Error", "Error"]  # one per node
    assert "/sys/kernel/mm/hugepages/hugepages-2048kB does" in findings[0].message
    assert "2.6.33" in findings[0].message
    assert not [f for f in found.findings if f.reason == "HugepageSizeUnsupported"]
