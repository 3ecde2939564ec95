"""The host trees `kvtune profile suggest` is tested over, probed as the agent probes them.

Small, NUMA, hybrid and memory-only-node hosts (tests/hosttree.py), each with no kubelet found
or with a kubelet set up for dedicated CPUs (static CPU and memory managers, reserves that add
up as the memory manager demands).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kvtune_agent.wiring import probe_host
from kvtune_cli.hosts import ProbedHost
from support import hosttree
from support.hosttree import HostTree

GIB_KIB = 2**20


def small(root: Path) -> HostTree:
    """A small single-node host (4 cores, SMT, 16 GiB) whose kernel offers 2Mi and 1Gi pools."""
    tree = HostTree(root).cpus(1, 4, 2).meminfo(16 * GIB_KIB)
    return tree.numa_node(0, range(8), 16 * GIB_KIB,
                          hugepages={2048: (0, 0), 1048576: (0, 0)}).ksm(1, shared=10)


def hybrid(root: Path) -> HostTree:
    """The hybrid Alder Lake host with its kernel's hugepage pools."""
    tree = hosttree.hybrid(root)
    return tree.hugepages(2048, 0, 0, node=0).hugepages(1048576, 0, 0, node=0)


def memory_tiers(root: Path) -> HostTree:
    """Two CPU nodes beside CXL and GPU memory nodes that have memory and no CPUs."""
    return hosttree.memory_tiers(root)


TREES: dict[str, Callable[[Path], HostTree]] = {
    "small": small,
    "numa": hosttree.intel_two_socket,
    "hybrid": hybrid,
    "memory-only nodes": memory_tiers,
    "cloud vm": hosttree.pvm_guest,
}


def static_kubelet(tree: HostTree, reserved_cpus: str = "0", *, irqs: bool = True) -> HostTree:
    """A kubelet that allows dedicated CPUs and NUMA-local memory: static CPU and memory
    managers, single-numa-node, reservedMemory adding up to its reserves (1Gi + 100Mi).
    `irqs`: the host's /proc/irq is readable too (every IRQ allowed everywhere), as CPU
    isolation needs; without it the agent refuses the partition."""
    if irqs:
        cpus = len(list((tree.root / "sys/devices/system/cpu").glob("cpu[0-9]*")))
        tree.irqs({1: range(cpus)}, default=range(cpus), cpus=cpus)
    # The whole reserve on the lowest node: the memory manager wants the sum only.
    first = min(int(p.name[4:]) for p in (tree.root / "sys/devices/system/node").glob("node*"))
    return tree.kubelet_config(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "cpuManagerPolicy: static\ncpuManagerPolicyOptions: {full-pcpus-only: \"true\"}\n"
        f"reservedSystemCPUs: \"{reserved_cpus}\"\ntopologyManagerPolicy: single-numa-node\n"
        "memoryManagerPolicy: Static\nsystemReserved: {memory: 1Gi}\n"
        "evictionHard: {memory.available: 100Mi}\nreservedMemory:\n"
        f"  - numaNode: {first}\n    limits: {{memory: 1124Mi}}\n")


def probed(tree: HostTree, source: str, node: str | None = None) -> ProbedHost:
    return ProbedHost(source, probe_host(tree.fs()), node=node)
