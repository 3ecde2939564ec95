"""Which nodes may take a disruptive step now, and how they are drained: a pure function.

An agent never applies a NeedsDrain step on its own: it reports `drainRequired` and waits for
`spec.disruption.approved`. The operator grants that to at most `rollout.maxUnavailable` nodes
of a profile at a time:

- allowDrain: cordon the node (remembering that kvtune did), evict its VM pods through the
  Eviction API (PodDisruptionBudgets hold; KubeVirt live-migrates VMs that allow it), approve once
  no VM pod is left; after drainTimeoutSeconds give up, uncordon, and report the node Degraded
  (DrainFailed) until its spec changes. Never a node stuck cordoned.
- manual (no allowDrain): the node waits; once an administrator has cordoned and emptied it
  (`kubectl drain`), kvtune approves it, and leaves the uncordon to the administrator.
- when the agent no longer needs the drain, the approval is withdrawn and a node kvtune
  cordoned is uncordoned.
"""

from __future__ import annotations

import datetime
import math

from .profiles import Profile
from .render import render_spec
from .views import (
    CORDONED_ANNOTATION,
    DRAIN_FAILED_ANNOTATION,
    DRAIN_STARTED_ANNOTATION,
    Action,
    CordonNode,
    EvictVmPods,
    PatchState,
    Snapshot,
    StateView,
)

_CLEAR: dict[str, str | None] = {DRAIN_STARTED_ANNOTATION: None, CORDONED_ANNOTATION: None}


def budget(max_unavailable: int | str, matched: int) -> int:
    """Nodes that may be disrupted at once: a count, or a percentage of the matched nodes
    rounded down but at least one (as a Deployment's maxUnavailable, so rollouts progress)."""
    if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
        return max(1, math.floor(matched * int(max_unavailable[:-1]) / 100))
    return max(1, int(max_unavailable))


def plan_rollout(profile: Profile, snap: Snapshot, now: datetime.datetime) -> list[Action]:
    if profile.deleting or profile.paused:
        return []
    states = snap.assigned_states(profile.name)
    views = [v for v in states.values() if v is not None]
    busy = sum(1 for v in views if v.approved or v.drain_started_at is not None)
    slots = budget(profile.spec.rollout.max_unavailable, len(states)) - busy
    actions: list[Action] = []
    for view in views:
        step, started = _node(profile, snap, view, now, start_allowed=slots > 0)
        slots -= started
        actions += step
    return actions


def _node(
    profile: Profile, snap: Snapshot, view: StateView, now: datetime.datetime, start_allowed: bool
) -> tuple[list[Action], bool]:
    """The actions for one node, and whether they start a new drain (taking a slot)."""
    node, pods = view.name, snap.vm_pods.get(view.name, 0)
    if view.approved:
        if view.drain_required or not view.reported:
            return [], False  # the agent is applying the approved step
        return _finish(profile, view), False
    if not view.drain_required or view.drain_failed:
        return [], False
    started = view.drain_started_at
    if started is not None:
        if pods == 0:
            return [_approve(profile, view)], False
        if now - started > datetime.timedelta(seconds=profile.spec.rollout.drain_timeout_seconds):
            failed = {**_CLEAR, DRAIN_FAILED_ANNOTATION: str(view.generation)}
            uncordon = [CordonNode(node, False)] if view.cordoned_by_kvtune else []
            return [*uncordon, PatchState(node, annotations=failed)], False
        return [EvictVmPods(node)], False
    if not profile.spec.rollout.allow_drain:
        # Manual mode: an administrator cordoned and emptied the node; proceed.
        if snap.cordoned.get(node, False) and pods == 0:
            return [_approve(profile, view)], False
        return [], False
    if not start_allowed:
        return [], False
    stamp: dict[str, str | None] = {DRAIN_STARTED_ANNOTATION: now.isoformat()}
    cordon: list[Action] = []
    if not snap.cordoned.get(node, False):
        stamp[CORDONED_ANNOTATION] = "true"
        cordon = [CordonNode(node, True)]
    return [*cordon, PatchState(node, annotations=stamp), EvictVmPods(node)], True


def _finish(profile: Profile, view: StateView) -> list[Action]:
    uncordon: list[Action] = [CordonNode(view.name, False)] if view.cordoned_by_kvtune else []
    spec = render_spec(profile, view.name, approved=False)
    return [*uncordon, PatchState(view.name, spec=spec, annotations=_CLEAR)]


def _approve(profile: Profile, view: StateView) -> PatchState:
    return PatchState(view.name, spec=render_spec(profile, view.name, approved=True))
