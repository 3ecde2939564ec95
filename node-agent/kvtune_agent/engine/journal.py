"""The on-host journal of every value kvtune changed, so that leaving a profile restores the host.

The journal lives on the host (default /var/lib/kvtune/journal.json), not in the cluster: it must
survive the agent's pod, the node's HypervisorNodeState being deleted, and an apiserver that is
unreachable when a revert is due. Each entry is the ORIGINAL value of one target, recorded before
kvtune first changes it; later changes never overwrite it (first write wins), so re-applying or a
changed profile cannot make kvtune's own value the one "restored". `revert` replays the entries
newest first and drops each one once restored; what could not be restored stays for the next try.

The file is replaced atomically (HostFS.write_file) after every change to it, so a crash leaves
either the old or the new journal, never a torn one.

A target is named by what stays the same across reboots: a NIC by PCI address, a disk by its
/dev/disk/by-id name. Journals from before named them by kernel name (eth3, sdb), which a reboot
may give to another device. Their entries are moved to the stable name only where the name
provably still means the device it did: the journal was last written since the host booted (a
reboot is what moves kernel names between devices). Otherwise, or when the device has no stable
name now, the entry stays, failing on revert with the reason and what to do by hand: restoring
a value on the wrong NIC would take away VFs the administrator uses. The move is saved at once
(a settled node may not write its journal again for long), except by a reader that may not
write (Audit, paused). A disk named by its by-id name that is gone is skipped and dropped: a
sysfs value dies with its device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing as t
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pydantic
from kvtune_api.v1alpha1.nodestate import StepResult

from ..features.base import Kind
from ..host import names
from ..host.hostfs import HostFS, HostWriteError
from ..host.systemd import Systemd
from . import change

JOURNAL_PATH = "/var/lib/kvtune/journal.json"
VERSION = 1
#: The most the journal may hold, in bytes: thousands of entries; more is not a journal.
JOURNAL_LIMIT = 16 * 2**20


class JournalError(Exception):
    """The journal cannot be read or trusted; the message names its path and what to do."""


@dataclass(frozen=True)
class Entry:
    """The original value of one target, from before kvtune changed it."""

    kind: Kind
    path: str
    #: The value to restore; None: a file that did not exist (restoring removes it).
    original: str | None
    #: The id of the planned step that first changed it, e.g. hugepages/node0/1Gi.
    step: str


class _File(pydantic.BaseModel):
    """The journal file's shape; its entries are read one by one (`_EntryFile`)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    #: An integer, and 1: a Literal[1] alone takes `true`, which equals 1 in Python.
    version: t.Annotated[pydantic.StrictInt, pydantic.Field(ge=VERSION, le=VERSION)]
    entries: list[t.Any]


