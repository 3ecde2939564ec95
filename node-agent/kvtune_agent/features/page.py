"""The page of `kvtune probe`'s text report that each feature writes its section on.

Each feature prints its own section (Feature.report); the page marks every line with the worst
problem about its keys (a feature name or a host path), so the helpers here are shared by all.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvtune_api.v1alpha1.host import DaemonReport, HugepagePool, Problem, Severity

GUTTER: dict[Severity | None, str] = {"Error": "!!", "Warning": "! ", "Info": ". ", None: "  "}
RANK: dict[Severity, int] = {"Error": 0, "Warning": 1, "Info": 2}
LABEL_WIDTH = 24
#: Problem messages are wrapped to this many columns.
WIDTH = 100


class Page:
    """Lines being written, each with the gutter mark of the problems about its keys."""

    def __init__(self, problems: list[Problem]) -> None:
        self.lines: list[str] = []
        self.worst: dict[str, Severity] = {}
        for problem in problems:
            for key in (problem.feature, problem.path):
                held = self.worst.get(key)
                if key and (held is None or RANK[problem.severity] < RANK[held]):
                    self.worst[key] = problem.severity

    def mark(self, keys: Iterable[str]) -> Severity | None:
        found = [self.worst[k] for k in keys if k in self.worst]
        if not found:
            return None
        worst: Severity = min(found, key=RANK.__getitem__)
        return worst

    def line(self, text: str, *keys: str) -> None:
        self.lines.append(GUTTER[self.mark(keys)] + text)

    def heading(self, title: str, *features: str) -> None:
        self.lines.append("")
        self.line(title, *features)

    def row(self, label: str, value: object, *keys: str) -> None:
        self.line(f"  {label:<{LABEL_WIDTH}}{value}", *keys)


def human(size_bytes: int) -> str:
    """A size the way lsblk prints it: 512G, 1.8T."""
    size = float(size_bytes)
    for unit in "BKMGTP":
        if size < 1024 or unit == "P":
            return f"{size:.0f}{unit}" if size >= 10 or unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib // 1024} MiB"


def pools_text(pools: Iterable[HugepagePool]) -> str:
    text = ", ".join(f"{p.size} {or_dash(p.free)}/{or_dash(p.total)} free"
                     + (f" (+{p.surplus} surplus)" if p.surplus else "") for p in pools)
    return text or "-"


def daemon_text(daemon: DaemonReport) -> str:
    running = f"running (pid {', '.join(map(str, daemon.pids))})" if daemon.running else (
        "not running")
    wanted = f" by {', '.join(daemon.wanted_by)}" if daemon.wanted_by else ""
    return f"{running}; unit {daemon.unit}{wanted}"
