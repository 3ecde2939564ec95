"""Writes the kernel refuses or honours only in part are asked again at growing intervals.

Hugepage pools the kernel grows only in part, and VF counts it refuses, are asked again at
growing intervals.

Growing a pool asks the kernel for physically contiguous free memory. On a host that has run for
a while, 1Gi pages often cannot all be found, and the kernel allocates what it can; every attempt
reclaims and compacts memory under the running VMs, so asking again every cycle costs the VMs
latency for pages that will not come. After an attempt that falls short, the pool waits
FIRST_WAIT, then twice as long after each further one, up to MAX_WAIT; meanwhile the node reports
HugepagesPartlyAllocated with the way out: allocating the pages at boot, before memory fragments.

The record lives in the node's status (status.hugepageRetries): the agent reads its previous
status every cycle, a person sees it there, and a lost status costs one early attempt, no more.
A VF count is changed through 0; when the kernel then refuses the new count (ENOMEM: no MMIO or
memory for that many VFs; EBUSY; a driver that hangs) the NIC is put back to its old count
(change.py) and, since the same write fails the same way next cycle and costs the NIC its VFs
for a moment every time, it is asked again on the same schedule (status.sriovRetries), with
SriovVfsRefused saying what to do. A changed numVfs is tried at once. Kernel arguments the boot
loader's tool fails to stage (a failing update-grub, grub2-mkconfig or grubby: each attempt
rewrites the boot configuration and puts it back) wait the same way (status.bootRetries, with
BootStagingFailed); other arguments are tried at once.

Every function here is pure.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Callable, Mapping, Sequence

from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import (
    BootRetry,
    HugepageRetry,
    PlannedStep,
    SriovRetry,
    StepResult,
)

from ..features.base import Finding, Plan
from ..features.memory.boot import STEP_ID as BOOT_STEP_ID
from .plan import hugepage_step_id

FIRST_WAIT = datetime.timedelta(minutes=10)
MAX_WAIT = datetime.timedelta(hours=24)


def _next_attempt(now: datetime.datetime, attempts: int) -> datetime.datetime:
    # The exponent is capped so that years of attempts cannot overflow a timedelta.
    wait: datetime.timedelta = min(FIRST_WAIT * 2 ** min(attempts - 1, 20), MAX_WAIT)
    return now + wait


def _without(plan: Plan, held: set[str], findings: Sequence[Finding]) -> Plan:
    """`plan` without the steps `held`, with `findings` saying why."""
    return dataclasses.replace(
        plan, steps=tuple(step for step in plan.steps if step.planned.id not in held),
        findings=(*plan.findings, *findings))


Retry = t.TypeVar("Retry", HugepageRetry, SriovRetry, BootRetry)


def _wants(retry: HugepageRetry | SriovRetry | BootRetry, step: PlannedStep) -> bool:
    """The record is of the value the step still plans (a count, or kernel arguments)."""
    return str(retry.wanted) == step.desired


def _previous(before: Mapping[str, Retry], step: PlannedStep) -> Retry | None:
    """The step's record, unless the spec has changed what it wants since (a new request)."""
    last = before.get(step.id)
    return None if last is None or not _wants(last, step) else last


def _waiting(
    plan: Plan, retries: Sequence[Retry], now: datetime.datetime,
    applies: Callable[[PlannedStep], bool],
) -> list[Retry]:
    """The records of `plan`'s steps (those `applies` to) whose next attempt is still to come and
    that still want what the step plans, in the plan's order."""
    # A next attempt further off than MAX_WAIT was set before the clock jumped back: waiting
    # for it would hold the step for as long as the jump, so it is due now.
    waiting = {retry.step: retry for retry in retries
               if now < retry.next_attempt <= now + MAX_WAIT}
    return [waiting[step.planned.id] for step in plan.steps
            if applies(step.planned) and step.planned.id in waiting
            and _wants(waiting[step.planned.id], step.planned)]


def _grows(step: PlannedStep) -> bool:
    return step.feature == "Hugepages" and int(step.desired) > int(step.current)


def track(
    previous: Sequence[HugepageRetry], results: Sequence[StepResult], after: Plan,
    host: HostReport, now: datetime.datetime,
) -> list[HugepageRetry]:
    """The retries once a cycle is done.

    `results` is what the cycle applied, `after` the plan (before `hold`) from its last probe,
    `host`. A pool the spec still wants grown keeps its record, and gets a new attempt counted
    when this cycle wrote it; a pool that reached its count, or whose count the spec changed,
    has none.
    """
    before = {retry.step: retry for retry in previous}
    steps = {step.planned.id: step.planned for step in after.steps}
    written = {result.id for result in results if result.result in ("Applied", "Partial")}
    retries = []
    for pool in host.memory.hugepages_per_node:
        step_id = hugepage_step_id(pool.node, pool.size)
        step = steps.get(step_id)
        if step is None or not _grows(step):
            continue
        last = _previous(before, step)
        if step_id in written:
            attempts = 1 + (last.attempts if last else 0)
            retries.append(HugepageRetry(
                step=step_id, path=step.path, node=pool.node, size=pool.size,
                wanted=int(step.desired), allocated=pool.total, attempts=attempts,
                last_attempt=now, next_attempt=_next_attempt(now, attempts)))
        elif last is not None:
            retries.append(last)
    return retries


def hold(plan: Plan, retries: Sequence[HugepageRetry], now: datetime.datetime) -> Plan:
    """`plan` without the growth of pools still waiting for their next attempt, replaced by a
    finding per page size that says what the kernel gave and what to do."""
    held = _waiting(plan, retries, now, _grows)
    if not held:
        return plan
    sizes = sorted({retry.size for retry in held})
    return _without(plan, {retry.step for retry in held},
                    [_finding([retry for retry in held if retry.size == size]) for size in sizes])


