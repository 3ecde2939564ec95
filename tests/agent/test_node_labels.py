"""The agent's labels on its own Node: what they should say, and that only a change is written."""

from __future__ import annotations

import datetime
import typing as t
from pathlib import Path

import pytest
from kvtune_agent import nfd
from kvtune_agent.agent import Agent, AgentSettings, label_changes, ready_label
from kvtune_agent.engine.journal import JOURNAL_PATH
from kvtune_agent.engine.status import REVERTED
from kvtune_api import conditions as cond
from kvtune_api.labels import JOURNAL_LABEL, JOURNAL_PENDING, READY_LABEL
from kvtune_api.v1alpha1.common import ConditionStatus
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from support.agent import StoredState
from support.hosttree import intel_two_socket

from .specs import node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _status(ready: ConditionStatus) -> HypervisorNodeStateStatus:
    return HypervisorNodeStateStatus(conditions=cond.merge([], [cond.make(
        cond.READY, ready, "R", "", 1)], NOW))


@pytest.mark.parametrize(("revert", "ready", "label"), [
    (False, "True", "true"),
    (False, "False", "false"),
    (True, "True", None),
    (True, "False", None),
])
def test_the_ready_label_follows_ready_and_goes_when_the_node_leaves_its_profile(
    revert: bool, ready: ConditionStatus, label: str | None,
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


def test_the_journal_label_comes_before_any_host_write_and_goes_once_all_is_undone(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).ksm(1).systemctl()
    journal = tmp_path / JOURNAL_PATH.lstrip("/")
    writes: list[tuple[dict[str, str | None], bool]] = []

    class Recorded(StoredState):
        def patch_labels(self, labels: t.Mapping[str, str | None]) -> None:
            writes.append((dict(labels), journal.exists()))
            super().patch_labels(labels)

    state = Recorded("Enforce")
    agent = Agent(state,
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))

    agent.step()

    assert writes[0] == ({JOURNAL_LABEL: JOURNAL_PENDING}, False)
    assert journal.exists() and state.labels[JOURNAL_LABEL] == JOURNAL_PENDING
    state.body = None  # the operator deleted the state (the revert timed out)

    agent.step()

    assert not journal.exists() and (tmp_path / "sys/kernel/mm/ksm/run").read_text() == "1\n"
    assert state.labels == {}
    assert writes[-1] == ({JOURNAL_LABEL: None}, False), "the journal label goes last"


def test_reverted_is_reported_only_once_the_feature_file_and_ready_label_are_gone(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).ksm(1).systemctl()
    features = tmp_path / nfd.FEATURES_FILE.lstrip("/")
    seen: list[tuple[bool, bool]] = []

    class Watched(StoredState):
        def patch_status(self, status: dict[str, t.Any]) -> None:
            reported = HypervisorNodeStateStatus.model_validate(status)
            if cond.is_true(reported.conditions, REVERTED):
                # What the operator finds once it reads Reverted (it then deletes the state).
                seen.append((features.exists(), READY_LABEL in self.labels))
            super().patch_status(status)

    state = Watched("Enforce")
    agent = Agent(state,
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))
    agent.step()
    assert features.exists() and READY_LABEL in state.labels
    assert seen == [], "nothing is reverted before the revert"
    assert state.body is not None
    state.body["spec"]["revert"] = True

    agent.step()

    assert seen == [(False, False)]
