"""Host memory: totals, swap, transparent hugepages, hugepage pools system-wide and per node.

VM memory must never be overcommitted or swapped, and hugepages are planned per NUMA node, so the
planner needs each pool's size, allocation and free count where the kernel keeps them.
"""

from __future__ import annotations

import re

from kvtune_api.v1alpha1.common import HugepageSize
from kvtune_api.v1alpha1.host import HugepagePool, MemoryReport, Problem

from ...host.hostfs import HostFS, selected
from ...host.meminfo import NODES, node_ids, parse_meminfo
from ...host.paths import MEMINFO

THP = "/sys/kernel/mm/transparent_hugepage"
HUGEPAGES = "/sys/kernel/mm/hugepages"
#: The hugepage sizes a profile names, in KiB (the inverse of `size_name`).
SIZE_KIB: dict[HugepageSize, int] = {"2Mi": 2048, "1Gi": 1 << 20}
#: /proc/cmdline arguments that decide hugepage pools and THP at boot.
KERNEL_ARGS = (
    "hugepages", "hugepagesz", "default_hugepagesz", "transparent_hugepage", "hugetlb_cma",
    "hugetlb_free_vmemmap",
)
_POOL_DIR = re.compile(r"^hugepages-([0-9]+)kB$")


def _selected(fs: HostFS, path: str) -> str | None:
    """The [bracketed] choice of a sysfs mode file such as "always [madvise] never"."""
    text = fs.read_value(path)
    if text is None:
        return None
    choice = selected(text)
    if choice is None:
        fs.note(path, f"no [selected] mode in {text[:60]!r}")
    return choice


def size_name(kib: int) -> str:
    """A page size as a Kubernetes quantity: 2048 -> 2Mi, 1048576 -> 1Gi."""
    for unit, factor in (("Gi", 1 << 20), ("Mi", 1 << 10)):
        if kib % factor == 0:
            return f"{kib // factor}{unit}"
    return f"{kib}Ki"


def _count(fs: HostFS, path: str) -> int | None:
    """A page count; None when absent, unreadable or not a count (then noted): a pool whose size
    is unknown must not be read as empty, or a plan would allocate it all again."""
    value = fs.read_int(path)
    if value is not None and value < 0:
        fs.note(path, f"expected a page count, found {value}")
        return None
    return value


def _pools(fs: HostFS, base: str, node: int | None) -> list[HugepagePool]:
    pools = []
    for entry in fs.list_dir(base):
        match = _POOL_DIR.match(entry)
        if match is None:
            continue
        kib = int(match.group(1))
        counts = {
            name: _count(fs, f"{base}/{entry}/{name}_hugepages")
            for name in ("nr", "free", "surplus", "resv")
        }
        pools.append(HugepagePool(
            size=size_name(kib), size_kib=kib, node=node, total=counts["nr"],
            free=counts["free"], surplus=counts["surplus"] or 0, reserved=counts["resv"],
        ))
    return sorted(pools, key=lambda p: p.size_kib)


def probe(fs: HostFS) -> MemoryReport:
    info = parse_meminfo(fs, MEMINFO) or {}
    cmdline = (fs.read_value("/proc/cmdline") or "").split()
    return MemoryReport(
        total_kib=info.get("MemTotal"),
        free_kib=info.get("MemFree"),
        available_kib=info.get("MemAvailable"),
        swap_total_kib=info.get("SwapTotal"),
        swap_free_kib=info.get("SwapFree"),
        default_hugepage_kib=info.get("Hugepagesize"),
        transparent_hugepage=_selected(fs, f"{THP}/enabled"),
        transparent_hugepage_defrag=_selected(fs, f"{THP}/defrag"),
        hugepages=_pools(fs, HUGEPAGES, None),
        hugepage_pools_known=fs.is_dir(HUGEPAGES),
        hugepages_per_node=[
            pool for node in node_ids(fs)
            for pool in _pools(fs, f"{NODES}/node{node}/hugepages", node)
        ],
        kernel_args=[arg for arg in cmdline if arg.partition("=")[0] in KERNEL_ARGS],
    )


def check(memory: MemoryReport) -> list[Problem]:
    """Findings: no meminfo, swap on, hugepage pools unknown, surplus hugepages."""
    if memory.total_kib is None:
        return [Problem(
            severity="Warning", feature="Memory", path=MEMINFO,
            message=f"{MEMINFO} is missing or unreadable, so host memory is unknown; check that "
            "--root points at the host's / with /proc mounted",
        )]
    problems = []
    if not memory.hugepage_pools_known:
        # A kernel with hugetlbfs names its default page size in meminfo.
        built_without = memory.default_hugepage_kib is None
        why = ("the kernel seems built without hugetlbfs (no Hugepagesize in /proc/meminfo): "
               "no hugepages can be planned on this node" if built_without
               else f"yet /proc/meminfo shows a {memory.default_hugepage_kib} kB hugepage size, "
               "so /sys is not mounted whole under --root; mount the host's /sys there")
        problems.append(Problem(
            severity="Info" if built_without else "Warning", feature="Hugepages",
            path=HUGEPAGES,
            message=f"{HUGEPAGES} is missing, so the hugepage pools are unknown, not empty: "
            f"{why}",
        ))
    if memory.swap_total_kib:
        problems.append(Problem(
            severity="Warning", feature="Memory", path="/proc/swaps",
            message=f"swap is on ({memory.swap_total_kib // 1024} MiB): a host that swaps stalls "
            "guests in ways they cannot see; turn it off on VM nodes (swapoff -a, and remove "
            "swap from /etc/fstab)",
        ))
    problems += [
        Problem(
            severity="Info", feature="Hugepages",
            path=f"{HUGEPAGES}/hugepages-{pool.size_kib}kB/surplus_hugepages",
            # The kernel counts surplus pages in nr_hugepages, and makes them both by
            # overcommit and by a shrink below the pages in use (checked on a real kernel).
            message=f"{pool.surplus} of the {pool.total} {pool.size} hugepages in the pool are "
            "surplus: pages kept in use after the pool was shrunk below them, or overcommitted "
            "(nr_overcommit_hugepages); the kernel returns them to the host, not to the pool, "
            "when they are freed, so they are not guaranteed to VMs",
        )
        for pool in memory.hugepages
        if pool.surplus
    ]
    return problems
