"""Condition types and the one way both sides update a list of conditions.

`lastTransitionTime` changes only when a condition's status changes, and `equivalent` compares
lists without timestamps, so neither the operator nor the agents rewrite a status when only
time has passed (the status flapping users of other operators complain about).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from .features import CONDITION_FEATURES
from .v1alpha1.common import Condition, ConditionStatus

__all__ = ["Condition", "ConditionStatus"]

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
#: A node that needs a drain or a reboot before it can finish (node states and profiles).
WAITING = "Waiting"
#: Per-feature condition types a node agent reports (the agent's registry says which feature
#: reports which).
FEATURES = CONDITION_FEATURES


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"


def make(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    generation: int | None = None,
) -> Condition:
    return Condition(
        type=type_, status=status, reason=reason, message=message, observed_generation=generation
    )


def merge(
    old: Sequence[Condition], new: Sequence[Condition], now: datetime.datetime
) -> list[Condition]:
    """The new conditions, keeping each one's transition time when its status did not change."""
    merged = []
    for cond in new:
        prev = find(old, cond.type)
        keep = prev is not None and prev.status == cond.status and prev.last_transition_time
        stamp = prev.last_transition_time if keep and prev else now
        merged.append(cond.model_copy(update={"last_transition_time": stamp}))
    return merged


def flipped(old: Sequence[Condition], new: Sequence[Condition]) -> list[Condition]:
    """The new conditions whose status differs from before (or that are new): what is worth an
    Event, on either side."""
    return [
        c for c in new
        if (before := find(old, c.type)) is None or before.status != c.status
    ]


def equivalent(a: Sequence[Condition], b: Sequence[Condition]) -> bool:
    """Equal but for transition times."""

    def key(c: Condition) -> tuple[str, str, str, str, int | None]:
        return (c.type, c.status, c.reason, c.message, c.observed_generation)

    return sorted(map(key, a), key=str) == sorted(map(key, b), key=str)
