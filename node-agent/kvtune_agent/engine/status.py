"""A node's status after one agent cycle: a pure function of what was found, planned and done.

Conditions answer three questions for `kubectl get hvns` and the operator's roll-up: is the host
as the spec wants (Ready, and one condition per feature), is kvtune still working on it
(Progressing), can it not get there without a person (Degraded), and is it waiting for a drain or
a reboot that only the operator or an administrator can give (Waiting). Each carries a CamelCase
reason and a message that says what to do; transition times move only when a status flips.

Audit mode changes nothing, so its user wants a dry run they can trust: Ready means "the host
already matches" (the plan is empty and nothing blocks the spec), `plan` lists every change
Enforce would make with its disruption class, Degraded says what Enforce could not fix either,
and drainRequired / rebootRequired stay false, since no drain or reboot is needed for nothing to
happen (the operator must never disrupt an Audit node). syncStatus is Succeeded when the host
matches and Pending when it differs. Paused reports the same way as Audit.

With spec.revert the node is leaving its profile: the status reports the replay of the host
journal, with a `Reverted` condition that turns True once every recorded value is restored.
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Iterable, Mapping, Sequence

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.common import Condition, ConditionStatus
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import (
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
    PlannedStep,
    StepResult,
    SyncStatus,
)

from ..features.base import ConditionFeature, Feature, Finding, Plan

#: Condition type the operator waits for before it deletes a reverting node's state.
REVERTED = "Reverted"
#: Ready's and Degraded's reason while the probe is stuck in a read (cycle.py).
PROBE_HUNG = "ProbeHung"
#: Longest condition message; the plan and results carry the full detail.
MAX_MESSAGE = 1024


def _joined(messages: Iterable[str]) -> str:
    text = "; ".join(messages)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _steps_message(steps: Sequence[PlannedStep], results: Mapping[str, StepResult]) -> str:
    return _joined(
        f"{s.id}: {s.current.strip()} -> {s.desired.strip()} ({s.disruption})"
        + (f": {results[s.id].message}" if s.id in results and results[s.id].message else "")
        for s in steps)


def _step_condition(
    steps: Sequence[PlannedStep], results: Mapping[str, StepResult], enforcing: bool,
    spec: HypervisorNodeStateSpec,
) -> tuple[ConditionStatus, str, str]:
    message = _steps_message(steps, results)
    outcomes = {results[s.id].result for s in steps if s.id in results}
    if not enforcing:
        why = "spec.paused is true" if spec.paused else "Audit mode"
        return "False", "Paused" if spec.paused else "WouldChange", (
            f"{why}: {len(steps)} change(s) not made: {message}")
    if "Failed" in outcomes:
        return "False", "ApplyFailed", message
    if "Waiting" in outcomes:
        drain = any(s.disruption == "NeedsDrain" for s in steps)
        return "False", "WaitingForDrain" if drain else "WaitingForReboot", message
    if "Partial" in outcomes:
        return "False", "PartiallyApplied", message
    return "False", "Applying", message


def _feature_condition(
    feature: Feature[t.Any, t.Any], condition: ConditionFeature,
    spec: HypervisorNodeStateSpec, host: HostReport, plan: Plan,
    results: Mapping[str, StepResult], enforcing: bool, generation: int,
) -> Condition:
    own = plan.of(condition)
    blocking = [f for f in own.findings if f.severity != "Warning"]
    steps = [s.planned for s in own.steps]
    notes = _joined(f.message for f in own.findings)
    status: ConditionStatus
    if blocking:
        status, reason, message = "False", blocking[0].reason, notes
    elif steps:
        status, reason, message = _step_condition(steps, results, enforcing, spec)
    elif (unmanaged := feature.unmanaged(spec)) is not None:
        status, reason, message = "True", "NotManaged", unmanaged
    else:
        status, reason, message = feature.settled(host, own, notes)
        message = _joined([message])
    return cond.make(condition, status, reason, message, generation)


def node_status(
    features: Sequence[Feature[t.Any, t.Any]],
    spec: HypervisorNodeStateSpec,
    generation: int,
    host: HostReport,
    plan: Plan,
    results: list[StepResult] | None,
    previous: HypervisorNodeStateStatus,
    now: datetime.datetime,
    *,
    journal_entries: int | None = 0,
    retries: Mapping[str, Sequence[t.Any]] | None = None,
) -> HypervisorNodeStateStatus:
    """The status after a cycle that probed `host`, left `plan` to do and produced `results`.

    `plan` is what remains after this cycle (in Audit: all of it). `results` is None when the
    cycle applied or restored nothing; the previous results are kept then, so a settled node's
    status does not change. `journal_entries` is what the host journal still holds after this
    cycle (None: it could not be read); it decides `Reverted` under spec.revert.
    `retries` are the back-off records by status field (retry.py), waiting to be asked again.
    """
    if spec.revert:
        conditions, sync, error = _revert_conditions(
            spec, generation, results or [], journal_entries)
        drain = reboot = False
        remaining: list[PlannedStep] = []
    else:
        conditions, sync, error, drain, reboot = _conditions(
            features, spec, generation, host, plan, results or [])
        remaining = [step.planned for step in plan.steps]
    return HypervisorNodeStateStatus(
        observed_generation=generation,
        sync_status=sync,
        last_sync_error=error,
        last_probe_time=now,
        conditions=cond.merge(previous.conditions, conditions, now),
        host=host,
        plan=remaining,
        results=previous.results if results is None else results,
        **{name: list(items) for name, items in plan.published.items()},
        **{field: list(records) for field, records in (retries or {}).items()},
        reboot_required=reboot,
        drain_required=drain,
    )


def _conditions(
    features: Sequence[Feature[t.Any, t.Any]], spec: HypervisorNodeStateSpec, gen: int,
    host: HostReport, plan: Plan, results: list[StepResult],
) -> tuple[list[Condition], SyncStatus, str, bool, bool]:
    """(conditions, syncStatus, lastSyncError, drainRequired, rebootRequired)."""
    enforcing = spec.mode == "Enforce" and not spec.paused
    by_id = {r.id: r for r in results}
    remaining = [step.planned for step in plan.steps]
    errors: list[Finding] = [f for f in plan.findings if f.severity == "Error"]
    failed = [by_id[s.id] for s in remaining if s.id in by_id and by_id[s.id].result == "Failed"]
    drain = enforcing and any(s.disruption == "NeedsDrain" for s in remaining)
    reboot = enforcing and (plan.reboot_pending or any(
        s.disruption == "NeedsReboot" for s in remaining))
    moving = [s for s in remaining
              if s.id not in by_id or by_id[s.id].result not in ("Failed", "Waiting")]
    ready = not remaining and not errors and not plan.reboot_pending
    problems = [f.message for f in errors] + [r.message for r in failed]

    if ready:
        ready_c = cond.make(cond.READY, "True", "HostMatches", "the host matches the spec" + (
            "" if enforcing else " (nothing was changed: Audit mode or paused)"), gen)
    elif not enforcing and remaining:
        reason = "Paused" if spec.paused else "WouldChange"
        ready_c = cond.make(cond.READY, "False", reason, (
            f"{'paused' if spec.paused else 'Audit mode'}: Enforce would make "
            f"{len(remaining)} change(s): " + _steps_message(remaining, {})), gen)
    elif problems:
        ready_c = cond.make(cond.READY, "False", "Degraded", _joined(problems), gen)
    elif drain:
        ready_c = cond.make(cond.READY, "False", "WaitingForDrain", "see the Waiting condition",
                            gen)
    elif reboot or plan.reboot_pending:
        ready_c = cond.make(cond.READY, "False", "WaitingForReboot", _joined(
            f.message for f in plan.findings if f.severity == "Pending") or (
            "see the Waiting condition"), gen)
    else:
        ready_c = cond.make(cond.READY, "False", "Applying",
                            _steps_message(remaining, by_id), gen)

    if problems:
        degraded_c = cond.make(cond.DEGRADED, "True", errors[0].reason if errors else "ApplyFailed",
                               _joined(problems), gen)
    else:
        degraded_c = cond.make(cond.DEGRADED, "False", "AsExpected", "", gen)

    if drain:
        waiting_c = cond.make(cond.WAITING, "True", "DrainRequired", (
            "the VMs using these resources must leave the node first: "
            + _steps_message([s for s in remaining if s.disruption == "NeedsDrain"], by_id)), gen)
    elif reboot:
        pending = [f.message for f in plan.findings if f.severity == "Pending"]
        waiting_c = cond.make(cond.WAITING, "True", "RebootRequired", _joined(pending) or (
            _steps_message([s for s in remaining if s.disruption == "NeedsReboot"], by_id)), gen)
    else:
        waiting_c = cond.make(cond.WAITING, "False", "NotWaiting", "", gen)

    if enforcing and moving:
        progressing_c = cond.make(cond.PROGRESSING, "True", "Applying",
                                  _steps_message(moving, by_id), gen)
    else:
        reason = "Paused" if spec.paused else ("Idle" if enforcing else "Audit")
        progressing_c = cond.make(cond.PROGRESSING, "False", reason, "", gen)

    per_feature = [_feature_condition(f, f.condition, spec, host, plan, by_id, enforcing, gen)
                   for f in features if f.condition is not None]
    sync: SyncStatus = ("Failed" if problems else "Succeeded" if ready
                        else "InProgress" if enforcing else "Pending")
    conditions = [ready_c, progressing_c, degraded_c, waiting_c, *per_feature]
    return conditions, sync, problems[0] if problems else "", drain, reboot


def probe_hung_status(
    previous: HypervisorNodeStateStatus, message: str, now: datetime.datetime
) -> HypervisorNodeStateStatus:
    """The status of a cycle whose probe did not return: the previous one (its host report
    and plan are the last known, the spec is not observed), no longer Ready, Degraded with
    `message`, which names the path the probe is stuck on."""
    stuck = [cond.make(cond.READY, "False", PROBE_HUNG, message,
                       previous.observed_generation or 0),
             cond.make(cond.DEGRADED, "True", PROBE_HUNG, message,
                       previous.observed_generation or 0)]
    kept = [c for c in previous.conditions if c.type not in (cond.READY, cond.DEGRADED)]
    return previous.model_copy(update={
        "conditions": [*cond.merge(previous.conditions, stuck, now), *kept],
        "sync_status": "Failed", "last_sync_error": message})


def _revert_conditions(
    spec: HypervisorNodeStateSpec, gen: int, results: list[StepResult], left: int | None,
) -> tuple[list[Condition], SyncStatus, str]:
    """(conditions, syncStatus, lastSyncError) of a node restoring its journal."""
    failed = [r.message for r in results if r.result in ("Failed", "Partial")]
    waiting = [r.message for r in results if r.result == "Waiting"]
    if spec.paused:
        reverted_c = cond.make(REVERTED, "False", "Paused", (
            f"spec.paused is true: the host journal ({left} value(s) to restore) is kept until "
            "the node is unpaused"), gen)
    elif left is None:
        reverted_c = cond.make(REVERTED, "False", "JournalUnreadable", _joined(failed), gen)
    elif left == 0:
        reverted_c = cond.make(REVERTED, "True", "Reverted", (
            "every host value kvtune changed is restored" + (
                f" ({len(results)} this cycle)" if results else "")), gen)
    elif failed:
        reverted_c = cond.make(REVERTED, "False", "RevertFailed", _joined(failed), gen)
    else:
        reverted_c = cond.make(REVERTED, "False", "RevertWaiting",
                               _joined(waiting) or f"{left} value(s) left to restore", gen)
    done = reverted_c.status == "True"
    conditions = [
        cond.make(cond.READY, "False", "Reverted" if done else "Reverting",
                  "the node left its profile; kvtune restores the host's original values", gen),
        cond.make(cond.PROGRESSING, "False" if done or spec.paused else "True",
                  "Paused" if spec.paused else "Reverted" if done else "Reverting", "", gen),
        cond.make(cond.DEGRADED, "True" if failed else "False",
                  reverted_c.reason if failed else "AsExpected", _joined(failed), gen),
        cond.make(cond.WAITING, "True" if waiting else "False",
                  "RevertWaiting" if waiting else "NotWaiting", _joined(waiting), gen),
        reverted_c,
    ]
    sync: SyncStatus = "Failed" if failed else "Succeeded" if done else "InProgress"
    return conditions, sync, failed[0] if failed else ""
