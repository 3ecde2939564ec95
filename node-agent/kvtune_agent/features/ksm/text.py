"""The KSM section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    HostReport,
)

from ..page import Page, daemon_text, or_dash
from . import probe as ksm


def _ksm(page: Page, report: HostReport) -> None:
    found = report.ksm
    page.heading("KSM AND NUMAD", "KSM", "Numad")
    page.row("KSM:", f"{found.state} (pages shared {or_dash(found.pages_shared)}, sharing "
             f"{or_dash(found.pages_sharing)}, merge_across_nodes "
             f"{or_dash(found.merge_across_nodes)})", ksm.KSM_RUN)
    page.row("ksmtuned:", daemon_text(found.ksmtuned))


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _ksm(page, report)
