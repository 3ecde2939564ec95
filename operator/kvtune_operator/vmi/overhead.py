"""KubeVirt's own estimate of the host memory a VMI needs beside its guest RAM.

Why: virt-launcher pods are OOM-killed when the memory reserved for QEMU and its helpers is too
small, and a flat 1 GiB per VM is wrong both ways. The webhook tops KubeVirt's reservation up to
the profile's floor, and the capacity check counts it, so both need KubeVirt's figure exactly,
not an approximation of it.

The structure and constants follow GetMemoryOverhead in kubevirt/kubevirt
`pkg/hypervisor/kvm/hypervisorbackend.go` (main after v1.9.0, where kubevirt/kubevirt#18388 raised
QemuOverhead from 30Mi to 50Mi), including its rounding through kilobytes. The figures are kept
apart in a typed breakdown so that they can be recorded on the VMI and read by a person.

It also holds how KubeVirt reads a VMI's size (vCPUs, memory request), because the estimate, the
mutation and the validation must all read it the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import quantity as k8s_quantity

# The kubernetes client is not annotated; this is parse_quantity's documented signature.
_parse_quantity: Callable[[Any], Decimal] = k8s_quantity.parse_quantity

Mi = 1024**2
Gi = 1024**3

# The `ps` RSS KubeVirt measured for each process of a virt-launcher pod. Shared libraries are
# counted once per process, which KubeVirt keeps as a safety margin.
VIRT_LAUNCHER_MONITOR = 25 * Mi
VIRT_LAUNCHER = 100 * Mi
VIRTLOGD = 25 * Mi
VIRTQEMUD = 40 * Mi
QEMU = 50 * Mi  # QEMU itself, without its guest's RAM and page tables
PROCESSES = VIRT_LAUNCHER_MONITOR + VIRT_LAUNCHER + VIRTLOGD + VIRTQEMUD + QEMU

PAGE_TABLE_DIVISOR = 512  # one bit of page table per 512 bytes of guest RAM
PER_VCPU = 8 * Mi
IOTHREAD = 8 * Mi
VIDEO = 32 * Mi  # unless spec.domain.devices.autoattachGraphicsDevice is false
ARM64_PFLASH = 128 * Mi  # two 64Mi UEFI pflash devices on arm64
VFIO = 1 * Gi  # VFIO locks guest RAM plus MMIO space, commonly 1Gi on x86
DOWNWARD_METRICS = 1 * Mi  # a memory-backed emptyDir for the metrics disk
PROBE_BINARY = 100 * Mi  # virt-probe, once when any exec probe is set
PER_EXEC_PROBE = 10 * Mi
SEV = 256 * Mi
TPM = 53 * Mi  # the swtpm process
DEDICATED_OR_GUARANTEED = 100 * Mi


class VmiFieldError(ValueError):
    """A VMI field holds a value that cannot be read (the webhook answers it with a 400)."""


def lookup(obj: Any, *path: str) -> Any:
    """The value at `path` in nested mappings, or None where a level is absent or not a mapping.

    Mutating webhooks see objects before the apiserver checks them against the schema, so a level
    may hold anything; reading must not crash on it.
    """
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def quantity(value: Any, field: str) -> Decimal:
    """A Kubernetes quantity as a number, or VmiFieldError naming the field."""
    try:
        return _parse_quantity(value)
    except (ValueError, TypeError, InvalidOperation):
        raise VmiFieldError(f"{field}: {value!r} is not a Kubernetes quantity (e.g. 8Gi)") from None


def quantity_bytes(value: Any, field: str) -> int:
    """A memory quantity in whole bytes, rounded up as Kubernetes' Quantity.Value() does."""
    return math.ceil(quantity(value, field))


def _resource(vmi: Mapping[str, Any], kind: str, name: str) -> Any:
    return lookup(vmi, "spec", "domain", "resources", kind, name)


def effective_request(vmi: Mapping[str, Any], name: str) -> Decimal | None:
    """requests[name], or limits[name] when only a limit is given (KubeVirt's defaulting)."""
    for kind in ("requests", "limits"):
        value = _resource(vmi, kind, name)
        if value is not None:
            return quantity(value, f"spec.domain.resources.{kind}.{name}")
    return None


def memory_request_bytes(vmi: Mapping[str, Any]) -> int:
    """The guest RAM KubeVirt sizes page tables from: resources.requests.memory after KubeVirt's
    defaulting fills it from limits.memory, else from memory.guest (at the default 100%
    memoryOvercommit)."""
    request = effective_request(vmi, "memory")
    if request is not None:
        return math.ceil(request)
    guest = lookup(vmi, "spec", "domain", "memory", "guest")
    return 0 if guest is None else quantity_bytes(guest, "spec.domain.memory.guest")


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


