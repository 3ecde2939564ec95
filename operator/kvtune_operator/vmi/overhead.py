"""KubeVirt's own estimate of the host memory a VMI needs beside its guest RAM, read from a VMI.

Why: virt-launcher pods are OOM-killed when the memory reserved for QEMU and its helpers is too
small, and a flat 1 GiB per VM is wrong both ways. The webhook tops KubeVirt's reservation up to
the profile's floor, and the capacity check counts it, so both need KubeVirt's figure exactly,
not an approximation of it. The formula itself is `kvtune_api.kubevirt_overhead`, shared with
the node agent's audit of running VMs; this module reads its inputs from a VMI as KubeVirt does.

It also holds how KubeVirt reads a VMI's size (vCPUs, memory request), because the estimate, the
mutation and the validation must all read it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kvtune_api import quantity as kvtune_quantity
from kvtune_api.kubevirt_overhead import OverheadBreakdown, estimate

from .kubevirt_config import DEFAULT_KUBEVIRT, KubeVirtConfig


class VmiFieldError(ValueError):
    """A VMI field holds a value that cannot be read (the webhook answers it with a 400)."""


def lookup(obj: Any, *path: str) -> Any:
    """The value at `path` in nested mappings, or None where a level is absent or not a mapping.

    Mutating webhooks see objects before the apiserver checks them against the schema, so a level
    may hold anything; reading must not crash on it.
    """
    for key in path:
        # `type() is dict` first: decoded JSON is dicts, and the ABC check alone was a tenth of
        # an admission's CPU.
        if obj is None or (type(obj) is not dict and not isinstance(obj, Mapping)):
            return None
        obj = obj.get(key)
    return obj


def quantity(value: Any, field: str) -> Decimal:
    """A Kubernetes quantity as a number, or VmiFieldError naming the field and the accepted
    form: read by the apiserver's grammar, so "2 Gi" or "1_000" is refused, not rewritten."""
    try:
        return kvtune_quantity.parse(value, field)
    except kvtune_quantity.QuantityError as refused:
        raise VmiFieldError(str(refused)) from None


def check_given_quantities(vmi: Mapping[str, Any]) -> None:
    """Read every quantity the webhook uses where its author wrote it, so that an unreadable one
    is refused naming that field: KubeVirt's defaulting, which the mutation replays, copies a
    guest size to the memory request and a CPU request to the limit before they are read."""
    for path in (
        ("spec", "domain", "memory", "guest"),
        *(("spec", "domain", "resources", kind, name)
          for kind in ("requests", "limits") for name in ("memory", "cpu")),
    ):
        value = lookup(vmi, *path)
        if value is not None:
            quantity(value, ".".join(path))


def quantity_bytes(value: Any, field: str) -> int:
    """A memory quantity in whole bytes, rounded up as Kubernetes' Quantity.Value() does."""
    return math.ceil(quantity(value, field))


def _resource(vmi: Mapping[str, Any], kind: str, name: str) -> Any:
    return lookup(vmi, "spec", "domain", "resources", kind, name)


def given(vmi: Mapping[str, Any], kind: str, name: str) -> Any:
    """requests/limits[name] as written, or None where it is absent or zero: KubeVirt takes a
    zero amount for none (Quantity.IsZero, and `Value() > 0` in its admitter)."""
    value = _resource(vmi, kind, name)
    if value is None or not quantity(value, f"spec.domain.resources.{kind}.{name}"):
        return None
    return value


