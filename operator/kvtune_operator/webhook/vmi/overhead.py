"""KubeVirt's own estimate of the host memory a VMI needs beside its guest RAM, for a VMI.

Why: virt-launcher pods are OOM-killed when the memory reserved for QEMU and its helpers is too
small, and a flat 1 GiB per VM is wrong both ways. The webhook tops KubeVirt's reservation up to
the profile's floor, and the capacity check counts it, so both need KubeVirt's figure exactly,
not an approximation of it. The formula itself is `kvtune_api.kubevirt_overhead`, shared with
the node agent's audit of running VMs; this module gathers its inputs from a VMI as KubeVirt
does, through the general reader (`read.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvtune_api.kubevirt_overhead import OverheadBreakdown, estimate

from .kubevirt_config import DEFAULT_KUBEVIRT, KubeVirtConfig
from .read import amount, has_vfio, lookup, memory_request_bytes, quantity_bytes, vcpu_count


def _wants_guaranteed_qos(vmi: Mapping[str, Any]) -> bool:
    """KubeVirt's WantsToHaveQOSGuaranteed on the VMI after its defaulting, which copies a CPU
    limit into an absent CPU request but leaves the memory request alone: the memory request is 0
    with a limit, or equal to the limit; the CPU request non-zero and equal to its limit."""
    memory_request = amount(vmi, "requests", "memory")
    memory_limit = amount(vmi, "limits", "memory")
    memory = (not memory_request and bool(memory_limit)) or (
        bool(memory_request) and memory_request == memory_limit
    )
    cpu_limit = amount(vmi, "limits", "cpu")
    cpu_request = amount(vmi, "requests", "cpu") or cpu_limit
    return memory and bool(cpu_request) and cpu_request == cpu_limit


def _exec_probes(vmi: Mapping[str, Any]) -> int:
    return sum(
        lookup(vmi, "spec", probe, "exec") is not None
        for probe in ("livenessProbe", "readinessProbe")
    )


def _has_tpm(vmi: Mapping[str, Any]) -> bool:
    tpm = lookup(vmi, "spec", "domain", "devices", "tpm")
    return tpm is not None and lookup(tpm, "enabled") is not False


def _has_sev(vmi: Mapping[str, Any]) -> bool:
    # SEV-ES is a policy of `sev`, so SEV, SEV-ES and SEV-SNP all show as one of these two.
    security = lookup(vmi, "spec", "domain", "launchSecurity")
    return lookup(security, "sev") is not None or lookup(security, "snp") is not None


def _added_overhead(vmi: Mapping[str, Any]) -> int:
    added = lookup(vmi, "spec", "domain", "memory", "reservedOverhead", "addedOverhead")
    field = "spec.domain.memory.reservedOverhead.addedOverhead"
    return 0 if added is None else quantity_bytes(added, field)


def memory_overhead(
    vmi: Mapping[str, Any], kubevirt: KubeVirtConfig = DEFAULT_KUBEVIRT
) -> OverheadBreakdown:
    """KubeVirt's memory overhead estimate for `vmi` as it will be after KubeVirt's defaulting,
    for the KubeVirt configuration and version `kubevirt`; the guest architecture is the VMI's
    spec.architecture (amd64 when unset)."""
    dedicated = lookup(vmi, "spec", "domain", "cpu", "dedicatedCpuPlacement") is True
    volumes = lookup(vmi, "spec", "volumes") or []
    return estimate(
        guest_bytes=memory_request_bytes(vmi),
        vcpus=vcpu_count(vmi),
        video=lookup(vmi, "spec", "domain", "devices", "autoattachGraphicsDevice") is not False,
        arm64=lookup(vmi, "spec", "architecture") == "arm64",
        vfio=has_vfio(vmi),
        downward_metrics=any(lookup(v, "downwardMetrics") is not None for v in volumes),
        exec_probes=_exec_probes(vmi),
        sev=_has_sev(vmi),
        tpm=_has_tpm(vmi),
        dedicated_or_guaranteed=dedicated or _wants_guaranteed_qos(vmi),
        added_overhead=_added_overhead(vmi),
        ratio=kubevirt.overhead_ratio,
        qemu=kubevirt.qemu_overhead,
    )
