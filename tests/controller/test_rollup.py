"""A profile's status is rolled up from its node states without rewriting unchanged status."""

from __future__ import annotations

import datetime

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from kvtune_operator.common.nodestate import StateView, node_phase
from kvtune_operator.controller.rollup import MAX_FAILING, rollup, status_changed
from support.sections import HostSections

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


MACVTAP: HostSections = {
    "network": {"macvtap": [{"name": "dp", "nicSelector": {"names": ["ens2f0", "ens3f0"]}},
                            {"name": "mgmt2", "nicSelector": {"names": ["ens4f0"]}}]}}


def _offering(node: str, *lowers: str, observed: int | None = 1) -> StateView:
    """A node state whose agent offers resources dp (on the first lower device) and mgmt2."""
    return state(node, ready=True, observed=observed,
                 macvtap=list(zip(("dp", "mgmt2"), lowers, strict=False)))


def _macvtap(states: dict[str, StateView | None]) -> tuple[list[str], tuple[str, str, str]]:
    status = rollup(profile(**MACVTAP), states, {}, EMPTY, T0)
    found = cond.find(status.conditions, "MacvtapConfig")
    assert found is not None
    return ([f"{r.name}={r.lower_device}" for r in status.macvtap],
            (found.status, found.reason, found.message))


def test_nodes_offering_the_same_macvtap_nics_share_one_device_plugin_config() -> None:
    resources, (status, reason, message) = _macvtap(
        {n: _offering(n, "ens2f0", "ens4f0") for n in "ab"})

    assert resources == ["dp=ens2f0", "mgmt2=ens4f0"]
    assert (status, reason) == ("True", "Uniform")
    assert message.startswith("every node offers dp on ens2f0, mgmt2 on ens4f0")


def test_nodes_that_differ_get_only_what_all_offer_alike_and_are_named() -> None:
    resources, (status, reason, message) = _macvtap({
        "a": _offering("a", "ens2f0", "ens4f0"), "b": _offering("b", "ens3f0", "ens4f0"),
        "c": _offering("c", "ens2f0")})

    assert resources == []
    assert (status, reason) == ("False", "NodesDiffer")
    assert ("a offers dp on ens2f0, mgmt2 on ens4f0; b offers dp on ens3f0, mgmt2 on ens4f0; "
            "c offers dp on ens2f0.") in message


def test_a_node_not_yet_reported_leaves_the_macvtap_config_unknown() -> None:
    _, (status, reason, message) = _macvtap(
        {"a": _offering("a", "ens2f0"), "b": _offering("b", observed=None), "c": None})

    assert (status, reason) == ("Unknown", "NodesPending")
    assert "2 node(s) have not reported yet: b, c" in message


def test_a_profile_without_macvtap_has_no_macvtap_condition() -> None:
    status = rollup(profile(), {"a": _offering("a", "ens2f0")}, {}, EMPTY, T0)

    assert cond.find(status.conditions, "MacvtapConfig") is None and status.macvtap == []
