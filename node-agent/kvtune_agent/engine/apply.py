"""Applying a plan to the host, step by step, within what the operator has granted.

Only called in Enforce mode, and not while paused: the caller checks, so that Audit writes
nothing at all. For each step the original value is recorded in the journal first (a value
kvtune could not restore is never changed), then the change is made under a deadline and read
back. Steps are independent: one that fails, times out or waits does not stop the others, and
each result says what happened to it. A write that takes several (KSM's unmerge before stop, a
VF count through 0) is one step, its sequence declared by its feature and kept by change.py;
what must wait although the plan allows it (VFs a VM took since) each feature says right before
the write.

Disruption is the operator's decision: NeedsDrain steps run only once it has approved this node
(after draining it), and NeedsReboot steps only stage their change and ask for a reboot through
/var/run/reboot-required (read by reboot daemons such as kured; journaled, so a revert withdraws
it) when reboots are allowed. The agent itself never drains and never reboots.
"""

from __future__ import annotations

import typing as t
from collections.abc import Sequence

from kvtune_api.v1alpha1.nodestate import DisruptionGrant, StepResult

from .. import metrics
from ..features.base import Feature, Plan, Step
from ..host.hostfs import HostFS, HostWriteError
from ..host.reboot import REBOOT_REQUIRED, REBOOT_REQUIRED_TEXT, REBOOT_STEP
from ..host.systemd import Systemd
from . import change
from .journal import Journal, JournalError


def apply(
    features: Sequence[Feature[t.Any, t.Any]],
    plan: Plan,
    fs: HostFS,
    journal: Journal,
    systemd: Systemd,
    grant: DisruptionGrant,
    *,
    timeout: float,
) -> list[StepResult]:
    """Apply each step of `plan` that `grant` allows; one result per step, in plan order.

    `timeout` bounds each kernel write and each systemctl call, in seconds.
    """
    results = []
    for step in plan.steps:
        try:
            result = _apply_step(features, step, fs, journal, systemd, grant, timeout)
        except Exception as err:  # a bug in one step must not cost the other steps their turn
            result = StepResult(id=step.planned.id, result="Failed", message=(
                f"kvtune failed on this step ({type(err).__name__}: {err}); this is a kvtune "
                "bug: please report it with the node's status"))
        metrics.count_step(step.planned.feature, result.result)
        results.append(result)
    return results


def _apply_step(
    features: Sequence[Feature[t.Any, t.Any]], step: Step, fs: HostFS, journal: Journal,
    systemd: Systemd, grant: DisruptionGrant, timeout: float,
) -> StepResult:
    planned = step.planned
    if planned.disruption == "NeedsDrain" and not grant.approved:
        return StepResult(id=planned.id, result="Waiting", message=(
            "needs a drain: waiting for the operator to drain the node and approve it "
            "(spec.disruption.approved)" + ("" if grant.allow_drain else
                                             "; the profile does not allow drains "
                                             "(rollout.allowDrain), so an administrator must")))
    if planned.disruption == "NeedsReboot" and not grant.allow_reboot:
        return StepResult(id=planned.id, result="Waiting", message=(
            "needs a reboot, and the profile does not allow staging one (rollout.allowReboot)"))
    for feature in features:  # afresh, right before the write (features/base.py hold_write)
        waiting = feature.hold_write(fs, planned, grant.approved, timeout)
        if waiting:
            return StepResult(id=planned.id, result="Waiting", message=waiting)
    try:
        original = change.current(fs, systemd, step.kind, planned.path, timeout=timeout)
        journal.record(step.kind, planned.path, original, planned.id)
    except (change.ChangeError, JournalError, HostWriteError) as err:
        return StepResult(id=planned.id, result="Failed", message=(
            f"not changed, because the original value of {planned.path} could not be recorded "
            f"in the journal and could not be restored later: {err}"))
    outcome = change.set_value(fs, systemd, step.kind, planned.path, planned.desired,
                               timeout=timeout, sequence=change.sequences(features))
    result = outcome.result
    message = outcome.message or f"set {planned.path} to {planned.desired.strip()!r}"
    if result == "Applied" and planned.disruption != "NeedsReboot":
        why = settle(features, fs, systemd, planned.path, timeout)
        if why is not None:
            return _undo(features, step, original, why, fs, systemd, timeout)
    if result == "Applied" and planned.disruption == "NeedsReboot":
        asked = _request_reboot(fs, systemd, journal, timeout)
        if asked:
            result, message = "Partial", (
                f"staged in {planned.path}, but no reboot could be requested ({asked}); reboot "
                "the node when convenient")
        else:
            message = f"staged in {planned.path}; a reboot is requested ({REBOOT_REQUIRED})"
    return StepResult(id=planned.id, result=result, message=message)


def settle(features: Sequence[Feature[t.Any, t.Any]], fs: HostFS, systemd: Systemd, path: str,
           timeout: float) -> str | None:
    """Why a write or restore of `path` did not take, as the feature owning it says (its
    `settle` hook: restarting what reads it); None when it did."""
    for feature in features:
        why = feature.settle(fs, systemd, path, timeout)
        if why is not None:
            return why
    return None


def _undo(features: Sequence[Feature[t.Any, t.Any]], step: Step, original: str | None,
          why: str, fs: HostFS, systemd: Systemd, timeout: float) -> StepResult:
    """A written step that did not take: its journaled original back, settled again."""
    planned = step.planned
    back = change.set_value(fs, systemd, step.kind, planned.path, original, timeout=timeout,
                            sequence=change.sequences(features))
    again = (settle(features, fs, systemd, planned.path, timeout) if back.result == "Applied"
             else back.message)
    restored = (f"{planned.path} is back as it was" if again is None else
                f"putting {planned.path} back failed too ({again}): it stays in kvtune's "
                "journal, and a revert puts it back")
    return StepResult(id=planned.id, result="Failed", message=(
        f"wrote {planned.path}, but it did not take: {why}; {restored}"))


def _request_reboot(fs: HostFS, systemd: Systemd, journal: Journal, timeout: float) -> str:
    """Ask reboot daemons for a reboot, journaled first so that a revert withdraws it; "" when
    asked, else why not."""
    try:
        original = change.current(fs, systemd, "reboot", REBOOT_REQUIRED, timeout=timeout)
        journal.record("reboot", REBOOT_REQUIRED, original, REBOOT_STEP)
    except (change.ChangeError, JournalError, HostWriteError) as err:
        return f"it could not be recorded in the journal: {err}"
    return change.set_value(fs, systemd, "reboot", REBOOT_REQUIRED, REBOOT_REQUIRED_TEXT,
                            timeout=timeout).message
