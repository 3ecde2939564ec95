"""A profile under construction, with the reason for every choice and for what was left out.

`kvtune profile suggest` proposes a profile a person will read before applying it, so each value
carries the facts it was chosen from (the YAML comments of `suggest_yaml`), and each thing it
does not ask for says why not. The choices are made by `suggest` and `suggest_memory`, checked
against the agent's own planner by `suggest_check`; this module only holds them.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

from kvtune_api import quantity

#: A place in the profile's spec: keys of mappings, indexes of lists.
Path = tuple[str | int, ...]


class SuggestError(Exception):
    """No profile can be suggested from these inputs; the message says which and why."""


#: The profile's name is also a label value (kvtune.io/vms) and, with "-luns", a
#: storageClassName: a DNS label short enough for both.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,56}[a-z0-9])?")


def profile_name(text: str) -> str:
    """`--name`, checked; raises SuggestError saying the form."""
    if not _NAME.fullmatch(text):
        raise SuggestError(f"--name {text!r}: a profile's name here is 1 to 58 lower-case "
                           "letters, digits and '-', beginning and ending with a letter or "
                           "digit, e.g. dedicated-vms")
    return text


@dataclass(frozen=True)
class VmShape:
    """The VMs the team plans to run: `--vm 4cpu/16Gi`."""

    vcpus: int
    memory: str
    memory_kib: int

    @classmethod
    def parse(cls, text: str) -> VmShape:
        """`<N>cpu/<quantity>`; raises SuggestError saying the form."""
        form = f"--vm {text!r}: write vCPUs and memory as <N>cpu/<memory>, e.g. 4cpu/16Gi"
        cpus, _, memory = text.partition("/")
        if not cpus.endswith("cpu") or not cpus[:-3].isdigit() or int(cpus[:-3]) < 1:
            raise SuggestError(form)
        try:
            size = quantity.parse(memory, "--vm memory")
        except quantity.QuantityError as err:
            raise SuggestError(f"{form} ({err})") from err
        if not size.is_finite() or size < 2**30:
            raise SuggestError(f"{form}: the memory is below 1Gi, smaller than any VM kvtune "
                               "sizes pools for")
        return cls(int(cpus[:-3]), memory, -(-int(size) // 1024))

    def __str__(self) -> str:
        return f"{self.vcpus}cpu/{self.memory}"


@dataclass
class Draft:
    """The spec being chosen, and the comment lines written above each key."""

    spec: dict[str, t.Any] = field(default_factory=dict)
    why: dict[Path, list[str]] = field(default_factory=dict)
    #: Hosts that cannot hold the VMs asked for, each with why (also written on stderr).
    shortfalls: list[str] = field(default_factory=list)

    def choose(self, path: Path, value: t.Any, why: str) -> None:
        """Set the value at `path` (mappings on the way are made), saying why."""
        *parents, last = path
        here: t.Any = self.spec
        for key in parents:
            here = here.setdefault(key, {})
        here[last] = value
        self.note(path, why)

    def note(self, path: Path, line: str) -> None:
        self.why.setdefault(path, []).append(line)

    def leave_out(self, path: Path, what: str, why: str) -> None:
        """Say, at `path` (a section), that `what` is not asked for and why."""
        self.note(path, f"left out: {what}: {why}")

    def get(self, path: Path) -> t.Any:
        here: t.Any = self.spec
        for key in path:
            if not isinstance(here, dict) or key not in here:
                return None
            here = here[key]
        return here

    def drop(self, path: Path) -> None:
        """Remove the value at `path` and the reasons given for it and anything under it."""
        parent = self.get(path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        for key in [k for k in self.why if k[:len(path)] == path]:
            del self.why[key]

    def prune(self) -> None:
        """Remove the sections that were emptied (their reasons stay, for the reader)."""
        for key in [k for k, v in self.spec.items() if v == {}]:
            del self.spec[key]
