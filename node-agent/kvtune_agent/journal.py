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
may give to another device; their entries are moved to the stable name when loaded (the next
save writes it), once, while the name still means the device it did. One whose device no longer
exists fails alone on revert, saying so, and is dropped: a sysfs value dies with its device.
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

from . import change
from .hostfs import HostFS, HostWriteError
from .probe import block, sriov
from .systemd import Systemd

JOURNAL_PATH = "/var/lib/kvtune/journal.json"
VERSION = 1
#: The most the journal may hold, in bytes: thousands of entries; more is not a journal.
JOURNAL_LIMIT = 16 * 2**20


class JournalError(Exception):
    """The journal cannot be read or trusted; the message names its path and what to do."""


@dataclass(frozen=True)
class Entry:
    """The original value of one target, from before kvtune changed it."""

    kind: change.Kind
    path: str
    #: The value to restore; None: a file that did not exist (restoring removes it).
    original: str | None
    #: The id of the planned step that first changed it, e.g. hugepages/node0/1Gi.
    step: str


class _File(pydantic.BaseModel):
    """The journal file's shape; its entries are read one by one (`_EntryFile`)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    version: t.Literal[1]
    entries: list[t.Any]


class _EntryFile(pydantic.BaseModel):
    """An entry as stored: strictly the fields of `Entry` (a number is not an original value)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    kind: change.Kind
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
    return sriov.renamed_numvfs(fs, path) or block.renamed_attribute(fs, path)


def _stable(fs: HostFS, entry: Entry) -> Entry:
    renamed = _renamed(fs, entry.path)
    if renamed is None or not renamed[1]:
        return entry
    return dataclasses.replace(entry, path=renamed[1])


def _vanished(entry: Entry, name: str) -> str:
    return (
        f"the journal names a device by its kernel name {name} ({entry.path}, as kvtune before "
        f"0.2 did), and no device is called {name} now, so its original value "
        f"{entry.original!r} cannot be put back on the device it came from; the entry is "
        f"dropped. If the device was renamed, set {entry.original!r} on it by hand")


class Journal:
    """The journal file at `path` on the host behind `fs`; every call reads it afresh."""

    def __init__(self, fs: HostFS, path: str = JOURNAL_PATH) -> None:
        self.fs = fs
        self.path = path

    def entries(self) -> list[Entry]:
        """Readable entries, oldest first; raises JournalError when the file is unreadable or
        not a journal (see `_load`)."""
        return [e for e in self._load() if isinstance(e, Entry)]

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
        entries = [e if isinstance(e, _Unreadable) else _stable(self.fs, e) for e in parsed]
        if entries != parsed:
            # Saved at once: a kernel name resolved today may name another device after the next
            # reboot, and a settled node may not write its journal again for a long time.
            self._save(entries)
        return entries

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

    def record(self, kind: change.Kind, path: str, original: str | None, step: str) -> bool:
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
        hold: Callable[[Entry], str | None] = lambda entry: None,
    ) -> list[StepResult]:
        """Restore every entry, newest first; one result per entry, with id revert/<step>.

        `hold` returns why an entry must wait (e.g. VFs still attached to VMs), or None. An
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
            waiting = None if renamed else hold(entry)
            if waiting:
                results.append(StepResult(id=result_id, result="Waiting", message=waiting))
                continue
            if renamed:  # a kernel name that _stable could not move: its device is gone
                outcome = change.Outcome("Failed", _vanished(entry, renamed[0]))
            else:
                outcome = change.set_value(
                    self.fs, systemd, entry.kind, entry.path, entry.original, timeout=timeout)
            result = outcome.result
            message = outcome.message or f"restored {entry.path} to {entry.original!r}"
            if result == "Applied" or renamed:
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
