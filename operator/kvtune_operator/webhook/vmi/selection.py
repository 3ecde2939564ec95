"""Which VMIs a profile shapes: one gate shared by the mutating and the validating webhook.

Why one gate: a webhook configuration cannot select by profile, so both webhooks receive every
VMI and must agree exactly on which ones a profile touches. A VMI outside the gate is never
changed and never rejected. Label matching itself is `LabelSelector.matches` in the API package
(apimachinery semantics), shared with the operator's node selection; the kubernetes client offers
no selector matching of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvtune_api.v1alpha1.profile import VmiSettings

from ...common.profiles import Profile
from .read import lookup

#: A VMI annotated `kvtune.io/skip: "true"` is left exactly as its author wrote it.
SKIP_ANNOTATION = "kvtune.io/skip"


def selects(
    settings: VmiSettings, vmi: Mapping[str, Any], namespace_labels: Mapping[str, str]
) -> bool:
    """Whether the VMI's namespace and its own labels match vmi.namespaceSelector / vmi.selector."""
    labels = lookup(vmi, "metadata", "labels") or {}
    return settings.namespace_selector.matches(namespace_labels) and settings.selector.matches(
        labels
    )


def out_of_scope(
    profile: Profile, vmi: Mapping[str, Any], namespace_labels: Mapping[str, str]
) -> str | None:
    """Why `profile` leaves this VMI alone, or None when it shapes it."""
    name = profile.name
    settings = profile.spec.vmi
    if settings is None:
        return f"HypervisorProfile {name} has no vmi section"
    if lookup(vmi, "metadata", "annotations", SKIP_ANNOTATION) == "true":
        return f'the VMI opts out with the annotation {SKIP_ANNOTATION}: "true"'
    if not selects(settings, vmi, namespace_labels):
        return f"HypervisorProfile {name}'s vmi.namespaceSelector / vmi.selector do not select it"
    return None
