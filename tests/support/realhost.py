"""What the real-host tier's tests share with each other and with the e2e tier: whether this
machine can run them, the lock that serializes them, and the kernel's tunables as they read now
(see tests/realhost/conftest.py for why the tier exists)."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtune_agent.host.hostfs import HostFS, setting

#: The files this tier's tests may write, as globs: KSM, THP, every hugepage pool.
TUNABLES = (
    "/sys/kernel/mm/ksm/run",
    "/sys/kernel/mm/ksm/pages_to_scan",
    "/sys/kernel/mm/ksm/sleep_millisecs",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/transparent_hugepage/defrag",
    "/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages",
    "/sys/kernel/mm/hugepages/hugepages-*/nr_overcommit_hugepages",
    "/sys/devices/system/node/node*/hugepages/hugepages-*/nr_hugepages",
)
LOCK = "/run/lock/kvtune-realhost.lock"


def why_not_here() -> str | None:
    """Why this machine cannot run the tier, or None when it can."""
    if os.geteuid() != 0:
        return "the realhost tier changes kernel settings and block devices: it needs root"
    if not os.path.exists("/dev/kvm"):
        return "the realhost tier needs /dev/kvm (a host with KVM)"
    return None


#: Put on every realhost module: `pytestmark = REALHOST`.
REALHOST = [
    pytest.mark.realhost,
    pytest.mark.skipif(why_not_here() is not None, reason=why_not_here() or ""),
]


def read_tunables(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Every tunable of TUNABLES and `extra` as it reads now ([selected] entry of a choice
    file)."""
    values = {}
    for pattern in (*TUNABLES, *extra):
        for path in sorted(glob.glob(pattern)):
            values[path] = setting(Path(path).read_text())
    return values


class RecordingFS(HostFS):
    """The real `/`, with every kernel write it makes listed in `writes` (path, value)."""

    def __init__(self) -> None:
        super().__init__(Path("/"))
        self.writes: list[tuple[str, str]] = []

    def _store(self, path: str, value: str) -> None:
        self.writes.append((path, value))
        super()._store(path, value)


def restore(path: str, value: str) -> None:
    # KSM merged pages are unmerged first, as the agent does, so that run=0 leaves none shared.
    if path.endswith("/ksm/run") and value == "0":
        Path(path).write_text("2\n")
    Path(path).write_text(f"{value}\n")


@contextlib.contextmanager
def guarded_tunables(extra: tuple[str, ...] = ()) -> Iterator[RecordingFS]:
    """Every tunable (and each file of `extra`, such as a test disk's queue/scheduler) must read
    back afterwards as before, whatever happened in between; one that does not is restored,
    and the check fails (so a failed restore fails the suite)."""
    before = read_tunables(extra)
    fs = RecordingFS()
    try:
        yield fs
    finally:
        after = read_tunables(extra)
        changed = {path: (before[path], after.get(path)) for path in before
                   if after.get(path) != before[path]}
        # Hugepage pools last, so that KSM and THP are restored even if a pool will not shrink.
        for path in sorted(changed, key=lambda p: "hugepages" in p):
            restore(path, before[path])
        still = {path: (before[path], value) for path, value in read_tunables(extra).items()
                 if value != before[path]}
        untracked = {path for path, _ in fs.writes} - set(before)
        assert not untracked, f"kernel files were written that no check guards: {untracked}"
        assert not still, f"kernel tunables could not be restored (before, now): {still}"
        assert not changed, (
            "kernel tunables did not read back as before (before, after; restored now): "
            f"{changed}")
