"""What admission needs to know of a node beyond its allocatable resources, kept from its
HypervisorNodeState's probe report when the operator indexes it (the report itself is dropped).

SMT and the kubelet's whole-core option decide whether KubeVirt's pod would fail with
SMTAlignmentError (webhook/vmi/smt_alignment.py); each NUMA node's CPUs the kubelet may hand
out and its hugepages decide whether a VMI fits one NUMA node under single-numa-node
(webhook/vmi/numa_fit.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: The CPU manager option that hands out whole cores only.
WHOLE_CORES = "full-pcpus-only"


@dataclasses.dataclass(frozen=True)
class NumaCell:
    """One NUMA node as the kubelet can give it to a guaranteed pod."""

    node: int
    #: Its online CPUs less the kubelet's reservedSystemCPUs.
    cpus: int
    #: Page size in bytes -> bytes of hugepages of that size on the node (the pool, not what is
    #: free: as the capacity check, "larger than any node", not "larger than what is left").
    hugepages: Mapping[int, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NodeFacts:
    """Threads per core (0: unknown), whether the kubelet runs full-pcpus-only, and the NUMA
    cells (empty: unknown)."""

    threads_per_core: int = 0
    whole_cores: bool = False
    cells: tuple[NumaCell, ...] = ()

    @classmethod
    def from_host(cls, host: Any) -> NodeFacts:
        """From a HypervisorNodeState's status.host (JSON), as much of it as is there."""
        if not isinstance(host, Mapping):
            return cls()
        numa, kubelet = (_mapping(host.get(key)) for key in ("numa", "kubelet"))
        threads = numa.get("threadsPerCore")
        options = _mapping(kubelet.get("cpuManagerPolicyOptions"))
        return cls(
            threads_per_core=threads if isinstance(threads, int) and threads > 0 else 0,
            whole_cores=options.get(WHOLE_CORES) == "true",
            cells=_cells(numa, kubelet, _mapping(host.get("memory"))),
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _cpus(text: Any) -> set[int]:
    """A cpulist's ids; empty for anything that is not one (the report's lists are validated)."""
    ids: set[int] = set()
    for part in str(text or "").split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            ids.update(range(int(first), int(last or first) + 1))
    return ids


def _cells(numa: Mapping[str, Any], kubelet: Mapping[str, Any],
           memory: Mapping[str, Any]) -> tuple[NumaCell, ...]:
    reserved = _cpus(kubelet.get("reservedSystemCpus"))
    pages: dict[int, dict[int, int]] = {}
    for pool in memory.get("hugepagesPerNode") or ():
        pool = _mapping(pool)
        node, total, size = pool.get("node"), pool.get("total"), pool.get("sizeKib")
        if isinstance(node, int) and isinstance(total, int) and isinstance(size, int):
            pages.setdefault(node, {})[size * 1024] = total * size * 1024
    cells = []
    for node in numa.get("nodes") or ():
        node = _mapping(node)
        if isinstance(node.get("id"), int) and not node.get("cpusUnknown"):
            cells.append(NumaCell(node["id"], len(_cpus(node.get("cpus")) - reserved),
                                  pages.get(node["id"], {})))
    return tuple(cells)
