"""Shaping a selected VMI so that it uses what its profile prepared on the nodes.

Why: prepared nodes only help VMs that ask for pinned CPUs, hugepages and guaranteed memory, that
reserve enough overhead for QEMU, and that are scheduled onto those nodes. The mutating webhook
applies `mutate_vmi` and answers with its JSON patch.

The rule is "fill in, never overrule". A field the VMI's author left unset is set from the
profile; a value the author did set is kept, even where it contradicts the profile (e.g.
`dedicatedCpuPlacement: false`), because rewriting it silently would hide the conflict. Such
contradictions are rejected by the validating webhook (`validate.py`) with a message naming the
field and the fix. The one exception is `reservedOverhead.addedOverhead`, an amount rather than a
choice: it is only ever raised, to reach the profile's `memory.vmOverheadFloor`, and a larger
value of the author's is kept. Likewise a hugepage size the author chose is kept even when the
profile names another: 1Gi pages back a guest at least as well as 2Mi ones, and whether the nodes
allocate that size is the validation's question, not the mutation's.

Applying the mutation to its own output changes nothing, so a reinvoked webhook is harmless.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from kvtune_api.kubevirt_overhead import Gi, Mi, OverheadBreakdown
from kvtune_api.labels import READY_LABEL
from kvtune_api.v1alpha1.profile import HypervisorProfileSpec, VmiSettings

from ..profiles import Profile
from ..render import PROFILE_LABEL
from .overhead import lookup, memory_overhead, quantity_bytes, topology_vcpus
from .selection import out_of_scope

#: Set by the agent on a node of a profile once it is ready; the VMI's nodeSelector asks for it
#: beside the operator's PROFILE_LABEL.
#: Annotations recording which profile shaped the VMI and KubeVirt's overhead figures for it.
MUTATED_BY_ANNOTATION = "kvtune.io/mutated-by"
OVERHEAD_ANNOTATION = "kvtune.io/overhead"

CPU = ("spec", "domain", "cpu")
MEMORY = ("spec", "domain", "memory")
RESOURCES = ("spec", "domain", "resources")
ADDED_OVERHEAD = (*MEMORY, "reservedOverhead", "addedOverhead")
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


def mutate_vmi(
    profile: Profile,
    vmi: Mapping[str, Any],
    *,
    namespace_labels: Mapping[str, str],
    overhead_ratio: str | None = None,
) -> MutationResult:
    """Apply `profile`'s vmi settings to `vmi` if the profile selects it.

    `namespace_labels` are the labels of the VMI's namespace; `overhead_ratio` is the KubeVirt
    CR's spec.configuration.additionalGuestMemoryOverheadRatio. Raises VmiFieldError when a field
    the mutation must read holds an unreadable value (answer the request with a 400 naming it),
    and ValueError for a ratio KubeVirt itself would refuse.
    """
    shaped = json_copy(dict(vmi))
    settings = profile.spec.vmi
    reason = out_of_scope(profile, vmi, namespace_labels)
    if reason is None and profile.spec.mode == "Audit":
        # Audit nodes are not prepared: steering VMIs to them would strand them in Pending.
        reason = f"HypervisorProfile {profile.name} is in Audit mode"
    if reason is not None or settings is None:
        return MutationResult(shaped, [], None, reason)

    _place_cpus(settings, shaped)
    _back_memory(settings, shaped)
    _guarantee_resources(profile.spec, settings, shaped)
    floor = quantity_bytes(profile.spec.memory.vm_overhead_floor, FLOOR_FIELD)
    _top_up_overhead(floor, shaped, overhead_ratio)
    overhead = memory_overhead(shaped, ratio=overhead_ratio)
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
    # a VMI whose author turned them off keeps neither (validation reports the conflict).
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
    spec: HypervisorProfileSpec, settings: VmiSettings, vmi: dict[str, Any]
) -> None:
    # The static CPU manager pins only Guaranteed pods, and shared CPUs without PLE burn host
    # CPU on lock spinning: either reason asks for requests equal to limits.
    if settings.dedicated_cpus or not spec.cpu.allow_overcommit:
        _equalise(vmi, "cpu", str(topology_vcpus(vmi) or 1))
    if not spec.memory.allow_overcommit:
        _equalise(vmi, "memory", lookup(vmi, *MEMORY, "guest"))
        _put(vmi, (*RESOURCES, "overcommitGuestOverhead"), False)
    request = lookup(vmi, *RESOURCES, "requests", "memory")
    if request is not None:
        _put(vmi, (*MEMORY, "guest"), request)


def _equalise(vmi: dict[str, Any], name: str, fallback: Any) -> None:
    """Fill the missing side(s) of requests/limits[name]: a request from the limit, as KubeVirt's
    defaulting does, else from `fallback`; a limit from the request."""
    request = lookup(vmi, *RESOURCES, "requests", name)
    limit = lookup(vmi, *RESOURCES, "limits", name)
    value = next((v for v in (request, limit, fallback) if v is not None), None)
    if value is None:
        return
    _put(vmi, (*RESOURCES, "requests", name), value)
    _put(vmi, (*RESOURCES, "limits", name), lookup(vmi, *RESOURCES, "requests", name))


def _top_up_overhead(floor: int, vmi: dict[str, Any], ratio: str | None) -> None:
    estimate = memory_overhead(vmi, ratio=ratio)
    if estimate.total >= floor:
        return
    # Rounded up to whole MiB for a readable quantity. With a ratio r > 1 KubeVirt multiplies the
    # addition too, so the reservation ends (r - 1) * gap above the floor: on the safe side.
    needed = -(-(estimate.added_overhead + floor - estimate.total) // Mi) * Mi
    _put(vmi, ADDED_OVERHEAD, _binary_quantity(needed), overwrite=True)


def _binary_quantity(n: int) -> str:
    """A whole number of MiB as a quantity string, in Gi where it divides evenly."""
    return f"{n // Gi}Gi" if n % Gi == 0 else f"{n // Mi}Mi"


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
