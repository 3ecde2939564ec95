"""The read-only host probe: every registered feature with a report section, run by probe_host.

Each feature's `probe(fs, processes)` only reads (the host's process table is read once per
pass, see probe_host), and its `check(found)` is a pure function that turns what was found into
findings. probe_host adds the files a probe could not read or make sense of (from HostFS) as
problems of that feature, so nothing is guessed.
"""

from __future__ import annotations

import re
import typing as t
from collections.abc import Sequence

from kvtune_api.v1alpha1.host import MAX_PROBLEMS, HostReport, Problem

from ..features.base import Feature, FeatureName
from ..host.hostfs import HostFS, ProcessTable, ReadIssue

SEVERITY_ORDER = {"Error": 0, "Warning": 1, "Info": 2}


def _issue_problem(feature: FeatureName, issue: ReadIssue) -> Problem:
    if issue.unreadable:
        advice = ("run the agent as root (privileged) with the host's / mounted, or fix the "
                  "file's permissions")
    else:
        advice = "the value was ignored; check what wrote it"
    return Problem(
        severity="Warning", feature=feature, path=issue.path,
        message=f"{issue.path}: {issue.detail}; {advice}",
    )


#: Problems of one kind beyond this many are told as one entry with the count and examples.
SAME_KIND_SHOWN = 3
_NUMBER = re.compile(r"[0-9]+")


#: Directories whose entries are named by the kernel, in letters as often as in digits (sda,
#: sdab, vdc, xvda; eno, ensf): a problem about one of them is of the kind of its siblings'.
NAMED_ENTRIES = ("/dev", "/dev/mapper", "/sys/block", "/sys/class/block", "/sys/class/net")


def _kind(problem: Problem) -> tuple[str, str, str]:
    """Problems of one kind differ only in their numbers (cpu12, node3, CPUs 8-15) and in the
    name of the device they are about (sdb, sddh)."""
    message = problem.message
    parent, _, name = (problem.path or "").rpartition("/")
    if name and parent in NAMED_ENTRIES:
        message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", "NAME", message)
    return problem.severity, problem.feature, _NUMBER.sub("N", message)


def _aggregated(problems: list[Problem], beyond: int) -> list[Problem]:
    """Each kind with more than `beyond` problems as one entry: the first, the count, and
    where a few others are; in the order each kind first appears."""
    kinds: dict[tuple[str, str, str], list[Problem]] = {}
    for problem in problems:
        kinds.setdefault(_kind(problem), []).append(problem)
    out = []
    for same in kinds.values():
        if len(same) <= beyond:
            out += same
            continue
        first, others = same[0], same[1:]
        where = [p.path or p.message[:60] for p in others[:SAME_KIND_SHOWN]]
        more = len(others) - len(where)
        out.append(first.model_copy(update={"message": (
            f"{len(same)} findings of one kind; the first: {first.message} (the others are "
            f"alike, at {', '.join(where)}{f' and {more} more' if more else ''})"
        )}))
    return out


def _bounded(problems: list[Problem]) -> list[Problem]:
    """Most severe first, within the report's limit. Many problems of one kind (the same read
    failing on every CPU) are told as one entry, so that they cannot push other findings out
    nor bury them; past the limit even two of a kind are; only if distinct findings still
    overflow are the least severe cut, with a last entry saying how many."""
    problems = _aggregated(problems, SAME_KIND_SHOWN)
    if len(problems) > MAX_PROBLEMS:
        problems = _aggregated(problems, 1)
    ordered = sorted(problems, key=lambda p: SEVERITY_ORDER[p.severity])
    if len(ordered) <= MAX_PROBLEMS:
        return ordered
    cut = len(ordered) - (MAX_PROBLEMS - 1)
    return [*ordered[: MAX_PROBLEMS - 1], Problem(
        severity="Info", feature="Report",
        message=f"{cut} more findings were left out (the report keeps {MAX_PROBLEMS})",
    )]


def probe_host(
    features: Sequence[Feature[t.Any, t.Any]], fs: HostFS, processes: ProcessTable | None = None,
) -> HostReport:
    """Probe every feature of the host behind `fs`; one failing probe does not hide the others.

    `processes` is the host's process table for this pass (`HostFS.processes`), read here when
    not given; a caller that needs the table after the probe (the VM audit) reads it and passes
    it, so a pass reads /proc once.
    """
    if processes is None:
        processes = fs.processes()
    sections: dict[str, t.Any] = {}
    problems: list[Problem] = []
    for feature in features:
        if feature.section is None or feature.problem_name is None:
            continue
        name = feature.problem_name
        try:
            found = feature.probe(fs, processes)
            problems += feature.check(found)
            sections[feature.section] = found
        except Exception as err:  # a probe bug on an odd host must not cost the whole report
            problems.append(Problem(
                severity="Error", feature=name,
                message=f"the {name} probe failed ({type(err).__name__}: {err}); this "
                "is a kvtune bug: please report it with the output of `kvtune probe --json`",
            ))
        issues = processes.issues if feature.reads_processes else ()
        problems += [_issue_problem(name, i) for i in (*issues, *fs.take_issues())]
    return HostReport.model_validate({**sections, "problems": _bounded(problems)})
