"""Renders a node's HypervisorNodeState from its profile: a pure function of its inputs.

The spec carries a copy of the profile's host settings, so an agent needs to read only its own
object, and a later profile change shows up as a new spec (and generation) per node.
"""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1 import GROUP_VERSION
from kvtune_api.v1alpha1.nodestate import (
    DisruptionGrant,
    HypervisorNodeStateSpec,
    ProfileRef,
)
from kvtune_api.v1alpha1.profile import HostSettings

from ..common.profiles import PROFILE_LABEL, Profile

_HOST_FIELDS = set(HostSettings.model_fields)


def render_spec(
    profile: Profile,
    node: str,
    *,
    paused: bool = False,
    revert: bool = False,
    approved: bool = False,
) -> dict[str, t.Any]:
    """The spec of `node`'s state under `profile`, as the camelCase dict the API stores.

    Built from a per-profile template rather than through the pydantic model for every node:
    the operator renders every node of every profile once a second to find what changed, and
    the template is the model's own dump (a test holds the two equal).
    """
    template = profile_template(profile)
    return {
        **template,
        "nodeName": node,
        "paused": paused or profile.paused,
        "revert": revert,
        "disruption": {**template["disruption"], "approved": approved},
    }


def profile_template(profile: Profile) -> dict[str, t.Any]:
    """The node-independent part of every state spec of `profile` (cached on the profile)."""
    return profile.cached("template", lambda: _template(profile))


def _template(profile: Profile) -> dict[str, t.Any]:
    spec = profile.spec
    rendered = HypervisorNodeStateSpec(
        node_name="-",
        profile=ProfileRef(name=profile.name, generation=profile.generation),
        mode=spec.mode,
        host=HostSettings.model_validate(spec.model_dump(include=_HOST_FIELDS)),
        vmi=spec.vmi,
        disruption=DisruptionGrant(
            allow_drain=spec.rollout.allow_drain, allow_reboot=spec.rollout.allow_reboot
        ),
    )
    dumped: dict[str, t.Any] = rendered.model_dump(exclude_none=True, mode="json")
    return dumped


def render_node_state(profile: Profile, node: str, **flags: bool) -> dict[str, t.Any]:
    """A whole HypervisorNodeState manifest, owned by the profile.

    The owner reference is a safety net for garbage collection only: the operator deletes states
    itself, after their agents have reverted the host.
    """
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "HypervisorNodeState",
        "metadata": {
            "name": node,
            "labels": {PROFILE_LABEL: profile.name},
            "ownerReferences": [
                {
                    "apiVersion": GROUP_VERSION,
                    "kind": "HypervisorProfile",
                    "name": profile.name,
                    "uid": profile.uid,
                    "blockOwnerDeletion": False,
                    "controller": True,
                }
            ],
        },
        "spec": render_spec(profile, node, **flags),
    }

