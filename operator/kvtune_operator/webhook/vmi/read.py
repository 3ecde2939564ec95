"""How KubeVirt reads a VirtualMachineInstance: its fields, quantities and size (vCPUs, guest
memory, memory request), from an object the apiserver has not checked yet.

Why one reader: the overhead estimate, the mutation, the validation and the admission must all
read a VMI as KubeVirt does, and the same way as each other, or the webhook would shape a VMI
for one size and judge it by another. A mutating webhook sees a VMI before the schema check, so
every read tolerates any shape and an unreadable value is refused naming its field
(`VmiFieldError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kvtune_api import quantity as kvtune_quantity


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


def amount(vmi: Mapping[str, Any], kind: str, name: str) -> Decimal:
    """requests/limits[name] as a number; 0 when absent, as Kubernetes' ResourceList reads it."""
    value = _resource(vmi, kind, name)
    return Decimal(0) if value is None else quantity(value, f"spec.domain.resources.{kind}.{name}")


def memory_request_bytes(vmi: Mapping[str, Any]) -> int:
    """resources.requests.memory in bytes, 0 when unset: what KubeVirt sizes page tables from.
    KubeVirt's defaulting never fills the memory request (a limit alone leaves it 0)."""
    return math.ceil(amount(vmi, "requests", "memory"))


def guest_source(vmi: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The field the guest's RAM comes from as KubeVirt's defaulting sets memory.guest, and the
    value there as written: memory.guest, else a non-zero memory request, else the memory limit,
    else one hugepage; None when none is set."""
    guest = lookup(vmi, "spec", "domain", "memory", "guest")
    if guest is not None:
        return "spec.domain.memory.guest", guest
    for kind in ("requests", "limits"):
        if amount(vmi, kind, "memory"):
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
    if limit := math.ceil(amount(vmi, "limits", "memory")):
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
