"""The CPU partition cut from a node's real topology: whole cores, lowest ids, every NUMA node
keeping housekeeping CPUs, and the refusals that leave a node as it is."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from kvtune_agent.features.cpu_partition import Partition, PartitionRefused, partition
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.profile import CpuPartition
from support.hosttree import (
    HostTree,
    amd_eight_node,
    hybrid,
    intel_two_socket,
    multi_die,
    no_cpu_topology,
    without_numa,
)


def _cut(tree: HostTree, **spec: object) -> Partition:
    return partition(CpuPartition.model_validate(spec), probe_host(tree.fs()))


def _refusal(tree: HostTree, **spec: object) -> PartitionRefused:
    with pytest.raises(PartitionRefused) as refused:
        _cut(tree, **spec)
    return refused.value


@pytest.mark.parametrize(("build", "cores", "housekeeping", "isolated"), [
    # Linux numbering: first threads of all cores, then their siblings.
    (amd_eight_node, 1, "0,4,8,12,16,20,24,28,32,36,40,44,48,52,56,60",
     "1-3,5-7,9-11,13-15,17-19,21-23,25-27,29-31,33-35,37-39,41-43,45-47,49-51,53-55,57-59,"
     "61-63"),
    (amd_eight_node, 2, "0-1,4-5,8-9,12-13,16-17,20-21,24-25,28-29,32-33,36-37,40-41,44-45,"
     "48-49,52-53,56-57,60-61", None),
    # Two dies, two nodes, core_id per die: whole cores by the kernel's sibling lists.
    (multi_die, 1, "0,8,16,24", None),
    # Hybrid: P-cores of two threads first, the first core is the lowest ids.
    (hybrid, 2, "0-3", "4-23"),
    # No NUMA at all: the host is one node.
    (without_numa, 1, None, None),
])
def test_whole_cores_are_taken_lowest_first_on_every_numa_node(
    tmp_path: Path, build: t.Any, cores: int, housekeeping: str | None, isolated: str | None
) -> None:
    found = _cut(build(tmp_path), housekeepingCoresPerNumaNode=cores)

    if housekeeping is not None:
        assert found.housekeeping_list == housekeeping
    if isolated is not None:
        assert found.isolated_list == isolated
    assert found.housekeeping and found.isolated
    assert not found.housekeeping & found.isolated
    assert found.warnings == ()


def test_a_host_without_numa_keeps_its_first_core(tmp_path: Path) -> None:
    tree = without_numa(tmp_path)
    report = probe_host(tree.fs())
    assert not report.numa.nodes, "the builder must give a host without NUMA nodes"

    found = partition(CpuPartition(housekeeping_cores_per_numa_node=1), report)

    assert min(found.housekeeping) == 0
    assert found.housekeeping | found.isolated == set(range(len(found.housekeeping)
                                                            + len(found.isolated)))


def test_an_explicit_list_is_taken_as_given(tmp_path: Path) -> None:
    found = _cut(intel_two_socket(tmp_path), housekeepingCpus="0,1,28,29")

    assert found.housekeeping_list == "0-1,28-29"
    assert 2 in found.isolated and 0 not in found.isolated


def test_an_explicit_list_that_splits_cores_is_applied_with_a_warning(tmp_path: Path) -> None:
    # amd_eight_node: CPU n and n+32 are one core; node 0 holds 0-3 and 32-35.
    tree = amd_eight_node(tmp_path)
    every_node = ",".join(str(node * 4) for node in range(8))

    found = _cut(tree, housekeepingCpus=every_node)

    assert found.housekeeping_list == "0,4,8,12,16,20,24,28"
    assert len(found.warnings) == 1
    assert "splits 8 core(s)" in found.warnings[0]
    assert "0 with 32" in found.warnings[0]


@pytest.mark.parametrize(("spec", "reason", "words"), [
    ({"housekeepingCpus": "0-3"}, "NumaNodeWithoutHousekeeping",
     ["NUMA node(s) 1 (CPUs 4-7,36-39)", "2 (CPUs"]),
    ({"housekeepingCpus": "0,4,8,12,16,20,24,28,64"}, "CpuPartitionOffline",
     ["CPUs 64 do not exist on this node"]),
    ({"housekeepingCpus": "0-63"}, "TooFewCpus", ["none is left for VMs"]),
    ({"housekeepingCoresPerNumaNode": 4}, "TooFewCpus",
     ["housekeepingCoresPerNumaNode is 4, but NUMA node 0 has 4 core(s)"]),
])
def test_a_partition_that_does_not_fit_is_refused_naming_what_and_why(
    tmp_path: Path, spec: dict[str, object], reason: str, words: list[str]
) -> None:
    refused = _refusal(amd_eight_node(tmp_path), **spec)

    assert refused.reason == reason
    for word in words:
        assert word in refused.message


def test_an_offline_cpu_in_the_list_is_refused_as_offline(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, 2, offline=[5]).numa_node(0, range(8), 2**20)

    refused = _refusal(tree, housekeepingCpus="0,4,5")

    assert refused.reason == "CpuPartitionOffline"
    assert "CPUs 5 are offline" in refused.message


def test_offline_cpus_are_left_out_of_both_sets(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, 2, offline=[5]).numa_node(0, range(8), 2**20)

    found = _cut(tree, housekeepingCoresPerNumaNode=1)

    assert found.housekeeping_list == "0,4"
    assert found.isolated_list == "1-3,6-7"


def test_cores_are_not_guessed_where_the_kernel_gives_no_topology(tmp_path: Path) -> None:
    refused = _refusal(no_cpu_topology(tmp_path), housekeepingCoresPerNumaNode=1)

    assert refused.reason == "CpuCoresUnknown"
    assert "give housekeepingCpus instead" in refused.message


def test_an_explicit_list_needs_no_topology(tmp_path: Path) -> None:
    found = _cut(no_cpu_topology(tmp_path), housekeepingCpus="0")

    assert found.housekeeping_list == "0"


def test_a_numa_node_whose_cpus_are_unknown_refuses_the_partition(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4).numa_node(0, range(4), 2**20)
    (tmp_path / "sys/devices/system/node/node1").mkdir()
    (tmp_path / "sys/devices/system/node/node1/meminfo").write_text("Node 1 MemTotal: 1 kB\n")

    refused = _refusal(tree, housekeepingCoresPerNumaNode=1)

    assert refused.reason == "NumaNodeCpusUnknown"
    assert "NUMA node(s) 1" in refused.message


def test_no_online_cpus_known_is_refused_not_taken_for_none(tmp_path: Path) -> None:
    refused = _refusal(HostTree(tmp_path), housekeepingCpus="0")

    assert refused.reason == "CpusUnknown"
