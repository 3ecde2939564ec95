"""The agent's labels on its own Node: what they should say, and that only a change is written."""

from __future__ import annotations

import datetime

import pytest
from kvtune_agent.agent import label_changes, ready_label
from kvtune_api import conditions as cond
from kvtune_api.labels import READY_LABEL
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus

from .specs import node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _status(ready: str) -> HypervisorNodeStateStatus:
    return HypervisorNodeStateStatus(conditions=cond.merge([], [cond.make(
        cond.READY, ready, "R", "", 1)], NOW))


@pytest.mark.parametrize(("revert", "ready", "label"), [
    (False, "True", "true"),
    (False, "False", "false"),
    (True, "True", None),
    (True, "False", None),
])
def test_the_ready_label_follows_ready_and_goes_when_the_node_leaves_its_profile(
    revert: bool, ready: str, label: str | None,
) -> None:
    assert ready_label(node_spec("Enforce", revert=revert), _status(ready)) == label


@pytest.mark.parametrize(("current", "wanted", "changes"), [
    ({READY_LABEL: "true"}, {READY_LABEL: "true"}, {}),
    ({}, {READY_LABEL: None}, {}),
    ({READY_LABEL: "true", "team": "vm"}, {READY_LABEL: None}, {READY_LABEL: None}),
    ({READY_LABEL: "false"}, {READY_LABEL: "true"}, {READY_LABEL: "true"}),
])
def test_only_labels_that_differ_from_the_node_are_written(
    current: dict[str, str], wanted: dict[str, str | None], changes: dict[str, str | None],
) -> None:
    assert label_changes(current, wanted) == changes
