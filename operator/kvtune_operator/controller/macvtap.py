"""macvtap-cni's device plugin configuration for a profile's nodes: pure planning.

Each node's agent renders the resources its own NICs can offer (its state's status.macvtap). The
stock macvtap-cni DaemonSet reads its configuration, DP_MACVTAP_CONF, from one ConfigMap
(envFrom) on every node it runs on, once when it starts. So for each profile with
network.macvtap the operator keeps a ConfigMap `kvtune-macvtap-<profile>` in its own namespace
holding the resources every reporting node offers alike: right on each of them. An
administrator's macvtap-cni DaemonSet in that namespace, on the profile's nodes, reads it;
kvtune installs nothing of macvtap-cni's. The profile's MacvtapConfig condition says when the
nodes offer more than they share.

An empty list is never written: macvtap-cni takes `[]` as no configuration and then offers every
link of the node, the management NIC included. With nothing to offer the ConfigMap is deleted,
so that a device plugin pod started later cannot start on a stale or empty one. While a node of
the profile has not reported, the ConfigMap is left as it is (the shared list could still
shrink). The profile owns the ConfigMap, so it goes with the profile.
"""

from __future__ import annotations

import json
import typing as t
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvtune_api.v1alpha1.profile import MacvtapResource

from ..common.nodestate import StateView
from ..common.profiles import PROFILE_LABEL, Profile
from .views import Action, ApplyConfigMap, DeleteConfigMap

#: The key macvtap-cni's device plugin reads its configuration from (an environment variable,
#: set from the ConfigMap with envFrom).
CONFIG_KEY = "DP_MACVTAP_CONF"


def config_map_name(profile: str) -> str:
    return f"kvtune-macvtap-{profile}"


@dataclass(frozen=True)
class Offers:
    """What a profile's nodes offer through macvtap."""

    #: The resources every reporting node offers alike (same name, lower device, mode and
    #: capacity), in the first node's order.
    common: list[MacvtapResource]
    #: Node -> its resources, for the reporting nodes that offer anything else.
    differ: dict[str, list[MacvtapResource]]
    #: Nodes that have not reported on their spec yet (or whose state does not exist yet).
    pending: list[str]


def offers(states: Mapping[str, StateView | None]) -> Offers:
    reported = {node: view.state.status.macvtap for node, view in sorted(states.items())
                if view is not None and view.reported}  # fmt: skip
    lists = list(reported.values())
    common = [r for r in lists[0] if all(r in other for other in lists[1:])] if lists else []
    return Offers(
        common=common,
        differ={node: found for node, found in reported.items() if found != common},
        pending=sorted(node for node in states if node not in reported),
    )


def render_config_map(
    profile: Profile, namespace: str, resources: Sequence[MacvtapResource]
) -> dict[str, t.Any]:
    conf = [r.model_dump(mode="json", by_alias=True) for r in resources]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(profile.name),
            "namespace": namespace,
            "labels": {PROFILE_LABEL: profile.name},
            "ownerReferences": [{
                "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
                "name": profile.name, "uid": profile.uid,
            }],
        },
        "data": {CONFIG_KEY: json.dumps(conf, separators=(",", ":"))},
    }  # fmt: skip


def plan_config_map(
    profile: Profile,
    namespace: str,
    states: Mapping[str, StateView | None],
    current: Mapping[str, str] | None,
) -> list[Action]:
    """The write that brings the profile's ConfigMap (`current`: its data, None when absent) to
    what its nodes offer alike; none when it already holds that."""
    name = config_map_name(profile.name)
    if profile.deleting or profile.paused:
        return []
    found = offers(states) if profile.spec.network.macvtap else Offers([], {}, [])
    if found.pending:
        return []
    if not found.common:
        return [] if current is None else [DeleteConfigMap(namespace, name)]
    manifest = render_config_map(profile, namespace, found.common)
    return [] if current == manifest["data"] else [ApplyConfigMap(manifest)]
