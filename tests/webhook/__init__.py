"""Tests of the VMI webhook's pure functions, with builders for a profile and a VMI."""

from __future__ import annotations

from typing import Any, Unpack

from kvtune_operator.common.profiles import Profile
from support.sections import HostSections

Obj = dict[str, Any]


class ProfileArgs(HostSections, total=False):
    """`make_profile`'s arguments, for helpers that pass them on."""

    name: str
    vmi: Obj | None
    mode: str


def make_profile(
    name: str = "fast", *, vmi: Obj | None = None, mode: str = "Enforce",
    **spec: Unpack[HostSections],
) -> Profile:
    """A profile in Enforce mode whose vmi section (default: select every VMI, networking not
    judged) is `vmi`."""
    body = {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {"pool": name}},
            "mode": mode,
            # Networking is judged in test_networking.py; elsewhere it would add a warning to
            # every VMI without an SR-IOV or macvtap interface (the product's default, Warn).
            "vmi": {"namespaceSelector": {}, "dedicatedNetworking": "Off", **(vmi or {})},
            **spec,
        },
    }
    return Profile.from_body(body)


def make_vmi(
    domain: Obj | None = None,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A VirtualMachineInstance with `domain` merged over an empty devices section."""
    metadata: Obj = {"name": "vm", "namespace": "vms"}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": metadata,
        "spec": {"domain": {"devices": {}, **(domain or {})}, **spec},
    }
