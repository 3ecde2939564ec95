"""kvtune.io/v1alpha1: the API both the operator and the node agent speak."""

from .host import HostReport
from .nodestate import HypervisorNodeState
from .profile import HypervisorProfile

API_GROUP = "kvtune.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "HostReport",
    "HypervisorNodeState",
    "HypervisorProfile",
]
