"""The kernel's cpulist format ("0-3,8-11"), in which sysfs lists CPUs and nodes and the report
stores them, so that a 256-CPU set stays one short string."""

from __future__ import annotations

from collections.abc import Iterable

from ..hostfs import HostFS


def parse(text: str) -> set[int]:
    """The ids in a cpulist; raises ValueError when it is not one."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        ids.update(range(int(first), int(last or first) + 1))
    return ids


def format_ids(ids: Iterable[int]) -> str:
    """The shortest cpulist for the ids, ranges ascending."""
    ranges: list[list[int]] = []
    for i in sorted(set(ids)):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def read(fs: HostFS, path: str) -> set[int] | None:
    """The ids in a cpulist file; None when absent, unreadable or malformed (then noted)."""
    text = fs.read_value(path)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError:
        fs.note(path, f"expected a cpulist such as 0-3,8-11, found {text[:40]!r}")
        return None
