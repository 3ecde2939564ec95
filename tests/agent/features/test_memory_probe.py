"""The memory probe: totals, swap, THP, hugepage pools system-wide and per NUMA node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kvtune_agent.features.memory import probe as memory
from kvtune_agent.host import meminfo
from kvtune_agent.wiring import probe_host
from support.hosttree import HostTree, intel_two_socket


def test_hugepages_of_both_sizes_are_reported_per_node_and_system_wide(tmp_path: Path) -> None:
    found = memory.probe(intel_two_socket(tmp_path).fs())

    assert [(p.node, p.size, p.total, p.free) for p in found.hugepages_per_node] == [
        (0, "2Mi", 1024, 1024), (0, "1Gi", 16, 8), (1, "2Mi", 1024, 1024), (1, "1Gi", 16, 8),
    ]
    assert [(p.size, p.total, p.free, p.reserved) for p in found.hugepages] == [
        ("2Mi", 2048, 2048, 0), ("1Gi", 32, 16, 4),
    ]
    assert all(p.reserved is None for p in found.hugepages_per_node)


def test_totals_thp_and_hugepage_kernel_args_are_read(tmp_path: Path) -> None:
    found = memory.probe(intel_two_socket(tmp_path).fs())

    assert found.total_kib == 512 * 2**20
    assert found.default_hugepage_kib == 2048
    assert (found.transparent_hugepage, found.transparent_hugepage_defrag) == ("never", "madvise")
    assert found.kernel_args == [
        "default_hugepagesz=1G", "hugepagesz=1G", "hugepages=32", "hugepagesz=2M",
        "hugepages=2048",
    ]


def test_swap_is_warned_about(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(2**20, swap_kib=4 * 2**20)

    [warning] = memory.check(memory.probe(tree.fs()))

    assert (warning.severity, warning.path) == ("Warning", "/proc/swaps")
    assert "4096 MiB" in warning.message


def test_surplus_hugepages_are_noted(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(2**20).hugepages(2048, 10, 0, surplus=3)

    [info] = memory.check(memory.probe(tree.fs()))

    assert info.severity == "Info"
    assert info.path == "/sys/kernel/mm/hugepages/hugepages-2048kB/surplus_hugepages"
    assert "3 of the 10 2Mi hugepages in the pool are surplus" in info.message


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        pytest.param("ten", "expected an integer", id="not a number"),
        pytest.param("-5", "expected a page count", id="negative"),
        pytest.param(None, "cannot read", id="unreadable"),
    ],
)
def test_a_pool_count_that_is_not_a_count_is_unknown_and_noted(
    tmp_path: Path, content: str | None, detail: str
) -> None:
    tree = HostTree(tmp_path).meminfo(2**20).hugepages(2048, 10, 10)
    path = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    if content is None:
        (tmp_path / path.lstrip("/")).unlink()
        tree.unreadable(path)
    else:
        tree.file(path, content)
    fs = tree.fs()

    found = memory.probe(fs)

    assert (found.hugepages[0].total, found.hugepages[0].free) == (None, 10)
    [issue] = fs.take_issues()
    assert issue.path == path
    assert detail in issue.detail


def test_a_negative_count_on_one_node_keeps_the_rest_of_the_memory_report(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path)
    tree.file("/sys/devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages", "-1")

    report = probe_host(tree.fs())

    assert not [p for p in report.problems if p.severity == "Error"]
    assert report.memory.total_kib == 512 * 2**20
    assert [(p.node, p.size, p.free) for p in report.memory.hugepages_per_node][2] == (
        1, "2Mi", None)


def test_node_directories_beyond_the_kernels_limit_are_left_out_and_noted(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).numa_node(0, [0], 2**20).numa_node(1024, [], 2**20)
    fs = tree.fs()

    assert meminfo.node_ids(fs) == [0]
    [issue] = fs.take_issues()
    assert issue.path == "/sys/devices/system/node/node1024"


@pytest.mark.parametrize(
    ("kib", "name"),
    [(2048, "2Mi"), (1048576, "1Gi"), (64, "64Ki"), (32768, "32Mi"), (16 * 2**20, "16Gi")],
)
def test_page_sizes_are_named_as_quantities(kib: int, name: str) -> None:
    assert memory.size_name(kib) == name


def test_a_host_without_the_hugepages_directory_has_unknown_pools_not_none(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).meminfo(2**20)
    shutil.rmtree(tmp_path / "sys/kernel/mm/hugepages")

    found = memory.probe(tree.fs())

    assert (found.hugepages, found.hugepage_pools_known) == ([], False)
    [warning] = memory.check(found)
    assert (warning.severity, warning.path) == ("Warning", memory.HUGEPAGES)
    assert "unknown, not empty" in warning.message and "2048 kB" in warning.message


def test_a_kernel_without_hugetlbfs_is_told_apart_from_a_partial_sys(tmp_path: Path) -> None:
    found = memory.probe(HostTree(tmp_path).meminfo(2**20, hugetlb=False).fs())

    [info] = memory.check(found)
    assert (info.severity, info.path) == ("Info", memory.HUGEPAGES)
    assert "without hugetlbfs" in info.message


def test_a_host_with_its_default_pool_empty_raises_nothing(tmp_path: Path) -> None:
    found = memory.probe(HostTree(tmp_path).meminfo(2**20).fs())

    assert [(p.size, p.total) for p in found.hugepages] == [("2Mi", 0)]
    assert memory.check(found) == []
