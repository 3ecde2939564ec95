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
link of the node, the management NIC included. How the ConfigMap is kept is plugin_config.py's,
shared with the SR-IOV network device plugin's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kvtune_api.v1alpha1.profile import MacvtapResource

from .plugin_config import Plugin

#: The key macvtap-cni's device plugin reads its configuration from (an environment variable,
#: set from the ConfigMap with envFrom).
CONFIG_KEY = "DP_MACVTAP_CONF"


def config_map_name(profile: str) -> str:
    return f"kvtune-macvtap-{profile}"


def _data(resources: Sequence[MacvtapResource]) -> dict[str, str]:
    conf = [r.model_dump(mode="json", by_alias=True) for r in resources]
    return {CONFIG_KEY: json.dumps(conf, separators=(",", ":"))}


MACVTAP: Plugin[MacvtapResource] = Plugin(
    condition="MacvtapConfig",
    field="macvtap",
    config=CONFIG_KEY,
    config_map=config_map_name,
    wanted=lambda spec: bool(spec.network.macvtap),
    offered=lambda status: status.macvtap,
    data=_data,
    describe=lambda r: f"{r.name} on {r.lower_device}",
    variants="give each variant its own macvtap-cni DaemonSet and ConfigMap from the nodes' "
    "status.macvtap, or make the nodes agree",
)
