"""The memory probe: totals, swap, THP, hugepage pools system-wide and per NUMA node."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosttree import HostTree, intel_two_socket
from kvtune_agent.probe import memory


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


def test_a_malformed_pool_count_is_noted_and_read_as_zero(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(2**20).hugepages(2048, 10, 10)
    tree.file("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "ten")
    fs = tree.fs()

    found = memory.probe(fs)

    assert found.hugepages[0].total == 0
    [issue] = fs.take_issues()
    assert issue.path.endswith("hugepages-2048kB/nr_hugepages")
    assert "expected an integer" in issue.detail


@pytest.mark.parametrize(
    ("kib", "name"),
    [(2048, "2Mi"), (1048576, "1Gi"), (64, "64Ki"), (32768, "32Mi"), (16 * 2**20, "16Gi")],
)
def test_page_sizes_are_named_as_quantities(kib: int, name: str) -> None:
    assert memory.size_name(kib) == name
