"""kvtune.io/v1alpha1: the API both the operator and the node agent speak.

The kinds are imported on first use, not with the package: building a module's models costs
milliseconds each, and `kvtune probe` needs the host report's models only (see
bench/probe_bench.py).
"""

from __future__ import annotations

import importlib
import typing as t

if t.TYPE_CHECKING:
    from .host import HostReport
    from .nodestate import HypervisorNodeState
    from .profile import HypervisorProfile

API_GROUP = "kvtune.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

#: Each kind's module.
_KINDS = {
    "HostReport": "host",
    "HypervisorNodeState": "nodestate",
    "HypervisorProfile": "profile",
}

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "HostReport",
    "HypervisorNodeState",
    "HypervisorProfile",
]


def __getattr__(name: str) -> t.Any:
    if name in _KINDS:
        return getattr(importlib.import_module(f".{_KINDS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
