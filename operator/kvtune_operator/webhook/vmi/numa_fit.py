"""Under the single-numa-node topology policy, whether some ready node can hold a VMI in one
NUMA node.

With `topologyManagerPolicy: single-numa-node` the kubelet admits a guaranteed pod only where its
dedicated CPUs (and, with the Static memory manager, its hugepages) come from one NUMA node, and
fails it (TopologyAffinityError) elsewhere; the scheduler does not know NUMA nodes, so such a VMI
is placed, fails, and is placed again. A VMI no NUMA node of any ready node of its profile can
hold gets a warning at admission, naming the largest NUMA node there is. Like the capacity check,
it counts what the NUMA nodes have (CPUs the kubelet may hand out, hugepages allocated), not what
is free now: "larger than any NUMA node", the mistake worth catching before the VM is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...common.node_facts import NodeFacts, NumaCell
from ...common.profiles import Profile
from .kubevirt_config import KubeVirtConfig
from .paths import CPU
from .read import lookup, quantity_bytes
from .smt_alignment import exclusive_cpus
from .validate import vmi_demand

POLICY = "single-numa-node"


def fit_warning(
    profile: Profile, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig,
    ready: Mapping[str, NodeFacts],
) -> str | None:
    """Why no ready node (node name -> its facts) can hold the VMI in one NUMA node; None when
    one can, or when nothing is known of the nodes' NUMA nodes."""
    if (profile.spec.numa.topology_manager_policy != POLICY
            or lookup(vmi, *CPU, "dedicatedCpuPlacement") is not True):
        return None
    cells = [cell for facts in ready.values() for cell in facts.cells]
    if not cells:
        return None
    cpus = exclusive_cpus(vmi)
    demand = vmi_demand(vmi, kubevirt)
    size = demand.hugepage_size
    page = quantity_bytes(size, "spec.domain.memory.hugepages.pageSize") if size else None

    def holds(cell: NumaCell) -> bool:
        pages = 0 if page is None else demand.hugepages_bytes
        return cell.cpus >= cpus and (page is None or cell.hugepages.get(page, 0) >= pages)

    if any(holds(cell) for cell in cells):
        return None
    largest = max(cells, key=lambda c: (c.cpus, c.hugepages.get(page or 0, 0)))
    wants = f"{cpus} dedicated CPUs"
    offers = f"{largest.cpus} CPUs"
    if page is not None:
        wants += f" and {demand.hugepages_bytes / 2**30:.1f} GiB of {size} hugepages"
        offers += f" and {largest.hugepages.get(page, 0) / 2**30:.1f} GiB of {size} hugepages"
    return (f"HypervisorProfile {profile.name}: no NUMA node of its {len(ready)} ready node(s) "
            f"holds {wants} (the largest offers {offers}), and under numa.topologyManagerPolicy "
            f"{POLICY} the kubelet fails a pod it cannot keep on one NUMA node "
            "(TopologyAffinityError); give the VMI fewer vCPUs or less memory, or spread it "
            "over guest NUMA nodes on a policy that allows it")
