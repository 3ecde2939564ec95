"""CPU isolation's kernel arguments, staged for the next boot through the boot loader target
hugepages use (bootloader.py), as part of one step.

A boot loader target holds one line of kvtune's arguments, so the arguments of every feature
that needs the command line go into one `boot/kernel-args` step: this module starts from the
step hugepages planned for the target, if any, else from what the target holds, and sets only
its own keys (`BOOT_KEYS`) there; every other word stays where it is. A key this module no
longer wants (the partition was removed, or bootIsolation set Unmanaged) goes back to the value
the journal recorded from before kvtune first wrote the target; a key kvtune never wrote is not
touched. Staged only with boot.settings Stage and rollout.allowReboot, and bootIsolation
Enforce; otherwise the exact command is reported. kvtune never reboots. Pure.
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Mapping

from kvtune_api.v1alpha1.host import HostReport

from ...host.bootloader import BOOT_STEP as STEP_ID
from ...host.bootloader import BootFacts, split
from ..base import Finding, Plan, Step, stages_boot
from ..cpu_partition import PartitionRefused, partition
from .plan import BOOT_KEYS, CONDITION, boot_words

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec


def _key(word: str) -> str:
    return word.partition("=")[0]


def _values(line: str) -> dict[str, str]:
    return {_key(word): word.partition("=")[2] for word in split(line)
            if _key(word) in BOOT_KEYS}


def _line(base: str, wanted: Mapping[str, str], original: str | None) -> str:
    """`base` with the keys of `wanted` set (in place, else at the end) and every other key of
    ours put back to `original`'s value (absent there: removed); with no `original` (kvtune
    never wrote the target) the other keys stay as they are."""
    restore = {} if original is None else _values(original)
    target = {key: wanted.get(key, restore.get(key)) for key in BOOT_KEYS
              if key in wanted or original is not None}
    words, done = [], set()
    for word in split(base):
        key = _key(word)
        if key not in target:
            words.append(word)
        elif key not in done and target[key] is not None:
            words.append(f"{key}={target[key]}")
        done.add(key)
    words += [f"{key}={value}" for key, value in target.items()
              if key not in done and value is not None]
    return " ".join(words)


def _wanted(spec: HypervisorNodeStateSpec, host: HostReport) -> dict[str, str] | None:
    """The arguments the spec wants; None where the partition cannot be made (its refusal is
    the plan's finding already), {} where the spec wants none."""
    settings = spec.host.cpu
    if settings.partition is None or settings.boot_isolation == "Unmanaged":
        return {}
    try:
        part = partition(settings.partition, host)
    except PartitionRefused:
        return None
    return boot_words(settings, part, host.cpu.ple)


def _add(found: Plan, severity: t.Literal["Error", "Pending", "Warning"], reason: str,
         message: str) -> Plan:
    finding = Finding(CONDITION, severity, reason, message)
    return dataclasses.replace(found, findings=(*found.findings, finding))


def stage(found: Plan, spec: HypervisorNodeStateSpec, host: HostReport, facts: BootFacts,
          journaled: Mapping[str, str] | None = None) -> Plan:
    """`found` with CPU isolation's arguments in the target's boot step, or the finding that
    says why they are not staged, or that they wait for the reboot."""
    wanted = _wanted(spec, host)
    if wanted is None:
        return found
    loader = facts.loader
    if facts.staged is None:
        return _add(found, "Error", "BootArgumentsUnknown", (
            f"the CPU isolation arguments cannot be staged: {facts.error}")) if wanted else found
    existing = next((s for s in found.steps if s.kind == "bootargs"
                     and s.planned.path == loader.target and loader.writable), None)
    base = existing.planned.desired if existing else facts.staged
    original = (journaled or {}).get(loader.target) if loader.writable else None
    desired = _line(base, wanted, original)
    shown = " ".join(f"{key}={value}" for key, value in wanted.items())
    if desired == base:
        running = _values(facts.running)
        if not wanted or all(running.get(k) == v for k, v in wanted.items()):
            return found
        if not loader.writable or facts.staged != desired:
            return found if existing else _not_staged(found, spec, facts, shown, desired)
        if not facts.written_since_boot:
            return _add(found, "Error", "BootArgumentsIgnored", (
                f"`{shown}` is staged in {loader.describe()}, and the node booted since, but "
                f"its kernel runs without them: the boot loader booted another entry, or "
                "something removed them; compare /proc/cmdline with the boot configuration"))
        return _add(found, "Pending", "CpuIsolationRebootPending", (
            f"`{shown}` is staged in {loader.describe()}; the isolated CPUs are quiet from the "
            "next reboot of the node"))
    theirs = _values((facts.effective or "").removesuffix(facts.staged).rstrip())
    clash = sorted(set(theirs) & set(wanted))
    if clash:
        return _add(found, "Error", "BootArgumentsConflict", (
            f"{', '.join(f'{k}={theirs[k]}' for k in clash)} is set already in "
            "/etc/default/grub or another drop-in, which kvtune's drop-in cannot edit, and the "
            f"kernel would take two of each; kvtune does not stage `{shown}`: remove them there"))
    if not (loader.writable and stages_boot(spec) and spec.host.cpu.boot_isolation == "Enforce"):
        return _not_staged(found, spec, facts, shown, desired)
    why = (f"CPU isolation: {shown}" if wanted else
           "spec.host.cpu no longer isolates CPUs: kvtune's arguments go back to the journal's")
    from kvtune_api.v1alpha1.nodestate import PlannedStep  # not for `kvtune probe`

    if existing is not None:
        step = Step("bootargs", existing.planned.model_copy(update={
            "desired": desired, "reason": f"{existing.planned.reason}; {why}"}))
        steps = tuple(step if s is existing else s for s in found.steps)
        return dataclasses.replace(found, steps=steps)
    return dataclasses.replace(found, steps=(*found.steps, Step("bootargs", PlannedStep(
        id=STEP_ID, feature=CONDITION, path=loader.target, current=facts.staged, desired=desired,
        disruption="NeedsReboot", reason=f"{why}, through {loader.describe()}"))))


def _not_staged(found: Plan, spec: HypervisorNodeStateSpec, facts: BootFacts, shown: str,
                desired: str) -> Plan:
    loader = facts.loader
    if not loader.writable:
        why = f"this host's command line is set through {loader.describe()}"
    elif spec.host.cpu.boot_isolation == "Report":
        why = "spec.host.cpu.bootIsolation is Report"
    elif spec.host.boot.settings == "Report":
        why = "spec.host.boot.settings is Report"
    else:
        why = "spec.rollout.allowReboot is false"
    return _add(found, "Warning", "BootIsolationNotStaged", (
        f"the isolated CPUs need `{shown}` on the kernel command line; {why}, so kvtune does "
        f"not stage it: run `{loader.command(facts.staged or '', desired)}` and reboot the "
        "node"))
