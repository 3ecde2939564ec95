"""Crashes at every point where the agent changes the host, and exact pictures of a host tree.

A crash is a `Crash` raised (a BaseException: no `except Exception` of the agent stops it, as no
handler runs when the process is killed) just before the n-th host change: a file renamed into
place (write_file's rename, so its temporary file is left behind as after a real crash), a file
or directory removed, a host command run (grubby, update-grub), or just after it returned. Tests
run a sequence once to count its points, then once per point from a fresh tree, recover the way
the agent does (by running again), and compare the whole tree with the crash-free one.
"""

from __future__ import annotations

import contextlib
import os
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtune_agent.host import hostfs

#: Logs the fakes keep of their calls: test artefacts, not host state.
IGNORED = ("var/log/fake-boot-commands.log", "var/log/fake-systemctl.log")


class Crash(BaseException):
    """The agent's process dies here."""


class Points:
    """Counts host changes and raises Crash at the one asked for (None: never)."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.seen: list[str] = []

    def tick(self, what: str) -> None:
        self.seen.append(what)
        if len(self.seen) == self.at:
            raise Crash(what)


@contextlib.contextmanager
def crashing(at: int | None) -> Iterator[Points]:
    """Within: host changes are counted, and the `at`-th one crashes."""
    points = Points(at)
    replace, unlink, rmdir, run = os.replace, os.unlink, os.rmdir, hostfs.HostFS.run

    def crash_replace(src: t.Any, dst: t.Any, **kw: t.Any) -> None:
        points.tick(f"rename {dst}")
        replace(src, dst, **kw)

    def crash_unlink(path: t.Any, **kw: t.Any) -> None:
        if os.path.lexists(path):  # removing what is not there changes nothing
            points.tick(f"remove {path}")
        unlink(path, **kw)

    def crash_rmdir(path: t.Any, **kw: t.Any) -> None:
        if os.path.isdir(path) and not os.listdir(path):
            points.tick(f"remove directory {path}")
        rmdir(path, **kw)

    def crash_run(self: hostfs.HostFS, argv: t.Sequence[str], *, timeout: float
                  ) -> hostfs.CommandResult:
        points.tick(f"before {' '.join(argv)}")
        result = run(self, argv, timeout=timeout)
        points.tick(f"after {' '.join(argv)}")
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", crash_replace)
        patch.setattr(os, "unlink", crash_unlink)
        patch.setattr(os, "rmdir", crash_rmdir)
        patch.setattr(hostfs.HostFS, "run", crash_run)
        yield points


def picture(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under `root` (temporary files included), by path relative to it: a
    directory, a link and its target, or a file and its bytes (the root's own path, which the
    fake tools carry, made neutral so that two trees compare)."""
    found: dict[str, tuple[str, bytes]] = {}
    mark = str(root).encode()
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            key = os.path.relpath(path, root)
            if key in IGNORED:
                continue
            if os.path.islink(path):
                found[key] = ("link", os.readlink(path).encode())
            elif os.path.isdir(path):
                found[key] = ("dir", b"")
            else:
                found[key] = ("file", Path(path).read_bytes().replace(mark, b"ROOT"))
    return found