def _finding(retries: list[HugepageRetry]) -> Finding:
    """What the kernel gave on each NUMA node short of pages of one size, and what to do."""
    size = retries[0].size
    short = ", ".join(f"{r.allocated} of {r.wanted} on NUMA node {r.node} ({r.path})"
                      for r in retries)
    attempts = max(r.attempts for r in retries)
    following = min(r.next_attempt for r in retries).isoformat(timespec="seconds")
    return Finding("Hugepages", "Error", "HugepagesPartlyAllocated", (
        f"the kernel allocated only part of the {size} hugepages wanted: {short}, after "
        f"{attempts} attempt(s); it finds too little contiguous free memory on the running host. "
        "Every attempt compacts "
        f"memory under the VMs, so the next is at {following}, each waiting twice as long. "
        # The kernel arguments themselves are boot.py's to say: it knows the running kernel's
        # form (per node or one total) and what is staged already.
        "Pages the running host cannot give are allocated at boot, before memory fragments: "
        "kvtune stages the kernel arguments where spec.host.boot.settings is Stage and "
        "spec.rollout.allowReboot is true, and otherwise says which to set (docs/boot.md)"))


def track_sriov(
    previous: Sequence[SriovRetry], results: Sequence[StepResult], after: Plan,
    host: HostReport, now: datetime.datetime,
) -> list[SriovRetry]:
    """The VF retries once a cycle is done: a VF count this cycle failed to write, and that
    `after` still plans, counts an attempt; one not tried keeps its record; others have none."""
    names = {nic.pci_address: nic.name for nic in host.sriov.nics}

    def record(step: PlannedStep, error: str, attempts: int) -> SriovRetry:
        pci = step.path.rsplit("/", 2)[-2]
        return SriovRetry(
            step=step.id, path=step.path, pci_address=pci, nic=names.get(pci, "?"),
            wanted=int(step.desired), error=error, attempts=attempts, last_attempt=now,
            next_attempt=_next_attempt(now, attempts))

    return _track_failed(previous, results, after, lambda step: step.feature == "SRIOV", record)


def _track_failed(
    previous: Sequence[Retry], results: Sequence[StepResult], after: Plan,
    applies: Callable[[PlannedStep], bool], record: Callable[[PlannedStep, str, int], Retry],
) -> list[Retry]:
    """The records of the steps `applies` to once a cycle is done: a step this cycle failed to
    write, and that `after` still plans, counts an attempt (`record` makes it from the step,
    the error and the attempts so far); one not tried keeps its record; others have none."""
    before = {retry.step: retry for retry in previous}
    failed = {result.id: result for result in results if result.result == "Failed"}
    retries = []
    for step in (s.planned for s in after.steps if applies(s.planned)):
        last = _previous(before, step)  # a changed value is a new request
        result = failed.get(step.id)
        if result is None:
            retries += [last] if last else []
            continue
        retries.append(record(step, result.message, 1 + (last.attempts if last else 0)))
    return retries


def hold_sriov(plan: Plan, retries: Sequence[SriovRetry], now: datetime.datetime) -> Plan:
    """`plan` without the VF counts still waiting for their next attempt, with a finding each."""
    held = _waiting(plan, retries, now, lambda step: step.feature == "SRIOV")
    if not held:
        return plan
    return _without(plan, {retry.step for retry in held}, [Finding("SRIOV", "Error", (
        "SriovVfsRefused"), (
        f"NIC {r.nic} ({r.pci_address}) refused {r.wanted} VFs ({r.path}) after "
        f"{r.attempts} attempt(s): {r.error}. Each attempt takes the NIC's VFs away for a "
        f"moment, so the next is at {r.next_attempt.isoformat(timespec='seconds')}, each "
        "waiting twice as long. What to do: read the driver's messages (dmesg); for ENOMEM "
        "enable SR-IOV and enough VFs in the NIC's firmware and BIOS (or boot with "
        "pci=realloc); for EBUSY free the VFs; or lower numVfs in the profile, which is tried "
        "at once")) for r in held])


def _stages_boot(step: PlannedStep) -> bool:
    return step.id == BOOT_STEP_ID


def track_boot(
    previous: Sequence[BootRetry], results: Sequence[StepResult], after: Plan,
    now: datetime.datetime,
) -> list[BootRetry]:
    """The boot staging retry once a cycle is done, as for VF counts: kernel arguments this
    cycle failed to stage, and that `after` still plans, count an attempt."""

    def record(step: PlannedStep, error: str, attempts: int) -> BootRetry:
        return BootRetry(step=step.id, path=step.path, wanted=step.desired, error=error,
                         attempts=attempts, last_attempt=now,
                         next_attempt=_next_attempt(now, attempts))

    return _track_failed(previous, results, after, _stages_boot, record)


def hold_boot(plan: Plan, retries: Sequence[BootRetry], now: datetime.datetime) -> Plan:
    """`plan` without the boot staging still waiting for its next attempt, with a finding."""
    held = _waiting(plan, retries, now, _stages_boot)
    if not held:
        return plan
    return _without(plan, {retry.step for retry in held}, [Finding(
        "Hugepages", "Error", "BootStagingFailed", (
            f"staging `{r.wanted}` through {r.path} failed {r.attempts} time(s), the last: "
            f"{r.error}. Each attempt rewrites the boot configuration and runs the boot "
            "loader's tool, so the next is at "
            f"{r.next_attempt.isoformat(timespec='seconds')}, each waiting twice as long; fix "
            "what the error says (run the command by hand to see it), and other kernel "
            "arguments (a changed spec) are tried at once")) for r in held])
