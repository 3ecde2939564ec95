"""Reading and setting one host target: a kernel value, a regular file, a systemd unit or the
kernel arguments of the next boot.

Apply and revert change the host the same way, so the kernel's write protocols are applied here
once, as the features declare them (features/base.py `sequence`: KSM is unmerged before it is
stopped, a VF count changes only through 0); a write that fails part way puts the old value
back.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..features.base import Feature, Kind
from ..host import bootloader, reboot
from ..host.hostfs import MAX_CONFIG, HostFS, HostWriteError
from ..host.names import sysfs_path
from ..host.systemd import Systemd, SystemdError, UnitState


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


#: The values to write, in order, to move a kernel file from its value now to a new one, when
#: it takes more than one write (features/base.py `sequence`); None: one write does.
Sequence = Callable[[str, str | None, str], list[str] | None]


def one_write(path: str, now: str | None, value: str) -> list[str] | None:
    """No kernel file needs more than one write."""
    return None


def sequences(features: Iterable[Feature[t.Any, t.Any]]) -> Sequence:
    """The write sequences the features declare: the first that knows the file decides."""
    known = tuple(features)

    def sequence(path: str, now: str | None, value: str) -> list[str] | None:
        return next((found for feature in known
                     if (found := feature.sequence(path, now, value)) is not None), None)

    return sequence


def set_value(
    fs: HostFS, systemd: Systemd, kind: Kind, path: str, value: str | None, *, timeout: float,
    sequence: Sequence = one_write,
) -> Outcome:
    """Set the target to `value` (None: remove the file) and check it took; a kernel value
    through the writes `sequence` gives for it."""
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
    return _write_sequence(fs, path, real, value, timeout, sequence)


def _write_sequence(
    fs: HostFS, target: str, path: str, value: str, timeout: float, sequence: Sequence,
) -> Outcome:
    """Write `value` to the kernel file `path` (the target `target` names) through `sequence`."""
    now, _ = fs.read_within(path, timeout=timeout)  # a hung read leaves the write refused
    done: list[str] = []
    for step in sequence(target, now, value) or [value]:
        written = fs.write(path, step, timeout=timeout)
        if written.outcome != "Applied":
            before = f"wrote {' then '.join(done)} to {path}, then: " if done else ""
            restored = _restore(fs, path, now, done, timeout)
            return Outcome(written.outcome, before + written.message + restored)
        done.append(step)
    return Outcome("Applied")


def _restore(fs: HostFS, path: str, now: str | None, done: list[str], timeout: float) -> str:
    """Put back the value an unfinished sequence left behind, and say how that went.

    A sequence through an intermediate value (a VF count through 0): when the kernel refuses
    the new value (ENOMEM, EBUSY, a timeout) the file would be left at the intermediate one,
    worse than before; its old value was taken once.
    """
    if not done or now is None or done[-1] == now:
        return ""
    back = fs.write(path, now, timeout=timeout)
    if back.outcome == "Applied":
        return f"; the original value {now!r} is restored"
    return (f"; restoring the original value {now!r} failed too ({back.message}): it stays in "
            "kvtune's journal, and a revert puts it back")
