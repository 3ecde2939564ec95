"""The transparent hugepages planner."""

from __future__ import annotations

from pathlib import Path

from support.hosttree import (
    HostTree,
)

from ..specs import node_spec
from .planning import plan_of, steps_of


def test_thp_is_set_to_the_wanted_mode(tmp_path: Path) -> None:
    found = plan_of(HostTree(tmp_path).thp("always"),
                  node_spec(memory={"transparentHugepages": "madvise"}))

    step = steps_of(found)["thp"]
    assert (step.path, step.current, step.desired, step.disruption) == (
        "/sys/kernel/mm/transparent_hugepage/enabled", "always", "madvise", "Live")
