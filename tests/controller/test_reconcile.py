"""The operator's per-profile plan: create, keep, revert, release; nothing when converged."""

from __future__ import annotations

import datetime
import typing as t

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_operator.common.nodestate import (
    APPROVED_ANNOTATION,
    REVERT_ANNOTATION,
    REVERTED,
    StateView,
)
from kvtune_operator.common.profiles import PROFILE_LABEL, Profile
from kvtune_operator.controller import passes as controller
from kvtune_operator.controller.reconcile import plan_profile
from kvtune_operator.controller.render import render_node_state
from kvtune_operator.controller.views import (
    CreateState,
    DeleteState,
    LabelNode,
    PatchState,
    Snapshot,
)

from .builders import profile

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
TIMEOUT = datetime.timedelta(minutes=10)


def view(p: Profile, node: str, *, reverted: bool = False, **flags: t.Any) -> StateView:
    manifest = render_node_state(p, node, **{k: v for k, v in flags.items() if k != "asked"})
    if "asked" in flags:
        manifest["metadata"]["annotations"] = {REVERT_ANNOTATION: flags["asked"].isoformat()}
    manifest["metadata"]["generation"] = 1
    if reverted:
        manifest["status"] = {"conditions": [cond.make(REVERTED, "True", "Reverted").model_dump(
            mode="json")]}
    return StateView.from_body(manifest)


def snapshot(profiles: list[Profile], nodes: dict[str, dict[str, str]],
             states: list[StateView]) -> Snapshot:
    return controller.snapshot({p.name: p for p in profiles}, nodes, {s.name: s for s in states},
                               {})


def plan(p: Profile, snap: Snapshot) -> list[t.Any]:
    return plan_profile(p, snap, NOW, TIMEOUT)


def _spec(action: PatchState) -> t.Mapping[str, t.Any]:
    """The spec `action` writes; a patch that writes none fails the test here."""
    assert action.spec is not None, action
    return action.spec


P = profile("p")
LABELLED = {"pool": "p", PROFILE_LABEL: "p"}


def test_a_newly_selected_node_is_labelled_and_gets_a_state() -> None:
    actions = plan(P, snapshot([P], {"n1": {"pool": "p"}}, []))
    assert actions[0] == LabelNode("n1", "p")
    assert isinstance(actions[1], CreateState)
    assert actions[1].manifest["metadata"]["name"] == "n1"


def test_a_converged_profile_needs_no_writes() -> None:
    assert plan(P, snapshot([P], {"n1": LABELLED}, [view(P, "n1")])) == []


def test_a_profile_change_patches_the_spec_of_its_states() -> None:
    changed = profile("p", generation=2, mode="Enforce")
    actions = plan(changed, snapshot([changed], {"n1": LABELLED}, [view(P, "n1")]))
    assert len(actions) == 1 and isinstance(actions[0], PatchState)
    assert _spec(actions[0])["mode"] == "Enforce"
    assert _spec(actions[0])["profile"]["generation"] == 2


def test_a_deselected_node_is_asked_to_revert_first() -> None:
    actions = plan(P, snapshot([P], {"n1": {PROFILE_LABEL: "p"}}, [view(P, "n1")]))
    assert len(actions) == 1 and isinstance(actions[0], PatchState)
    assert _spec(actions[0])["revert"] is True
    assert actions[0].annotations == {REVERT_ANNOTATION: NOW.isoformat()}


def test_a_reverting_node_is_left_alone_until_its_agent_reports() -> None:
    state = view(P, "n1", revert=True, asked=NOW - datetime.timedelta(minutes=1))
    assert plan(P, snapshot([P], {"n1": {PROFILE_LABEL: "p"}}, [state])) == []


def test_a_reverted_node_loses_its_state_and_label() -> None:
    state = view(P, "n1", revert=True, reverted=True)
    actions = plan(P, snapshot([P], {"n1": {PROFILE_LABEL: "p"}}, [state]))
    assert actions == [DeleteState("n1"), LabelNode("n1", None)]


