"""Rejecting VMIs that contradict their profile, and warning when no node has room for one.

Why: the mutation fills in what a VMI leaves unset but never overrules what its author set
(`mutate.py` says why). A VMI that explicitly asks for something the profile's nodes cannot give,
or that would overcommit memory the profile forbids to overcommit, must be refused at admission
with a message that names the field and the fix, rather than run badly or sit in Pending. The
validating webhook sees the VMI after the mutating one, so these checks judge the shaped VMI.

In Audit mode nothing is refused: what would be refused is returned as warnings, which
`kubectl` prints, so a profile can be trialled without breaking anyone's VMs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kvtune_api.kubevirt_overhead import Gi, Mi
from kvtune_api.v1alpha1.profile import VmiSettings

from ..profiles import Profile
from ..render import PROFILE_LABEL
from .mutate import CPU, MEMORY, RESOURCES
from .overhead import (
    VmiFieldError,
    effective_request,
    lookup,
    memory_overhead,
    memory_request_bytes,
    quantity,
    quantity_bytes,
    vcpu_count,
)
from .selection import SKIP_ANNOTATION, out_of_scope

OPT_OUT = f'or opt the VMI out with the annotation {SKIP_ANNOTATION}: "true"'

Findings = tuple[list[str], list[str]]
Check = Callable[[Profile, VmiSettings, Mapping[str, Any]], Findings]


def validate_vmi(
    profile: Profile, vmi: Mapping[str, Any], *, namespace_labels: Mapping[str, str]
) -> Findings:
    """(errors, warnings) for a VMI `profile` selects; ([], []) for one it leaves alone."""
    settings = profile.spec.vmi
    if settings is None or out_of_scope(profile, vmi, namespace_labels) is not None:
        return [], []
    errors: list[str] = []
    warnings: list[str] = []
    try:
        for check in CHECKS:
            found_errors, found_warnings = check(profile, settings, vmi)
            errors += found_errors
            warnings += found_warnings
    except VmiFieldError as unreadable:
        errors.append(str(unreadable))
    if profile.spec.mode == "Audit":
        return [], [f"Audit mode, would be refused: {e}" for e in errors] + warnings
    return errors, warnings


def _cpu(profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]) -> Findings:
    name = profile.name
    dedicated = lookup(vmi, *CPU, "dedicatedCpuPlacement")
    isolate = lookup(vmi, *CPU, "isolateEmulatorThread")
    errors = []
    if settings.dedicated_cpus and dedicated is False:
        errors.append(
            f"spec.domain.cpu.dedicatedCpuPlacement is false, but HypervisorProfile {name} gives "
            f"its VMs dedicated CPUs (vmi.dedicatedCpus): remove the field or set it to true, "
            f"{OPT_OUT}"
        )
    if settings.isolate_emulator_thread and isolate is False:
        errors.append(
            f"spec.domain.cpu.isolateEmulatorThread is false, but HypervisorProfile {name} keeps "
            f"QEMU's own threads off the vCPUs (vmi.isolateEmulatorThread): remove the field or "
            f"set it to true, {OPT_OUT}"
        )
    if isolate is True and dedicated is not True:
        errors.append(
            "spec.domain.cpu.isolateEmulatorThread: true needs spec.domain.cpu."
            "dedicatedCpuPlacement: true: set it, or remove isolateEmulatorThread"
        )
    return errors, []


def _numa(profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]) -> Findings:
    if lookup(vmi, *CPU, "numa", "guestMappingPassthrough") is None:
        return [], []
    missing = []
    if lookup(vmi, *CPU, "dedicatedCpuPlacement") is not True:
        missing.append("spec.domain.cpu.dedicatedCpuPlacement: true")
    if lookup(vmi, *MEMORY, "hugepages", "pageSize") is None:
        missing.append("spec.domain.memory.hugepages.pageSize")
    if not missing:
        return [], []
    return [
        "spec.domain.cpu.numa.guestMappingPassthrough needs "
        + " and ".join(missing)
        + ": set them, or remove guestMappingPassthrough"
    ], []


def _memory(profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]) -> Findings:
    if profile.spec.memory.allow_overcommit:
        return [], []
    forbids = (
        f"HypervisorProfile {profile.name} forbids memory overcommit "
        "(memory.allowOvercommit: false)"
    )
    errors = []
    if lookup(vmi, *RESOURCES, "overcommitGuestOverhead") is True:
        errors.append(
            f"spec.domain.resources.overcommitGuestOverhead is true, but {forbids}: remove the "
            "field or set it to false, so that the scheduler reserves KubeVirt's per-VM overhead"
        )
    guest = lookup(vmi, *MEMORY, "guest")
    request = effective_request(vmi, "memory")
    if (
        guest is not None
        and request is not None
        and quantity(guest, "spec.domain.memory.guest") > request
    ):
        errors.append(
            f"spec.domain.memory.guest ({guest}) is above the memory request "
            f"({_human(math.ceil(request))}), but {forbids}: give the guest at most "
            "spec.domain.resources.requests.memory, or raise the request"
        )
    return errors + _unequal(vmi, "memory", forbids), []


def _guaranteed_cpu(profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]) -> Findings:
    if not settings.dedicated_cpus and profile.spec.cpu.allow_overcommit:
        return [], []
    why = (
        f"HypervisorProfile {profile.name} gives VMs whole CPUs "
        "(vmi.dedicatedCpus, or cpu.allowOvercommit: false)"
    )
    return _unequal(vmi, "cpu", why), []


def _unequal(vmi: Mapping[str, Any], name: str, why: str) -> list[str]:
    request = lookup(vmi, *RESOURCES, "requests", name)
    limit = lookup(vmi, *RESOURCES, "limits", name)
    if request is None or limit is None:
        return []
    field = "spec.domain.resources.{}." + name
    if quantity(request, field.format("requests")) == quantity(limit, field.format("limits")):
        return []
    return [
        f"spec.domain.resources.requests.{name} ({request}) differs from limits.{name} "
        f"({limit}), but {why}: set both to the same value"
    ]


def _hugepages(profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]) -> Findings:
    size = lookup(vmi, *MEMORY, "hugepages", "pageSize")
    if size is None:
        return [], []
    name = profile.name
    allocated = sorted(p.size for p in profile.spec.memory.hugepages.pages)
    if not allocated:
        return [], [
            f"spec.domain.memory.hugepages.pageSize is {size}, but HypervisorProfile {name} "
            "allocates no hugepages on its nodes (memory.hugepages.pages is empty): the VMI can "
            "only start where someone else allocated them"
        ]
    errors = []
    if size not in allocated:
        errors.append(
            f"spec.domain.memory.hugepages.pageSize is {size}, but the nodes of HypervisorProfile "
            f"{name} allocate only {', '.join(allocated)} pages, so the VMI would never be "
            f"scheduled: use one of those sizes, {OPT_OUT}"
        )
    page = quantity_bytes(size, "spec.domain.memory.hugepages.pageSize")
    guest = _guest_bytes(vmi)
    if page and guest % page:
        errors.append(
            f"the guest memory ({_human(guest)}) is not a whole number of {size} hugepages: set "
            f"spec.domain.memory.guest and the memory request to a multiple of {size}"
        )
    return errors, []


def _guest_bytes(vmi: Mapping[str, Any]) -> int:
    guest = lookup(vmi, *MEMORY, "guest")
    if guest is None:
        return memory_request_bytes(vmi)
    return quantity_bytes(guest, "spec.domain.memory.guest")


def _scheduling(profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]) -> Findings:
    name = profile.name
    wanted = lookup(vmi, "spec", "nodeSelector", PROFILE_LABEL)
    if wanted is None or wanted == name:
        return [], []
    return [
        f"spec.nodeSelector asks for {PROFILE_LABEL}={wanted}, but the VMI is selected by "
        f"HypervisorProfile {name}: remove that nodeSelector entry, or change the VMI's labels "
        f"or namespace so that {wanted}'s vmi selectors pick it instead"
    ], []


CHECKS: tuple[Check, ...] = (_cpu, _numa, _memory, _guaranteed_cpu, _hugepages, _scheduling)


@dataclasses.dataclass(frozen=True)
class NodeCapacity:
    """What one ready node of a profile has free for another VMI (allocatable minus requested)."""

    node: str
    cpu_millis: int
    """Free CPU in thousandths of a CPU."""
    memory_bytes: int
    """Free `memory`."""
    hugepages_bytes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Free `hugepages-<size>` by page size ("2Mi", "1Gi")."""


