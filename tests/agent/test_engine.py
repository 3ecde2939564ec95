"""The engine runs a feature it has never seen: one module over the Feature protocol is enough.

`Dial` below lives only in this test. Handed to the engine as the whole registry, its step is
journaled and written through the sequence it declares, its condition is reported, its hold is
asked before a restore, and a revert writes its original back through the same sequence; the
engine's code names none of it (docs/architecture.md, "Adding a feature").
"""

from __future__ import annotations

import datetime
from pathlib import Path

from kvtune_agent.engine import change
from kvtune_agent.engine.cycle import run_cycle
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features.base import Draft, Feature, NodeMeta, PlanInputs
from kvtune_agent.host.hostfs import HostFS
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import (
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
)
from support.hosttree import HostTree, KernelFS

from .specs import node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DIAL = "/sys/kernel/dial"
BUSY = "/run/dial-busy"
WANTED = "7"


class Dial(Feature[HostReport, str]):
    """A kernel value kvtune holds at WANTED, which moves only through "0"."""

    condition = "THP"  # any condition name of the vocabulary; the engine reads it, never knows it

    def read(self, fs: HostFS, host: HostReport) -> str | None:
        return fs.read_value(DIAL)

    def plan(self, inputs: PlanInputs, facts: str | None, out: Draft) -> None:
        if facts is not None and facts != WANTED:
            out.step("sysfs", "dial", "THP", DIAL, facts, WANTED, "the dial is held at 7")

    def sequence(self, path: str, now: str | None, value: str) -> list[str] | None:
        return ["0", value] if path == DIAL and now not in (None, "0", value) else None

    def hold_restore(self, fs: HostFS, path: str, original: str | None, approved: bool,
                     timeout: float) -> str | None:
        return "the dial is busy" if path == DIAL and fs.exists(BUSY) else None


def _cycle(tree: HostTree, fs: KernelFS, spec: HypervisorNodeStateSpec,
           previous: HypervisorNodeStateStatus) -> HypervisorNodeStateStatus:
    return run_cycle([Dial()], fs, spec, 3, NodeMeta(), previous, systemd=tree.systemd(),
                     now=NOW, timeout=5).status


def _dial(root: Path) -> str:
    return (root / DIAL.lstrip("/")).read_text().strip()


def test_a_feature_the_engine_never_saw_is_planned_journaled_written_and_reported(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file(DIAL, "3").systemctl()
    fs = tree.kernel()

    status = _cycle(tree, fs, node_spec(), HypervisorNodeStateStatus())

    assert [(path, value) for path, value in fs.writes if path == DIAL] == [
        (DIAL, "0"), (DIAL, WANTED)]
    assert _dial(tmp_path) == WANTED
    assert [(e.path, e.original, e.step) for e in Journal(fs).entries()] == [(DIAL, "3", "dial")]
    assert [(r.id, r.result) for r in status.results] == [("dial", "Applied")]
    condition = cond.find(status.conditions, "THP")
    assert condition is not None and (condition.status, condition.reason) == (
        "True", "AsSpecified")
    assert [c.type for c in status.conditions] == [
        cond.READY, cond.PROGRESSING, cond.DEGRADED, cond.WAITING, "THP"]


def test_its_restore_waits_on_its_hold_then_goes_back_through_its_sequence(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file(DIAL, "3").systemctl()
    fs = tree.kernel()
    applied = _cycle(tree, fs, node_spec(), HypervisorNodeStateStatus())
    tree.file(BUSY, "")

    waiting = _cycle(tree, fs, node_spec(revert=True), applied)

    assert [(r.id, r.result, r.message) for r in waiting.results] == [
        ("revert/dial", "Waiting", "the dial is busy")]
    assert _dial(tmp_path) == WANTED
    (tmp_path / BUSY.lstrip("/")).unlink()
    fs.writes.clear()

    reverted = _cycle(tree, fs, node_spec(revert=True), waiting)

    assert [(r.id, r.result) for r in reverted.results] == [("revert/dial", "Applied")]
    assert [(path, value) for path, value in fs.writes if path == DIAL] == [
        (DIAL, "0"), (DIAL, "3")]
    assert _dial(tmp_path) == "3" and not Journal(fs).entries()


def test_without_the_features_sequence_the_write_is_one_write() -> None:
    # The engine's own default: a kernel file no feature claims takes the value as given.
    assert change.sequences([Dial()])("/sys/other", "3", WANTED) is None
    assert change.sequences([Dial()])(DIAL, "3", WANTED) == ["0", WANTED]
