"""Small builders for the operator's pure tests."""

from __future__ import annotations

import typing as t

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeState
from kvtune_operator.profiles import Profile


def profile(name: str = "p", generation: int = 1, **spec: t.Any) -> Profile:
    body = {
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": generation},
        "spec": {"nodeSelector": {"matchLabels": {"pool": name}}, **spec},
    }
    return Profile.from_body(body)


def state(
    node: str,
    *,
    observed: int | None = 1,
    ready: bool = False,
    degraded: str | None = None,
    drain: bool = False,
) -> HypervisorNodeState:
    conditions = [cond.make(cond.READY, "True" if ready else "False", "R")]
    if degraded:
        conditions.append(cond.make(cond.DEGRADED, "True", degraded, f"{node} is {degraded}"))
    return HypervisorNodeState.model_validate(
        {
            "apiVersion": "kvtune.io/v1alpha1",
            "kind": "HypervisorNodeState",
            "metadata": {"name": node},
            "spec": {"nodeName": node, "profile": {"name": "p", "generation": 1}},
            "status": {
                "observedGeneration": observed,
                "conditions": [c.model_dump() for c in conditions],
                "drainRequired": drain,
            },
        }
    )
