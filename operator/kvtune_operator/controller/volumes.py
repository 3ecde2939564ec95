"""Raw LUNs as Block-mode PersistentVolumes, one per LUN, pinned to its node: pure planning.

The agent reports the eligible LUNs the profile selects (status.luns: never mounted,
partitioned, formatted, LVM or the OS disk); each becomes a PersistentVolume with the profile's
storageClassName, `volumeMode: Block` (the guest gets the raw device: no host filesystem, no
double journaling), `Retain` (kvtune never deletes data) and a nodeAffinity for its node.
kvtune only ever creates these volumes: a volume whose LUN is no longer reported is kept,
Bound or not, and listed on the profile for an administrator to decide.

A LUN seen from more than one node (the same world wide id in two nodes' probes: a SAN LUN
zoned to several hosts) is shared storage, not a local disk. A volume per node would let two
VMs on different nodes write it at once and corrupt it, so such a LUN gets no volume (and one
that already has a volume is reported): `shared_luns`.

A LUN has one id but several spellings (`naa.600a...` from a path, `3600a...` from its
multipath map; see `kvtune_api.wwid`), and a node probed before and after multipathd assembles
the map reports it under each: ids are compared in their canonical form, with every other
node's and with the `kvtune.io/wwid` of every existing volume (whatever form that was recorded
in), so that one LUN gets one volume.
"""

from __future__ import annotations

import hashlib
import typing as t
from collections.abc import Mapping, Sequence

from kvtune_api.v1alpha1.nodestate import ExposedLun
from kvtune_api.wwid import canonical_wwid

from ..common.profiles import PROFILE_LABEL, Profile
from .views import NODE_LABEL, WWID_ANNOTATION, Action, CreateVolume, Snapshot, VolumeView

LUN_LABEL = "kvtune.io/lun"
PATH_ANNOTATION = "kvtune.io/device-path"
HOSTNAME_LABEL = "kubernetes.io/hostname"
#: Where a volume's device path must lie: a kernel name (/dev/sdt) can name another disk after
#: a reboot. Agents report only such paths; this keeps a report from an older agent out.
STABLE_PATHS = "/dev/disk/by-id/"


def _lun_id(wwid: str | None) -> str:
    """The LUN's id for comparing (canonical); empty when it has none."""
    return canonical_wwid(wwid) if wwid else ""


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


def plan_volumes(
    profile: Profile, snap: Snapshot, shared: Mapping[str, Sequence[str]]
) -> list[Action]:
    """A volume for every reported LUN that has none yet (by name, or by id: the same LUN under
    another spelling), unless other nodes see it too (`shared`: `shared_luns` of the snapshot)
    or its path is not a stable by-id name."""
    if profile.deleting or profile.paused or profile.spec.storage.block_luns is None:
        return []
    has_volume = {_lun_id(v.wwid) for v in snap.volumes.values()} - {""}
    actions: list[Action] = []
    for node, view in snap.assigned_states(profile.name).items():
        if view is None or not view.reported:
            continue
        for lun in view.state.status.luns:
            lun_id = _lun_id(lun.wwid)
            if (lun_id in shared or lun_id in has_volume or not lun.path.startswith(STABLE_PATHS)
                    or volume_name(node, lun) in snap.volumes):
                continue
            actions.append(CreateVolume(render_volume(profile, node, snap.nodes[node], lun)))
            if lun_id:  # a node that reports it twice still gets one
                has_volume.add(lun_id)
    return actions


def shared_luns(snap: Snapshot) -> dict[str, list[str]]:
    """Canonical world wide id -> the nodes that see it, for every LUN seen from more than one
    node: in any node's probe (of any profile: a node need not select a LUN to see it) or as a
    kvtune volume's LUN."""
    seen: dict[str, set[str]] = {}
    for view in snap.states.values():
        if not view.reported:
            continue
        status = view.state.status
        devices = status.host.block.devices if status.host is not None else []
        for wwid in {_lun_id(d.wwid) for d in devices} | {_lun_id(n.wwid) for n in status.luns}:
            if wwid:
                seen.setdefault(wwid, set()).add(view.name)
    for volume in snap.volumes.values():
        if (wwid := _lun_id(volume.wwid)) and volume.node:
            seen.setdefault(wwid, set()).add(volume.node)
    return {wwid: sorted(nodes) for wwid, nodes in seen.items() if len(nodes) > 1}


def shared_of(
    profile: Profile, snap: Snapshot, shared: Mapping[str, Sequence[str]]
) -> list[str]:
    """The profile's LUNs (reported by its nodes, or with a volume of its) that other nodes see
    too (`shared`: `shared_luns` of the snapshot), each as "wwid (nodes)", for its LunVolumes
    condition."""
    mine = {
        _lun_id(lun.wwid)
        for view in snap.assigned_states(profile.name).values()
        if view is not None and view.reported
        for lun in view.state.status.luns
    } | {_lun_id(v.wwid) for v in snap.volumes.values() if v.profile == profile.name}
    mine &= set(shared)
    return [f"{wwid} ({', '.join(shared[wwid])})" for wwid in sorted(mine)]


def orphaned_volumes(profile: Profile, snap: Snapshot) -> list[VolumeView]:
    """This profile's volumes whose LUN its node's agent no longer reports, under any spelling
    of its id."""
    luns = [(view.name, lun)
            for view in snap.states.values() if view.profile == profile.name and view.reported
            for lun in view.state.status.luns]
    names = {volume_name(node, lun) for node, lun in luns}
    ids = {(node, lun_id) for node, lun in luns if (lun_id := _lun_id(lun.wwid))}
    return sorted(
        (v for v in snap.volumes.values()
         if v.profile == profile.name and v.name not in names
         and (v.node, _lun_id(v.wwid)) not in ids
         and (state := snap.states.get(v.node)) is not None and state.reported),
        key=lambda v: v.name,
    )
