"""Disruptive steps roll out at most maxUnavailable nodes at a time, drained or by hand."""

from __future__ import annotations

import datetime
import typing as t

import pytest
from kvtune_operator.assign import Assignment
from kvtune_operator.profiles import Profile
from kvtune_operator.rollout import budget, plan_rollout
from kvtune_operator.rollup import node_phase
from kvtune_operator.views import (
    CORDONED_ANNOTATION,
    DRAIN_FAILED_ANNOTATION,
    DRAIN_STARTED_ANNOTATION,
    CordonNode,
    EvictVmPods,
    PatchState,
    Snapshot,
    StateView,
    action_target,
)

from .builders import profile, state

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
STARTED = {DRAIN_STARTED_ANNOTATION: (NOW - datetime.timedelta(minutes=1)).isoformat(),
           CORDONED_ANNOTATION: "true"}


def snap(views: list[StateView], *, cordoned: t.Iterable[str] = (),
         pods: dict[str, int] | None = None) -> Snapshot:
    names = frozenset(v.name for v in views)
    return Snapshot(
        nodes={n: {} for n in names}, states={v.name: v for v in views},
        assignment=Assignment({"p": names}, {}),
        cordoned={n: True for n in cordoned}, vm_pods=pods or {},
    )


def drains(allow: bool = True, **rollout: t.Any) -> Profile:
    return profile("p", rollout={"allowDrain": allow, **rollout})


@pytest.mark.parametrize(("value", "matched", "expected"), [
    (1, 10, 1), (3, 10, 3), ("10%", 25, 2), ("10%", 5, 1), ("50%", 4, 2), (0, 10, 1)])
def test_the_budget_is_a_count_or_a_percentage_and_never_zero(
        value: int | str, matched: int, expected: int) -> None:
    assert budget(value, matched) == expected


def test_only_max_unavailable_nodes_start_draining() -> None:
    actions = plan_rollout(drains(), snap([state("a", drain=True), state("b", drain=True)]), NOW)
    assert actions[0] == CordonNode("a", True)
    assert isinstance(actions[1], PatchState) and actions[1].annotations[CORDONED_ANNOTATION]
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
    [action] = plan_rollout(drains(), snap([view], cordoned=["a"], pods={"a": 0}), NOW)
    assert isinstance(action, PatchState) and action.spec is not None
    assert action.spec["disruption"]["approved"] is True


def test_when_the_agent_is_done_the_node_is_uncordoned_and_the_approval_withdrawn() -> None:
    view = state("a", drain=False, approved=True, annotations=STARTED)
    actions = plan_rollout(drains(), snap([view], cordoned=["a"]), NOW)
    assert actions[0] == CordonNode("a", False)
    assert isinstance(actions[1], PatchState) and actions[1].spec is not None
    assert actions[1].spec["disruption"]["approved"] is False
    assert actions[1].annotations == {DRAIN_STARTED_ANNOTATION: None, CORDONED_ANNOTATION: None}


def test_an_approved_node_waits_while_the_agent_applies() -> None:
    view = state("a", drain=True, approved=True, annotations=STARTED)
    assert plan_rollout(drains(), snap([view], cordoned=["a"]), NOW) == []


def test_a_drain_past_its_timeout_is_abandoned_and_the_node_uncordoned() -> None:
    late = {**STARTED, DRAIN_STARTED_ANNOTATION: (NOW - datetime.timedelta(hours=1)).isoformat()}
    view = state("a", drain=True, annotations=late)
    actions = plan_rollout(drains(), snap([view], cordoned=["a"], pods={"a": 1}), NOW)
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
