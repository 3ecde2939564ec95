"""What the admission webhook does to a VirtualMachineInstance, as pure functions of (profile, VMI).

Why pure: nodes prepared by a profile only help if the VMs use them, and getting that wrong either
strands VMs in Pending or lets them be OOM-killed. Pure functions can be tested exhaustively
(including against KubeVirt's real schema); the kopf handlers only register and delegate here.
"""

from kvtune_api.kubevirt_overhead import OverheadBreakdown

from .kubevirt_config import DEFAULT_KUBEVIRT, KubeVirtConfig
from .mutate import MutationResult, mutate_vmi
from .overhead import memory_overhead
from .read import VmiFieldError
from .selection import out_of_scope, selects
from .validate import NodeCapacity, VmiDemand, capacity_warning, validate_vmi, vmi_demand

__all__ = [
    "DEFAULT_KUBEVIRT",
    "KubeVirtConfig",
    "MutationResult",
    "NodeCapacity",
    "OverheadBreakdown",
    "VmiDemand",
    "VmiFieldError",
    "capacity_warning",
    "memory_overhead",
    "mutate_vmi",
    "out_of_scope",
    "selects",
    "validate_vmi",
    "vmi_demand",
]
