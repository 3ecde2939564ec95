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

import dataclasses
import datetime
import typing as t
from collections.abc import Mapping

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeState, HypervisorNodeStateSpec

from .assign import Assignment
from .profiles import Profile
from .render import PROFILE_LABEL, render_node_state, render_spec

#: Condition type the agent sets once it has restored a node's journal.
REVERTED = "Reverted"
#: When the operator asked for a revert: starts the clock for a node that never answers.
REVERT_ANNOTATION = "kvtune.io/revert-requested-at"


@dataclasses.dataclass(frozen=True)
class StateView:
    """What the operator keeps of a HypervisorNodeState (not the bulky host report)."""

    name: str
    profile: str
    generation: int
    spec: Mapping[str, t.Any]
    state: HypervisorNodeState
    revert_requested_at: datetime.datetime | None = None

    @property
    def reverted(self) -> bool:
        return cond.is_true(self.state.status.conditions, REVERTED)

    @classmethod
    def from_body(cls, body: Mapping[str, t.Any]) -> StateView:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        status.pop("host", None)  # the probe report is large and not needed to reconcile
        state = HypervisorNodeState.model_validate(
            {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
             "metadata": {"name": meta["name"]}, "spec": body["spec"], "status": status}
        )
        return cls(
            name=meta["name"],
            profile=(meta.get("labels") or {}).get(PROFILE_LABEL, ""),
            generation=int(meta.get("generation") or 0),
            spec=_normalized(body["spec"]),
            state=state,
            revert_requested_at=_parse_time((meta.get("annotations") or {}).get(REVERT_ANNOTATION)),
        )


@dataclasses.dataclass(frozen=True)
class CreateState:
    manifest: Mapping[str, t.Any]


@dataclasses.dataclass(frozen=True)
class PatchStateSpec:
    name: str
    spec: Mapping[str, t.Any]
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DeleteState:
    name: str


@dataclasses.dataclass(frozen=True)
class LabelNode:
    """Set (profile name) or remove (None) the node's kvtune.io/profile label."""

    node: str
    profile: str | None


Action = CreateState | PatchStateSpec | DeleteState | LabelNode


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The operator's in-memory view of the cluster at one moment."""

    nodes: Mapping[str, Mapping[str, str]]
    states: Mapping[str, StateView]
    assignment: Assignment


def plan_profile(
    profile: Profile, snap: Snapshot, now: datetime.datetime, revert_timeout: datetime.timedelta
) -> list[Action]:
    """Actions that move `profile`'s nodes one step toward its spec (or its removal).

    `now`/`revert_timeout` bound how long a removal waits for an agent that never answers
    (a dead node), counted from the revert-requested annotation: after that the state goes
    anyway, and the agent, should it come back, reverts on its own when it finds its state gone.
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
        approved = bool(view.spec.get("disruption", {}).get("approved", False))
        actions += _patch_if_changed(view, render_spec(profile, node, approved=approved))
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
        stamp = {REVERT_ANNOTATION: now.isoformat()}
        return [PatchStateSpec(view.name, render_spec(profile, view.name, revert=True), stamp)]
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
    return [] if view.spec == spec else [PatchStateSpec(view.name, spec)]


def _normalized(spec: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A stored spec as `render_spec` would write it, so that server-side defaults compare equal."""
    dumped: dict[str, t.Any] = HypervisorNodeStateSpec.model_validate(spec).model_dump(
        exclude_none=True, mode="json"
    )
    return dumped


def _parse_time(value: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
