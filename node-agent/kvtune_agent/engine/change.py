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
from ..features.block.probe import sysfs_path
from ..features.ksm.probe import KSM_RUN
from ..host import bootloader
from ..host.hostfs import MAX_CONFIG, HostFS, HostWriteError
from ..host.systemd import Systemd, SystemdError, UnitState

#: The conventional flag file that reboot daemons (kured, unattended-upgrades) watch, and the
#: list of packages that asked for the reboot beside it. Both are journaled like any change
#: (kind "reboot"), so that a revert withdraws the request and no daemon reboots a node for a
#: change already undone; /var/run is a tmpfs, so a reboot clears them anyway.
REBOOT_REQUIRED = "/var/run/reboot-required"
REBOOT_PKGS = f"{REBOOT_REQUIRED}.pkgs"
REBOOT_REQUIRED_TEXT = "*** System restart required (kvtune) ***\n"
#: The journal's step of the reboot request, however it was asked for.
REBOOT_STEP = "reboot-required"
#: kvtune's line in REBOOT_PKGS: withdrawing removes this line only.
REBOOT_PKG = "kvtune"
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
            _reboot(fs, value)
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


def _reboot(fs: HostFS, value: str | None) -> None:
    """Request a reboot (`value` REBOOT_REQUIRED_TEXT), or withdraw kvtune's request, leaving
    the flag as `value` was before kvtune asked (None: absent). Raises HostWriteError.

    Only what kvtune added goes: other packages' lines in REBOOT_PKGS stay, and so does the
    flag while they are there (they still want the reboot) or when someone else had set it.

    kvtune's line in REBOOT_PKGS is what marks the request as kvtune's, so it is written before
    the flag and removed after it: a crash in between leaves the line without the flag (the next
    revert withdraws it) or the flag with the line, never a flag a revert would take for
    someone else's.
    """
    listed = fs.read_file(REBOOT_PKGS)
    others = [line for line in (listed or "").splitlines() if line and line != REBOOT_PKG]
    if value != REBOOT_REQUIRED_TEXT and REBOOT_PKG not in (listed or "").splitlines():
        # kvtune's request is gone already: /var/run is a tmpfs, so a reboot cleared it, and a
        # flag there now was set by someone else after it, who still wants the reboot. Or it
        # was never made: a crash came first, and may have left a temporary file.
        fs.remove_temporary(REBOOT_PKGS)
        fs.remove_temporary(REBOOT_REQUIRED)
        return
    if value == REBOOT_REQUIRED_TEXT:
        if REBOOT_PKG not in (listed or "").splitlines():
            fs.write_file(REBOOT_PKGS, "".join(f"{line}\n" for line in [*others, REBOOT_PKG]))
        if not fs.has_file(REBOOT_REQUIRED):
            fs.write_file(REBOOT_REQUIRED, value)
        return
    if value is not None:
        fs.write_file(REBOOT_REQUIRED, value)
    elif not others:
        fs.remove(REBOOT_REQUIRED)
    else:
        fs.remove_temporary(REBOOT_REQUIRED)  # the flag stays theirs; a crash's leftover goes
    if others:
        fs.write_file(REBOOT_PKGS, "".join(f"{line}\n" for line in others))
    else:
        fs.remove(REBOOT_PKGS)


def reboot_requested(fs: HostFS) -> bool:
    """kvtune's reboot request is in place: its line in REBOOT_PKGS (the flag alone may be
    another package's) and the flag (the line alone, a crash between the two)."""
    return (REBOOT_PKG in (fs.read_file(REBOOT_PKGS) or "").splitlines()
            and fs.has_file(REBOOT_REQUIRED))


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