@dataclasses.dataclass(frozen=True)
class VmiDemand:
    """What the VMI's virt-launcher pod requests from a node."""

    cpu_millis: int
    memory_bytes: int
    """`memory`: guest RAM plus KubeVirt's overhead, or only the overhead with hugepages."""
    hugepage_size: str | None
    hugepages_bytes: int

    def fits(self, node: NodeCapacity) -> bool:
        hugepages = node.hugepages_bytes.get(self.hugepage_size or "", 0)
        return (
            self.cpu_millis <= node.cpu_millis
            and self.memory_bytes <= node.memory_bytes
            and self.hugepages_bytes <= hugepages
        )


def vmi_demand(vmi: Mapping[str, Any], *, ratio: str | None = None) -> VmiDemand:
    """The requests KubeVirt renders into the VMI's pod (`ratio`: the KubeVirt CR's
    additionalGuestMemoryOverheadRatio)."""
    cpu = effective_request(vmi, "cpu")
    cpu_millis = vcpu_count(vmi) * 1000 if cpu is None else math.ceil(cpu * 1000)
    overhead = memory_overhead(vmi, ratio=ratio).total
    if lookup(vmi, *RESOURCES, "overcommitGuestOverhead") is True:
        overhead = 0  # KubeVirt then puts the overhead in the limit only
    guest = memory_request_bytes(vmi)
    size = lookup(vmi, *MEMORY, "hugepages", "pageSize")
    if size is None:
        return VmiDemand(cpu_millis, guest + overhead, None, 0)
    # With hugepages the guest RAM is requested as hugepages-<size>; `memory` holds the overhead.
    return VmiDemand(cpu_millis, overhead, str(size), guest)


