"""The Node Feature Discovery feature file: kvtune.io/ labels, written only when they change."""

from __future__ import annotations

import datetime
import typing as t
from pathlib import Path

from kvtune_agent import nfd
from kvtune_agent.engine.status import node_status
from kvtune_agent.features import FEATURES as REGISTRY
from kvtune_agent.features.base import Plan
from kvtune_agent.wiring import plan, probe_host
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus
from support.hosttree import HostTree, intel_two_socket

from .specs import Flags, node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
FEATURES = Path(nfd.FEATURES_FILE.lstrip("/"))


def _spec(mode: str = "Enforce", **flags: t.Unpack[Flags]) -> HypervisorNodeStateSpec:
    return node_spec(mode, memory={"hugepages": {"pages": [{"size": "1Gi", "count": 32}]}},
                     **flags)


def _status(tree: HostTree, spec: HypervisorNodeStateSpec) -> HypervisorNodeStateStatus:
    host = probe_host(tree.fs())
    return node_status(REGISTRY, spec, 1, host, plan(spec, host), None, HypervisorNodeStateStatus(),
                       NOW)


def test_the_features_of_a_prepared_host_leave_readiness_to_the_agents_own_label(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path)

    assert nfd.features(_spec(), _status(tree, _spec())) == {
        "kvtune.io/hugepages-1Gi": "true",
        "kvtune.io/ksm-off": "true",
        "kvtune.io/numa-nodes": "2",
        "kvtune.io/ple-enabled": "true",
        "kvtune.io/ple-supported": "true",
    }


def test_what_the_probe_could_not_establish_is_left_out_not_guessed(tmp_path: Path) -> None:
    spec = node_spec()
    status = node_status(REGISTRY, spec, 1, probe_host(HostTree(tmp_path).fs()), Plan(), None,
                         HypervisorNodeStateStatus(), NOW)

    labels = nfd.features(spec, status)

    assert "kvtune.io/ple-supported" not in labels and "kvtune.io/ple-enabled" not in labels
    assert labels["kvtune.io/numa-nodes"] == "0"


def test_hugepages_not_yet_allocated_are_not_ready(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).ksm(1)
    spec = node_spec(memory={"hugepages": {"pages": [{"size": "1Gi", "count": 64}]}})

    labels = nfd.features(spec, _status(tree, spec))

    assert (labels["kvtune.io/hugepages-1Gi"], labels["kvtune.io/ksm-off"]) == ("false", "false")


def test_publish_writes_key_value_lines_once_and_leaves_an_unchanged_file_alone(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path)
    status = _status(tree, _spec())

    assert nfd.publish(tree.fs(), _spec(), status)
    written = (tmp_path / FEATURES).stat().st_mtime_ns
    assert not nfd.publish(tree.fs(), _spec(), status)

    assert (tmp_path / FEATURES).stat().st_mtime_ns == written
    lines = (tmp_path / FEATURES).read_text().splitlines()
    assert lines[0].startswith("# ")
    assert "kvtune.io/numa-nodes=2" in lines[1:]
    assert all(line.startswith("kvtune.io/") and "=" in line for line in lines[1:])
    assert sorted(p.name for p in (tmp_path / FEATURES).parent.iterdir()) == ["kvtune"]


def test_audit_and_paused_publish_nothing(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)

    for spec in (_spec("Audit"), _spec(paused=True)):
        assert not nfd.publish(tree.fs(), spec, _status(tree, spec))

    assert not (tmp_path / FEATURES).exists()


def test_moving_to_audit_withdraws_the_file_and_pausing_keeps_it(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)
    nfd.publish(tree.fs(), _spec(), _status(tree, _spec()))

    assert not nfd.publish(tree.fs(), _spec(paused=True), _status(tree, _spec(paused=True)))
    assert (tmp_path / FEATURES).exists()
    assert nfd.publish(tree.fs(), _spec("Audit"), _status(tree, _spec("Audit")))

    assert not (tmp_path / FEATURES).exists()


def test_leaving_the_profile_withdraws_the_file(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)
    nfd.publish(tree.fs(), _spec(), _status(tree, _spec()))

    assert nfd.publish(tree.fs(), _spec(revert=True), _status(tree, _spec(revert=True)))

    assert not (tmp_path / FEATURES).exists()
    assert not nfd.withdraw(tree.fs())
