"""One snapshot for the daemons of all profiles per resync interval, and when it is rebuilt."""

from __future__ import annotations

from collections.abc import Mapping

from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller import passes as controller
from kvtune_operator.controller.views import Snapshot

from .builders import profile

NODES = {"a1": {"pool": "a"}, "b1": {"pool": "b"}, "c1": {"pool": "c"}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Builds:
    """A snapshot builder that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, profiles: Mapping[str, Profile]) -> Snapshot:
        self.count += 1
        return controller.snapshot(profiles, NODES, {}, {})


def fixture() -> tuple[controller.SharedSnapshot, Clock, Builds, dict[str, Profile]]:
    clock = Clock()
    return controller.SharedSnapshot(1.0, clock), clock, Builds(), {
        "a": profile("a"), "b": profile("b")}


def test_two_daemons_in_one_interval_get_the_same_snapshot() -> None:
    shared, clock, build, profiles = fixture()
    first = shared.get(profiles, "a", build, wrote=False)
    clock.now += 0.4
    assert shared.get(profiles, "b", build, wrote=False) is first
    assert build.count == 1


def test_a_snapshot_one_interval_old_is_rebuilt() -> None:
    shared, clock, build, profiles = fixture()
    first = shared.get(profiles, "a", build, wrote=False)
    clock.now += 1.0
    later = shared.get(profiles, "b", build, wrote=False)
    assert later is not first and build.count == 2
    assert shared.get(profiles, "a", build, wrote=False) is later


def test_a_profile_edit_reaches_its_next_pass_at_once() -> None:
    shared, clock, build, profiles = fixture()
    shared.get(profiles, "a", build, wrote=False)
    edited = {**profiles, "a": profile("a", generation=2, nodeSelector={
        "matchLabels": {"pool": "c"}})}
    clock.now += 0.1
    snap = shared.get(edited, "a", build, wrote=False)
    assert build.count == 2
    assert snap.assignment.nodes["a"] == {"c1"}


def test_a_new_profile_gets_a_snapshot_that_assigns_it_nodes() -> None:
    shared, _, build, profiles = fixture()
    shared.get({"a": profiles["a"]}, "a", build, wrote=False)
    snap = shared.get(profiles, "b", build, wrote=False)
    assert build.count == 2
    assert snap.assignment.nodes["b"] == {"b1"}


def test_another_profiles_edit_waits_for_the_next_interval() -> None:
    shared, _, build, profiles = fixture()
    first = shared.get(profiles, "a", build, wrote=False)
    edited = {**profiles, "b": profile("b", generation=2)}
    assert shared.get(edited, "a", build, wrote=False) is first


def test_a_daemon_whose_pass_wrote_gets_a_new_snapshot_which_the_others_share() -> None:
    shared, clock, build, profiles = fixture()
    first = shared.get(profiles, "b", build, wrote=False)
    clock.now += 0.1
    own = shared.get(profiles, "a", build, wrote=True)
    assert own is not first and build.count == 2
    assert shared.get(profiles, "b", build, wrote=False) is own
