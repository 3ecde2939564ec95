"""The SR-IOV network device plugin's config.json, as the plugin reads and checks it.

Why: the plugin decodes its file with Go's json.Unmarshal, which drops fields it does not know:
a misspelt selector (`rootDevice`) silently widens a pool to every VF of the node, the
management NIC's included. The plugin's Go module is not served by the module proxy here
(github.com/k8snetworkplumbingwg/sriov-network-device-plugin: 403), so its source cannot be
built into an oracle as KubeVirt's is; this judge is written from the plugin's own definitions
instead, read from its repository:

- pkg/types/types.go: ResourceConfList{resourceList}, ResourceConfig{resourcePrefix,
  resourceName, deviceType, excludeTopology, selectors, additionalInfo}, DeviceSelectors
  {vendors, devices, drivers, pciAddresses, acpiIndexes} and NetDeviceSelectors{pfNames,
  rootDevices, linkTypes, ddpProfiles, pKeys, isRdma, needVhostNet, vdpaType}; `selectors`
  is one selector object or a list of them (README, "Device selectors").
- cmd/sriovdp/manager.go ValidConfigs: at least one resource ("no resource configuration;
  exiting"), every resourceName valid (pkg/utils ValidResourceName: ^[a-zA-Z0-9_]+$), every
  <prefix>/<name> unique, a supported deviceType (netDevice, accelerator, auxNetDevice);
  netDevice's ValidConfig refuses isRdma with vdpaType.

`unknown fields` are refused here although the plugin drops them: for kvtune's own output a field
the plugin would drop is a bug.
"""

from __future__ import annotations

import json
import re
import typing as t

import jsonschema

_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}}
_PCI = {"type": "array", "items": {
    "type": "string", "pattern": r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$"}}
_HEX_ID = {"type": "array", "items": {"type": "string", "pattern": r"^[0-9a-fA-F]{4}$"}}
NET_SELECTORS: dict[str, t.Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "vendors": _HEX_ID, "devices": _HEX_ID, "drivers": _LIST, "pciAddresses": _PCI,
        "acpiIndexes": _LIST, "pfNames": _LIST, "rootDevices": _PCI, "linkTypes": _LIST,
        "ddpProfiles": _LIST, "pKeys": _LIST, "isRdma": {"type": "boolean"},
        "needVhostNet": {"type": "boolean"}, "vdpaType": {"enum": ["vhost", "virtio"]},
    },
    "not": {"required": ["isRdma", "vdpaType"], "properties": {"isRdma": {"const": True}}},
}
SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["resourceList"],
    "properties": {"resourceList": {"type": "array", "minItems": 1, "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["resourceName"],
        "properties": {
            "resourceName": {"type": "string", "pattern": r"^[a-zA-Z0-9_]+$"},
            "resourcePrefix": {"type": "string"},
            "deviceType": {"enum": ["netDevice"]},  # the only type kvtune's pools are
            "excludeTopology": {"type": "boolean"},
            "selectors": {"anyOf": [NET_SELECTORS, {"type": "array", "items": NET_SELECTORS}]},
            "additionalInfo": {"type": "object"},
        },
    }}},
}
#: The plugin's default --resource-prefix.
DEFAULT_PREFIX = "intel.com"
#: An extended resource's prefix is a DNS subdomain (the kubelet refuses the plugin otherwise).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _leaves(
    errors: t.Iterable[jsonschema.ValidationError],
) -> t.Iterator[jsonschema.ValidationError]:
    """The errors themselves, not "is not valid under any of the given schemas": `selectors`
    may be an object or a list, and the object's own complaint is the one that says why."""
    for error in errors:
        if error.context:
            yield from _leaves(e for e in error.context if e.validator != "type")
        else:
            yield error


def problems(text: str) -> list[str]:
    """Why the plugin would refuse (or misread) `text` as its config.json; empty: it takes it."""
    try:
        config = json.loads(text)
    except ValueError as err:
        return [f"not JSON: {err}"]
    found = [f"{'/'.join(map(str, e.absolute_path)) or 'config'}: {e.message}"
             for e in _leaves(jsonschema.Draft202012Validator(SCHEMA).iter_errors(config))]
    if found:
        return found
    seen: set[str] = set()
    for entry in config["resourceList"]:
        prefix = entry.get("resourcePrefix") or DEFAULT_PREFIX
        name = f"{prefix}/{entry['resourceName']}"
        if name in seen:
            found.append(f"resource name {name!r} already exists")
        if not _SUBDOMAIN.match(prefix):
            found.append(f"resourcePrefix {prefix!r} is not a DNS subdomain")
        seen.add(name)
    return found
