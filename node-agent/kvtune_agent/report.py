"""The text form of a HostReport: what `vmxcap`, `numactl -H`, `lsblk` and `ip link` would say,
on one page, with the problems first and the lines they concern marked.

The gutter of each line carries the worst problem about it: `!!` error, `! ` warning, `. ` info,
so a reader scanning the page sees where to look without reading every line.
"""

from __future__ import annotations

import textwrap

from kvtune_api.v1alpha1.host import (
    HostReport,
    Problem,
)

from .features import FEATURES
from .features.page import GUTTER, RANK, WIDTH, Page


def _problems(page: Page, problems: list[Problem]) -> None:
    counts = {s: sum(p.severity == s for p in problems) for s in RANK}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "none"
    page.heading(f"PROBLEMS: {summary}")
    for problem in problems:
        head = f"{GUTTER[problem.severity]}  {problem.severity.upper():<8}{problem.feature:<9}"
        page.lines += textwrap.wrap(
            problem.message, WIDTH, initial_indent=head, subsequent_indent=" " * len(head),
            break_on_hyphens=False,
        )


def format_report(report: HostReport) -> str:
    """The report as one page of text, problems first."""
    page = Page(report.problems)
    page.lines.append("kvtune host probe (read-only)")
    _problems(page, report.problems)
    for feature in FEATURES:
        feature.report(page, report)
    return "\n".join(page.lines)
