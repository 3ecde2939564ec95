"""Raw LUNs become Block PersistentVolumes pinned to their node; kvtune never removes one."""

from __future__ import annotations

import datetime

from kvtune_api.v1alpha1.host import BlockDevice, BlockReport, HostReport
from kvtune_api.v1alpha1.nodestate import ExposedLun
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from kvtune_operator.common.nodestate import StateView
from kvtune_operator.common.profiles import PROFILE_LABEL, Profile
from kvtune_operator.controller.assign import Assignment
from kvtune_operator.controller.rollup import rollup
from kvtune_operator.controller.views import Action, CreateVolume, Snapshot, VolumeView
from kvtune_operator.controller.volumes import (
    orphaned_volumes,
    plan_volumes,
    render_volume,
    shared_luns,
    shared_of,
    volume_name,
)

from .builders import profile, state

LUNS = {"blockLuns": {"selector": {"byIdPatterns": ["wwn-*"]}, "storageClassName": "raw"}}
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SDB = ExposedLun(name="sdb", path="/dev/disk/by-id/wwn-0x5000c5", size_bytes=4 * 2**40,
                 wwid="0x5000c5", model="ST4000NM")


def planned(p: Profile, snapshot: Snapshot) -> list[Action]:
    """The volumes planned for `p`, as the controller plans them."""
    return plan_volumes(p, snapshot, shared_luns(snapshot))


def with_luns(view: StateView, *luns: ExposedLun) -> StateView:
    status = view.state.status.model_copy(update={"luns": list(luns)})
    return StateView(view.name, view.profile, view.generation, view.spec,
                     view.state.model_copy(update={"status": status}), view.annotations)


def snap(views: list[StateView], volumes: dict[str, VolumeView] | None = None) -> Snapshot:
    names = frozenset(v.name for v in views)
    return Snapshot(nodes={n: {"kubernetes.io/hostname": f"{n}.example"} for n in names},
                    states={v.name: v for v in views},
                    assignment=Assignment({"p": names}, {}), volumes=volumes or {})


def test_a_reported_lun_becomes_a_retained_block_volume_pinned_to_its_node() -> None:
    [action] = planned(profile(storage=LUNS), snap([with_luns(state("a"), SDB)]))
    assert isinstance(action, CreateVolume)
    pv = action.manifest
    assert pv["metadata"]["labels"] == {PROFILE_LABEL: "p", "kvtune.io/node": "a",
                                        "kvtune.io/lun": "sdb"}
    assert pv["spec"]["volumeMode"] == "Block"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["storageClassName"] == "raw"
    assert pv["spec"]["local"] == {"path": "/dev/disk/by-id/wwn-0x5000c5"}
    assert pv["spec"]["capacity"] == {"storage": str(4 * 2**40)}
    [term] = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == ["a.example"]


def test_an_existing_volume_is_not_created_again() -> None:
    view = with_luns(state("a"), SDB)
    existing = {volume_name("a", SDB): VolumeView(volume_name("a", SDB), "p", "a", "Bound")}
    assert planned(profile(storage=LUNS), snap([view], existing)) == []


def test_volume_names_are_stable_and_distinct_per_node() -> None:
    assert volume_name("a", SDB) == volume_name("a", SDB)
    assert volume_name("a", SDB) != volume_name("b", SDB)
    assert len(volume_name("a" * 250, SDB)) < 64


def test_a_profile_without_block_luns_makes_no_volumes() -> None:
    assert planned(profile(), snap([with_luns(state("a"), SDB)])) == []


def test_a_volume_whose_lun_is_gone_is_reported_not_removed() -> None:
    name = volume_name("a", SDB)
    volumes = {name: VolumeView(name, "p", "a", "Bound")}
    p = profile(storage=LUNS)
    assert [v.name for v in orphaned_volumes(p, snap([state("a")], volumes))] == [name]
    assert planned(p, snap([state("a")], volumes)) == []
    assert orphaned_volumes(p, snap([with_luns(state("a"), SDB)], volumes)) == []


def test_the_rendered_volume_is_named_as_planned() -> None:
    pv = render_volume(profile(storage=LUNS), "a", {}, SDB)
    assert pv["metadata"]["name"] == volume_name("a", SDB)
    assert pv["metadata"]["annotations"]["kvtune.io/wwid"] == "0x5000c5"


def seeing(view: StateView, *wwids: str) -> StateView:
    """The node's probe lists block devices with these world wide ids (eligible or not)."""
    devices = [BlockDevice(name=f"sd{i}", path=f"/dev/sd{i}", wwid=w, classification="InUse",
                           reason="held") for i, w in enumerate(wwids)]
    host = HostReport(block=BlockReport(devices=devices))
    status = view.state.status.model_copy(update={"host": host})
    return StateView(view.name, view.profile, view.generation, view.spec,
                     view.state.model_copy(update={"status": status}), view.annotations)


