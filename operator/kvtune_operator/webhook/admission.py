"""The admission webhook's answers for a VirtualMachineInstance, from the operator's indexes.

Why apart from `vmi/`: those functions judge one VMI against one profile. An admission first has
to find that profile among all of them, refuse a VMI that two profiles claim, and know which
nodes could run it, all from what kopf's indexes hold in memory, so that an admission makes no
API request. This module does that and turns the results into an AdmissionReview response: the
mutation's own JSON patch, warnings, or a refusal (`Refused`) naming what to fix. It is pure; the
server (`server.py`) only decodes the request and sends the answer.

A VMI selected by two profiles is refused rather than given to one of them: each profile would
steer it to different nodes with different CPU and memory settings, and picking one by name
would hide an overlap of selectors the admin did not intend (nodes claimed by two profiles are
likewise reported as a conflict, not shared). Profiles in Audit mode never refuse, so a VMI
claimed only by Audit profiles gets a warning instead.

Capacity is judged against what a ready node of the profile has allocatable, not what is still
free: the operator does not index every Pod in the cluster. The warning therefore means "larger
than any ready node", which is the mistake worth catching at admission; a VMI that fits an empty
node but not a busy one waits in Pending, where the scheduler says why.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from kvtune_api.labels import READY_LABEL

from ..common.node_facts import NodeFacts
from ..common.nodestate import StateView, node_phase
from ..common.profiles import PROFILE_LABEL, Profile
from .vmi import (
    DEFAULT_KUBEVIRT,
    KubeVirtConfig,
    NodeCapacity,
    VmiFieldError,
    capacity_warning,
    mutate_vmi,
    numa_fit,
    smt_alignment,
    validate_vmi,
)
from .vmi.mutate import JsonPatch
from .vmi.read import quantity, quantity_bytes
from .vmi.selection import SKIP_ANNOTATION, out_of_scope
from .vmi.sriov_resources import unoffered

HUGEPAGES_PREFIX = "hugepages-"
Operation = Literal["mutate", "validate"]
#: What an admission decided, for the metrics: a mutation patched or skipped the VMI, a
#: validation allowed or skipped it, either refused it.
Decision = Literal["patched", "allowed", "skipped", "denied"]


class Refused(Exception):
    """The VMI is refused. `code` is the HTTP status the AdmissionReview carries: 400 for a field
    that cannot be read, 403 for a VMI two profiles claim, 422 for a contradiction, 500 when the
    cluster (not the VMI) is misconfigured."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class ClusterView:
    """What an admission reads: the webhook's indexes, one value per object name."""

    profiles: Mapping[str, Profile]
    node_labels: Mapping[str, Mapping[str, str]]
    node_states: Mapping[str, StateView]
    allocatable: Mapping[str, NodeCapacity]
    kubevirt: KubeVirtConfig = DEFAULT_KUBEVIRT
    """What the KubeVirt CR says (feature gates, overhead ratio, version); a default install of
    the newest release when KubeVirt's CRD or CR is not there."""
    networks: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """"<namespace>/<name>" of each NetworkAttachmentDefinition naming a resource -> it."""
    resources: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    """Node -> the extended resources its status.allocatable offers."""


def node_capacity(name: str, allocatable: Mapping[str, Any]) -> NodeCapacity:
    """A Node's status.allocatable as the capacity check counts it."""
    field = f"Node {name} status.allocatable.{{}}"
    return NodeCapacity(
        node=name,
        cpu_millis=int(quantity(allocatable.get("cpu", 0), field.format("cpu")) * 1000),
        memory_bytes=quantity_bytes(allocatable.get("memory", 0), field.format("memory")),
        hugepages_bytes={
            key.removeprefix(HUGEPAGES_PREFIX): quantity_bytes(value, field.format(key))
            for key, value in allocatable.items()
            if key.startswith(HUGEPAGES_PREFIX)
        },
    )


def review(
    operation: Operation,
    view: ClusterView,
    request: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
) -> tuple[dict[str, Any], Decision]:
    """The AdmissionReview answering `request` (an AdmissionReview's `request`), and what was
    decided. Only CREATE is judged: the webhook configurations send nothing else, and a VMI's
    spec is immutable afterwards."""
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    decision: Decision = "skipped"
    vmi = request.get("object") or {}
    try:
        if request.get("operation") == "CREATE":
            warnings: list[str] = []
            if operation == "mutate":
                patch = shape(view, vmi, namespace_labels, warnings)
                if patch:
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
                    decision = "patched"
            else:
                decision = check(view, vmi, namespace_labels, warnings)
            if warnings:
                response["warnings"] = warnings
    except Refused as refused:
        response.update(allowed=False, status={"code": refused.code, "message": str(refused)})
        decision = "denied"
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}, decision


def shape(
    view: ClusterView,
    vmi: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    warnings: list[str],
) -> JsonPatch:
    """The mutating webhook: the JSON patch shaping the VMI as the one profile that selects it
    says; empty when no profile does or the VMI opted out. Refuses an explicit choice against the
    profile, which KubeVirt's defaulting would erase before the validating webhook sees it."""
    profile = _enforcing(_claims(view, vmi, namespace_labels), vmi)
    if profile is None:
        return []
    with _answering(vmi):
        result = mutate_vmi(
            profile, vmi, namespace_labels=namespace_labels, kubevirt=view.kubevirt
        )
    if result.refused:
        raise Refused(f"{_what(vmi)}: " + "; ".join(result.refused), code=422)
    warnings += result.warnings
    if result.skipped is not None:
        return []
    return result.patch + smt_alignment.align(profile, result.vmi, view.kubevirt,
                                              _smt(view, profile)).patch


