"""Writes the kernel refuses or honours only in part are asked again at growing intervals.

The one retry mechanism of every feature: a feature declares a `Backoff` (features/base.py) for
the steps whose attempts cost the host something, and the engine keeps its records, holds its
steps and tells why. Today: hugepage pools the kernel grows only in part (every attempt reclaims
and compacts memory under the running VMs, for pages that will not come), VF counts it refuses
(every attempt takes the NIC's VFs away for a moment, through 0), and kernel arguments the boot
loader's tool fails to stage (every attempt rewrites the boot configuration).

After an attempt that counts, the step waits FIRST_WAIT, then twice as long after each further
one, up to MAX_WAIT; meanwhile the feature's findings say what happened and what to do. A
changed desired value is a new request, tried at once.

The records live in the node's status, in the field each Backoff names (hugepageRetries,
sriovRetries, bootRetries): the agent reads its previous status every cycle, a person sees them
there, and a lost status costs one early attempt, no more.

Every function here is pure.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Mapping, Sequence

from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus, PlannedStep, StepResult

from ..features.base import Backoff, Feature, Finding, Plan

FIRST_WAIT = datetime.timedelta(minutes=10)
MAX_WAIT = datetime.timedelta(hours=24)

#: Back-off records by status field (e.g. "sriov_retries").
Records = Mapping[str, Sequence[t.Any]]


def backoffs(features: Sequence[Feature[t.Any, t.Any]]) -> list[Backoff[t.Any]]:
    """Every feature's back-offs, in registry order."""
    return [backoff for feature in features for backoff in feature.backoffs]


def previous(features: Sequence[Feature[t.Any, t.Any]],
             status: HypervisorNodeStateStatus) -> dict[str, list[t.Any]]:
    """The records a status holds, by field."""
    return {b.status_field: list(getattr(status, b.status_field)) for b in backoffs(features)}


def next_attempt(now: datetime.datetime, attempts: int) -> datetime.datetime:
    """When the attempt after `attempts` is due."""
    # The exponent is capped so that years of attempts cannot overflow a timedelta.
    wait: datetime.timedelta = min(FIRST_WAIT * 2 ** min(attempts - 1, 20), MAX_WAIT)
    return now + wait


def _wants(record: t.Any, step: PlannedStep) -> bool:
    """The record is of the value the step still plans (a count, or kernel arguments)."""
    return str(record.wanted) == step.desired


def track(
    backoff: Backoff[t.Any], before: Sequence[t.Any], results: Sequence[StepResult],
    after: Plan, host: HostReport, now: datetime.datetime,
) -> list[t.Any]:
    """The records of `backoff` once a cycle is done.

    `results` is what the cycle applied, `after` the plan from its last probe `host`. A step
    `after` still plans whose result counts an attempt gets a new record (one attempt more than
    its last); one not tried keeps its record; others have none. A record of a value the spec
    no longer wants is dropped (a new request).
    """
    last = {record.step: record for record in before}
    counted = {result.id: result for result in results if backoff.counts(result)}
    records = []
    for step in (s.planned for s in after.steps if backoff.applies(s.planned)):
        kept = last.get(step.id)
        kept = kept if kept is not None and _wants(kept, step) else None
        result = counted.get(step.id)
        if result is None:
            records += [kept] if kept else []
            continue
        attempts = 1 + (kept.attempts if kept else 0)
        records.append(backoff.record(step, result, attempts, now,
                                      next_attempt(now, attempts), host))
    return records


def hold(plan: Plan, backoff: Backoff[t.Any], records: Sequence[t.Any],
         now: datetime.datetime) -> Plan:
    """`plan` without the steps of `backoff` still waiting for their next attempt, with the
    back-off's findings saying why."""
    # A next attempt further off than MAX_WAIT was set before the clock jumped back: waiting
    # for it would hold the step for as long as the jump, so it is due now.
    waiting = {record.step: record for record in records
               if now < record.next_attempt <= now + MAX_WAIT}
    held = [waiting[step.planned.id] for step in plan.steps
            if backoff.applies(step.planned) and step.planned.id in waiting
            and _wants(waiting[step.planned.id], step.planned)]
    if not held:
        return plan
    ids = {record.step for record in held}
    findings: list[Finding] = backoff.findings(held)
    return dataclasses.replace(
        plan, steps=tuple(step for step in plan.steps if step.planned.id not in ids),
        findings=(*plan.findings, *findings))


def hold_all(plan: Plan, features: Sequence[Feature[t.Any, t.Any]], records: Records,
             now: datetime.datetime, *, late: bool) -> Plan:
    """`plan` with every back-off of one stage (`late`: after the restage hooks) held."""
    for backoff in backoffs(features):
        if backoff.late == late:
            plan = hold(plan, backoff, records.get(backoff.status_field, ()), now)
    return plan


def track_all(features: Sequence[Feature[t.Any, t.Any]], before: Records,
              results: Sequence[StepResult], after: Plan, host: HostReport,
              now: datetime.datetime, *, late: bool) -> dict[str, list[t.Any]]:
    """The records of every back-off of one stage once a cycle is done, by status field."""
    return {b.status_field: track(b, before.get(b.status_field, ()), results, after, host, now)
            for b in backoffs(features) if b.late == late}