def capacity_warning(
    vmi: Mapping[str, Any], nodes: Iterable[NodeCapacity], *, ratio: str | None = None
) -> str | None:
    """A warning when none of `nodes` (the profile's ready nodes) has room for the VMI, counting
    KubeVirt's overhead; None when one has."""
    demand = vmi_demand(vmi, ratio=ratio)
    # Stops at the first node with room: a profile may have thousands, and most VMIs fit.
    checked: list[NodeCapacity] = []
    for node in nodes:
        if demand.fits(node):
            return None
        checked.append(node)
    needs = _describe(
        demand.cpu_millis, demand.memory_bytes, demand.hugepage_size, demand.hugepages_bytes
    )
    if not checked:
        return f"no ready node of the profile to run this VMI, which needs {needs}"
    roomiest = sorted(checked, key=lambda n: (-n.memory_bytes, n.node))[:3]
    free = "; ".join(
        f"{n.node} has "
        + _describe(
            n.cpu_millis,
            n.memory_bytes,
            demand.hugepage_size,
            n.hugepages_bytes.get(demand.hugepage_size or "", 0),
        )
        for n in roomiest
    )
    return (
        f"no ready node of the profile has room for this VMI, which needs {needs} including "
        f"KubeVirt's overhead; it would stay Pending. Most free: {free}"
    )


def _describe(cpu_millis: int, memory: int, size: str | None, hugepages: int) -> str:
    text = f"{cpu_millis / 1000:g} CPU, {_human(memory)} memory"
    return text + (f", {_human(hugepages)} of hugepages-{size}" if size else "")


def _human(n: int) -> str:
    return f"{n / Gi:.2f}Gi" if n >= Gi else f"{math.ceil(n / Mi)}Mi"
