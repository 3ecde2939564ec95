"""The plan over every registered feature: a host that matches gets none; planning is pure."""

from __future__ import annotations

from pathlib import Path

from kvtune_agent.features.base import Plan
from kvtune_agent.wiring import plan, probe_host
from support.hosttree import (
    intel_two_socket,
)

from .features.planning import pages, plan_of
from .specs import node_spec


def test_a_host_that_already_matches_gets_no_steps_and_no_findings(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)
    spec = node_spec(memory={**pages(count=32), "ksm": "Disabled",
                             "transparentHugepages": "never"},
                     cpu={"ple": "Required"}, numa={"numad": "Disabled"})

    assert plan_of(tree, spec) == Plan()


def test_planning_is_a_pure_function_of_its_inputs(tmp_path: Path) -> None:
    host = probe_host(intel_two_socket(tmp_path).ksm(1).fs())
    spec = node_spec(memory=pages(count=40))

    assert plan(spec, host) == plan(spec, host)
