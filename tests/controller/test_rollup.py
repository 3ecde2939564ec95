"""A profile's status is rolled up from its node states without rewriting unchanged status."""

from __future__ import annotations

import datetime

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from kvtune_operator.rollup import MAX_FAILING, node_phase, rollup, status_changed
from kvtune_operator.views import StateView

from .builders import profile, state

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
EMPTY = HypervisorProfileStatus()


def test_a_node_whose_agent_has_not_seen_the_spec_is_progressing() -> None:
    assert node_phase(state("a", observed=1, generation=2))[:2] == ("Progressing", "AgentPending")
    assert node_phase(None)[:2] == ("Progressing", "NotRendered")


def test_degraded_wins_over_waiting_and_waiting_over_ready() -> None:
    assert node_phase(state("a", ready=True, degraded="NoPLE", drain=True))[0] == "Degraded"
    assert node_phase(state("a", ready=True, drain=True))[0] == "Waiting"
    assert node_phase(state("a", ready=True))[0] == "Ready"


def test_all_nodes_ready_makes_the_profile_ready() -> None:
    states = {n: state(n, ready=True) for n in "abc"}
    status = rollup(profile(), states, {}, EMPTY, T0)
    assert (status.matched_nodes, status.ready_nodes, status.degraded_nodes) == (3, 3, 0)
    assert cond.is_true(status.conditions, cond.READY)
    assert not cond.is_true(status.conditions, cond.PROGRESSING)
    assert status.failing_nodes == []


def test_degraded_nodes_and_conflicts_are_counted_and_listed() -> None:
    states = {"a": state("a", ready=True), "b": state("b", degraded="NoPLE")}
    status = rollup(profile(), states, {"c": ("other",)}, EMPTY, T0)
    assert (status.matched_nodes, status.ready_nodes, status.degraded_nodes) == (3, 1, 2)
    assert [(f.node, f.reason) for f in status.failing_nodes] == [
        ("b", "NoPLE"), ("c", "ProfileConflict")]
    assert "HypervisorProfile other" in status.failing_nodes[1].message
    assert cond.is_true(status.conditions, cond.DEGRADED)


def test_the_failing_list_is_bounded() -> None:
    states = {f"n{i:03}": state(f"n{i:03}", degraded="Broken") for i in range(50)}
    status = rollup(profile(), states, {}, EMPTY, T0)
    assert status.degraded_nodes == 50
    assert len(status.failing_nodes) == MAX_FAILING


def test_a_profile_with_no_nodes_is_not_ready_and_says_why() -> None:
    ready = cond.find(rollup(profile(), {}, {}, EMPTY, T0).conditions, cond.READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "NoMatchingNodes")


def test_time_passing_alone_is_no_reason_to_write_status() -> None:
    states = {"a": state("a", ready=True)}
    first = rollup(profile(), states, {}, EMPTY, T0)
    second = rollup(profile(), states, {}, first, T1)
    assert not status_changed(first, second)
    assert second.conditions == first.conditions


def test_a_status_change_keeps_transition_times_of_unchanged_conditions() -> None:
    first = rollup(profile(), {"a": state("a", ready=True)}, {}, EMPTY, T0)
    second = rollup(profile(), {"a": state("a", degraded="X")}, {}, first, T1)
    assert status_changed(first, second)
    deg = cond.find(second.conditions, cond.DEGRADED)
    prog = cond.find(second.conditions, cond.PROGRESSING)
    assert deg is not None and deg.last_transition_time == T1
    assert prog is not None and prog.last_transition_time == T0


def test_kubevirt_conflicts_show_as_a_fourth_condition() -> None:
    status = rollup(profile(), {"a": state("a", ready=True)}, {}, EMPTY, T0, ["ksm clash"])
    found = cond.find(status.conditions, "KubeVirtCompatible")
    assert found is not None and (found.status, found.message) == ("False", "ksm clash")
    assert cond.is_true(status.conditions, cond.READY), "a warning, not a failure"


def test_nodes_whose_vms_break_the_promises_are_named_on_the_profile() -> None:
    ok, bad = state("a", ready=True), state("b", ready=True)
    bad_conditions = [*bad.state.status.conditions,
                      cond.make("VMsCompliant", "False", "Violations", "vm1 overlaps vm2")]
    bad = StateView(bad.name, bad.profile, bad.generation, bad.spec, bad.state.model_copy(
        update={"status": bad.state.status.model_copy(update={"conditions": bad_conditions})}))
    found = cond.find(rollup(profile(), {"a": ok, "b": bad}, {}, EMPTY, T0).conditions,
                      "VMsCompliant")
    assert found is not None and found.status == "False"
    assert "b (vm1 overlaps vm2)" in found.message
    clean = cond.find(rollup(profile(), {"a": ok}, {}, EMPTY, T0).conditions, "VMsCompliant")
    assert clean is not None and clean.status == "True"
