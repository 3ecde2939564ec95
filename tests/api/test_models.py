"""The API models: defaults, camelCase round trips, and the shipped samples."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from kvtune_api.v1alpha1 import HypervisorNodeState, HypervisorProfile

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "deploy" / "samples").glob("*.yaml"))


def minimal_profile() -> dict[str, object]:
    return {
        "apiVersion": "kvtune.io/v1alpha1",
        "kind": "HypervisorProfile",
        "metadata": {"name": "p"},
        "spec": {"nodeSelector": {"matchLabels": {"a": "b"}}},
    }


def test_a_minimal_profile_gets_the_conservative_defaults() -> None:
    spec = HypervisorProfile.model_validate(minimal_profile()).spec
    assert spec.mode == "Audit"
    assert spec.paused is False
    assert spec.memory.ksm == "Disabled"
    assert spec.memory.allow_overcommit is False
    assert spec.memory.vm_overhead_floor == "1Gi"
    assert spec.numa.numad == "Disabled"
    assert spec.cpu.allow_overcommit is False
    assert spec.rollout.allow_drain is False
    assert spec.rollout.allow_reboot is False
    assert spec.rollout.max_unavailable == 1
    assert spec.vmi is None
    assert spec.storage.block_luns is None
    assert spec.boot.settings == "Stage"  # and with allowReboot false, nothing is staged


def test_a_profile_dumps_with_kubernetes_camel_case_names() -> None:
    dumped = HypervisorProfile.model_validate(minimal_profile()).model_dump(exclude_none=True)
    assert dumped["spec"]["nodeSelector"] == {"matchLabels": {"a": "b"}, "matchExpressions": []}
    assert dumped["spec"]["memory"]["vmOverheadFloor"] == "1Gi"
    assert "allowDrain" in dumped["spec"]["rollout"]


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_every_sample_round_trips_through_the_model_unchanged(path: pathlib.Path) -> None:
    raw = yaml.safe_load(path.read_text())
    model = HypervisorProfile.model_validate(raw)
    again = HypervisorProfile.model_validate(model.model_dump(exclude_none=True))
    assert again == model
    assert model.metadata.name == raw["metadata"]["name"]


def test_a_node_state_round_trips_with_its_profile_reference() -> None:
    raw = {
        "apiVersion": "kvtune.io/v1alpha1",
        "kind": "HypervisorNodeState",
        "metadata": {"name": "node-a"},
        "spec": {"nodeName": "node-a", "profile": {"name": "p", "generation": 3}},
    }
    state = HypervisorNodeState.model_validate(raw)
    assert state.spec.profile.generation == 3
    assert state.spec.host.memory.ksm == "Disabled"
    assert state.status.sync_status == "Pending"
    assert HypervisorNodeState.model_validate(state.model_dump()) == state
