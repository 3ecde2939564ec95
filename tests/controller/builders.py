"""Small builders for the operator's pure tests."""

from __future__ import annotations

import typing as t

from kvtune_api import conditions as cond
from kvtune_operator.common.nodestate import APPROVED_ANNOTATION, StateView
from kvtune_operator.common.profiles import PROFILE_LABEL, Profile
from support.sections import ProfileSections


def profile(name: str = "p", generation: int = 1, **spec: t.Unpack[ProfileSections]) -> Profile:
    body = {
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": generation},
        "spec": {"nodeSelector": {"matchLabels": {"pool": name}}, **spec},
    }
    return Profile.from_body(body)


def state(
    node: str,
    *,
    observed: int | None = 1,
    generation: int = 1,
    ready: bool = False,
    degraded: str | None = None,
    drain: bool = False,
    approved: bool = False,
    annotations: dict[str, str] | None = None,
    owner: str = "p",
    label: str | None = None,
    macvtap: t.Sequence[tuple[str, str]] = (),
) -> StateView:
    """A node state as the operator's index holds it, with an agent's report; `approved`: the
    operator approved its drain (its annotation and the spec); `label`: its profile label when
    not `owner`'s; `macvtap`: the (resource, lower device) pairs it offers, in bridge mode with
    capacity 1."""
    annotations = {**(annotations or {}), **({APPROVED_ANNOTATION: "true"} if approved else {})}
    conditions = [cond.make(cond.READY, "True" if ready else "False", "R")]
    if degraded:
        conditions.append(cond.make(cond.DEGRADED, "True", degraded, f"{node} is {degraded}"))
    return StateView.from_body(
        {
            "apiVersion": "kvtune.io/v1alpha1",
            "kind": "HypervisorNodeState",
            "metadata": {"name": node, "generation": generation,
                         "labels": {PROFILE_LABEL: owner if label is None else label},
                         "annotations": annotations},
            "spec": {"nodeName": node, "profile": {"name": owner, "generation": 1},
                     "disruption": {"approved": approved}},
            "status": {
                "observedGeneration": observed,
                "conditions": [c.model_dump() for c in conditions],
                "drainRequired": drain,
                "macvtap": [{"name": name, "lowerDevice": lower, "mode": "bridge", "capacity": 1}
                            for name, lower in macvtap],
            },
        }
    )
