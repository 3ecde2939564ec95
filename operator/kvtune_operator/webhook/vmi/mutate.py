"""Shaping a selected VMI so that it uses what its profile prepared on the nodes.

Why: prepared nodes only help VMs that ask for pinned CPUs, hugepages and guaranteed memory, that
reserve enough overhead for QEMU, and that are scheduled onto those nodes. The mutating webhook
applies `mutate_vmi` and answers with its JSON patch.

The rule is "fill in, never overrule". A field the VMI's author left unset is set from the
profile; a value the author did set is kept, even where it contradicts the profile (e.g.
`dedicatedCpuPlacement: false`), because rewriting it silently would hide the conflict. Such
contradictions are refused with a message naming the field and the fix. An explicit `false` is
refused here, by the mutating webhook, rather than left to the validating one: KubeVirt's own
mutating webhook runs after kvtune's and re-serialises the spec, which drops a `false` of an
`omitempty` field, so by validation time (and when kvtune is reinvoked) the author's choice can no
longer be seen and would be filled in as `true`. Everything else is judged by `validate.py`.

The overhead floor is reached the way the cluster's KubeVirt accepts. With the
ReservedOverheadMemlock feature gate on, `reservedOverhead.addedOverhead` is raised. Without it
(the default: KubeVirt then refuses any `reservedOverhead`), the memory request and limit are
raised above the guest's RAM, which is pinned in `memory.guest` first: KubeVirt reserves what the
request holds beyond the guest in the virt-launcher pod beside its own estimate. Amounts are only
ever raised, and a larger reservation of the author's is kept. A hugepage size the author chose is
kept even when the profile names another: 1Gi pages back a guest at least as well as 2Mi ones, and
whether the nodes allocate that size is the validation's question, not the mutation's. With
hugepages the memory request is rounded up to whole pages, as KubeVirt wants it.

A zero memory or CPU request is read as KubeVirt reads it, as no request, and filled in like an
absent one. With the KubeVirt CR's vmRolloutStrategy: Stage, KubeVirt refuses a memory limit
below the guest, so an overcommitted request is not copied into the limit.

Applying the mutation to its own output changes nothing, so a reinvoked webhook is harmless; the
tests replay KubeVirt's real defaulting between the two calls (tests/support/kubevirt_oracle.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from kvtune_api.kubevirt_overhead import Gi, Mi, OverheadBreakdown
from kvtune_api.labels import READY_LABEL
from kvtune_api.v1alpha1.profile import HypervisorProfileSpec, VmiSettings

from ...common.profiles import PROFILE_LABEL, Profile
from .kubevirt_config import DEFAULT_KUBEVIRT, KubeVirtConfig
from .overhead import memory_overhead
from .paths import ADDED_OVERHEAD, CPU, MEMORY, RESOURCES
from .read import (
    VmiFieldError,
    beyond_guest_bytes,
    given,
    guest_bytes,
    lookup,
    memory_request_bytes,
    pod_memory_request_bytes,
    quantity,
    quantity_bytes,
    topology_vcpus,
)
from .selection import out_of_scope
from .validate import explicit_conflicts

#: Set by the agent on a node of a profile once it is ready; the VMI's nodeSelector asks for it
#: beside the operator's PROFILE_LABEL.
#: Annotations recording which profile shaped the VMI and KubeVirt's overhead figures for it.
MUTATED_BY_ANNOTATION = "kvtune.io/mutated-by"
OVERHEAD_ANNOTATION = "kvtune.io/overhead"

FLOOR_FIELD = "HypervisorProfile spec.memory.vmOverheadFloor"

JsonPatch = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class MutationResult:
    """The shaped VMI, the patch that produces it, and why nothing was done if so."""

    vmi: dict[str, Any]
    """A deep copy of the input with the profile applied (an unchanged copy when skipped)."""
    patch: JsonPatch
    """RFC 6902 operations turning the input into `vmi`, as an AdmissionReview wants them."""
    overhead: OverheadBreakdown | None
    """KubeVirt's overhead estimate for the shaped VMI; None when skipped."""
    skipped: str | None
    """Why the VMI was left alone; None when the profile shaped it."""
    refused: list[str] = dataclasses.field(default_factory=list)
    """Contradictions of the profile the mutating webhook refuses (Enforce mode); the VMI is
    left alone then."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """The same in Audit mode, where they are only reported."""


def mutate_vmi(
    profile: Profile,
    vmi: Mapping[str, Any],
    *,
    namespace_labels: Mapping[str, str],
    kubevirt: KubeVirtConfig = DEFAULT_KUBEVIRT,
) -> MutationResult:
    """Apply `profile`'s vmi settings to `vmi` if the profile selects it.

    `namespace_labels` are the labels of the VMI's namespace; `kubevirt` is what the KubeVirt CR
    says (feature gates, overhead ratio, version). Raises VmiFieldError when a field the mutation
    must read holds an unreadable value (answer the request with a 400 naming it), and ValueError
    for a ratio KubeVirt itself would refuse.
    """
    shaped = json_copy(dict(vmi))
    settings = profile.spec.vmi
    reason = out_of_scope(profile, vmi, namespace_labels)
    if settings is None or reason is not None:
        return MutationResult(shaped, [], None, reason or "the profile has no vmi section")
    if profile.spec.mode == "Audit":
        # Audit nodes are not prepared: steering VMIs to them would strand them in Pending. An
        # unreadable field is only a warning here too, as in the validating webhook.
        try:
            conflicts = explicit_conflicts(profile, settings, vmi)
        except VmiFieldError as unreadable:
            conflicts = [str(unreadable)]
        warnings = [f"Audit mode, would be refused: {c}" for c in conflicts]
        reason = f"HypervisorProfile {profile.name} is in Audit mode"
        return MutationResult(shaped, [], None, reason, warnings=warnings)
    conflicts = explicit_conflicts(profile, settings, vmi)
    if conflicts:
        return MutationResult(shaped, [], None, "refused", refused=conflicts)

    _place_cpus(settings, shaped)
    _back_memory(settings, shaped)
    _guarantee_resources(profile.spec, settings, shaped, kubevirt)
    floor = quantity_bytes(profile.spec.memory.vm_overhead_floor, FLOOR_FIELD)
    _reserve_floor(floor, shaped, kubevirt)
    _whole_pages(shaped)
    overhead = memory_overhead(shaped, kubevirt)
    _steer_and_record(profile.name, floor, overhead, shaped)
    return MutationResult(shaped, json_patch(vmi, shaped), overhead, None)


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists and scalars, as an AdmissionReview decodes to).
    copy.deepcopy does the same several times slower (it keeps a memo for cycles JSON cannot
    have), and the webhook copies every VMI it shapes."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


def _put(
    obj: dict[str, Any], path: tuple[str, ...], value: Any, *, overwrite: bool = False
) -> None:
    """Set `path` to `value`, creating parent objects; keep a value already there unless
    `overwrite`. A parent that is not an object is left for the apiserver's schema to reject."""
    *parents, leaf = path
    for key in parents:
        if obj.get(key) is None:
            obj[key] = {}
        obj = obj[key]
        if not isinstance(obj, dict):
            return
    if overwrite or obj.get(leaf) is None:
        obj[leaf] = value


