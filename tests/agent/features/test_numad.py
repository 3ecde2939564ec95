"""The numad planner: its unit as the profile wants it, flagged beside the static CPU manager."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.hosttree import (
    HostTree,
)

from ..specs import node_spec
from .planning import finding_of, plan_of, steps_of


def test_numad_disabled_stops_and_disables_a_running_numad(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).unit("numad.service", wanted_by=["multi-user.target"])
    tree.process(700, "numad")

    [step] = plan_of(tree, node_spec(numa={"numad": "Disabled"})).steps

    assert (step.kind, step.planned.path, step.planned.desired) == (
        "unit", "numad.service", "disabled,inactive")


def test_numad_enabled_with_a_static_cpu_manager_is_planned_with_a_warning(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).unit("numad.service")
    tree.kubelet_config("cpuManagerPolicy: static\n")

    found = plan_of(tree, node_spec(numa={"numad": "Enabled"}))

    assert steps_of(found)["numad"].desired == "enabled,active"
    assert finding_of(found, "NumadWithStaticCpuManager").severity == "Warning"


def test_numad_left_unmanaged_is_flagged_where_the_static_cpu_manager_pins(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).unit("numad.service", wanted_by=["multi-user.target"])
    tree.process(700, "numad").kubelet_config("cpuManagerPolicy: static\n")

    found = plan_of(tree, node_spec(numa={"numad": "Unmanaged"}))

    assert found.steps == ()
    warning = finding_of(found, "NumadWithStaticCpuManager")
    assert "numa.numad is Unmanaged and numad runs" in warning.message


@pytest.mark.parametrize(("masked", "reason"), [
    (False, "NumadNotInstalled"), (True, "NumadMasked"),
])
def test_numad_enabled_that_cannot_start_is_an_error(
    tmp_path: Path, masked: bool, reason: str
) -> None:
    tree = HostTree(tmp_path)
    if masked:
        tree.unit("numad.service", masked=True)

    found = plan_of(tree, node_spec(numa={"numad": "Enabled"}))

    assert found.steps == ()
    assert finding_of(found, reason).severity == "Error"
