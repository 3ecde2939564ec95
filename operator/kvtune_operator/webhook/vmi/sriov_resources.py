"""Whether the VFs a VMI's `sriov` interfaces ask for exist on the profile's nodes: a pure check.

An `sriov` interface names a Multus network, a NetworkAttachmentDefinition whose
`k8s.v1.cni.cncf.io/resourceName` annotation is the extended resource the virt-launcher pod then
requests (one VF of the SR-IOV network device plugin's pool). When no ready node of the profile
lists that resource in its allocatable, the VMI stays Pending, and nothing says why but the
scheduler's "Insufficient sriov.kvtune.io/...". The webhook says it at admission, with the fix:
a warning, never a refusal (the device plugin may be starting, the nodes draining).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kvtune_api.v1alpha1.profile import SRIOV_RESOURCE_PREFIX

from .read import listed, lookup

#: The annotation of a NetworkAttachmentDefinition naming the resource its pods request.
RESOURCE_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"


def extended_resources(allocatable: Mapping[str, Any]) -> frozenset[str]:
    """The extended resources (domain-prefixed names) a node's status.allocatable offers, at
    least one of each. Device plugins count whole devices; a count kvtune cannot read is taken
    as offered (no warning rather than a wrong one)."""
    return frozenset(name for name, value in allocatable.items()
                     if "/" in name and str(value).strip() != "0")


def unoffered(
    profile: str,
    vmi: Mapping[str, Any],
    networks: Mapping[str, str],
    offered: Collection[str],
) -> list[str]:
    """Warnings for the VMI's `sriov` interfaces whose network's resource no ready node of
    `profile` offers. `networks`: "<namespace>/<name>" of each NetworkAttachmentDefinition -> its
    resource; `offered`: the extended resources of the profile's ready nodes."""
    namespace = lookup(vmi, "metadata", "namespace") or "default"
    by_name = {n.get("name"): n for n in listed(vmi, "spec", "networks")
               if isinstance(n, Mapping)}
    found = []
    for index, interface in enumerate(listed(vmi, "spec", "domain", "devices", "interfaces")):
        if not isinstance(interface, Mapping) or lookup(interface, "sriov") is None:
            continue
        target = lookup(by_name.get(interface.get("name")) or {}, "multus", "networkName")
        if not isinstance(target, str):
            continue
        key = target if "/" in target else f"{namespace}/{target}"
        resource = networks.get(key)
        if resource is None or resource in offered:
            continue
        found.append(
            f"spec.domain.devices.interfaces[{index}] ({interface.get('name')}) asks for a VF of "
            f"{resource} through NetworkAttachmentDefinition {key}, but no ready node of "
            f"HypervisorProfile {profile} offers it (none lists it in status.allocatable), so "
            f"the VMI would stay Pending: {_fix(profile, resource)}")
    return found


def _fix(profile: str, resource: str) -> str:
    prefix, _, name = resource.partition("/")
    if prefix == SRIOV_RESOURCE_PREFIX:
        return (f"give a network.sriov rule of the profile resourceName {name} and a driver, "
                f"and run the SR-IOV network device plugin on its nodes with the ConfigMap "
                f"kvtune-sriov-{profile} (the profile's status.sriov and SriovConfig condition "
                "say what its nodes offer; docs/sriov.md)")
    return (f"run the device plugin that offers {resource} on the profile's nodes, or point the "
            f"NetworkAttachmentDefinition at a pool they offer (kvtune's are "
            f"{SRIOV_RESOURCE_PREFIX}/<resourceName>)")