def request_field(vmi: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """The field and value as written of requests[name], or of limits[name] when only a limit
    is given (a zero one is not)."""
    for kind in ("requests", "limits"):
        value = given(vmi, kind, name)
        if value is not None:
            return f"spec.domain.resources.{kind}.{name}", value
    return None


def effective_request(vmi: Mapping[str, Any], name: str) -> Decimal | None:
    """requests[name], or limits[name] when only a limit is given (a zero one is not)."""
    found = request_field(vmi, name)
    return None if found is None else quantity(found[1], found[0])


def _amount(vmi: Mapping[str, Any], kind: str, name: str) -> Decimal:
    """requests/limits[name] as a number; 0 when absent, as Kubernetes' ResourceList reads it."""
    value = _resource(vmi, kind, name)
    return Decimal(0) if value is None else quantity(value, f"spec.domain.resources.{kind}.{name}")


def memory_request_bytes(vmi: Mapping[str, Any]) -> int:
    """resources.requests.memory in bytes, 0 when unset: what KubeVirt sizes page tables from.
    KubeVirt's defaulting never fills the memory request (a limit alone leaves it 0)."""
    return math.ceil(_amount(vmi, "requests", "memory"))


def guest_source(vmi: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The field the guest's RAM comes from as KubeVirt's defaulting sets memory.guest, and the
    value there as written: memory.guest, else a non-zero memory request, else the memory limit,
    else one hugepage; None when none is set."""
    guest = lookup(vmi, "spec", "domain", "memory", "guest")
    if guest is not None:
        return "spec.domain.memory.guest", guest
    for kind in ("requests", "limits"):
        if _amount(vmi, kind, "memory"):
            return f"spec.domain.resources.{kind}.memory", _resource(vmi, kind, "memory")
    page = lookup(vmi, "spec", "domain", "memory", "hugepages", "pageSize")
    return None if page is None else ("spec.domain.memory.hugepages.pageSize", page)


def guest_bytes(vmi: Mapping[str, Any]) -> int:
    """The guest's RAM as KubeVirt's defaulting sets memory.guest (`guest_source`); 0 when
    nothing sizes it."""
    source = guest_source(vmi)
    return 0 if source is None else quantity_bytes(source[1], source[0])


def pod_memory_request_bytes(vmi: Mapping[str, Any], memory_overcommit: int) -> int:
    """The memory request virt-controller renders for the pod's guest part (WithMemoryRequests):
    the VMI's request; where it is absent or zero, the limit; without that, an explicit zero
    request asks for nothing, and an absent one for the guest scaled by KubeVirt's
    memoryOvercommit percentage."""
    if request := memory_request_bytes(vmi):
        return request
    if limit := math.ceil(_amount(vmi, "limits", "memory")):
        return limit
    if _resource(vmi, "requests", "memory") is not None:
        return 0
    return guest_bytes(vmi) * 100 // memory_overcommit


def beyond_guest_bytes(vmi: Mapping[str, Any]) -> int:
    """What the memory request holds above the guest's RAM. KubeVirt reserves it in the pod
    beside its overhead estimate (with hugepages it adds the difference to the pod's `memory`
    explicitly), so it is as much room for QEMU as the estimate is."""
    return max(0, memory_request_bytes(vmi) - guest_bytes(vmi))


def _topology_field(vmi: Mapping[str, Any], name: str) -> int:
    value = lookup(vmi, "spec", "domain", "cpu", name)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VmiFieldError(f"spec.domain.cpu.{name}: {value!r} is not a non-negative integer")
    return value


def topology_vcpus(vmi: Mapping[str, Any]) -> int:
    """cores * sockets * threads, each 1 when unset; 0 when none is set."""
    fields = [_topology_field(vmi, n) for n in ("cores", "sockets", "threads")]
    if not any(fields):
        return 0
    return math.prod(f or 1 for f in fields)


def vcpu_count(vmi: Mapping[str, Any]) -> int:
    """The vCPUs KubeVirt gives the guest: the topology, else (as KubeVirt's defaulting does) the
    CPU limit, else the CPU request, rounded up; at least 1."""
    if vcpus := topology_vcpus(vmi):
        return vcpus
    for kind in ("limits", "requests"):
        value = _resource(vmi, kind, "cpu")
        if value is not None:
            return max(1, math.ceil(quantity(value, f"spec.domain.resources.{kind}.cpu")))
    return 1


def listed(vmi: Mapping[str, Any], *path: str) -> list[Any]:
    """The list at `path`; [] when absent, VmiFieldError naming the field when not a list (the
    apiserver's schema check comes after the webhooks)."""
    value = lookup(vmi, *path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise VmiFieldError(f"{'.'.join(path)}: {value!r} is not a list")
    return value


def has_vfio(vmi: Mapping[str, Any]) -> bool:
    """Host devices, GPUs or an SR-IOV interface: devices passed through with VFIO."""
    devices = lookup(vmi, "spec", "domain", "devices")
    interfaces = listed(vmi, "spec", "domain", "devices", "interfaces")
    return (
        bool(lookup(devices, "hostDevices"))
        or bool(lookup(devices, "gpus"))
        or any(lookup(i, "sriov") is not None for i in interfaces)
    )


def _wants_guaranteed_qos(vmi: Mapping[str, Any]) -> bool:
    """KubeVirt's WantsToHaveQOSGuaranteed on the VMI after its defaulting, which copies a CPU
    limit into an absent CPU request but leaves the memory request alone: the memory request is 0
    with a limit, or equal to the limit; the CPU request non-zero and equal to its limit."""
    memory_request = _amount(vmi, "requests", "memory")
    memory_limit = _amount(vmi, "limits", "memory")
    memory = (not memory_request and bool(memory_limit)) or (
        bool(memory_request) and memory_request == memory_limit
    )
    cpu_limit = _amount(vmi, "limits", "cpu")
    cpu_request = _amount(vmi, "requests", "cpu") or cpu_limit
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
