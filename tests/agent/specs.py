"""A HypervisorNodeStateSpec builder for the agent's tests, from the camelCase the API stores."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec


def node_spec(
    mode: str = "Enforce",
    *,
    paused: bool = False,
    revert: bool = False,
    approved: bool = False,
    allow_reboot: bool = False,
    **host: t.Any,
) -> HypervisorNodeStateSpec:
    """A spec for node n1 with the host settings given as camelCase sections (memory=..., ...)."""
    return HypervisorNodeStateSpec.model_validate({
        "nodeName": "n1",
        "profile": {"name": "p", "generation": 1},
        "mode": mode,
        "paused": paused,
        "revert": revert,
        "host": host,
        "disruption": {"allowDrain": True, "allowReboot": allow_reboot, "approved": approved},
    })
