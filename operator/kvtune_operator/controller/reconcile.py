"""What the operator must write to move one profile's nodes toward its spec: a pure function.

The operator keeps an in-memory view of nodes, profiles and node states (kopf indexes fed by
watches); `plan_profile` turns that snapshot into a short list of actions, which the API module
executes. Level-based: the same snapshot always yields the same actions, and a converged
snapshot yields none, so the operator writes nothing at steady state.

Lifecycle of a node under a profile:
  selected -> state created (and node labelled) -> agent applies -> Ready
  deselected or profile deleted -> spec.revert=true -> agent restores its journal and reports
  Reverted -> state deleted, label removed. A node selected by two profiles is frozen
  (spec.paused=true) until the overlap is resolved.
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Mapping

from ..common.nodestate import REVERT_ANNOTATION, StateView
from ..common.profiles import PROFILE_LABEL, Profile
from .render import render_node_state, render_spec
from .views import (
    Action,
    CreateState,
    DeleteState,
    LabelNode,
    PatchState,
    Snapshot,
)


def plan_profile(
    profile: Profile, snap: Snapshot, now: datetime.datetime, revert_timeout: datetime.timedelta
) -> list[Action]:
    """Actions that move `profile`'s nodes one step toward its spec (or its removal).

    `now`/`revert_timeout` bound how long a removal waits for an agent that never answers
    (a dead node), counted from the revert-requested annotation: after that the state goes
    anyway, and the agent, should it come back, reverts on its own when it finds its state gone
    (its node's journal label keeps the agent DaemonSet there until it has: `daemonset.py`).
    """
    wanted = set() if profile.deleting else set(snap.assignment.nodes.get(profile.name, ()))
    conflicted = set(snap.assignment.conflicts_of(profile.name))
    actions: list[Action] = []
    for node in sorted(wanted):
        actions += _keep(profile, node, snap)
    for name, view in sorted(snap.states.items()):
        if view.profile != profile.name or name in wanted:
            continue
        if name in conflicted and not profile.deleting:
            actions += _patch_if_changed(view, render_spec(profile, name, paused=True))
        else:
            actions += _remove(profile, view, snap.nodes.get(name), now, revert_timeout)
    return actions


def _keep(profile: Profile, node: str, snap: Snapshot) -> list[Action]:
    view = snap.states.get(node)
    actions: list[Action] = []
    if snap.nodes[node].get(PROFILE_LABEL) != profile.name:
        actions.append(LabelNode(node, profile.name))
    if view is None:
        actions.append(CreateState(render_node_state(profile, node)))
    elif view.profile == profile.name:
        # `approved` from the operator's own record: the whole spec is the operator's, so a
        # hand-set spec.disruption.approved is put back like any other field.
        actions += _patch_if_changed(view, render_spec(profile, node, approved=view.approved))
        if view.label != profile.name:  # relabelled by hand: the spec says whose it is
            actions.append(PatchState(node, labels={PROFILE_LABEL: profile.name}))
    # else: the state still belongs to the profile the node left; wait for its revert.
    return actions


def _remove(
    profile: Profile,
    view: StateView,
    node_labels: Mapping[str, str] | None,
    now: datetime.datetime,
    revert_timeout: datetime.timedelta,
) -> list[Action]:
    if node_labels is None or view.reverted:
        return _release(profile, view.name, node_labels)
    if not view.spec.get("revert"):
        stamp: dict[str, str | None] = {REVERT_ANNOTATION: now.isoformat()}
        return [PatchState(view.name, render_spec(profile, view.name, revert=True), stamp)]
    asked = view.revert_requested_at
    if asked is not None and now - asked > revert_timeout:
        return _release(profile, view.name, node_labels)
    return []


def _release(
    profile: Profile, name: str, node_labels: Mapping[str, str] | None
) -> list[Action]:
    actions: list[Action] = [DeleteState(name)]
    # The node may already carry the label of the profile it moved to: leave that one alone.
    if node_labels is not None and node_labels.get(PROFILE_LABEL) == profile.name:
        actions.append(LabelNode(name, None))
    return actions


def _patch_if_changed(view: StateView, spec: Mapping[str, t.Any]) -> list[Action]:
    return [] if view.spec == spec else [PatchState(view.name, spec)]

