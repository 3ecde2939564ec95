"""What the webhook reads from the KubeVirt CR, and the warnings that depend on it."""

from __future__ import annotations

import pytest
from kvtune_operator.webhook.vmi import KubeVirtConfig
from kvtune_operator.webhook.vmi.validate import validate_vmi

from webhook import make_profile, make_vmi


def test_the_kubevirt_cr_gives_gates_ratio_version_and_allocation_settings() -> None:
    spec = {"configuration": {
        "additionalGuestMemoryOverheadRatio": "1.25",
        "developerConfiguration": {"featureGates": ["CPUManager", "ReservedOverheadMemlock"],
                                   "memoryOvercommit": 150, "cpuAllocationRatio": 4},
        "vmRolloutStrategy": "Stage",
    }}
    config = KubeVirtConfig.from_kubevirt(spec, {"observedKubeVirtVersion": "v1.9.0"})
    assert config == KubeVirtConfig(
        installed=True, feature_gates=frozenset({"CPUManager", "ReservedOverheadMemlock"}),
        overhead_ratio="1.25", version="v1.9.0", memory_overcommit=150, cpu_allocation_ratio=4,
        vm_rollout_strategy="Stage",
    )
    assert config.reserved_overhead and config.cpu_manager and config.stage_rollout


def test_without_a_rollout_strategy_kubevirt_rolls_out_live() -> None:
    assert not KubeVirtConfig.from_kubevirt({}, {}).stage_rollout


@pytest.mark.parametrize("overcommit", [None, 0, -5, "150", True])
def test_an_unusable_setting_is_kubevirts_default(overcommit: object) -> None:
    spec = {"configuration": {"developerConfiguration": {"memoryOvercommit": overcommit}}}
    assert KubeVirtConfig.from_kubevirt(spec, {}).memory_overcommit == 100


def test_an_empty_kubevirt_cr_is_a_default_install() -> None:
    config = KubeVirtConfig.from_kubevirt({}, {})
    assert config == KubeVirtConfig(installed=True)
    assert not config.reserved_overhead and not config.cpu_manager


PINNED = make_vmi({"cpu": {"cores": 2, "dedicatedCpuPlacement": True},
                   "resources": {"requests": {"cpu": "2", "memory": "2Gi"},
                                 "limits": {"cpu": "2", "memory": "2Gi"}}})


@pytest.mark.parametrize(
    ("config", "warned"),
    [
        pytest.param(KubeVirtConfig(installed=True), True, id="KubeVirt without the gate"),
        pytest.param(KubeVirtConfig(installed=True, feature_gates=frozenset({"CPUManager"})),
                     False, id="KubeVirt with the gate"),
        pytest.param(KubeVirtConfig(), False, id="no KubeVirt CR to judge by"),
    ],
)
def test_dedicated_cpus_without_kubevirts_cpumanager_gate_are_a_warning(
    config: KubeVirtConfig, warned: bool
) -> None:
    profile = make_profile(vmi={"isolateEmulatorThread": False}, memory={"vmOverheadFloor": "0"})
    errors, warnings = validate_vmi(profile, PINNED, namespace_labels={}, kubevirt=config)
    assert errors == []
    assert any("CPUManager feature gate is off" in w for w in warnings) is warned