def test_a_lun_two_nodes_report_gets_no_volume_and_the_profile_says_why() -> None:
    p = profile(storage=LUNS)
    both = snap([with_luns(state("a"), SDB), with_luns(state("b"), SDB)])
    assert shared_luns(both) == {"5000c5": ["a", "b"]}  # the id in its canonical form
    assert planned(p, both) == []
    assert shared_of(p, both, shared_luns(both)) == ["5000c5 (a, b)"]
    status = rollup(p, {"a": None, "b": None}, {}, HypervisorProfileStatus(), NOW,
                    shared_luns=shared_of(p, both, shared_luns(both)))
    [volumes] = [c for c in status.conditions if c.type == "LunVolumes"]
    assert (volumes.status, volumes.reason) == ("False", "LunsShared")
    assert "5000c5 (a, b)" in volumes.message and "two VMs write it at once" in volumes.message


def test_a_lun_another_node_merely_sees_is_shared_too() -> None:
    # Node b's profile does not select the LUN, but its probe lists the same device.
    views = [with_luns(state("a"), SDB), seeing(state("b"), "0x5000c5", "0xother")]
    assert planned(profile(storage=LUNS), snap(views)) == []


def test_a_lun_with_a_volume_on_one_node_gets_none_on_a_second() -> None:
    name = volume_name("a", SDB)
    volumes = {name: VolumeView(name, "p", "a", "Bound", wwid="0x5000c5")}
    p = profile(storage=LUNS)
    later = snap([state("a"), with_luns(state("b"), SDB)], volumes)
    assert planned(p, later) == []
    assert shared_of(p, later, shared_luns(later)) == ["5000c5 (a, b)"]


def test_a_lun_only_one_node_sees_still_gets_its_volume() -> None:
    views = [with_luns(state("a"), SDB), seeing(state("b"), "0xother")]
    [create] = planned(profile(storage=LUNS), snap(views))
    assert isinstance(create, CreateVolume)


def test_a_volume_view_reads_its_luns_wwid() -> None:
    pv = render_volume(profile(storage=LUNS), "a", {}, SDB)
    assert VolumeView.from_body(pv).wwid == "0x5000c5"


# -- one LUN, several spellings of its id ------------------------------------------------------

#: One LUN as a path shows it before multipathd assembles its map, and as the map shows it.
PATH_LUN = ExposedLun(name="sdc", path="/dev/disk/by-id/wwn-0x600a098038303053453f463045535a31",
                      size_bytes=2**40, wwid="naa.600a098038303053453f463045535a31")
MAP_LUN = ExposedLun(name="dm-2",
                     path="/dev/disk/by-id/dm-uuid-mpath-3600a098038303053453f463045535a31",
                     size_bytes=2**40, wwid="3600a098038303053453f463045535a31")


def test_a_lun_reported_under_another_spelling_of_its_id_gets_no_second_volume() -> None:
    # The volume made for the path, its id recorded as the path spelt it; now the map is the LUN.
    name = volume_name("a", PATH_LUN)
    volumes = {name: VolumeView(name, "p", "a", "Bound", wwid=PATH_LUN.wwid or "")}
    p = profile(storage=LUNS)
    now = snap([with_luns(state("a"), MAP_LUN)], volumes)

    assert planned(p, now) == []
    assert orphaned_volumes(p, now) == []  # its LUN is still reported, under the map's id


def test_a_node_reporting_one_lun_under_two_ids_gets_one_volume() -> None:
    [create] = planned(profile(storage=LUNS), snap([with_luns(state("a"), PATH_LUN, MAP_LUN)]))
    assert isinstance(create, CreateVolume)


def test_a_lun_two_nodes_spell_differently_is_shared() -> None:
    views = [with_luns(state("a"), PATH_LUN),
             seeing(state("b"), "3600a098038303053453f463045535a31")]
    assert shared_luns(snap(views)) == {"600a098038303053453f463045535a31": ["a", "b"]}
    assert planned(profile(storage=LUNS), snap(views)) == []


def test_a_lun_reported_by_its_kernel_name_gets_no_volume() -> None:
    # /dev/sdt can be another disk after a reboot; today's agents never report such a path.
    kernel_path = SDB.model_copy(update={"path": "/dev/sdt"})
    assert planned(profile(storage=LUNS), snap([with_luns(state("a"), kernel_path)])) == []
