"""A device plugin's configuration kept in a ConfigMap per profile: pure planning.

Each node's agent renders the resources its own host can offer to one device plugin (a list in
its state's status: status.macvtap for macvtap-cni, status.sriov for the SR-IOV network device
plugin). A stock device plugin DaemonSet reads one configuration on every node it runs on, once
when it starts. So for each profile with rules for a plugin the operator keeps a ConfigMap
`kvtune-<plugin>-<profile>` in its own namespace holding the resources every reporting node
offers alike: right on each of them. The profile's status carries the same list, and a
condition says when the nodes offer more than they share.

An empty list is never written: macvtap-cni takes `[]` as no configuration and then offers every
link of the node, and the SR-IOV device plugin refuses to start on an empty resourceList. With
nothing to offer the ConfigMap is deleted, so that a plugin pod started later cannot start on a
stale or empty one. While a node of the profile has not reported, the ConfigMap is left as it is
(the shared list could still shrink). The profile owns the ConfigMap, so it goes with the profile.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from kvtune_api.v1alpha1.profile import HypervisorProfileSpec

from ..common.nodestate import StateView
from ..common.profiles import PROFILE_LABEL, Profile
from .views import Action, ApplyConfigMap, DeleteConfigMap

R = t.TypeVar("R")
#: Nodes a condition names at most.
MAX_NAMED = 20


@dataclass(frozen=True)
class Plugin(t.Generic[R]):
    """One device plugin whose configuration the operator publishes."""

    #: The profile condition, e.g. MacvtapConfig.
    condition: str
    #: The status field (of node states and profiles) holding the resources, e.g. macvtap.
    field: str
    #: What configures the plugin, for messages: e.g. DP_MACVTAP_CONF.
    config: str
    #: The ConfigMap's name for a profile.
    config_map: Callable[[str], str]
    #: The profile has rules for this plugin.
    wanted: Callable[[HypervisorProfileSpec], bool]
    #: The resources a node state's status offers.
    offered: Callable[[HypervisorNodeStateStatus], list[R]]
    #: The ConfigMap's data for a (non-empty) list of resources.
    data: Callable[[Sequence[R]], dict[str, str]]
    #: One resource, for messages: e.g. "dp on ens2f0".
    describe: Callable[[R], str]
    #: What to do when the nodes differ, the end of the condition's message.
    variants: str


@dataclass(frozen=True)
class Offers(t.Generic[R]):
    """What a profile's nodes offer to one plugin."""

    #: The resources every reporting node offers alike, in the first node's order.
    common: list[R]
    #: Node -> its resources, for the reporting nodes that offer anything else.
    differ: dict[str, list[R]]
    #: Nodes that have not reported on their spec yet (or whose state does not exist yet).
    pending: list[str]


def offers(plugin: Plugin[R], states: Mapping[str, StateView | None]) -> Offers[R]:
    reported = {node: plugin.offered(view.state.status) for node, view in sorted(states.items())
                if view is not None and view.reported}  # fmt: skip
    lists = list(reported.values())
    common = [r for r in lists[0] if all(r in other for other in lists[1:])] if lists else []
    return Offers(
        common=common,
        differ={node: found for node, found in reported.items() if found != common},
        pending=sorted(node for node in states if node not in reported),
    )


def render_config_map(
    plugin: Plugin[R], profile: Profile, namespace: str, resources: Sequence[R]
) -> dict[str, t.Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plugin.config_map(profile.name),
            "namespace": namespace,
            "labels": {PROFILE_LABEL: profile.name},
            "ownerReferences": [{
                "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
                "name": profile.name, "uid": profile.uid,
            }],
        },
        "data": plugin.data(resources),
    }  # fmt: skip


def plan_config_map(
    plugin: Plugin[R],
    profile: Profile,
    namespace: str,
    states: Mapping[str, StateView | None],
    current: Mapping[str, str] | None,
) -> list[Action]:
    """The write that brings the profile's ConfigMap (`current`: its data, None when absent) to
    what its nodes offer alike; none when it already holds that."""
    name = plugin.config_map(profile.name)
    if profile.deleting or profile.paused:
        return []
    found = offers(plugin, states) if plugin.wanted(profile.spec) else Offers([], {}, [])
    if found.pending:
        return []
    if not found.common:
        return [] if current is None else [DeleteConfigMap(namespace, name)]
    manifest = render_config_map(plugin, profile, namespace, found.common)
    return [] if current == manifest["data"] else [ApplyConfigMap(manifest)]


def _listed(plugin: Plugin[R], resources: Sequence[R]) -> str:
    return ", ".join(plugin.describe(r) for r in resources) or "nothing"


def condition(plugin: Plugin[R], found: Offers[R], generation: int) -> cond.Condition:
    """Whether what the nodes offer alike (status.<field>) is all that each of them offers."""
    field = f"status.{plugin.field}"
    if found.differ:
        nodes = [f"{node} offers {_listed(plugin, offered)}"
                 for node, offered in found.differ.items()]
        return cond.make(plugin.condition, "False", "NodesDiffer", (
            f"{field} holds what every node offers alike ({_listed(plugin, found.common)}), "
            f"but {len(nodes)} node(s) offer more or otherwise: " + "; ".join(nodes[:MAX_NAMED])
            + f". One {plugin.config} cannot say that: {plugin.variants}"), generation)
    if found.pending:
        return cond.make(plugin.condition, "Unknown", "NodesPending", (
            f"{len(found.pending)} node(s) have not reported yet: "
            f"{', '.join(found.pending[:MAX_NAMED])}"), generation)
    return cond.make(plugin.condition, "True", "Uniform", (
        f"every node offers {_listed(plugin, found.common)}: {field} is the {plugin.config} "
        "for all of them"), generation)