def _place_cpus(settings: VmiSettings, vmi: dict[str, Any]) -> None:
    if settings.dedicated_cpus:
        _put(vmi, (*CPU, "dedicatedCpuPlacement"), True)
    # KubeVirt refuses an isolated emulator thread or NUMA passthrough without dedicated CPUs, so
    # a VMI whose author turned them off keeps neither (`explicit_conflicts` refuses that first
    # where the profile asks for them).
    if settings.isolate_emulator_thread and _dedicated(vmi):
        _put(vmi, (*CPU, "isolateEmulatorThread"), True)


def _dedicated(vmi: Mapping[str, Any]) -> bool:
    return lookup(vmi, *CPU, "dedicatedCpuPlacement") is True


def _back_memory(settings: VmiSettings, vmi: dict[str, Any]) -> None:
    if settings.hugepage_size is not None:
        _put(vmi, (*MEMORY, "hugepages", "pageSize"), settings.hugepage_size)
    hugepages = lookup(vmi, *MEMORY, "hugepages", "pageSize") is not None
    # KubeVirt's guestMappingPassthrough needs both dedicated CPUs and hugepages.
    if settings.numa_passthrough and _dedicated(vmi) and hugepages:
        _put(vmi, (*CPU, "numa", "guestMappingPassthrough"), {})


