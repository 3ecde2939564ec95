"""The numad section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    HostReport,
)

from ..page import Page, daemon_text


def _numad(page: Page, report: HostReport) -> None:
    # A row of the section KSM heads ("KSM AND NUMAD"): numad follows KSM in the registry.
    page.row("numad:", daemon_text(report.numad), "Numad")


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _numad(page, report)
