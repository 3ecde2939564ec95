"""The one door to the host's filesystem: every read and write of /proc, /sys, /dev and /etc.

The agent runs in a pod and sees the host under `/proc/1/root`; tests point it at a temporary
tree. Keeping every access behind a `HostFS(root)` value means no probe can read the pod's own
/proc by mistake, and a test tree of files and symlinks is all a probe needs.

Reads never raise: a missing file is an answer (None, empty), because a feature the host lacks is
a result. A file that exists but cannot be read, or holds something unexpected, is recorded as a
`ReadIssue` (see `take_issues`) so the caller can report it with its path instead of guessing.

Reads of block devices have a deadline: a disk's I/O can hang for good (a LUN whose paths are
down), and the probe must not hang with it (`read_devices`).

Writes are defensive, because they run privileged on production hosts: a kernel value is written
under a deadline (a driver can hang in sriov_numvfs) and read back; a regular file is replaced
atomically (temporary file, fsync, rename), so a crash never leaves half a journal behind. Reads
of kernel values on the way to a write have the same deadline (`read_within`), and no read at all
touches a file whose write or read has not returned: the kernel serialises sriov_numvfs, so a
read waits for a hung write, and a probe after a hung write would hang the agent with it.

The host's own tools (grubby, update-grub) run here too, with the host's root as their `/`
(`run`): they read and write the same files, so they belong behind the same door. Each has a
deadline; the command prefix that enters the root is a parameter, so tests run small scripts.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import signal
import stat
import subprocess
import threading
import time
import typing as t
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Errors that mean "not there": the file, a directory on the way, or (for /proc/<pid>) the
#: process went away while we looked.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ESRCH})
#: Symlink hops before `resolve` gives up, as the kernel's own limit (ELOOP).
_MAX_LINK_HOPS = 40
#: The most any read takes in, in bytes: /proc and /sys files are far smaller, and a file that
#: is larger (a 400 MiB "config", /dev/zero behind a link) is refused rather than read.
MAX_READ = 8 * 2**20
#: The most a configuration file (the kubelet's, k3s's, GRUB's, the journal) may hold.
MAX_CONFIG = 2**20
#: The most of a host command's output kept (64 KiB): grubby --info for dozens of entries and
#: update-grub's messages are a few KiB; the rest of a runaway tool's output is dropped.
MAX_OUTPUT = 64 * 2**10
#: The deadline of one configuration file read, in seconds: such files may sit on a network or
#: FUSE filesystem whose reads hang.
FILE_SECONDS = 10.0
#: The most nodes a YAML document may expand to, its aliases expanded: a real configuration
#: has hundreds; a "billion laughs" of a few lines has billions.
MAX_YAML_NODES = 100_000
#: What a path that is not a regular file is, for messages.
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK:
          "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}
#: What a refused write means, and what to do about it.
_REFUSED = {
    errno.EINVAL: "the kernel rejected the value (EINVAL): it is out of range or not supported "
    "by this kernel or device; check the value in the profile",
    errno.EBUSY: "the kernel says it is busy (EBUSY): something still uses it (e.g. VFs attached "
    "to VMs); drain the node and retry",
    errno.EPERM: "not permitted (EPERM): run the agent privileged, as root, with the host's / "
    "mounted read-write",
    errno.EACCES: "permission denied (EACCES): run the agent privileged, as root, with the "
    "host's / mounted read-write",
    errno.EROFS: "read-only filesystem (EROFS): mount the host's /sys, /etc and /var into the "
    "agent read-write",
    errno.ENOENT: "it does not exist (ENOENT): the device or kernel feature is absent, or its "
    "driver is not loaded",
    errno.EISDIR: "it is a directory, not a file that takes a value (EISDIR)",
    errno.ENOMEM: "the kernel could not allocate memory for it (ENOMEM); retry later",
    errno.ENOSPC: "no space left on the device (ENOSPC); free some space",
}
#: The [selected] entry of a sysfs choice file such as "always [madvise] never".
_SELECTED = re.compile(r"\[([^]]+)\]")
#: Files (kernel files and devices, as this process opens them) with a call under a deadline in
#: flight: a write, a read on the way to a write, a device read. One that timed out stays here
#: until the kernel returns, which may be never: Python cannot kill a thread, least of all one
#: blocked in a system call, so the only safe thing is never to touch that file again meanwhile
#: (a read of it would block behind the hung call too, and a device whose I/O hangs would tie up
#: one more thread each time). Process-wide, not per HostFS, so that a new HostFS value cannot
#: forget a hung call. Keyed by real path (symlinks resolved), since /sys reaches one file
#: through many links and /dev one disk through its by-id names.
_IN_FLIGHT: set[str] = set()
#: Guards `_IN_FLIGHT` and the `_DeviceReader`s' state, and wakes the callers waiting on them.
_CALLS = threading.Condition()


@dataclass(frozen=True)
class ReadIssue:
    """A host path that exists but could not be read or did not hold what was expected."""

    path: str
    detail: str
    #: True: the read failed (permissions, I/O error); False: the content was not as expected.
    unreadable: bool = False


@dataclass(frozen=True)
class HungRead:
    """A device read that did not finish within its deadline, in this call or an earlier one.

    Its thread is left blocked in the kernel; the device is not read again until that read
    returns (see `_IN_FLIGHT`).
    """

    path: str
    #: The deadline of the call that reports it, in seconds.
    timeout: float


@dataclass(frozen=True)
class Process:
    """One process of the host as its /proc/<pid> shows it."""

    pid: int
    #: /proc/<pid>/comm: the executable's name, cut to 15 characters by the kernel (a script
    #: run as `bash script` shows the interpreter); None when unreadable.
    comm: str | None
    #: /proc/<pid>/cmdline split at its NULs; empty for a kernel thread.
    argv: tuple[str, ...]


@dataclass(frozen=True)
class ProcessTable:
    """The host's processes from one read of /proc, and what of it could not be read.

    Several probes and the VM audit look at processes; handing them this value instead of
    letting each list /proc keeps a probe pass to one read of /proc. The read's issues travel
    with it, so each user can report them where they matter, as if it had read /proc itself.
    """

    processes: tuple[Process, ...] = ()
    issues: tuple[ReadIssue, ...] = ()

    def __iter__(self) -> t.Iterator[Process]:
        return iter(self.processes)


@dataclass(frozen=True)
class WriteResult:
    """What a write of a kernel value came to, with a message a person can act on."""

    path: str
    outcome: t.Literal["Applied", "Partial", "Failed"]
    message: str = ""
    #: What the file held afterwards (its [selected] entry for a choice file), if it was read.
    read_back: str | None = None


def run_bounded(command: Sequence[str], timeout: float) -> tuple[int, str]:
    """(exit code, stripped output and error) of a command that must finish within `timeout` s.

    Raises OSError when it cannot be started, and subprocess.TimeoutExpired once it overran and
    was killed: it runs in a session of its own, so the kill takes what it started too (nsenter's
    systemctl, chroot's grubby). Output is kept up to MAX_OUTPUT bytes (the rest is read and
    dropped, so the command never blocks on a full pipe) and decoded leniently: a broken tool's
    garbage is its answer to judge, not an exception out of the cycle or megabytes in status.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    kept = bytearray()

    def drain() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(65536):
            kept.extend(chunk[:MAX_OUTPUT - len(kept)])

    reader = threading.Thread(target=drain, name="kvtune command output", daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout=timeout)
        # What it left running in its session may hold the pipe open past its exit.
        reader.join(max(0.0, deadline - time.monotonic()))
        if reader.is_alive():
            raise subprocess.TimeoutExpired(command, timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # A process that left the session may still hold the pipe: its reader is let go.
        reader.join(1.0)
        raise
    return proc.returncode, kept.decode("utf-8", errors="replace").strip()


class HostCommandError(Exception):
    """A host command could not be run or did not finish in time; the message says what to do."""


@dataclass(frozen=True)
class CommandResult:
    """What a host command came to."""

    argv: tuple[str, ...]
    code: int
    #: Its standard output and error, interleaved, stripped.
    output: str

    def failure(self) -> str:
        """A sentence naming the command, its exit code and what it said."""
        return (f"`{' '.join(self.argv)}` failed (exit {self.code}): "
                f"{self.output or 'no output'}")


class UnusableFile(Exception):
    """A configuration file cannot be read or parsed; the message names it and why."""


def _expanded(node: t.Any, sizes: dict[int, int]) -> int:
    """The nodes a composed YAML node stands for once its aliases are expanded (an alias is
    the very node object it names, so each node is counted once and reused)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_YAML_NODES + 1  # a node that contains itself expands for ever
    value = node.value
    total = 1
    if isinstance(value, list):
        for item in value:
            for child in (item if isinstance(item, tuple) else (item,)):
                total += _expanded(child, sizes)
                if total > MAX_YAML_NODES:
                    break
    sizes[id(node)] = total
    return total


class HostWriteError(Exception):
    """A regular file could not be written or removed; the message names the path and the fix."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def selected(text: str) -> str | None:
    """The [selected] entry of a choice file such as "always [madvise] never"; None without one."""
    match = _SELECTED.search(text)
    return match.group(1) if match else None


def setting(text: str) -> str:
    """The value a kernel file shows: the [selected] entry of a choice file, else the text."""
    return selected(text) or text.strip()


def refused(path: str, what: str, err: OSError) -> str:
    """A sentence saying that `what` (e.g. "writing '8'") failed at `path`, why, and what to do."""
    why = _REFUSED.get(err.errno or 0, f"{err.strerror or err}")
    return f"{what} {path} failed: {why}"


#: (offset, length) of a part of a device to read.
Region = tuple[int, int]


def _read_regions(real: str, regions: Sequence[Region]) -> tuple[bytes, ...]:
    """Each region of the device, in one open; a region comes back short only where the device
    ends (or fails) before it does: a single read() may return less than asked, so it loops."""
    found = []
    with open(real, "rb", buffering=0) as f:
        for offset, length in regions:
            f.seek(offset)
            data = f.read(length) or b""
            while len(data) < length and (more := f.read(length - len(data))):
                data += more
            found.append(data)
    return tuple(found)


class _DeviceReader:
    """A daemon thread that reads devices in turn, for a caller watching the clock.

    Its state is guarded by `_CALLS`. The caller abandons it when a read overruns; it then stops
    when that read returns, reading nothing more and reporting nothing.
    """

    def __init__(self, reads: list[tuple[str, str, str]],
                 regions: Mapping[str, Sequence[Region]]) -> None:
        #: (host path, path as opened, its real path) of the devices still to read; the first
        #: is being read.
        self.pending = reads
        self.regions = regions
        #: When the read of the first pending device began (time.monotonic()).
        self.since = time.monotonic()
        #: What each finished read gave: the regions' bytes, or the error that stopped it.
        self.found: dict[str, tuple[bytes, ...] | OSError] = {}
        self.abandoned = False
        threading.Thread(target=self._run, name="kvtune device reads", daemon=True).start()

    def _run(self) -> None:
        while True:
            with _CALLS:
                if self.abandoned or not self.pending:
                    return
                path, opened, real = self.pending[0]
            found: tuple[bytes, ...] | OSError
            try:
                found = _read_regions(opened, self.regions[path])
            except OSError as err:
                found = err
            with _CALLS:
                _IN_FLIGHT.discard(real)
                if self.abandoned:
                    return
                self.found[path] = found
                del self.pending[0]
                self.since = time.monotonic()  # with the pop: the next read is timed afresh
                if not self.pending:
                    # Only now: a caller woken after every read would cost more than the reads.
                    # It wakes at the deadline of the read it saw, and then waits on if that
                    # read has finished.
                    _CALLS.notify_all()


class HostFS:
    """Access to a host mounted at `root`; the paths it takes are host paths ("/sys/...")."""

    def __init__(self, root: Path, *, command_prefix: Sequence[str] | None = None) -> None:
        """`command_prefix` makes a host command run in the host root; by default nothing for
        `/` and `chroot <root>` otherwise (e.g. /proc/1/root: the agent runs privileged)."""
        self.root = root
        # String concatenation rather than pathlib: a full probe makes thousands of reads.
        self._prefix = "" if str(root) == "/" else str(root).rstrip("/")
        self._issues: list[ReadIssue] = []
        #: The host path a read is in right now (None between reads): what a probe that does
        #: not return in time is stuck on (engine/cycle.py). One slot: reads are made one at a time.
        self.reading: str | None = None
        if command_prefix is None:
            command_prefix = ("chroot", self._prefix) if self._prefix else ()
        self.command_prefix = tuple(command_prefix)

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

    def _hung(self, path: str, real: str) -> bool:
        """`real` has a call in flight that did not return (see `_IN_FLIGHT`): it is not read."""
        # Mostly empty: then no read pays for resolving its path.
        if not _IN_FLIGHT or os.path.realpath(real) not in _IN_FLIGHT:
            return False
        self._issues.append(ReadIssue(path, (
            "not read: an earlier write or read of it has not returned, and a read would wait "
            "behind it (check the driver's messages in dmesg; a reboot may be needed)"), True))
        return True

    def _failed(self, path: str, err: OSError) -> None:
        if err.errno not in _ABSENT:
            self._issues.append(ReadIssue(path, f"cannot read: {err.strerror or err}", True))

    def _not_regular(self, path: str, mode: int, device: bool = False) -> bool:
        """True, with an issue, when `mode` is not a regular file's (or, with `device`, a
        character device's): a FIFO would block the read for ever, a device (/dev/zero) never
        ends, and opening some devices acts."""
        if stat.S_ISREG(mode) or (device and stat.S_ISCHR(mode)):
            return False
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        self._issues.append(ReadIssue(
            path, f"cannot read: it is {kind}, not a regular file", True))
        return True

    def _read_capped(
        self, path: str, real: str, offset: int, size: int, limit: int, device: bool = False,
        *, in_flight: bool = False,
    ) -> bytes | None:
        """Up to `size` bytes (all with -1, at most `limit`) of the regular file `real`; None,
        with an issue, when it is not a regular file, larger than `limit`, absent or unreadable.

        The file's kind is checked before it is opened (opening a FIFO blocks, opening some
        devices acts) and again on what was opened (it may have been swapped in between).
        `in_flight`: the caller has registered this very read in `_IN_FLIGHT` itself.
        """
        if not in_flight and self._hung(path, real):
            return None
        self.reading = path
        try:
            return self._read_regular(path, real, offset, size, limit, device)
        finally:
            self.reading = None

    def _read_regular(
        self, path: str, real: str, offset: int, size: int, limit: int, device: bool
    ) -> bytes | None:
        """`_read_capped`'s read itself."""
        try:
            if self._not_regular(path, os.stat(real).st_mode, device):
                return None
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            with open(fd, "rb", buffering=0) as f:
                if self._not_regular(path, os.fstat(fd).st_mode, device):
                    return None
                if offset:
                    f.seek(offset)
                want = limit + 1 if size < 0 else min(size, limit + 1)
                data = f.read(want) or b""
                while len(data) < want and (more := f.read(want - len(data))):
                    data += more
        except OSError as err:
            self._failed(path, err)
            return None
        if len(data) > limit:
            self._issues.append(ReadIssue(path, (
                f"cannot read: it holds more than {limit} bytes, more than such a file ever does"),
                True))
            return None
        return data

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes | None:
        """Up to `size` bytes from `offset` (all with -1); None when absent or unreadable.

        A read of a given size may be of a character device (a CPU's MSRs in /dev/cpu/N/msr):
        it ends where asked."""
        return self._read_capped(path, self._real(path), offset, size, MAX_READ, size >= 0)

    def read_devices(
        self, regions: Mapping[str, Sequence[Region]], *, timeout: float
    ) -> dict[str, tuple[bytes, ...] | HungRead | None]:
        """The given (offset, length) regions of each device, each device's reads (open
        included) within `timeout` s. A region is shorter than asked where the device ends.

        A device whose reads overrun their deadline is a HungRead. Until the kernel returns that
        read (a thread blocked in a system call cannot be killed), later calls give it a HungRead
        at once, without reading it again. None: absent or unreadable, as with `read_bytes`.

        The reads run one after another in a single daemon thread: handing each read to a thread
        of its own costs more than the read itself. Once a read hangs, the devices after it get a
        thread each, all at once, so that devices that hang together (their storage path is
        down) cost one more deadline between them, not one each.
        """
        found: dict[str, tuple[bytes, ...] | HungRead | None] = {}
        readers: list[_DeviceReader] = []
        with _CALLS:
            todo: list[tuple[str, str, str]] = []
            for path in regions:
                opened = self._real(path)
                real = os.path.realpath(opened)
                if real in _IN_FLIGHT:
                    found[path] = HungRead(path, timeout)
                else:
                    _IN_FLIGHT.add(real)
                    todo.append((path, opened, real))
            if todo:
                readers.append(_DeviceReader(todo, regions))
            while active := [r for r in readers if r.pending and not r.abandoned]:
                now = time.monotonic()
                overrun = [r for r in active if now >= r.since + timeout]
                for reader in overrun:
                    reader.abandoned = True
                    (path, _, _), *rest = reader.pending
                    found[path] = HungRead(path, timeout)
                    readers += [_DeviceReader([read], regions) for read in rest]
                if not overrun:
                    _CALLS.wait(min(r.since for r in active) + timeout - now)
            for reader in readers:
                for path, result in reader.found.items():
                    if isinstance(result, OSError):
                        self._failed(path, result)
                        found[path] = None
                    else:
                        found[path] = result
        return {path: found[path] for path in regions}

    def read_text(self, path: str) -> str | None:
        """The whole file as text (undecodable bytes replaced); None when absent or unreadable
        (a FIFO, a device, or more than MAX_READ bytes count as unreadable)."""
        data = self._read_capped(path, self._real(path), 0, -1, MAX_READ)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_file(
        self, path: str, *, limit: int = MAX_CONFIG, timeout: float = FILE_SECONDS,
        base: str = "",
    ) -> str | None:
        """A configuration file (the kubelet's, k3s's, GRUB's, kvtune's journal) as text:
        its path resolved inside the host root (an absolute link such as /var/run -> /run names
        the host's /run, not the agent's), a regular file of at most `limit` bytes, read within
        `timeout` s. None when absent or unreadable, with an issue saying which of these failed.
        `base`: the root the path is in, e.g. /proc/<pid>/root for a process's own files.
        """
        resolved = self.in_root(path, base)
        if resolved is None:
            return None
        found: list[bytes | None] = []
        late = self._within(path, "read", "reading", timeout, lambda: found.append(
            self._read_capped(path, self._real(resolved), 0, -1, limit, in_flight=True)))
        if late:
            self._issues.append(ReadIssue(path, late, True))
            return None
        data = found[0] if found else None
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_yaml(self, path: str, *, limit: int = MAX_CONFIG, base: str = "") -> t.Any:
        """A YAML file (`read_file`) parsed safely, its alias expansion bounded.

        Raises UnusableFile naming the path when it cannot be read or parsed; None for an
        empty document. A "billion laughs" of a few lines expands to billions of nodes when its
        value is walked or printed: one that expands beyond MAX_YAML_NODES is refused before.
        """
        import yaml  # here: most hosts `kvtune probe` runs on have no YAML to read

        text = self.read_file(path, limit=limit, base=base)
        if text is None:
            issue = next((i for i in reversed(self._issues) if i.path == path), None)
            raise UnusableFile(f"{path} cannot be read" + (f" ({issue.detail})" if issue else ""))
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                if node is not None and _expanded(node, {}) > MAX_YAML_NODES:
                    raise UnusableFile(
                        f"{path} expands to more than {MAX_YAML_NODES} YAML nodes through its "
                        "aliases (a YAML bomb?); it is not read")
                return None if node is None else loader.construct_document(node)
            finally:
                loader.dispose()
        except yaml.YAMLError as err:
            # Where, never what: the file may be one the agent can read and the cluster not.
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise UnusableFile(f"{path} is invalid YAML{where}") from err

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

    def resolve(self, path: str, *, missing_ok: bool = False, base: str = "") -> str | None:
        """The host path with every symlink followed; None when a component is missing (with
        `missing_ok`, the missing part is kept as it is instead).

        Absolute link targets are taken relative to the root, not to this process's own `/`,
        which is what the kernel (and os.path.realpath) would do, and wrong inside a pod. With
        `base` (a host path such as /proc/<pid>/root, which `path` starts with), they are taken
        relative to `base` instead, whose own links are left to the kernel: a process's root
        is a link only the kernel can follow.
        """
        floor = [part for part in base.split("/") if part]
        parts = [part for part in path.split("/") if part]
        if parts[:len(floor)] != floor:
            raise ValueError(f"{path} is not under {base}")
        pending = parts[len(floor):]
        done = list(floor)
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == ".":
                continue
            if part == "..":
                if len(done) > len(floor):
                    done.pop()
                continue
            here = "/" + "/".join([*done, part])
            try:
                target = os.readlink(self._real(here))
            except OSError as err:
                if err.errno == errno.EINVAL:  # a real file or directory: keep it
                    done.append(part)
                    continue
                if missing_ok and err.errno == errno.ENOENT:
                    return "/" + "/".join([*done, part, *pending])
                self._failed(here, err)
                return None
            hops += 1
            if hops > _MAX_LINK_HOPS:
                self.note(path, "too many levels of symbolic links")
                return None
            if target.startswith("/"):
                done = list(floor)
            pending[:0] = [p for p in target.split("/") if p]
        return "/" + "/".join(done)

    def in_root(self, path: str, base: str = "") -> str | None:
        """`path` with every symlink of its existing part followed inside the host root (or
        `base`, see `resolve`), and its missing part kept as it is (a file still to be
        created); None when a link loops or a component cannot be read."""
        return self.resolve(path, missing_ok=True, base=base)

    def boot_time(self) -> float | None:
        """When the host booted, from /proc/stat's btime (seconds since the epoch)."""
        for line in (self.read_text("/proc/stat") or "").splitlines():
            name, _, value = line.partition(" ")
            if name == "btime" and value.strip().isdigit():
                return float(value)
        return None

    def has_file(self, path: str) -> bool:
        """The path exists, its links followed inside the host root (`in_root`): for files
        kvtune reads and writes itself, whose directories may be absolute links (/var/run)."""
        resolved = self.in_root(path)
        return resolved is not None and os.path.lexists(self._real(resolved))

    def pids(self) -> list[int]:
        """Ids of the processes in the host's /proc (the agent needs hostPID to see them)."""
        return sorted(int(name) for name in self.list_dir("/proc") if name.isdigit())

    def processes(self) -> ProcessTable:
        """The host's processes with their comm and command line, in pid order.

        A process that ends while /proc is read is left out. The issues of the read are in the
        table, not among this HostFS's (`take_issues`): they belong to whoever uses the table.
        """
        mark = len(self._issues)
        found = []
        for pid in self.pids():
            comm = self.read_value(f"/proc/{pid}/comm")
            cmdline = self.read_text(f"/proc/{pid}/cmdline")
            if comm is None and cmdline is None:
                continue
            argv = tuple(cmdline.removesuffix("\0").split("\0")) if cmdline else ()
            found.append(Process(pid, comm, argv))
        issues = tuple(self._issues[mark:])
        del self._issues[mark:]
        return ProcessTable(tuple(found), issues)

    def executable(self, *paths: str) -> str | None:
        """The first of these host paths that is an executable file; None when none is."""
        for path in paths:
            real = self._real(path)
            if os.path.isfile(real) and os.access(real, os.X_OK):
                return path
        return None

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        """Run a host command (its argv[0] a host path) in the host root within `timeout` s.

        Raises HostCommandError when it cannot be started or overruns; a non-zero exit is a
        result for the caller to judge.
        """
        command = [*self.command_prefix, *argv]
        try:
            code, output = run_bounded(command, timeout)
        except OSError as err:
            raise HostCommandError(
                f"cannot run {command[0]} ({err.strerror or err}) for `{' '.join(argv)}`; run "
                "the agent privileged, with the host's / at its root") from err
        except subprocess.TimeoutExpired:
            raise HostCommandError(
                f"`{' '.join(argv)}` did not finish within {timeout:g} s and was killed; run it "
                "on the host to see why") from None
        return CommandResult(tuple(argv), code, output)

    def modified(self, path: str) -> float | None:
        """The file's modification time (seconds since the epoch); None when absent."""
        try:
            return os.stat(self._real(path)).st_mtime
        except OSError as err:
            self._failed(path, err)
            return None

    # -- writes -----------------------------------------------------------------------------

    def read_setting(self, path: str) -> str | None:
        """A kernel value as it would be written back (see `setting`); None when unreadable."""
        text = self.read_value(path)
        return None if text is None else setting(text)

    def read_within(self, path: str, *, timeout: float) -> tuple[str | None, str]:
        """`read_setting` within `timeout` seconds: the value and "", or None and why not.

        For the reads that come before a write: a driver that hangs a write hangs reads too.
        Like every read, only a regular file (what sysfs and procfs show) of at most MAX_READ
        bytes is read: a FIFO or a device in its place would leave a thread blocked or reading
        for ever, filling memory.
        """
        real = self._real(path)
        texts: list[str] = []
        errors: list[OSError] = []
        unusable: list[str] = []

        def work() -> None:
            try:
                mode = os.stat(real).st_mode
                if not stat.S_ISREG(mode):
                    unusable.append(f"it is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}"
                                    ", not a regular file")
                    return
                fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
                with open(fd, "rb", buffering=0) as f:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
                        unusable.append("it was replaced by what is not a regular file")
                        return
                    data = f.read(MAX_READ + 1) or b""
                    while len(data) <= MAX_READ and (more := f.read(MAX_READ + 1 - len(data))):
                        data += more
                if len(data) > MAX_READ:
                    unusable.append(f"it holds more than {MAX_READ} bytes")
                    return
                texts.append(data.decode("utf-8", errors="replace"))
            except OSError as err:
                errors.append(err)

        late = self._within(path, "read", "reading", timeout, work)
        if late:
            return None, late
        if errors:
            return None, refused(path, "reading", errors[0])
        if unusable:
            return None, f"reading {path} failed: {unusable[0]}"
        return setting(texts[0]), ""

    def _within(
        self, path: str, verb: str, what: str, timeout: float, work: Callable[[], None]
    ) -> str:
        """Run `work`, a call into the kernel file `path`, in a worker thread for at most
        `timeout` s; "" when it returned, else why not (`what` starts the message).

        A call that does not return in time keeps the file in `_IN_FLIGHT` until it does, by its
        real path: the probe reaches sriov_numvfs through other links than the write.
        """
        real = os.path.realpath(self._real(path))
        with _CALLS:
            if real in _IN_FLIGHT:
                return (
                    f"an earlier write or read of {path} has not returned yet; kvtune does not "
                    "touch it again while it hangs (check the driver's messages in dmesg; "
                    "restarting the agent does not unblock the kernel, a reboot may)")
            _IN_FLIGHT.add(real)

        def run() -> None:
            try:
                work()
            finally:
                with _CALLS:
                    _IN_FLIGHT.discard(real)

        worker = threading.Thread(target=run, name=f"kvtune {verb} {path}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return (f"{what} {path} did not return within {timeout:g} s: the driver may hang; "
                    "kvtune will not touch it again until it returns (check dmesg)")
        return ""

    def write(self, path: str, value: str, *, timeout: float) -> WriteResult:
        """Write `value` to a kernel file (sysfs, procfs) within `timeout` seconds, then read back.

        The write runs in a worker thread so a hanging driver cannot stall the agent; a write
        that does not return in time is reported as failed and its thread abandoned (see
        `_IN_FLIGHT`). The read-back must show `value`; for nr_hugepages a different count is
        Partial: the kernel allocates what it can find, and never frees pages in use.
        """
        real = self._real(path)
        read_back: list[str] = []
        errors: list[tuple[str, OSError]] = []

        def work() -> None:
            # The read-back runs here too: a stuck driver can block a read as well as a write.
            what = f"writing {value!r} to"
            try:
                self._store(path, value)
                what = f"wrote {value!r}, then reading"
                with open(real, encoding="utf-8", errors="replace") as f:
                    read_back.append(f.read())
            except OSError as err:
                errors.append((what, err))

        late = self._within(path, "write", f"writing {value!r} to", timeout, work)
        if late:
            return WriteResult(path, "Failed", late)
        if errors:
            return WriteResult(path, "Failed", refused(path, *errors[0]))
        return self._verify(path, value, setting(read_back[0]))

    def _store(self, path: str, value: str) -> None:
        """The write itself, as `echo value > path` does it; tests override it to play the kernel.

        No O_CREAT: a kernel file that is missing is an error, not a new file.
        """
        fd = os.open(self._real(path), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, f"{value}\n".encode())  # sysfs takes a value in a single write()
        finally:
            os.close(fd)

    @staticmethod
    def _verify(path: str, value: str, shown: str) -> WriteResult:
        if shown == value:
            return WriteResult(path, "Applied", read_back=shown)
        if path.endswith("/nr_hugepages") and shown.isdigit() and value.isdigit():
            if int(shown) < int(value):
                why = ("not enough free contiguous memory on the node; kvtune retries, or "
                       "allocate at boot (hugepages= on the kernel command line)")
            else:
                why = "the rest are in use by running VMs; they are freed when those VMs stop"
            return WriteResult(path, "Partial", (
                f"asked for {value} pages in {path}, the kernel holds {shown}: {why}"), shown)
        return WriteResult(path, "Failed", (
            f"wrote {value!r} to {path} but it reads back {shown!r}: the kernel did not take "
            "the value; check dmesg"), shown)

    def write_file(self, path: str, content: str) -> None:
        """Replace a regular file atomically, creating its directory; raises HostWriteError.

        The temporary file is a dotfile in the same directory (rename is atomic only within a
        filesystem, and NFD's features.d ignores dotfiles), fsynced before the rename and the
        directory after it, so that after a crash the file is either old or new, never empty.
        No deadline: these are small files on local disk, not driver entry points.
        """
        real = self._real(self._write_target(path))
        directory, name = os.path.split(real)
        temporary = os.path.join(directory, f".{name}.kvtune-tmp")
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, content.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, real)
            self._sync_dir(directory)
        except OSError as err:
            with contextlib.suppress(OSError):  # the first error is the one to report
                os.unlink(temporary)
            raise HostWriteError(path, refused(path, "writing", err)) from err

    def remove(self, path: str) -> None:
        """Remove a regular file (absent is fine), and a temporary file a crash in `write_file`
        left beside it; raises HostWriteError."""
        real = self._real(self._write_target(path))
        directory = os.path.dirname(real)
        self.remove_temporary(path)
        try:
            os.unlink(real)
            self._sync_dir(directory)
        except FileNotFoundError:
            return
        except OSError as err:
            raise HostWriteError(path, refused(path, "removing", err)) from err

    def remove_directory(self, path: str) -> None:
        """Remove a directory if it is empty (absent or not empty is fine); raises
        HostWriteError."""
        real = self._real(self._write_target(path))
        try:
            os.rmdir(real)
            self._sync_dir(os.path.dirname(real))
        except (FileNotFoundError, OSError) as err:
            if err.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                return
            raise HostWriteError(path, refused(path, "removing", err)) from err

    def remove_temporary(self, path: str) -> None:
        """Remove the temporary file a crash in `write_file(path)` left; raises HostWriteError."""
        directory, name = os.path.split(self._real(self._write_target(path)))
        try:
            os.unlink(os.path.join(directory, f".{name}.kvtune-tmp"))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise HostWriteError(path, refused(path, "removing", err)) from err

    def _write_target(self, path: str) -> str:
        """The host path a write of `path` lands on: its directory resolved inside the root
        (an absolute link on the way, /var/run -> /run, would otherwise lead out of it)."""
        directory, name = os.path.split(path)
        resolved = self.in_root(directory)
        if resolved is None:
            raise HostWriteError(path, (
                f"writing {path} failed: a symbolic link on the way loops; fix the host's "
                f"{directory}"))
        return f"{resolved.rstrip('/')}/{name}"

    @staticmethod
    def _sync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