def test_a_node_that_never_answers_is_released_after_the_timeout() -> None:
    state = view(P, "n1", revert=True, asked=NOW - TIMEOUT - datetime.timedelta(seconds=1))
    actions = plan(P, snapshot([P], {"n1": {PROFILE_LABEL: "p"}}, [state]))
    assert actions == [DeleteState("n1"), LabelNode("n1", None)]


def test_the_state_of_a_deleted_node_is_removed() -> None:
    assert plan(P, snapshot([P], {}, [view(P, "n1")])) == [DeleteState("n1")]


def test_a_node_selected_by_two_profiles_is_frozen_and_gets_no_new_state() -> None:
    other = Profile.from_body({"metadata": {"name": "q"}, "spec": {
        "nodeSelector": LabelSelector(match_labels={"gpu": "y"}).model_dump()}})
    nodes = {"n1": {"pool": "p", "gpu": "y", PROFILE_LABEL: "p"}, "n2": {"pool": "p", "gpu": "y"}}
    actions = plan(P, snapshot([P, other], nodes, [view(P, "n1")]))
    assert len(actions) == 1 and isinstance(actions[0], PatchState)
    assert actions[0].name == "n1" and _spec(actions[0])["paused"] is True
    assert plan(other, snapshot([P, other], nodes, [view(P, "n1")])) == []


def test_a_node_moving_between_profiles_waits_for_the_old_state_to_go() -> None:
    q = profile("q")
    nodes = {"n1": {"pool": "q", PROFILE_LABEL: "p"}}
    assert plan(q, snapshot([P, q], nodes, [view(P, "n1")])) == [LabelNode("n1", "q")]


def test_a_deleted_profile_reverts_all_its_nodes() -> None:
    deleting = Profile.from_body({"metadata": {"name": "p", "deletionTimestamp": "x"},
                                  "spec": {"nodeSelector": {"matchLabels": {"pool": "p"}}}})
    actions = plan(deleting, snapshot([deleting], {"n1": LABELLED}, [view(P, "n1")]))
    assert len(actions) == 1 and isinstance(actions[0], PatchState)
    assert _spec(actions[0])["revert"] is True


def test_releasing_a_moved_node_keeps_the_new_profiles_label() -> None:
    state = view(P, "n1", revert=True, reverted=True)
    actions = plan(P, snapshot([P], {"n1": {PROFILE_LABEL: "q"}}, [state]))
    assert actions == [DeleteState("n1")]


def test_a_hand_set_approval_is_put_back_like_any_other_field_of_the_spec() -> None:
    # The agent applies drain-requiring steps on spec.disruption.approved: only the operator's
    # own record of an approval (its annotation) may make it true.
    forged = view(P, "n1", approved=True)
    [patch] = plan(P, snapshot([P], {"n1": LABELLED}, [forged]))
    assert isinstance(patch, PatchState) and patch.spec is not None
    assert patch.spec["disruption"]["approved"] is False


def test_an_approval_the_operator_gave_is_kept() -> None:
    manifest = render_node_state(P, "n1", approved=True)
    manifest["metadata"]["annotations"] = {APPROVED_ANNOTATION: "true"}
    assert plan(P, snapshot([P], {"n1": LABELLED}, [StateView.from_body(manifest)])) == []


def test_a_state_relabelled_to_another_profile_stays_its_profile_s_and_is_relabelled() -> None:
    q = profile("q")
    manifest = render_node_state(P, "n1")
    manifest["metadata"]["labels"] = {PROFILE_LABEL: "q"}
    relabelled = StateView.from_body(manifest)
    snap = snapshot([P, q], {"n1": LABELLED}, [relabelled])
    assert plan(P, snap) == [PatchState("n1", labels={PROFILE_LABEL: "p"})]
    assert plan(q, snap) == [], "not q's to revert or delete"
    assert list(snap.assigned_states("p").values()) == [relabelled], "still counted by p"
