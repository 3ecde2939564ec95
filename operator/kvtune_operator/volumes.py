"""Raw LUNs as Block-mode PersistentVolumes, one per LUN, pinned to its node: pure planning.

The agent reports the eligible LUNs the profile selects (status.luns: never mounted,
partitioned, formatted, LVM or the OS disk); each becomes a PersistentVolume with the profile's
storageClassName, `volumeMode: Block` (the guest gets the raw device: no host filesystem, no
double journaling), `Retain` (kvtune never deletes data) and a nodeAffinity for its node.
kvtune only ever creates these volumes: a volume whose LUN is no longer reported is kept,
Bound or not, and listed on the profile for an administrator to decide.
"""

from __future__ import annotations

import hashlib
import typing as t
from collections.abc import Mapping

from kvtune_api.v1alpha1.nodestate import ExposedLun

from .profiles import Profile
from .render import PROFILE_LABEL
from .views import NODE_LABEL, Action, CreateVolume, Snapshot, VolumeView

LUN_LABEL = "kvtune.io/lun"
WWID_ANNOTATION = "kvtune.io/wwid"
PATH_ANNOTATION = "kvtune.io/device-path"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def volume_name(node: str, lun: ExposedLun) -> str:
    """Stable and unique per node and device identity; short and DNS-safe whatever the names."""
    identity = lun.wwid or lun.path
    return "kvtune-" + hashlib.sha256(f"{node}/{identity}".encode()).hexdigest()[:24]


def render_volume(
    profile: Profile, node: str, node_labels: Mapping[str, str], lun: ExposedLun
) -> dict[str, t.Any]:
    luns = profile.spec.storage.block_luns
    assert luns is not None  # only called for profiles that expose LUNs
    annotations = {PATH_ANNOTATION: lun.path}
    if lun.wwid:
        annotations[WWID_ANNOTATION] = lun.wwid
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(node, lun),
            "labels": {PROFILE_LABEL: profile.name, NODE_LABEL: node, LUN_LABEL: lun.name},
            "annotations": annotations,
        },
        "spec": {
            "capacity": {"storage": str(lun.size_bytes)},
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": luns.storage_class_name,
            "local": {"path": lun.path},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": HOSTNAME_LABEL, "operator": "In",
                "values": [node_labels.get(HOSTNAME_LABEL, node)],
            }]}]}},
        },
    }


def plan_volumes(profile: Profile, snap: Snapshot) -> list[Action]:
    """A volume for every reported LUN that has none yet."""
    if profile.deleting or profile.paused or profile.spec.storage.block_luns is None:
        return []
    actions: list[Action] = []
    for node, view in snap.assigned_states(profile.name).items():
        if view is None or not view.reported:
            continue
        for lun in view.state.status.luns:
            if volume_name(node, lun) not in snap.volumes:
                actions.append(CreateVolume(render_volume(profile, node, snap.nodes[node], lun)))
    return actions


def orphaned_volumes(profile: Profile, snap: Snapshot) -> list[VolumeView]:
    """This profile's volumes whose LUN its node's agent no longer reports."""
    reported = {
        volume_name(view.name, lun)
        for view in snap.states.values() if view.profile == profile.name and view.reported
        for lun in view.state.status.luns
    }
    return sorted(
        (v for v in snap.volumes.values()
         if v.profile == profile.name and v.name not in reported
         and (state := snap.states.get(v.node)) is not None and state.reported),
        key=lambda v: v.name,
    )