def _guarantee_resources(
    spec: HypervisorProfileSpec, settings: VmiSettings, vmi: dict[str, Any],
    kubevirt: KubeVirtConfig,
) -> None:
    # The static CPU manager pins only Guaranteed pods, and shared CPUs without PLE burn host
    # CPU on lock spinning: either reason asks for requests equal to limits.
    if settings.dedicated_cpus or not spec.cpu.allow_overcommit:
        _equalise(vmi, "cpu", str(topology_vcpus(vmi) or 1))
    # KubeVirt refuses a memory request unlike the limit with dedicated CPUs, overcommit or not.
    if not spec.memory.allow_overcommit or _dedicated(vmi):
        # With vmRolloutStrategy: Stage KubeVirt refuses a limit below the guest, which an
        # overcommitted request would be: the limit is then left out (KubeVirt sets the pod's
        # limit to its request for dedicated CPUs all the same; the validation warns).
        floor = guest_bytes(vmi) if kubevirt.stage_rollout else 0
        _equalise(vmi, "memory", lookup(vmi, *MEMORY, "guest"), limit_floor=floor)
    if not spec.memory.allow_overcommit:
        _put(vmi, (*RESOURCES, "overcommitGuestOverhead"), False)


def _equalise(vmi: dict[str, Any], name: str, fallback: Any, *, limit_floor: int = 0) -> None:
    """Fill the missing side(s) of requests/limits[name]: a request from the limit, else from
    `fallback`; a limit from the request, unless that is below `limit_floor`. A zero amount is
    missing, as KubeVirt reads it (a "0" request asks for nothing)."""
    request = given(vmi, "requests", name)
    limit = given(vmi, "limits", name)
    value = next((v for v in (request, limit, fallback) if v is not None), None)
    if value is None:
        return
    if request is None:
        _put(vmi, (*RESOURCES, "requests", name), value, overwrite=True)
    field = f"spec.domain.resources.requests.{name}"
    if limit is None and (not limit_floor or quantity(value if request is None else request,
                                                       field) >= limit_floor):
        _put(vmi, (*RESOURCES, "limits", name), value if request is None else request,
             overwrite=True)


def reservation(vmi: Mapping[str, Any], kubevirt: KubeVirtConfig) -> int:
    """The host memory a VMI's pod holds for QEMU and its helpers beside the guest's RAM:
    KubeVirt's estimate plus what the memory request holds beyond the guest."""
    return _held(memory_overhead(vmi, kubevirt), vmi)


def _held(estimate: OverheadBreakdown, vmi: Mapping[str, Any]) -> int:
    return estimate.total + beyond_guest_bytes(vmi)


