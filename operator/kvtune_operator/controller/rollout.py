"""Which nodes may take a disruptive step now, and how they are drained: a pure function.

An agent never applies a NeedsDrain step on its own: it reports `drainRequired` and waits for
`spec.disruption.approved`. The operator grants that to at most `rollout.maxUnavailable` nodes
of a profile at a time:

- allowDrain: cordon the node (noting on the Node that kvtune did), evict its VM pods through the
  Eviction API (PodDisruptionBudgets hold; KubeVirt live-migrates VMs that allow it), approve once
  no VM pod is left; after drainTimeoutSeconds give up, uncordon, and report the node Degraded
  (DrainFailed) until its spec changes. Never a node stuck cordoned.
- manual (no allowDrain): the node waits; once an administrator has cordoned and emptied it
  (`kubectl drain`), kvtune approves it, and leaves the uncordon to the administrator.
- when the agent no longer needs the drain, the approval is withdrawn and a node kvtune
  cordoned is uncordoned.
- a node kvtune cordoned whose drain no live profile holds any more (the profile was deleted
  mid-drain, the state went, the drain ended without its uncordon) is uncordoned
  (`stray_cordons`): the note lives on the Node, so it outlives both.
"""

from __future__ import annotations

import datetime
import typing as t

from kvtune_api.v1alpha1.profile import max_unavailable_nodes

from ..common.nodestate import (
    APPROVED_ANNOTATION,
    DRAIN_FAILED_ANNOTATION,
    DRAIN_STARTED_ANNOTATION,
    StateView,
)
from ..common.profiles import Profile
from .render import render_spec
from .views import (
    Action,
    CordonNode,
    EvictVmPods,
    PatchState,
    Snapshot,
)

_CLEAR: dict[str, str | None] = {DRAIN_STARTED_ANNOTATION: None, APPROVED_ANNOTATION: None}


def plan_rollout(profile: Profile, snap: Snapshot, now: datetime.datetime) -> list[Action]:
    if profile.deleting or profile.paused:
        return []
    states = snap.assigned_states(profile.name)
    views = [v for v in states.values() if v is not None]
    busy = sum(1 for v in views if v.approved or v.drain_started_at is not None)
    slots = max_unavailable_nodes(profile.spec.rollout.max_unavailable, len(states)) - busy
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
        return _finish(profile, snap, view), False
    if not view.drain_required or view.drain_failed:
        return [], False
    started = view.drain_started_at
    if started is not None:
        if pods == 0:
            return [_approve(profile, view)], False
        if now - started > datetime.timedelta(seconds=profile.spec.rollout.drain_timeout_seconds):
            failed = {**_CLEAR, DRAIN_FAILED_ANNOTATION: str(view.generation)}
            uncordon = [CordonNode(node, False)] if node in snap.kvtune_cordoned else []
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
    cordon = [] if snap.cordoned.get(node, False) else [CordonNode(node, True)]
    return [*cordon, PatchState(node, annotations=stamp), EvictVmPods(node)], True


def _finish(profile: Profile, snap: Snapshot, view: StateView) -> list[Action]:
    uncordon = [CordonNode(view.name, False)] if view.name in snap.kvtune_cordoned else []
    spec = render_spec(profile, view.name, approved=False)
    return [*uncordon, PatchState(view.name, spec=spec, annotations=_CLEAR)]


def _approve(profile: Profile, view: StateView) -> PatchState:
    return PatchState(view.name, spec=render_spec(profile, view.name, approved=True),
                      annotations={APPROVED_ANNOTATION: "true"})


def cordons_no_profile_holds(
    cordoned: t.Iterable[str], profiles: t.Mapping[str, Profile]
) -> list[Action]:
    """Uncordon the nodes kvtune cordoned when no live profile is left to judge them.

    `stray_cordons` runs in the passes of profiles; with none left (the last one removed with
    its finalizer taken off by hand mid-drain, or the operator started after that) no pass runs,
    and a node would stay cordoned for good. A profile being deleted holds no drain either."""
    if any(not p.deleting for p in profiles.values()):
        return []
    return [CordonNode(node, False) for node in sorted(cordoned)]


def stray_cordons(profile: Profile, snap: Snapshot, live: t.Collection[str]) -> list[Action]:
    """Uncordon the nodes kvtune cordoned that no drain holds any more, `live` being the names
    of the profiles that exist and are not being deleted.

    A node whose state belongs to another live profile is that profile's to judge. One of this
    profile's (or of none) is held only while its drain runs: started, approved, or still
    required by its agent. A profile being deleted holds none: its nodes revert instead.
    """
    actions: list[Action] = []
    for node in sorted(snap.kvtune_cordoned):
        view = snap.states.get(node)
        owner = view.profile if view is not None else ""
        if owner != profile.name and owner in live:
            continue
        held = (
            view is not None and owner == profile.name and not profile.deleting
            and (view.approved or view.drain_started_at is not None or view.drain_required)
        )
        if not held:
            actions.append(CordonNode(node, False))
    return actions
