"""The block section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    BlockDevice,
    HostReport,
)

from ..page import Page, human, or_dash


def _disk(page: Page, device: BlockDevice) -> None:
    rota = or_dash(None if device.rotational is None else int(device.rotational))
    page.line(f"  {device.name:<10} {human(device.size_bytes):>6} {rota:>4}  "
              f"{device.kind:<12} {or_dash(device.model or device.dm_name):<16} "
              f"{device.classification:<9}"
              f"{device.reason}", device.path)


def _block(page: Page, report: HostReport) -> None:
    page.heading("BLOCK DEVICES (lsblk)", "Block")
    page.line(f"  {'NAME':<10} {'SIZE':>6} {'ROTA':>4}  {'TYPE':<12} {'MODEL':<16} "
              f"{'CLASS':<9}REASON")
    for device in report.block.devices:
        _disk(page, device)
    skipped = ", ".join(f"{kind} {n}" for kind, n in sorted(report.block.skipped.items()))
    if skipped:
        page.line(f"  (not listed: {skipped})")


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _block(page, report)
