"""Block LUNs: the whole disks proven free that the profile's selector hands to VMs as raw LUNs,
published with their by-id path, and their I/O scheduler as the profile wants it."""

from __future__ import annotations

import typing as t
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase

from kvtune_api import quantity as kvtune_quantity
from kvtune_api.v1alpha1.host import (
    BlockDevice,
    BlockReport,
    HostReport,
    Problem,
)
from kvtune_api.wwid import canonical_wwid

from ...host.hostfs import HostFS, ProcessTable, setting
from ...host.names import BY_ID, SYS_BLOCK, attribute_path
from ..base import (
    Draft,
    Feature,
    PlanInputs,
)
from ..page import Page
from . import probe as block_probe
from . import text
from .probe import stable_id

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        ExposedLun,
        HypervisorNodeStateSpec,
    )
    from kvtune_api.v1alpha1.profile import (
        BlockLunSettings,
        LunSelector,
    )


def scheduler_path(device: str) -> str:
    """The I/O scheduler file of a block device, by its kernel name."""
    return f"{SYS_BLOCK}/{device}/queue/scheduler"


@dataclass(frozen=True)
class Scheduler:
    """A block device's queue/scheduler file: the selected scheduler and those on offer."""

    current: str
    offered: tuple[str, ...]


#: Block device name -> its I/O scheduler; devices whose file could not be read are absent.
Schedulers = Mapping[str, Scheduler]


def _size_bounds(selector: LunSelector) -> tuple[Decimal | None, Decimal | None]:
    bounds: list[Decimal | None] = []
    for name, value in (("minSize", selector.min_size), ("maxSize", selector.max_size)):
        try:
            bounds.append(None if value is None else kvtune_quantity.parse(value, name))
        except kvtune_quantity.QuantityError as err:
            raise ValueError(
                f"spec.host.storage.blockLuns.selector.{name} is {value!r}, not a quantity "
                f"({err}); write e.g. 100Gi") from err
    return bounds[0], bounds[1]


def exposed_lun(device: BlockDevice) -> ExposedLun:
    """How a selected LUN is published: with the by-id path that names it for good, which every
    Eligible device has (the block probe's rule: a kernel name can reach another disk after a
    reboot; `stable_id` says which name)."""
    from kvtune_api.v1alpha1.nodestate import ExposedLun
    by_id = stable_id(device)
    path = f"{BY_ID}/{by_id}" if by_id else device.path
    return ExposedLun(name=device.name, path=path, size_bytes=device.size_bytes,
                      wwid=device.wwid, model=device.model)


def matching_luns(settings: BlockLunSettings, host: HostReport) -> list[BlockDevice]:
    """The eligible raw LUNs the selector matches (all criteria it gives must match).

    Raises ValueError, naming the field, when minSize or maxSize is not a quantity.
    """
    selector = settings.selector
    smallest, largest = _size_bounds(selector)
    # Either side may spell an id its own way (naa.600a..., 3600a..., wwn-0x600a...).
    wwns = {canonical_wwid(wwn) for wwn in selector.wwns}
    return [device for device in host.block.devices if device.classification == "Eligible"
            and all((
                not wwns or canonical_wwid(device.wwid or "") in wwns,
                not selector.by_id_patterns or any(
                    fnmatchcase(name, pattern)
                    for name in device.by_id for pattern in selector.by_id_patterns),
                not selector.models or (device.model or "") in selector.models,
                smallest is None or device.size_bytes >= smallest,
                largest is None or device.size_bytes <= largest,
            ))]


def _luns(
    settings: BlockLunSettings | None, host: HostReport, schedulers: Schedulers, out: Draft
) -> None:
    if settings is None:
        return
    try:
        luns = matching_luns(settings, host)
    except ValueError as err:
        out.error("BlockDevices", "InvalidLunSelector", str(err))
        return
    out.publish("luns", *[exposed_lun(lun) for lun in luns])
    if not luns:
        out.warn("BlockDevices", "NoLunsMatched", (
            "spec.host.storage.blockLuns.selector matches no eligible (proven free) device on "
            "this node; see status.host.block for each device's classification and reason"))
    want = settings.io_scheduler
    if want == "Unmanaged":
        return
    for lun in luns:
        path = scheduler_path(lun.name)
        scheduler = schedulers.get(lun.name)
        by_id = stable_id(lun)
        if by_id is None:
            out.warn("BlockDevices", "SchedulerWithoutStableId", (
                f"LUN {lun.name} has no /dev/disk/by-id name, so kvtune could not tell it from "
                f"another disk given its kernel name after a reboot; its I/O scheduler ({path}) "
                "is left as it is"))
        elif scheduler is None:
            out.warn("BlockDevices", "SchedulerUnreadable",
                     f"cannot read {path}; the I/O scheduler of {lun.name} is left as it is")
        elif want not in scheduler.offered:
            out.warn("BlockDevices", "SchedulerUnavailable", (
                f"{lun.name} offers the I/O schedulers {', '.join(scheduler.offered)}, not "
                f"{want} ({path}); load its module (modprobe {want}) or choose another"))
        elif scheduler.current != want:
            # The path names the disk by id, so that the journal restores this disk's scheduler.
            out.step("sysfs", f"block/{lun.name}/scheduler", "BlockDevices",
                     attribute_path(by_id, "queue/scheduler"), scheduler.current, want,
                     f"storage.blockLuns.ioScheduler is {want} for LUN {lun.name} ({path}): the "
                     "guest schedules its own I/O")


class Luns(Feature[BlockReport, Schedulers]):
    condition = "BlockDevices"
    section = "block"
    problem_name = "Block"

    def probe(self, fs: HostFS, processes: ProcessTable) -> BlockReport:
        return block_probe.probe(fs)

    def check(self, found: BlockReport) -> list[Problem]:
        return block_probe.check(found)

    def read(self, fs: HostFS, host: HostReport) -> Schedulers:
        schedulers = {}
        for device in host.block.devices:
            if device.classification != "Eligible":  # only free LUNs are ever handed to VMs
                continue
            line = fs.read_value(scheduler_path(device.name))
            if line:
                offered = tuple(line.replace("[", " ").replace("]", " ").split())
                schedulers[device.name] = Scheduler(setting(line), offered)
        return schedulers

    def plan(self, inputs: PlanInputs, facts: Schedulers | None, out: Draft) -> None:
        _luns(inputs.spec.host.storage.block_luns, inputs.host, facts or {}, out)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return ("spec.host.storage.blockLuns is not set"
                if spec.host.storage.block_luns is None else None)

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Luns()
