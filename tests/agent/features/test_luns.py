"""The block LUN planner: selected eligible disks, published by their by-id path, and their I/O
scheduler."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from kvtune_agent.features.block import Scheduler, matching_luns
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.profile import BlockLunSettings
from support.hosttree import (
    DEFAULT_DISK_BYTES,
    HostTree,
)

from ..specs import node_spec
from .planning import finding_of, host_facts, plan_of, steps_of


def _luns(tmp_path: Path) -> HostTree:
    tree = HostTree(tmp_path).disk("sda").mount("/dev/sda", "/")
    tree.disk("sdb", wwid="0x5000c500aaaa0001", model="ST4000NM")
    tree.disk("sdc", wwid="0x5000c500aaaa0002", model="PERC H755", size_bytes=2 * 2**40)
    return tree.disk("sdd", wwid="0x5000c500aaaa0003", content=b"XFSB" + bytes(4092))


@pytest.mark.parametrize(("selector", "names"), [
    pytest.param({"wwns": ["0X5000C500AAAA0001", "0x5000c500aaaa0003"]}, ["sdb"],
                 id="by wwn, eligible devices only"),
    pytest.param({"wwns": ["naa.5000c500aaaa0001", "35000c500aaaa0002"]}, ["sdb", "sdc"],
                 id="by wwn in any of its spellings"),
    pytest.param({"byIdPatterns": ["wwn-0x5000c500aaaa*"]}, ["sdb", "sdc"], id="by-id pattern"),
    pytest.param({"models": ["PERC H755"]}, ["sdc"], id="by model, never the system disk"),
    pytest.param({"byIdPatterns": ["wwn-*"], "minSize": "1Ti"}, ["sdc"], id="minimum size"),
    pytest.param({"byIdPatterns": ["wwn-*"], "maxSize": "100Gi"}, ["sdb"], id="maximum size"),
])
def test_matching_luns_selects_eligible_devices_meeting_every_criterion(
    tmp_path: Path, selector: dict[str, t.Any], names: list[str]
) -> None:
    settings = BlockLunSettings.model_validate({"selector": selector, "storageClassName": "raw"})

    found = matching_luns(settings, probe_host(_luns(tmp_path).fs()))

    assert [device.name for device in found] == names
    assert all(device.size_bytes in (DEFAULT_DISK_BYTES, 2 * 2**40) for device in found)


def test_an_io_scheduler_is_set_only_where_the_kernel_offers_it(tmp_path: Path) -> None:
    spec = node_spec(storage={"blockLuns": {
        "selector": {"byIdPatterns": ["wwn-*"]}, "storageClassName": "raw", "ioScheduler": "none",
    }})
    files = host_facts(schedulers={
        "sdb": Scheduler("mq-deadline", ("mq-deadline", "none")),
        "sdc": Scheduler("bfq", ("bfq",)),
    })

    found = plan_of(_luns(tmp_path), spec, files=files)

    assert [device.name for device in found.published["luns"]] == ["sdb", "sdc"]
    step = steps_of(found)["block/sdb/scheduler"]
    assert (step.path, step.current, step.desired) == (
        "/dev/disk/by-id/wwn-0x5000c500aaaa0001/queue/scheduler", "mq-deadline", "none")
    assert "sdc offers the I/O schedulers bfq, not none" in (
        finding_of(found, "SchedulerUnavailable").message)


def test_a_multipath_map_is_published_by_its_id_not_its_friendly_name(tmp_path: Path) -> None:
    from kvtune_agent.features.block import exposed_lun

    # mpatha comes from multipath's bindings file, and can name another LUN on another day.
    tree = HostTree(tmp_path).disk("dm-2", dm=("mpatha", "mpath-3600a0980383030534"))
    [device] = probe_host(tree.fs()).block.devices
    assert device.by_id == ["dm-name-mpatha", "dm-uuid-mpath-3600a0980383030534"]

    assert exposed_lun(device).path == "/dev/disk/by-id/dm-uuid-mpath-3600a0980383030534"


def test_a_size_that_is_no_quantity_is_a_finding_naming_the_field(tmp_path: Path) -> None:
    # The schema and the model refuse such a size now; a spec stored before they did still
    # reaches the agent: built here without validation (model_copy), as it was stored.
    valid = node_spec(storage={"blockLuns": {
        "selector": {"models": ["x"], "minSize": "1Gi"}, "storageClassName": "raw"}})
    storage = valid.host.storage
    assert storage.block_luns is not None
    luns = storage.block_luns.model_copy(update={
        "selector": storage.block_luns.selector.model_copy(update={"min_size": "1.2.3"})})
    spec = valid.model_copy(update={"host": valid.host.model_copy(update={
        "storage": storage.model_copy(update={"block_luns": luns})})})

    found = plan_of(_luns(tmp_path), spec)

    assert finding_of(found, "InvalidLunSelector").message.startswith(
        "spec.host.storage.blockLuns.selector.minSize is '1.2.3', not a quantity")


def test_selected_luns_are_published_with_their_stable_by_id_path(tmp_path: Path) -> None:
    spec = node_spec(storage={"blockLuns": {
        "selector": {"byIdPatterns": ["wwn-*"]}, "storageClassName": "raw"}})
    [published, _] = plan_of(_luns(tmp_path), spec).published["luns"]
    assert published.path == "/dev/disk/by-id/wwn-0x5000c500aaaa0001"
    assert (published.name, published.wwid, published.model) == (
        "sdb", "0x5000c500aaaa0001", "ST4000NM")
    assert published.size_bytes == DEFAULT_DISK_BYTES