def _reserve_floor(floor: int, vmi: dict[str, Any], kubevirt: KubeVirtConfig) -> None:
    estimate = memory_overhead(vmi, kubevirt)
    gap = floor - _held(estimate, vmi)
    if gap <= 0:
        return
    if kubevirt.reserved_overhead:
        # Rounded up to whole MiB for a readable quantity. With a ratio r > 1 KubeVirt multiplies
        # the addition too, so the reservation ends (r - 1) * gap above the floor: the safe side.
        added = estimate.added_overhead + gap
        _put(vmi, ADDED_OVERHEAD, _binary_quantity(_round_up(added, Mi)), overwrite=True)
        return
    # Without the gate: pin the guest's RAM, then raise the request (and a limit, keeping them
    # equal where they are) by the gap. A larger request also grows KubeVirt's page-table share,
    # so the result lands slightly above the floor; `_whole_pages` then rounds it to pages.
    guest = guest_bytes(vmi)
    request = memory_request_bytes(vmi)
    if pod_memory_request_bytes(vmi, kubevirt.memory_overcommit) < guest:
        # An overcommitted guest (allowed by the profile): raising the request to reach the floor
        # would undo the author's overcommit. Left alone; the validation warns.
        return
    _put(vmi, (*MEMORY, "guest"), _binary_quantity(guest))
    _raise_request(vmi, max(guest, request) + _round_up(gap, Mi))


def _whole_pages(vmi: dict[str, Any]) -> None:
    """A memory request raised to whole hugepages, which KubeVirt wants it to be. The total is
    rounded, so that neither a request of the author's off the boundary (KubeVirt admits one
    before the profile adds hugepages) nor kvtune's raise leaves it off; a guest that is not
    whole pages is refused before (`_guest_in_pages`)."""
    page = lookup(vmi, *MEMORY, "hugepages", "pageSize")
    request = memory_request_bytes(vmi)
    if page is None or not request:
        return
    unit = quantity_bytes(page, "spec.domain.memory.hugepages.pageSize")
    if unit and request % unit:
        _raise_request(vmi, _round_up(request, unit))


def _raise_request(vmi: dict[str, Any], raised: int) -> None:
    """The memory request set to `raised`, and a limit with it where one is below (a zero
    limit is none, and stays so)."""
    _put(vmi, (*RESOURCES, "requests", "memory"), _binary_quantity(raised), overwrite=True)
    limit = given(vmi, "limits", "memory")
    if limit is not None:
        field = "spec.domain.resources.limits.memory"
        _put(vmi, (*RESOURCES, "limits", "memory"),
             _binary_quantity(max(raised, quantity_bytes(limit, field))), overwrite=True)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _binary_quantity(n: int) -> str:
    """A quantity string for `n` bytes: Gi or Mi where it divides evenly, else bytes."""
    if n % Gi == 0:
        return f"{n // Gi}Gi"
    return f"{n // Mi}Mi" if n % Mi == 0 else str(n)


def _steer_and_record(
    name: str, floor: int, overhead: OverheadBreakdown, vmi: dict[str, Any]
) -> None:
    _put(vmi, ("spec", "nodeSelector", PROFILE_LABEL), name)
    _put(vmi, ("spec", "nodeSelector", READY_LABEL), "true")
    figures = {
        "floor": floor,
        "total": overhead.total,
        "components": overhead.components(),
    }
    # Sorted and compact, so that the same VMI always gets the same text (idempotence).
    text = json.dumps(figures, sort_keys=True, separators=(",", ":"))
    _put(vmi, ("metadata", "annotations", MUTATED_BY_ANNOTATION), name, overwrite=True)
    _put(vmi, ("metadata", "annotations", OVERHEAD_ANNOTATION), text, overwrite=True)


def json_patch(old: Any, new: Any, path: str = "") -> JsonPatch:
    """RFC 6902 operations turning `old` into `new`: objects are compared key by key, anything
    else (lists included) is replaced whole. Keys are escaped as RFC 6901 asks (`/` in
    `kvtune.io/overhead` becomes `~1`)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        ops: JsonPatch = [{"op": "remove", "path": _child(path, k)} for k in old if k not in new]
        for key, value in new.items():
            if key in old:
                ops += json_patch(old[key], value, _child(path, key))
            else:
                ops.append({"op": "add", "path": _child(path, key), "value": json_copy(value)})
        return ops
    # `type` too, because True == 1 in Python but not in JSON.
    if type(old) is type(new) and old == new:
        return []
    return [{"op": "replace", "path": path, "value": json_copy(new)}]


def _child(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"
