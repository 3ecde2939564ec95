"""Reading and setting one host target: a kernel value, a regular file, a systemd unit or the
kernel arguments of the next boot.

Apply and revert change the host the same way, so the kernel's write protocols live here once:
KSM is unmerged (run=2) before it is stopped (run=0), because stopping alone leaves merged pages
shared; and a VF count changes only through 0, because the kernel refuses (EBUSY) to go from one
non-zero count to another.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ..features.base import Kind
from ..features.ksm.probe import KSM_RUN
from ..host import bootloader, reboot
from ..host.hostfs import MAX_CONFIG, HostFS, HostWriteError
from ..host.names import sysfs_path
from ..host.systemd import Systemd, SystemdError, UnitState

#: KSM's run value that stops ksmd and unmerges every merged page.
KSM_UNMERGE = "2"


class ChangeError(Exception):
    """The current value of a target could not be read; the message names it."""


@dataclass(frozen=True)
class Outcome:
    """How setting a target went."""

    result: t.Literal["Applied", "Partial", "Failed"]
    message: str = ""


def current(fs: HostFS, systemd: Systemd, kind: Kind, path: str, *, timeout: float) -> str | None:
    """The target's value now, as it would be written back; None for a file that does not exist.

    Raises ChangeError when it cannot be read: a value kvtune cannot record must not be changed.
    """
    if kind == "unit":
        try:
            return str(systemd.state(path, timeout=timeout))
        except SystemdError as err:
            raise ChangeError(str(err)) from err
    if kind == "bootargs":
        try:
            return bootloader.read_args(fs, path, timeout=timeout)
        except bootloader.BootArgsError as err:
            raise ChangeError(str(err)) from err
    if kind in ("file", "reboot"):
        text = fs.read_file(path)
        if text is None:
            if not fs.has_file(path):
                return None
            raise ChangeError(f"cannot read {path} (a regular file of at most "
                              f"{MAX_CONFIG} bytes is expected)")
        return text
    real = sysfs_path(fs, path)
    if real is None:
        raise ChangeError(f"no disk {path.rsplit('/', 2)[0]} exists now")
    value, why = fs.read_within(real, timeout=timeout)
    if value is None:
        raise ChangeError(why or f"cannot read {path}")
    return value


def _sequence(path: str, now: str | None, value: str) -> list[str]:
    """The values to write, in order, to move a kernel file from `now` to `value`."""
    if path == KSM_RUN and value == "0":
        return [KSM_UNMERGE, value]
    # An unreadable count is not taken for non-zero: removing VFs blindly is worse than EBUSY.
    if path.endswith("/sriov_numvfs") and now not in (None, "0", value) and value != "0":
        return ["0", value]
    return [value]


def set_value(
    fs: HostFS, systemd: Systemd, kind: Kind, path: str, value: str | None, *, timeout: float
) -> Outcome:
    """Set the target to `value` (None: remove the file) and check it took."""
    if kind == "unit":
        try:
            systemd.set_state(path, UnitState.parse(value or ""), timeout=timeout)
        except (SystemdError, ValueError) as err:
            return Outcome("Failed", str(err))
        return Outcome("Applied")
    if kind == "bootargs":
        try:
            bootloader.write_args(fs, path, value or "", timeout=timeout)
        except bootloader.BootArgsError as err:
            return Outcome("Failed", str(err))
        return Outcome("Applied")
    if kind == "reboot":
        try:
            reboot.request(fs, value)
        except HostWriteError as err:
            return Outcome("Failed", str(err))
        return Outcome("Applied")
    if kind == "file":
        try:
            if value is None:
                fs.remove(path)
            else:
                fs.write_file(path, value)
        except HostWriteError as err:
            return Outcome("Failed", str(err))
        return Outcome("Applied")
    if value is None:
        return Outcome("Failed", f"{path} is a kernel value and cannot be removed (a kvtune bug)")
    real = sysfs_path(fs, path)
    if real is None:
        return Outcome("Failed", (
            f"no disk {path.rsplit('/', 2)[0]} exists now, so {path} cannot be set; if the disk "
            "was replaced, the new one has its default and nothing is left to restore"))
    return _write_sequence(fs, real, value, timeout)


def _write_sequence(fs: HostFS, path: str, value: str, timeout: float) -> Outcome:
    now, _ = fs.read_within(path, timeout=timeout)  # a hung read leaves the write refused
    done: list[str] = []
    for step in _sequence(path, now, value):
        written = fs.write(path, step, timeout=timeout)
        if written.outcome != "Applied":
            before = f"wrote {' then '.join(done)} to {path}, then: " if done else ""
            restored = _restore(fs, path, now, done, timeout)
            return Outcome(written.outcome, before + written.message + restored)
        done.append(step)
    return Outcome("Applied")


def _restore(fs: HostFS, path: str, now: str | None, done: list[str], timeout: float) -> str:
    """Put back the value an unfinished sequence left behind, and say how that went.

    A VF count goes through 0: when the kernel refuses the new count (ENOMEM, EBUSY, a timeout)
    the NIC would be left with no VFs at all, worse than before; its old count was taken once.
    """
    if not done or now is None or done[-1] == now:
        return ""
    back = fs.write(path, now, timeout=timeout)
    if back.outcome == "Applied":
        return f"; the original value {now!r} is restored"
    return (f"; restoring the original value {now!r} failed too ({back.message}): it stays in "
            "kvtune's journal, and a revert puts it back")