class _EntryFile(pydantic.BaseModel):
    """An entry as stored: strictly the fields of `Entry` (a number is not an original value)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    kind: Kind
    path: str
    original: str | None
    step: str


@dataclass(frozen=True)
class _Unreadable:
    """An entry that does not fit `Entry`: kept in the file as it is, for a person to repair."""

    index: int
    raw: t.Any
    error: str


def _parse(raw: t.Any, index: int) -> Entry | _Unreadable:
    try:
        return Entry(**_EntryFile.model_validate(raw).model_dump())
    except pydantic.ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}"
                             for e in err.errors())
        return _Unreadable(index, raw, problems)


def _renamed(fs: HostFS, path: str) -> tuple[str, str] | None:
    """For a path naming a device by kernel name: the name and the stable path ("" when no
    such device exists now); None for a path that needs no renaming."""
    return names.renamed_numvfs(fs, path) or names.renamed_attribute(fs, path)


def _stable(fs: HostFS, entry: Entry, provable: bool) -> Entry:
    renamed = _renamed(fs, entry.path) if provable else None
    if renamed is None or not renamed[1]:
        return entry
    return dataclasses.replace(entry, path=renamed[1])


def _unproven(entry: Entry, name: str, provable: bool, exists: bool) -> str:
    why = ("the journal was last written before the host booted, and a reboot may give the "
           "name to another device" if not provable else
           f"{name} has no stable name (PCI address, by-id) now" if exists else
           f"no device is called {name} now")
    return (
        f"the journal names a device by its kernel name {name} ({entry.path}, as kvtune before "
        f"0.2 did) and {why}, so which device its original value {entry.original!r} belongs "
        f"to cannot be proven; it is not restored and the entry stays. Set {entry.original!r} "
        "by hand on the device it came from, then remove the entry from the journal")


def _gone(entry: Entry, disk: bool) -> str:
    what = ("the disk of {path} no longer exists (its by-id link is gone)" if disk else
            "the object {path} belongs to no longer exists (its directory is gone, its parent "
            "is there: an IRQ of a device unplugged since, say)").format(path=entry.path)
    return (f"{what}, so its original value {entry.original!r} died with it: nothing is left to "
            "restore, and the entry is dropped")


def _vanished(fs: HostFS, path: str) -> bool:
    """The kernel object a sysfs/procfs file belongs to is gone: its directory is not there,
    but the one above it is (so the filesystem itself is mounted and readable)."""
    directory = os.path.dirname(path)
    return not fs.exists(directory) and fs.is_dir(os.path.dirname(directory))


class Journal:
    """The journal file at `path` on the host behind `fs`; every call reads it afresh."""

    def __init__(self, fs: HostFS, path: str = JOURNAL_PATH, *, read_only: bool = False) -> None:
        """`read_only`: never write the file, not even to move old names (Audit, paused)."""
        self.fs = fs
        self.path = path
        self.read_only = read_only

    def entries(self) -> list[Entry]:
        """Readable entries, oldest first; raises JournalError when the file is unreadable or
        not a journal (see `_load`)."""
        return [e for e in self._load() if isinstance(e, Entry)]

    def count(self) -> int:
        """Every entry, readable or not: an entry that cannot be read is still a value that
        was not restored. Raises JournalError."""
        return len(self._load())

    def _load(self) -> list[Entry | _Unreadable]:
        """Every entry, oldest first, readable or not.

        A file that is not a version 1 journal object with its entries raises JournalError:
        then nothing can be known to be restorable, and nothing is written. An entry that is
        unreadable only costs that entry.
        """
        if not self.fs.has_file(self.path):
            return []
        text = self.fs.read_file(self.path, limit=JOURNAL_LIMIT)
        if text is None:
            why = next((i.detail for i in reversed(self.fs.take_issues()) if i.path == self.path),
                       "fix its permissions (the agent runs as root)")
            raise JournalError(
                f"cannot read the kvtune journal {self.path} ({why}); it holds the host's "
                "original values: make it a readable regular file again")
        try:
            data = _File.model_validate_json(text)
        except pydantic.ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                                 for e in err.errors()[:3])
            raise JournalError(
                f"the kvtune journal {self.path} is malformed ({problems}; expected "
                f'{{"version": {VERSION}, "entries": [...]}}); kvtune changes nothing '
                "while it cannot tell what to restore: repair the file, or delete it if the "
                "host's original values were restored by hand") from err
        parsed = [_parse(raw, i) for i, raw in enumerate(data.entries)]
        provable = self._provable()
        entries = [e if isinstance(e, _Unreadable) else _stable(self.fs, e, provable)
                   for e in parsed]
        if entries != parsed and not self.read_only:
            # Saved at once: a kernel name resolved today may name another device after the next
            # reboot, and a settled node may not write its journal again for a long time.
            self._save(entries)
        return entries

    def _provable(self) -> bool:
        """Kernel names in the journal still mean the devices they meant: it was last written
        since the host booted (/proc/stat's btime; unknown is not proof)."""
        if self.read_only:
            return False
        written = self.fs.modified(self.fs.in_root(self.path) or self.path)
        booted = self.fs.boot_time()
        return written is not None and booted is not None and written >= booted

    def _save(self, entries: list[Entry | _Unreadable]) -> None:
        if not entries:
            # Nothing left to restore: leave no trace on the host, kvtune's directory included.
            self.fs.remove(self.path)
            if os.path.basename(os.path.dirname(self.path)) == "kvtune":
                self.fs.remove_directory(os.path.dirname(self.path))
            return
        data = {"version": VERSION, "entries": [
            e.raw if isinstance(e, _Unreadable) else asdict(e) for e in entries]}
        self.fs.write_file(self.path, json.dumps(data, indent=2) + "\n")

    def record(self, kind: Kind, path: str, original: str | None, step: str) -> bool:
        """Record `original` for the target unless it is already recorded; True when recorded.

        Raises JournalError or HostWriteError: the caller must then leave the target alone.
        """
        entries = self._load()
        if any(isinstance(e, Entry) and e.kind == kind and e.path == path for e in entries):
            return False
        self._save([*entries, Entry(kind=kind, path=path, original=original, step=step)])
        return True

    def revert(
        self,
        systemd: Systemd,
        *,
        timeout: float,
        sequence: change.Sequence,
        hold: Callable[[Entry], str | None] = lambda entry: None,
        settle: Callable[[Entry], str | None] = lambda entry: None,
    ) -> list[StepResult]:
        """Restore every entry, newest first; one result per entry, with id revert/<step>.

        `sequence` gives the writes of a kernel file that takes several (change.sequences of the
        features: required, so that no restore skips KSM's unmerge or a VF count's way through
        0). `hold` returns why an entry must wait (e.g. VFs still attached to VMs), or None;
        `settle` why a restored entry did not take (the kubelet not healthy), or None. An
        entry that is held or fails stays in the journal; the others are restored regardless.
        Raises JournalError when the journal cannot be read.
        """
        results: list[StepResult] = []
        loaded = self._load()
        for bad in (e for e in loaded if isinstance(e, _Unreadable)):
            results.append(StepResult(id=f"revert/journal/entries[{bad.index}]", result="Failed",
                                      message=(
                f"entry {bad.index} of the kvtune journal {self.path} cannot be read ({bad.error})"
                f": {str(bad.raw)[:120]!r}. It stays in the file and its target is not restored; "
                "the other entries are. Repair it (kind, path, original, step), or remove it "
                "once its original value is restored by hand")))
        for entry in reversed([e for e in loaded if isinstance(e, Entry)]):
            result_id = f"revert/{entry.step}"
            renamed = _renamed(self.fs, entry.path)
            if renamed:  # a kernel name _stable could not move: kept until a person does
                name = renamed[0]
                exists = any(self.fs.exists(f"{d}/{name}") for d in ("/sys/block",
                                                                       "/sys/class/net"))
                results.append(StepResult(id=result_id, result="Failed", message=_unproven(
                    entry, name, self._provable(), exists)))
                continue
            real = names.sysfs_path(self.fs, entry.path) if entry.kind == "sysfs" else ""
            disk = real is None
            gone = disk or (entry.kind == "sysfs" and _vanished(self.fs, real or ""))
            waiting = None if gone else hold(entry)
            if waiting:
                results.append(StepResult(id=result_id, result="Waiting", message=waiting))
                continue
            outcome = change.Outcome("Applied", _gone(entry, disk)) if gone else change.set_value(
                self.fs, systemd, entry.kind, entry.path, entry.original, timeout=timeout,
                sequence=sequence)
            result = "Skipped" if gone else outcome.result
            message = outcome.message or f"restored {entry.path} to {entry.original!r}"
            if outcome.result == "Applied":
                why = settle(entry)
                if why is not None:
                    result, message = "Partial", f"{message}, but it did not take: {why}"
                try:
                    self._save([e for e in self._load() if e != entry])
                except (HostWriteError, JournalError) as err:
                    result, message = "Failed", (
                        f"restored {entry.path}, but could not drop it from the journal ({err}); "
                        "the next revert restores it again, which is harmless")
            results.append(StepResult(id=result_id, result=result, message=message))
        self.tidy()
        return results

    def tidy(self) -> None:
        """With nothing left to restore, remove what a crash may have left of the journal (its
        temporary file, kvtune's empty directory). Raises HostWriteError."""
        if not self.fs.has_file(self.path):
            self._save([])