def has_vfio(vmi: Mapping[str, Any]) -> bool:
    """Host devices, GPUs or an SR-IOV interface: devices passed through with VFIO."""
    devices = lookup(vmi, "spec", "domain", "devices")
    interfaces = lookup(devices, "interfaces") or []
    return (
        bool(lookup(devices, "hostDevices"))
        or bool(lookup(devices, "gpus"))
        or any(lookup(i, "sriov") is not None for i in interfaces)
    )


def _wants_guaranteed_qos(vmi: Mapping[str, Any]) -> bool:
    """Memory and CPU requests non-zero and equal to their limits (KubeVirt's
    WantsToHaveQOSGuaranteed, after its defaulting of requests from limits)."""
    for name in ("memory", "cpu"):
        request = effective_request(vmi, name)
        limit = _resource(vmi, "limits", name)
        if not request or limit is None:
            return False
        if request != quantity(limit, f"spec.domain.resources.limits.{name}"):
            return False
    return True


def _probes(vmi: Mapping[str, Any]) -> int:
    execs = sum(
        lookup(vmi, "spec", probe, "exec") is not None
        for probe in ("livenessProbe", "readinessProbe")
    )
    return execs * PER_EXEC_PROBE + (PROBE_BINARY if execs else 0)


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


def _ceil_kilo(n: int) -> int:
    """n in units of 1000, rounded up (Quantity.ScaledValue(resource.Kilo))."""
    return -(-n // 1000)


def _ratio_extra(total: int, ratio: str | None) -> int:
    """What additionalGuestMemoryOverheadRatio adds: KubeVirt multiplies the total in kilobytes
    by (ratio - 1) as a float and truncates, so the result is whole kilobytes."""
    if not ratio:
        return 0
    try:
        factor = float(ratio)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor >= 1.0):
        # KubeVirt's own webhook refuses such a ratio; below 1 the estimate would shrink.
        raise ValueError(
            f"KubeVirt spec.configuration.additionalGuestMemoryOverheadRatio: {ratio!r} is not "
            "a number of at least 1.0"
        )
    return int(_ceil_kilo(total) * (factor - 1.0)) * 1000


@dataclasses.dataclass(frozen=True)
class OverheadBreakdown:
    """KubeVirt's overhead estimate for one VMI, each component in bytes."""

    page_tables: int
    processes: int
    vcpus: int
    iothread: int
    video: int
    arm64_firmware: int
    vfio: int
    downward_metrics: int
    probes: int
    sev: int
    tpm: int
    dedicated_or_guaranteed: int
    added_overhead: int
    ratio: int

    @property
    def total(self) -> int:
        """The memory KubeVirt adds to the virt-launcher pod beside the guest RAM."""
        return sum(dataclasses.astuple(self))

    def components(self) -> dict[str, int]:
        """The non-zero components by camelCase name, for an annotation a person reads."""
        return {
            _camel(f.name): value
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name))
        }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def memory_overhead(vmi: Mapping[str, Any], *, ratio: str | None = None) -> OverheadBreakdown:
    """KubeVirt's memory overhead estimate for `vmi` as it will be after KubeVirt's defaulting.

    `ratio` is the KubeVirt CR's spec.configuration.additionalGuestMemoryOverheadRatio (a string
    there too); the guest architecture is the VMI's spec.architecture.
    """
    guest_kilo = _ceil_kilo(memory_request_bytes(vmi))
    dedicated = lookup(vmi, "spec", "domain", "cpu", "dedicatedCpuPlacement") is True
    graphics = lookup(vmi, "spec", "domain", "devices", "autoattachGraphicsDevice")
    volumes = lookup(vmi, "spec", "volumes") or []
    base = OverheadBreakdown(
        page_tables=guest_kilo * 1000 // PAGE_TABLE_DIVISOR,
        processes=PROCESSES,
        vcpus=PER_VCPU * vcpu_count(vmi),
        iothread=IOTHREAD,
        video=0 if graphics is False else VIDEO,
        arm64_firmware=ARM64_PFLASH if lookup(vmi, "spec", "architecture") == "arm64" else 0,
        vfio=VFIO if has_vfio(vmi) else 0,
        downward_metrics=(
            DOWNWARD_METRICS
            if any(lookup(v, "downwardMetrics") is not None for v in volumes)
            else 0
        ),
        probes=_probes(vmi),
        sev=SEV if _has_sev(vmi) else 0,
        tpm=TPM if _has_tpm(vmi) else 0,
        dedicated_or_guaranteed=(
            DEDICATED_OR_GUARANTEED if dedicated or _wants_guaranteed_qos(vmi) else 0
        ),
        added_overhead=_added_overhead(vmi),
        ratio=0,
    )
    # The ratio is applied last, to everything above, as in KubeVirt.
    return dataclasses.replace(base, ratio=_ratio_extra(base.total, ratio))
