"""Hugepages the running host cannot allocate, allocated at the next boot instead.

The kernel finds physically contiguous memory for 1Gi pages reliably only at boot, before memory
fragments. Once the live path has fallen short (a pool with a retry record, retry.py), the pool's
page size is given to the kernel command line, `hugepagesz=1G hugepages=...`, with the counts the
spec wants on every NUMA node: in the node format (`hugepages=0:N0,1:N1`) on kernels that take it,
else as one total that the kernel spreads evenly. `default_hugepagesz` follows the profile's VMI
page size. A size once on the command line stays there, with the spec's counts, for as long as
the spec allocates it: the pools are full after the reboot precisely because of it. Once the spec
no longer allocates a size kvtune put there, its pair goes back to what the journal's bootargs
entry recorded from before (usually nothing), so the pool does not come back at every boot.

Like every boot-time setting this is a NeedsReboot step, staged only where boot.settings is Stage
and rollout.allowReboot is true, and through the host's own mechanism (bootloader.py); otherwise
the node's Hugepages condition carries the exact command. kvtune never reboots. A pure function.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t
from collections.abc import Mapping, Sequence

from kvtune_api.v1alpha1.host import HostReport

from ...host import bootloader
from ...host.bootloader import BootFacts
from ...host.reboot import REBOOT_REQUIRED, REBOOT_REQUIRED_TEXT, REBOOT_STEP
from .. import memory_budget
from ..base import Finding, Plan, Step, stages_boot
from . import hugepages
from .probe import SIZE_KIB

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import HugepageRetry, HypervisorNodeStateSpec
    from kvtune_api.v1alpha1.profile import HugepagesAllocation

STEP_ID = "boot/kernel-args"
#: The step that asks for the reboot again where a staged line lost its request: journaled
#: as the request apply makes after a staged step.
REBOOT_STEP_ID = REBOOT_STEP
#: The first kernel whose hugepages= takes per-node counts (commit b5389086ad7b, "hugetlbfs:
#: extend the definition of hugepages parameter to support node allocation", merged for 5.16).
NODE_FORMAT_SINCE = (5, 16)
_RELEASE = re.compile(r"^(\d+)\.(\d+)")


def node_format(release: str | None) -> bool:
    """The running kernel takes `hugepages=<node>:<count>,...` (an unknown release does not)."""
    match = _RELEASE.match(release or "")
    return match is not None and (int(match[1]), int(match[2])) >= NODE_FORMAT_SINCE


def _kernel_size(size: str) -> str:
    return size.removesuffix("i")  # hugepagesz= takes 1G, 2M


@dataclasses.dataclass
class _Args:
    """The managed arguments, word by word in their order. The kernel reads them in order: a
    `hugepages=` counts pages of the `hugepagesz=` before it, or of the default size when none
    is. Only the counts of the sizes kvtune sets, and `default_hugepagesz`, are ever rewritten;
    every other word stays where it is."""

    words: list[str]

    @classmethod
    def parse(cls, text: str) -> _Args:
        return cls(text.split())

    def sizes(self) -> dict[str, tuple[int, int | None]]:
        """size -> (index of its first `hugepagesz=`, index of that one's count or None)."""
        found: dict[str, tuple[int, int | None]] = {}
        size = None
        for index, word in enumerate(self.words):
            key, _, value = word.partition("=")
            if key == "hugepagesz":
                size = value if value not in found else None
                if size is not None:
                    found[size] = (index, None)
            elif key == "hugepages" and size is not None:  # else the default size's count
                found[size], size = (found[size][0], index), None
        return found

    @property
    def pairs(self) -> dict[str, str]:
        """size -> count, for the sizes given a count."""
        return {size: self.words[count].partition("=")[2]
                for size, (_, count) in self.sizes().items() if count is not None}

    def set_count(self, size: str, count: str) -> None:
        """Give `size` the count: in place of its count, after its `hugepagesz=`, or at the end."""
        word, where = f"hugepages={count}", self.sizes().get(size)
        if where is None:
            self.words += [f"hugepagesz={size}", word]
        elif where[1] is not None:
            self.words[where[1]] = word
        else:
            self.words.insert(where[0] + 1, word)

    def remove(self, size: str) -> None:
        """Drop `size`'s `hugepagesz=` and its count."""
        start, count = self.sizes()[size]
        del self.words[start:(count if count is not None else start) + 1]

    @property
    def default(self) -> str | None:
        return next((w.partition("=")[2] for w in self.words
                     if w.partition("=")[0] == "default_hugepagesz"), None)

    def set_default(self, size: str | None) -> None:
        """`default_hugepagesz=size`, in place of the one there, else first (None: none)."""
        word = f"default_hugepagesz={size}"
        at = next((i for i, w in enumerate(self.words)
                   if w.partition("=")[0] == "default_hugepagesz"), None)
        if size is None:
            if at is not None:
                del self.words[at]
        elif at is None:
            self.words.insert(0, word)
        else:
            self.words[at] = word

    def withdraw(self, original: _Args, allocated: set[str]) -> list[str]:
        """Put back `original`'s count (or no pair) for every size with a count kvtune staged
        (one `original` did not have) that is not `allocated` any more, and `original`'s
        default size where it was one of them; the sizes withdrawn."""
        before = original.pairs
        gone = [size for size, count in self.pairs.items()
                if size not in allocated and before.get(size) != count]
        for size in gone:
            if size in before:
                self.set_count(size, before[size])
            else:
                self.remove(size)
        if self.default in gone and self.default != original.default:
            self.set_default(original.default)
        return gone

    def __str__(self) -> str:
        return " ".join(self.words)


def stage(
    found: Plan, spec: HypervisorNodeStateSpec, host: HostReport,
    retries: Sequence[HugepageRetry], facts: BootFacts, journaled: Mapping[str, str] | None = None,
) -> Plan:
    """`found` with the step or finding that gives the next boot the hugepages the running
    host could not allocate, and withdraws the sizes kvtune staged that the spec no longer
    allocates; unchanged when no page size needs the command line. `journaled` holds the
    journal's original value of each boot target kvtune has written (bootargs entries)."""
    from kvtune_api.v1alpha1.nodestate import PlannedStep
    pages = spec.host.memory.hugepages.pages
    short = {retry.size for retry in retries}
    if facts.staged is None:
        if pages and short:
            return _add(found, Finding("Hugepages", "Error", "BootArgumentsUnknown", (
                f"the kernel could not allocate all {', '.join(sorted(short))} hugepages at run "
                f"time, and the boot configuration cannot be read: {facts.error}")))
        return found
    args = _Args.parse(facts.staged)
    # A count the planner refuses to split (its finding says why) is not staged either.
    boot = [a for a in pages if (a.size in short or _kernel_size(a.size) in args.pairs)
            and hugepages.hugepage_counts(a, host) is not None]
    original = (journaled or {}).get(facts.loader.target) if facts.loader.writable else None
    withdrawn = [] if original is None else args.withdraw(
        _Args.parse(original), {_kernel_size(alloc.size) for alloc in pages})
    vmi_size = spec.vmi.hugepage_size if spec.vmi else None
    refusal = _refusal(spec, host, facts, args, boot) if boot else None
    if refusal is not None:
        found, boot = _add(found, refusal), []
    if not boot and not withdrawn:
        return found
    per_node = node_format(facts.release)
    for alloc in boot:
        counts = hugepages.hugepage_counts(alloc, host) or {}
        args.set_count(_kernel_size(alloc.size), (
            ",".join(f"{node}:{count}" for node, count in sorted(counts.items())) if per_node
            else str(sum(counts.values()))))
    if vmi_size in {alloc.size for alloc in boot}:
        args.set_default(_kernel_size(vmi_size or ""))
    desired, loader = str(args), facts.loader
    sizes = " and ".join(alloc.size for alloc in boot)
    gone = " and ".join(f"{size}i" for size in withdrawn)
    form = ("per NUMA node" if per_node else
            f"as one total the kernel spreads evenly (kernel {facts.release or 'unknown'} "
            f"predates per-node counts, {'.'.join(map(str, NODE_FORMAT_SINCE))})")
    if desired == facts.staged and not (facts.stale and stages_boot(spec)):
        if desired == facts.running or not loader.writable:
            return found  # booted with them: what the kernel could not give is said already
        return _staged(found, spec, facts, desired, sizes)
    withdrawal = (f"the spec no longer allocates the {gone} hugepages kvtune put on the "
                  "kernel command line, so they are withdrawn" if withdrawn else "")
    if loader.writable and stages_boot(spec):
        reason = "; ".join(part for part in (boot and (
            f"the kernel cannot allocate all {sizes} hugepages the spec wants at run time; "
            f"they are allocated at boot instead ({form})"), withdrawal, facts.stale and (
            "grub.cfg was not generated again after kvtune's drop-in was written, so the "
            "next boot would not get it")) if part)
        return dataclasses.replace(found, steps=(*found.steps, Step("bootargs", PlannedStep(
            id=STEP_ID, feature="Hugepages", path=loader.target, current=facts.staged,
            desired=desired, disruption="NeedsReboot",
            reason=f"{reason}, through {loader.describe()}"))))
    why = ("spec.host.boot.settings is Report" if spec.host.boot.settings == "Report"
           else "spec.rollout.allowReboot is false")  # only a writable loader has a withdrawal
    if not boot:
        return _add(found, Finding("Hugepages", "Warning", "BootArgumentsNotStaged", (
            f"{withdrawal} with `{desired}`; {why}, so kvtune does not stage it: run "
            f"`{loader.command(facts.staged, desired)}` and reboot the node")))
    why = why if loader.writable else f"this host's command line is set through {loader.describe()}"
    return _add(found, Finding("Hugepages", "Warning", "BootArgumentsNotStaged", (
        f"the {sizes} hugepages the running kernel could not allocate need `{desired}` on the "
        f"kernel command line ({form}); {why}, so kvtune does not stage it: run "
        f"`{loader.command(facts.staged, desired)}` and reboot the node")))


def _refusal(spec: HypervisorNodeStateSpec, host: HostReport, facts: BootFacts, args: _Args,
             boot: Sequence[HugepagesAllocation]) -> Finding | None:
    """Why the sizes of `boot` are not staged at all; None when they may be."""
    sizes = " and ".join(a.size for a in boot)
    over = _over_budget(spec, host)
    if over:
        # The kernel reserves these before anything else runs, and never gives them back: a
        # count the live path would refuse is refused here too, whoever wrote the pair before.
        return Finding("Hugepages", "Error", "BootHugepagesExceedMemory", (
            f"the {sizes} hugepages of spec.host.memory.hugepages.pages are not staged on the "
            f"kernel command line: {over}. Lower spec.host.memory.hugepages.pages (or fix what "
            "makes the budget unknown)"))
    if facts.overridden_by:
        return Finding("Hugepages", "Error", "BootArgumentsOverridden", (
            f"{', '.join(facts.overridden_by)} sets {bootloader.GRUB_VARIABLE} again after "
            f"kvtune's drop-in {bootloader.GRUB_DROPIN}, so the next boot would not get the "
            f"{sizes} hugepages; kvtune does not stage them: make it append "
            f"(\"${bootloader.GRUB_VARIABLE} ...\"), or set the counts there"))
    clash = _conflicts(facts, args, boot, spec.vmi.hugepage_size if spec.vmi else None)
    if clash:
        return Finding("Hugepages", "Error", "BootArgumentsConflict", (
            f"{clash}: the kernel takes one count per page size and ignores a second one "
            f"(\"specified twice\"), so kvtune does not stage the {sizes} hugepages; set the "
            "counts the spec wants there, or remove them there and let kvtune stage them"))
    return None


def _conflicts(facts: BootFacts, args: _Args, boot: Sequence[HugepagesAllocation],
               vmi_size: str | None) -> str:
    """Where the line the node boots with already counts pages of a size kvtune would stage
    ("" when nowhere): another `hugepagesz=` of it outside kvtune's own drop-in (GRUB appends
    the drop-in to the administrator's line, it cannot edit it), or a `hugepages=` before any
    `hugepagesz=`, which counts pages of the default size."""
    sizes = {_kernel_size(alloc.size) for alloc in boot}
    if not sizes:
        return ""
    found = []
    line = args
    if facts.effective is not None:  # GRUB: what grub.cfg holds besides kvtune's drop-in
        line = _Args.parse(facts.effective.removesuffix(facts.staged or "").rstrip())
        found += [f"`hugepagesz={size}` is set already in /etc/default/grub or another "
                  "drop-in of /etc/default/grub.d" for size in sorted(sizes & set(line.sizes()))]
    # The default size the line ends with: the VMIs' where kvtune sets it.
    default = (_kernel_size(vmi_size) if vmi_size in {alloc.size for alloc in boot}
               else line.default or args.default)
    bare = next((word for word in line.words if word.partition("=")[0] in (
        "hugepages", "hugepagesz")), "")
    if default in sizes and bare.startswith("hugepages="):
        found.append(f"`{bare}` before any hugepagesz= counts pages of the default size "
                     f"(default_hugepagesz={default})")
    return "; ".join(found)


def _staged(found: Plan, spec: HypervisorNodeStateSpec, facts: BootFacts, desired: str,
            sizes: str) -> Plan:
    """`found` for a line staged as the spec wants that the running kernel lacks: waiting for
    the reboot, the reboot request put back where it was lost, or the line ignored."""
    from kvtune_api.v1alpha1.nodestate import PlannedStep
    loader = facts.loader
    if not facts.written_since_boot:
        # Booted since it was written: asking for another reboot would loop for ever.
        return _add(found, Finding("Hugepages", "Error", "BootArgumentsIgnored", (
            f"`{desired}` is staged in {loader.describe()}, and the node booted since, but its "
            f"kernel runs with `{facts.running or 'no hugepage arguments'}`: the boot loader "
            "booted another entry, or the kernel ignored the arguments (a page size given "
            "twice?); compare /proc/cmdline with the boot loader's configuration")))
    if not facts.reboot_requested and stages_boot(spec):
        return dataclasses.replace(found, steps=(*found.steps, Step("reboot", PlannedStep(
            id=REBOOT_STEP_ID, feature="Hugepages", path=REBOOT_REQUIRED, current="",
            desired=REBOOT_REQUIRED_TEXT, disruption="NeedsReboot", reason=(
                f"`{desired}` is staged in {loader.describe()}, but no reboot is requested "
                "(the request was lost, e.g. the agent stopped in between): it is asked "
                "again")))))
    return _add(found, Finding("Hugepages", "Pending", "HugepagesRebootPending", (
        f"`{desired}` is staged in {loader.describe()} for the {sizes} hugepages the "
        "running kernel could not allocate; they are allocated at the next reboot")))


def _over_budget(spec: HypervisorNodeStateSpec, host: HostReport) -> str:
    """Why the pools the node holds once booted with the spec's counts would starve it ("" when
    they would not): every size the spec allocates at its counts, every other pool as it is."""
    settings = spec.host.memory.hugepages
    held: dict[int, int] = {}
    managed = set()
    for alloc in settings.pages:
        kib = SIZE_KIB[alloc.size]
        counts = hugepages.hugepage_counts(alloc, host)
        if counts is None:
            continue  # not staged: its pools stay as they are, and are counted so below
        managed.add(kib)
        for node, count in counts.items():
            held[node] = held.get(node, 0) + count * kib
    for pool in host.memory.hugepages_per_node:
        if pool.node is None or pool.size_kib in managed:
            continue
        if pool.total is None:
            return (f"the {pool.size} pool of NUMA node {pool.node} cannot be read, so what the "
                    "node's pools hold in all is unknown")
        held[pool.node] = held.get(pool.node, 0) + pool.total * pool.size_kib
    return memory_budget.refusal(settings.host_headroom, host, held)


def _add(found: Plan, finding: Finding) -> Plan:
    return dataclasses.replace(found, findings=(*found.findings, finding))