def check(
    view: ClusterView,
    vmi: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    warnings: list[str],
) -> Literal["allowed", "skipped"]:
    """The validating webhook: refuse a VMI that contradicts its profile, and warn when it is
    larger than every ready node of the profile. Returns whether a profile judged it (for the
    metrics)."""
    claims = _claims(view, vmi, namespace_labels)
    profile = _enforcing(claims, vmi)
    if profile is None:
        if len(claims) > 1:  # all in Audit mode, or _enforcing would have refused
            warnings.append(f"Audit mode, would be refused: {_conflict(claims, vmi)}")
        return "skipped"
    with _answering(vmi):
        errors, found = validate_vmi(
            profile, vmi, namespace_labels=namespace_labels, kubevirt=view.kubevirt
        )
        warnings += found
        aligned = smt_alignment.align(profile, vmi, view.kubevirt, _smt(view, profile))
        errors, warnings[:] = errors + aligned.refused, warnings + aligned.warnings
        if errors:
            raise Refused(f"{_what(vmi)}: " + "; ".join(errors), code=422)
        if profile.spec.mode == "Enforce":
            warning = capacity_warning(vmi, ready_nodes(view, profile.name), view.kubevirt)
            if warning is not None:
                warnings.append(f"HypervisorProfile {profile.name}: {warning}")
            offered = {r for node in ready_nodes(view, profile.name)
                       for r in view.resources.get(node.node, ())}
            warnings += unoffered(profile.name, vmi, view.networks, offered)
            ready = {name: state.facts for name, state in view.node_states.items()
                     if _state_ready(state, profile.name)}
            numa = numa_fit.fit_warning(profile, vmi, view.kubevirt, ready)
            warnings += [numa] if numa is not None else []
    return "allowed"


def ready_nodes(view: ClusterView, profile: str) -> Iterator[NodeCapacity]:
    """The nodes of `profile` that can run its VMIs now, lazily (the capacity check stops at the
    first that has room).

    A node counts once its agent has labelled it ready, or once its state reports Ready for the
    current spec: the label follows the state by one agent pass, and agents that do not set it
    yet must not make every VMI look unplaceable.
    """
    for name, capacity in view.allocatable.items():
        labels = view.node_labels.get(name) or {}
        if labels.get(PROFILE_LABEL) == profile and (
            labels.get(READY_LABEL) == "true"
            or _state_ready(view.node_states.get(name), profile)
        ):
            yield capacity


def _smt(view: ClusterView, profile: Profile) -> NodeFacts:
    return smt_alignment.merged(
        state.facts for state in view.node_states.values() if state.profile == profile.name)


def _state_ready(state: StateView | None, profile: str) -> bool:
    return state is not None and state.profile == profile and node_phase(state)[0] == "Ready"


def _claims(
    view: ClusterView, vmi: Mapping[str, Any], namespace_labels: Mapping[str, str]
) -> list[Profile]:
    """The profiles that select the VMI, by name; a profile being deleted claims nothing."""
    return [
        profile
        for _, profile in sorted(view.profiles.items())
        if not profile.deleting and out_of_scope(profile, vmi, namespace_labels) is None
    ]


def _enforcing(claims: Sequence[Profile], vmi: Mapping[str, Any]) -> Profile | None:
    """The one profile that decides for the VMI; refuses the VMI when several claim it."""
    if len(claims) == 1:
        return claims[0]
    if any(p.spec.mode != "Audit" for p in claims):
        raise Refused(_conflict(claims, vmi), code=403)
    return None


def _conflict(claims: Sequence[Profile], vmi: Mapping[str, Any]) -> str:
    names = ", ".join(p.name for p in claims)
    return (
        f"{_what(vmi)} is selected by the HypervisorProfiles {names}, which would prepare it "
        "differently: narrow their vmi.namespaceSelector / vmi.selector so that one selects it, "
        f'or opt the VMI out with the annotation {SKIP_ANNOTATION}: "true"'
    )


@contextmanager
def _answering(vmi: Mapping[str, Any]) -> Iterator[None]:
    """Unreadable input as an admission error: the VMI's fault (400), else the cluster's (500)."""
    try:
        yield
    except VmiFieldError as unreadable:
        raise Refused(f"{_what(vmi)}: {unreadable}", code=400) from None
    except ValueError as misconfigured:
        # The KubeVirt CR's overhead ratio; its message names the field.
        raise Refused(
            f"{_what(vmi)} cannot be sized: {misconfigured}; fix the KubeVirt CR", code=500
        ) from None


def _what(vmi: Mapping[str, Any]) -> str:
    meta = vmi.get("metadata") or {}
    name = meta.get("name") or f"{meta.get('generateName', '')}<generated>"
    return f"VirtualMachineInstance {meta.get('namespace', '')}/{name}"
