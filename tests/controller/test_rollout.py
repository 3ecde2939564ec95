"""Disruptive steps roll out at most maxUnavailable nodes at a time, drained or by hand."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t

import pytest
from kvtune_api.v1alpha1.profile import max_unavailable_nodes
from kvtune_operator.common.nodestate import (
    APPROVED_ANNOTATION,
    DRAIN_FAILED_ANNOTATION,
    DRAIN_STARTED_ANNOTATION,
    StateView,
    node_phase,
)
from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller.assign import Assignment
from kvtune_operator.controller.rollout import cordons_no_profile_holds, plan_rollout, stray_cordons
from kvtune_operator.controller.views import (
    CordonNode,
    EvictVmPods,
    PatchState,
    Snapshot,
    action_target,
)

from .builders import profile, state

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
STARTED = {DRAIN_STARTED_ANNOTATION: (NOW - datetime.timedelta(minutes=1)).isoformat()}


def snap(views: list[StateView], *, cordoned: t.Iterable[str] = (), ours: t.Iterable[str] = (),
         pods: dict[str, int] | None = None) -> Snapshot:
    """`cordoned`: nodes cordoned by anyone; `ours`: those of them kvtune cordoned."""
    names = frozenset(v.name for v in views)
    return Snapshot(
        nodes={n: {} for n in names}, states={v.name: v for v in views},
        assignment=Assignment({"p": names}, {}),
        cordoned={n: True for n in [*cordoned, *ours]}, vm_pods=pods or {},
        kvtune_cordoned=frozenset(ours), live_profiles=frozenset({"p", "q"}),
    )


def drains(allow: bool = True, **rollout: t.Any) -> Profile:
    return profile("p", rollout={"allowDrain": allow, **rollout})


@pytest.mark.parametrize(("value", "matched", "expected"), [
    (1, 10, 1), (3, 10, 3), ("10%", 25, 2), ("10%", 5, 1), ("50%", 4, 2), ("100%", 4, 4)])
def test_the_budget_is_a_count_or_a_percentage_and_never_zero(
        value: int | str, matched: int, expected: int) -> None:
    assert max_unavailable_nodes(value, matched) == expected


@pytest.mark.parametrize("value", [0, -1, "abc", "50.5%", "0%", "101%", "1", " 10%", True])
def test_a_budget_the_schema_refuses_is_an_error_naming_the_field_not_one_node(
        value: int | str) -> None:
    # Such a profile can only be one stored before the schema refused it: saying so beats
    # quietly draining one node at a time (0, -1) or failing every minute (int("abc")).
    with pytest.raises(ValueError, match=r"rollout\.maxUnavailable must be a whole number"):
        max_unavailable_nodes(value, 10)


def test_only_max_unavailable_nodes_start_draining() -> None:
    actions = plan_rollout(drains(), snap([state("a", drain=True), state("b", drain=True)]), NOW)
    assert actions[0] == CordonNode("a", True), "cordoned, with the note on the Node itself"
    assert isinstance(actions[1], PatchState) and actions[1].annotations[DRAIN_STARTED_ANNOTATION]
    assert actions[2] == EvictVmPods("a")
    assert all(action_target(a) == "a" for a in actions)


def test_a_node_already_approved_uses_up_the_budget() -> None:
    views = [state("a", drain=True, approved=True), state("b", drain=True)]
    assert plan_rollout(drains(), snap(views), NOW) == []


def test_a_draining_node_with_vm_pods_left_is_asked_again() -> None:
    view = state("a", drain=True, annotations=STARTED)
    assert plan_rollout(drains(), snap([view], pods={"a": 2}), NOW) == [EvictVmPods("a")]


def test_an_empty_draining_node_is_approved() -> None:
    view = state("a", drain=True, annotations=STARTED)
    [action] = plan_rollout(drains(), snap([view], ours=["a"], pods={"a": 0}), NOW)
    assert isinstance(action, PatchState) and action.spec is not None
    assert action.spec["disruption"]["approved"] is True
    assert action.annotations == {APPROVED_ANNOTATION: "true"}, "the operator's own record"


def test_when_the_agent_is_done_the_node_is_uncordoned_and_the_approval_withdrawn() -> None:
    view = state("a", drain=False, approved=True, annotations=STARTED)
    actions = plan_rollout(drains(), snap([view], ours=["a"]), NOW)
    assert actions[0] == CordonNode("a", False)
    assert isinstance(actions[1], PatchState) and actions[1].spec is not None
    assert actions[1].spec["disruption"]["approved"] is False
    assert actions[1].annotations == {DRAIN_STARTED_ANNOTATION: None, APPROVED_ANNOTATION: None}


def test_an_approved_node_waits_while_the_agent_applies() -> None:
    view = state("a", drain=True, approved=True, annotations=STARTED)
    assert plan_rollout(drains(), snap([view], cordoned=["a"]), NOW) == []


def test_a_drain_past_its_timeout_is_abandoned_and_the_node_uncordoned() -> None:
    late = {**STARTED, DRAIN_STARTED_ANNOTATION: (NOW - datetime.timedelta(hours=1)).isoformat()}
    view = state("a", drain=True, annotations=late)
    actions = plan_rollout(drains(), snap([view], ours=["a"], pods={"a": 1}), NOW)
    assert actions[0] == CordonNode("a", False)
    assert isinstance(actions[1], PatchState)
    assert actions[1].annotations[DRAIN_FAILED_ANNOTATION] == "1"


def test_a_failed_drain_is_not_retried_and_shows_as_degraded() -> None:
    view = state("a", drain=True, annotations={DRAIN_FAILED_ANNOTATION: "1"})
    assert plan_rollout(drains(), snap([view]), NOW) == []
    assert node_phase(view)[:2] == ("Degraded", "DrainFailed")


def test_without_allow_drain_the_node_waits_for_an_administrator() -> None:
    assert plan_rollout(drains(False), snap([state("a", drain=True)]), NOW) == []


def test_a_node_an_administrator_drained_is_approved_and_left_cordoned_afterwards() -> None:
    view = state("a", drain=True)
    [approve] = plan_rollout(drains(False), snap([view], cordoned=["a"], pods={"a": 0}), NOW)
    assert isinstance(approve, PatchState) and approve.spec is not None
    done = state("a", drain=False, approved=True)
    actions = plan_rollout(drains(False), snap([done], cordoned=["a"]), NOW)
    assert not any(isinstance(a, CordonNode) for a in actions), "not ours to uncordon"


def test_a_paused_profile_starts_no_drain() -> None:
    paused = profile("p", paused=True, rollout={"allowDrain": True})
    assert plan_rollout(paused, snap([state("a", drain=True)]), NOW) == []


def _strays(p: Profile, views: list[StateView], ours: t.Iterable[str]) -> list[str]:
    return [a.node for a in stray_cordons(p, snap(views, ours=ours), frozenset({"p", "q"}))
            if isinstance(a, CordonNode) and not a.unschedulable]


def test_a_node_kvtune_cordoned_for_a_profile_deleted_mid_drain_is_uncordoned() -> None:
    deleting = dataclasses.replace(drains(), deleting=True)
    view = state("a", drain=True, annotations=STARTED)
    assert _strays(deleting, [view], ours=["a"]) == ["a"]


def test_a_node_kvtune_cordoned_whose_state_is_gone_is_uncordoned() -> None:
    assert _strays(drains(), [], ours=["gone"]) == ["gone"]


def test_a_node_kvtune_cordoned_whose_drain_ended_without_its_uncordon_is_uncordoned() -> None:
    assert _strays(drains(), [state("a", drain=False)], ours=["a"]) == ["a"]


@pytest.mark.parametrize("view", [
    state("a", drain=True, annotations=STARTED),
    state("a", drain=True, approved=True),
    state("a", drain=True),
], ids=["draining", "approved", "drain required"])
def test_a_drain_under_way_keeps_its_cordon(view: StateView) -> None:
    assert _strays(drains(), [view], ours=["a"]) == []


def test_a_node_of_another_live_profile_is_left_to_that_profile() -> None:
    assert _strays(drains(), [state("a", drain=False, owner="q")], ours=["a"]) == []


def test_a_node_someone_else_cordoned_is_never_uncordoned() -> None:
    deleting = dataclasses.replace(drains(), deleting=True)
    assert _strays(deleting, [state("a", drain=False)], ours=[]) == []


@pytest.mark.parametrize(("profiles", "lifted"), [
    ({}, ["a", "b"]),
    ({"p": dataclasses.replace(drains(), deleting=True)}, ["a", "b"]),
    ({"p": dataclasses.replace(drains(), deleting=True), "q": drains()}, []),
    ({"q": drains()}, []),
], ids=["no profile", "only one being deleted", "one live beside it", "one live"])
def test_with_no_live_profile_left_kvtune_s_cordons_are_lifted_and_else_left_to_its_passes(
    profiles: dict[str, Profile], lifted: list[str]
) -> None:
    actions = cordons_no_profile_holds(["b", "a"], profiles)
    assert [(a.node, a.unschedulable) for a in actions if isinstance(a, CordonNode)] == [
        (n, False) for n in lifted]
    assert len(actions) == len(lifted)
