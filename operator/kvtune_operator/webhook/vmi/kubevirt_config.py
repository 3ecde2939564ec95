"""What of the KubeVirt CR changes how KubeVirt admits and sizes a VMI.

Why: a VMI kvtune shapes must be one KubeVirt accepts, and what KubeVirt accepts depends on its
configuration. Its create admitter refuses `spec.domain.memory.reservedOverhead` unless the
ReservedOverheadMemlock feature gate (Alpha, off by default) is on; virt-handler labels nodes
`kubevirt.io/cpumanager=true`, without which VMIs with dedicated CPUs stay Pending, only with the
CPUManager gate; the overhead ratio and the KubeVirt version (one of the overhead's constants
changed after v1.9) size every VM; and with vmRolloutStrategy: Stage KubeVirt refuses a guest
memory above the memory limit. The webhook indexes this from the one KubeVirt CR; without
KubeVirt installed it assumes a default installation of the newest release.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kvtune_api.kubevirt_overhead import QEMU_AFTER_V1_9, Mi, qemu_overhead_for

RESERVED_OVERHEAD_GATE = "ReservedOverheadMemlock"
CPU_MANAGER_GATE = "CPUManager"
#: spec.configuration.vmRolloutStrategy; KubeVirt takes an absent one for LiveUpdate.
LIVE_UPDATE = "LiveUpdate"
STAGE = "Stage"


@dataclasses.dataclass(frozen=True)
class KubeVirtConfig:
    """The parts of the KubeVirt CR the shaping depends on; the default is a default install."""

    installed: bool = False
    """Whether a KubeVirt CR was found; the other fields are a default install's when not."""
    feature_gates: frozenset[str] = frozenset()
    """spec.configuration.developerConfiguration.featureGates."""
    overhead_ratio: str | None = None
    """spec.configuration.additionalGuestMemoryOverheadRatio (a string there too)."""
    version: str | None = None
    """status.observedKubeVirtVersion; None: the newest release is assumed."""
    memory_overcommit: int = 100
    """spec.configuration.developerConfiguration.memoryOvercommit, in percent."""
    cpu_allocation_ratio: int = 10
    """spec.configuration.developerConfiguration.cpuAllocationRatio: vCPUs per requested CPU
    of a VMI without dedicated CPUs or a CPU request of its own."""
    vm_rollout_strategy: str = LIVE_UPDATE
    """spec.configuration.vmRolloutStrategy: with Stage, KubeVirt's create admitter refuses a
    guest memory above the memory limit (with LiveUpdate the limit may grow by hotplug)."""

    @classmethod
    def from_kubevirt(
        cls, spec: Mapping[str, Any], status: Mapping[str, Any]
    ) -> KubeVirtConfig:
        configuration = spec.get("configuration") or {}
        developer = configuration.get("developerConfiguration") or {}
        ratio = configuration.get("additionalGuestMemoryOverheadRatio")
        return cls(
            installed=True,
            feature_gates=frozenset(str(g) for g in developer.get("featureGates") or ()),
            overhead_ratio=None if ratio is None else str(ratio),
            version=status.get("observedKubeVirtVersion") or None,
            memory_overcommit=_positive(developer.get("memoryOvercommit"), 100),
            cpu_allocation_ratio=_positive(developer.get("cpuAllocationRatio"), 10),
            vm_rollout_strategy=str(configuration.get("vmRolloutStrategy") or LIVE_UPDATE),
        )

    @property
    def reserved_overhead(self) -> bool:
        """Whether KubeVirt admits spec.domain.memory.reservedOverhead."""
        return RESERVED_OVERHEAD_GATE in self.feature_gates

    @property
    def cpu_manager(self) -> bool:
        """Whether virt-handler labels nodes with a static CPU manager (dedicated CPUs run)."""
        return CPU_MANAGER_GATE in self.feature_gates

    @property
    def stage_rollout(self) -> bool:
        """Whether KubeVirt refuses a guest memory above the memory limit (IsVMRolloutStrategy
        LiveUpdate is false only for Stage)."""
        return self.vm_rollout_strategy == STAGE

    @property
    def qemu_overhead(self) -> int:
        return self._qemu[0]

    @property
    def version_note(self) -> str | None:
        """Why the QEMU overhead is the larger figure, where the version could not place it."""
        return self._qemu[1]

    @property
    def _qemu(self) -> tuple[int, str | None]:
        if self.installed and self.version is None:
            # Installed but not yet reporting a version (virt-operator still deploying).
            return QEMU_AFTER_V1_9, (
                "the KubeVirt CR has no status.observedKubeVirtVersion yet, so its QEMU overhead "
                f"is unknown: kvtune counts the larger, {QEMU_AFTER_V1_9 // Mi}Mi")
        return qemu_overhead_for(self.version)


def _positive(value: Any, default: int) -> int:
    """A positive integer setting, or KubeVirt's default where it is unset or unusable."""
    usable = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if usable else default


DEFAULT_KUBEVIRT = KubeVirtConfig()
