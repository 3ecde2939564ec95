"""The KSM planner: ksmd and ksmtuned as the profile wants them, left to KubeVirt where it
manages KSM."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from kvtune_agent.features.base import NodeMeta
from support.hosttree import (
    HostTree,
)

from ..specs import node_spec
from .planning import finding_of, plan_of, steps_of


def _merging(tmp_path: Path) -> HostTree:
    tree = HostTree(tmp_path).ksm(1, shared=100, sharing=4000)
    tree.unit("ksmtuned.service", wanted_by=["multi-user.target"])
    return tree.process(812, "bash", "bash", "/usr/sbin/ksmtuned")


def test_disabling_ksm_stops_ksmtuned_then_unmerges_and_stops_ksmd(tmp_path: Path) -> None:
    found = plan_of(_merging(tmp_path), node_spec(memory={"ksm": "Disabled"}))

    assert [(s.planned.id, s.kind, s.planned.path, s.planned.current, s.planned.desired)
            for s in found.steps] == [
        ("ksm/ksmtuned", "unit", "ksmtuned.service", "enabled,active", "disabled,inactive"),
        ("ksm/run", "sysfs", "/sys/kernel/mm/ksm/run", "1", "0"),
    ]
    assert "unmerge the 4000 shared pages (run=2)" in found.steps[1].planned.reason


def test_stopped_ksm_with_pages_still_merged_is_unmerged(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).ksm(0, shared=10, sharing=50)

    assert list(steps_of(plan_of(tree, node_spec(memory={"ksm": "Disabled"})))) == ["ksm/run"]


def test_ksm_managed_by_kubevirt_is_a_conflict_reported_not_fought(tmp_path: Path) -> None:
    meta = NodeMeta(labels={"kubevirt.io/ksm-enabled": "true"},
                    annotations={"kubevirt.io/ksm-handler-managed": "true"})

    found = plan_of(_merging(tmp_path), node_spec(memory={"ksm": "Disabled"}), meta)

    assert found.steps == ()
    conflict = finding_of(found, "KSMManagedByKubeVirt")
    assert (conflict.feature, conflict.severity) == ("KSM", "Error")
    assert "ksmConfiguration.nodeLabelSelector" in conflict.message


def test_kubevirts_ksm_label_alone_only_mirrors_ksm_and_is_no_conflict(tmp_path: Path) -> None:
    meta = NodeMeta(labels={"kubevirt.io/ksm-enabled": "true"},
                    annotations={"kubevirt.io/ksm-handler-managed": "false"})

    found = plan_of(_merging(tmp_path), node_spec(memory={"ksm": "Disabled"}), meta)

    assert list(steps_of(found)) == ["ksm/ksmtuned", "ksm/run"]


@pytest.mark.parametrize(("build", "mode", "steps", "reason"), [
    pytest.param(lambda t: t.ksm(0), "Enabled", {"ksm/run": "1"}, None, id="enabling starts ksmd"),
    pytest.param(lambda t: t.ksm(1), "Unmanaged", {}, None, id="unmanaged is left alone"),
    pytest.param(lambda t: None, "Disabled", {}, None, id="a kernel without KSM is already off"),
    pytest.param(lambda t: None, "Enabled", {}, "KSMUnsupported",
                 id="enabling KSM on a kernel without it is an error"),
])
def test_ksm_modes(
    tmp_path: Path, build: t.Callable[[HostTree], object], mode: str, steps: dict[str, str],
    reason: str | None,
) -> None:
    tree = HostTree(tmp_path)
    build(tree)

    found = plan_of(tree, node_spec(memory={"ksm": mode}))

    assert {i: s.desired for i, s in steps_of(found).items()} == steps
    assert [f.reason for f in found.findings if f.feature == "KSM"] == ([reason] if reason else [])
