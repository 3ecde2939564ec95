"""How many problems the probe raises on each healthy host of the suite's captured-tree shapes.

A healthy host that a careful operator would call fine should raise no warning: every finding
there is either true (an Info with the evidence) or a false alarm. Two tables:
- whole hosts (cpuinfo, KVM, sysfs, meminfo) of every architecture: x86 two-socket and EPYC,
  arm64 servers with NUL-terminated sysfs values, s390x, POWER9, riscv64, loongarch64, a VM
  running KVM through kvm_pvm, ...; a warning here is a false alarm
  (tests/agent/test_probe_host.py holds them at none);
- topology shapes (POWER at SMT4, CXL and GPU memory tiers, hybrid, multi-die, clustered Arm,
  s390 books, no NUMA, no CPU topology, ...), laid out as sysfs only, without /proc/cpuinfo or
  KVM: each says that cpuinfo is missing, which is true of the tree, and some have a true
  warning of their own (a kernel without NUMA, core_ids the kubelet misreads).
The messages' first words are printed with --verbose, so that a change's effect on false alarms
can be counted before and after.

A shape this checkout's hosttree.py does not have is left out of the table; `vm_guest` (a VM
with no way to run KVM) and the deliberately broken shapes are not healthy and are not listed.

Run: .venv/bin/python bench/healthy_hosts.py [--verbose]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from kvtune_agent.wiring import probe_host

# The hosts are laid out by the same builders the tests use (tests/support/hosttree.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import hosttree

WHOLE_HOSTS = (
    "intel_two_socket", "amd_eight_node", "large_host", "arm64_server", "s390_lpar",
    "power9_host", "pvm_guest", "amd_old_kernel", "riscv64_host", "loongarch64_host",
)
SHAPES = (
    "old_kernel", "power_smt4", "memory_tiers", "hybrid", "multi_die", "clustered",
    "without_numa", "no_cpu_topology", "compute_units", "s390_books", "no_node_hugepages",
    "no_package_id",
)


def _table(title: str, names: tuple[str, ...], verbose: bool) -> None:
    print(f"{title:<20} {'error':>5} {'warn':>5} {'info':>5}")
    totals: Counter[str] = Counter()
    for name in names:
        build = getattr(hosttree, name, None)
        if build is None:
            continue
        with tempfile.TemporaryDirectory() as root:
            report = probe_host(build(Path(root)).fs())
        counts = Counter(p.severity for p in report.problems)
        totals.update(counts)
        print(f"{name:<20} {counts['Error']:>5} {counts['Warning']:>5} {counts['Info']:>5}")
        if verbose:
            for problem in report.problems:
                print(f"    {problem.severity:<8}{problem.feature:<10}{problem.message[:110]}")
    print(f"{'total':<20} {totals['Error']:>5} {totals['Warning']:>5} {totals['Info']:>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", action="store_true", help="print every problem")
    args = parser.parse_args()
    _table("whole host", WHOLE_HOSTS, args.verbose)
    print()
    _table("topology shape", SHAPES, args.verbose)


if __name__ == "__main__":
    main()
