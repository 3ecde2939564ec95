"""The SR-IOV network device plugin's configuration for a profile's nodes.

A KubeVirt VM gets an SR-IOV VF through an `sriov` interface whose Multus network names a
NetworkAttachmentDefinition annotated with a resource; the SR-IOV network device plugin offers
that resource, made of the VFs its `config.json` selects. Each node's agent renders the pools its
own PFs offer (its state's status.sriov: VFs of the PFs kvtune manages there, bound to the rule's
driver), and the operator keeps what every node offers alike as `config.json` in the ConfigMap
`kvtune-sriov-<profile>` (plugin_config.py), for the plugin's DaemonSet on those nodes to mount.

The plugin takes json.Unmarshal's view of the file: a misspelt selector is ignored, and a pool
without it takes every VF of the node. So only fields the plugin knows are written, each one
from the model (tests/support/sriov_dp.py checks it against the plugin's documented format).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kvtune_api.v1alpha1.profile import SriovResource

from .plugin_config import Plugin

#: The file the plugin reads (its --config-file, /etc/pcidp/config.json, from the ConfigMap).
CONFIG_KEY = "config.json"


def config_map_name(profile: str) -> str:
    return f"kvtune-sriov-{profile}"


def config_json(resources: Sequence[SriovResource]) -> str:
    """The plugin's configuration: {"resourceList": [...]}, each selector list only if given
    (an empty list selects nothing more, but older plugins took [] as absent and newer as given)."""
    listed = [r.model_dump(mode="json", by_alias=True, exclude_defaults=True) for r in resources]
    return json.dumps({"resourceList": listed}, indent=2)


def _pfs(resource: SriovResource) -> str:
    return ", ".join(resource.selectors.pf_names or resource.selectors.root_devices)


SRIOV: Plugin[SriovResource] = Plugin(
    condition="SriovConfig",
    field="sriov",
    config=CONFIG_KEY,
    config_map=config_map_name,
    wanted=lambda spec: any(rule.resource_name for rule in spec.network.sriov),
    offered=lambda status: status.sriov,
    data=lambda resources: {CONFIG_KEY: config_json(resources)},
    describe=lambda r: f"{r.resource_prefix}/{r.resource_name} on {_pfs(r)}",
    variants="give each variant its own device plugin DaemonSet and ConfigMap from the nodes' "
    "status.sriov, or make the nodes agree (the same PF names and PCI addresses)",
)
