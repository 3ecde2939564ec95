"""The one door to the host's filesystem: every read of /proc, /sys, /dev and /etc goes through it.

The agent runs in a pod and sees the host under `/proc/1/root`; tests point it at a temporary
tree. Keeping every access behind a `HostFS(root)` value means no probe can read the pod's own
/proc by mistake, and a test tree of files and symlinks is all a probe needs.

Reads never raise: a missing file is an answer (None, empty), because a feature the host lacks is
a result. A file that exists but cannot be read, or holds something unexpected, is recorded as a
`ReadIssue` (see `take_issues`) so the caller can report it with its path instead of guessing.
"""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass
from pathlib import Path

#: Errors that mean "not there": the file, a directory on the way, or (for /proc/<pid>) the
#: process went away while we looked.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ESRCH})
#: Symlink hops before `resolve` gives up, as the kernel's own limit (ELOOP).
_MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class ReadIssue:
    """A host path that exists but could not be read or did not hold what was expected."""

    path: str
    detail: str
    #: True: the read failed (permissions, I/O error); False: the content was not as expected.
    unreadable: bool = False


class HostFS:
    """Read access to a host mounted at `root`; the paths it takes are host paths ("/sys/...")."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # String concatenation rather than pathlib: a full probe makes thousands of reads.
        self._prefix = "" if str(root) == "/" else str(root).rstrip("/")
        self._issues: list[ReadIssue] = []

    def _real(self, path: str) -> str:
        """The path as this process opens it (under the root)."""
        return self._prefix + path

    def take_issues(self) -> list[ReadIssue]:
        """Issues recorded since the last call, oldest first."""
        issues, self._issues = self._issues, []
        return issues

    def note(self, path: str, detail: str) -> None:
        """Record that `path` held something a caller could not use (e.g. a malformed value)."""
        self._issues.append(ReadIssue(path, detail))

    def _failed(self, path: str, err: OSError) -> None:
        if err.errno not in _ABSENT:
            self._issues.append(ReadIssue(path, f"cannot read: {err.strerror or err}", True))

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes | None:
        """Up to `size` bytes from `offset` (all with -1); None when absent or unreadable."""
        try:
            with open(self._real(path), "rb", buffering=0) as f:
                if offset:
                    f.seek(offset)
                return f.read(size)
        except OSError as err:
            self._failed(path, err)
            return None

    def read_text(self, path: str) -> str | None:
        """The whole file as text (undecodable bytes replaced); None when absent or unreadable."""
        try:
            with open(self._real(path), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as err:
            self._failed(path, err)
            return None

    def read_value(self, path: str) -> str | None:
        """A one-value sysfs file, stripped; None when absent or unreadable."""
        text = self.read_text(path)
        return None if text is None else text.strip()

    def read_int(self, path: str, base: int = 10) -> int | None:
        """An integer file (base 16 accepts a 0x prefix); None when absent, unreadable or odd."""
        text = self.read_value(path)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            self.note(path, f"expected an integer, found {text[:40]!r}")
            return None

    def list_dir(self, path: str) -> list[str]:
        """Sorted entry names; empty when absent or unreadable."""
        try:
            return sorted(os.listdir(self._real(path)))
        except OSError as err:
            self._failed(path, err)
            return []

    def readlink(self, path: str) -> str | None:
        """A symlink's target as written; None when absent or not a link."""
        try:
            return os.readlink(self._real(path))
        except OSError as err:
            if err.errno != errno.EINVAL:  # EINVAL: exists but is not a symlink
                self._failed(path, err)
            return None

    def link_name(self, path: str) -> str | None:
        """The last component of a symlink's target, e.g. the driver name of `.../driver`."""
        target = self.readlink(path)
        return None if target is None else os.path.basename(target)

    def exists(self, path: str) -> bool:
        """The path exists (a dangling symlink counts: it is an entry all the same)."""
        return os.path.lexists(self._real(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._real(path))

    def device_number(self, path: str) -> str | None:
        """"major:minor" of the filesystem holding `path`, the name /sys/dev/block uses."""
        try:
            dev = os.stat(self._real(path)).st_dev
        except OSError as err:
            self._failed(path, err)
            return None
        return f"{os.major(dev)}:{os.minor(dev)}"

    def glob(self, pattern: str) -> list[str]:
        """Sorted host paths matching a shell pattern such as /sys/class/net/*/device.

        Dangling symlinks match (glob's lexists), unlike pathlib's glob: an absolute link such as
        a systemd `.wants/` entry dangles when seen from a pod and still counts.
        """
        matches = glob.glob(pattern.lstrip("/"), root_dir=self._real("/"))
        return sorted("/" + match for match in matches)

    def resolve(self, path: str) -> str | None:
        """The host path with every symlink followed; None when a component is missing.

        Absolute link targets are taken relative to the root, not to this process's own `/`,
        which is what the kernel (and os.path.realpath) would do, and wrong inside a pod.
        """
        pending = [part for part in path.split("/") if part]
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join([*done, part])
            try:
                target = os.readlink(self._real(here))
            except OSError as err:
                if err.errno == errno.EINVAL:  # a real file or directory: keep it
                    done.append(part)
                    continue
                self._failed(here, err)
                return None
            hops += 1
            if hops > _MAX_LINK_HOPS:
                self.note(path, "too many levels of symbolic links")
                return None
            if target.startswith("/"):
                done = []
            pending[:0] = [p for p in target.split("/") if p]
        return "/" + "/".join(done)

    def pids(self) -> list[int]:
        """Ids of the processes in the host's /proc (the agent needs hostPID to see them)."""
        return sorted(int(name) for name in self.list_dir("/proc") if name.isdigit())
