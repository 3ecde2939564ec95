"""Nodes are assigned to the one profile that selects them; overlaps are conflicts."""

from __future__ import annotations

from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_operator.controller.assign import assign

NODES = {"a": {"pool": "vm"}, "b": {"pool": "vm", "gpu": "yes"}, "c": {"pool": "db"}}


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(match_labels=labels)


def test_each_node_goes_to_the_profile_that_selects_it() -> None:
    result = assign({"vms": sel(pool="vm"), "dbs": sel(pool="db")}, NODES)
    assert result.nodes == {"vms": frozenset({"a", "b"}), "dbs": frozenset({"c"})}
    assert result.conflicts == {}


def test_a_node_selected_by_two_profiles_belongs_to_neither() -> None:
    result = assign({"vms": sel(pool="vm"), "gpus": sel(gpu="yes")}, NODES)
    assert result.nodes == {"vms": frozenset({"a"}), "gpus": frozenset()}
    assert result.conflicts == {"b": ("gpus", "vms")}
    assert result.conflicts_of("vms") == {"b": ("gpus",)}
    assert result.conflicts_of("gpus") == {"b": ("vms",)}


def test_a_profile_that_selects_nothing_has_no_nodes() -> None:
    assert assign({"none": sel(pool="x")}, NODES).nodes == {"none": frozenset()}
