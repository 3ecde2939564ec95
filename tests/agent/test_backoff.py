"""Backing off hugepage growth the kernel grants only in part: pure rules over plans and status."""

from __future__ import annotations

import datetime

import pytest
from kvtune_agent.engine.retry import hold, track
from kvtune_agent.features.base import Plan, Step
from kvtune_agent.features.memory.hugepages import POOL_BACKOFF
from kvtune_api.v1alpha1.host import HostReport, HugepagePool, MemoryReport
from kvtune_api.v1alpha1.nodestate import HugepageRetry, PlannedStep, StepResult

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MINUTE = datetime.timedelta(minutes=1)
STEP = "hugepages/node0/1Gi"
PATH = "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"


def _host(total: int) -> HostReport:
    pool = HugepagePool(size="1Gi", size_kib=1 << 20, node=0, total=total, free=total)
    return HostReport(memory=MemoryReport(hugepages_per_node=[pool]))


def _plan(current: int, desired: int) -> Plan:
    return Plan(steps=(Step("sysfs", PlannedStep(
        id=STEP, feature="Hugepages", path=PATH, current=str(current), desired=str(desired),
        reason="", disruption="Live")),))


def _retry(attempts: int, wanted: int = 20, wait: datetime.timedelta = 10 * MINUTE) -> (
        HugepageRetry):
    return HugepageRetry(step=STEP, path=PATH, node=0, size="1Gi", wanted=wanted, allocated=18,
                         attempts=attempts, last_attempt=NOW - MINUTE,
                         next_attempt=NOW - MINUTE + wait)


@pytest.mark.parametrize(("before", "wait"), [
    pytest.param(0, 10 * MINUTE, id="the first short attempt waits 10 minutes"),
    pytest.param(1, 20 * MINUTE, id="the second twice as long"),
    pytest.param(4, 160 * MINUTE, id="the fifth 16 times as long"),
    pytest.param(20, 24 * 60 * MINUTE, id="never more than a day"),
    pytest.param(5000, 24 * 60 * MINUTE, id="however many attempts were made"),
])
def test_each_attempt_that_falls_short_waits_twice_as_long_as_the_one_before(
    before: int, wait: datetime.timedelta
) -> None:
    previous = [_retry(before)] if before else []
    applied = [StepResult(id=STEP, result="Partial")]

    [retry] = track(POOL_BACKOFF, previous, applied, _plan(18, 20), _host(18), NOW)

    assert (retry.attempts, retry.allocated, retry.next_attempt) == (before + 1, 18, NOW + wait)


@pytest.mark.parametrize(("plan", "host"), [
    pytest.param(Plan(), _host(20), id="the pool reached its count"),
    pytest.param(_plan(18, 24), _host(18), id="the spec wants another count"),
    pytest.param(_plan(18, 16), _host(18), id="the spec now shrinks the pool"),
])
def test_a_pool_no_longer_short_of_what_was_tried_loses_its_record(
    plan: Plan, host: HostReport
) -> None:
    assert track(POOL_BACKOFF, [_retry(3)], [], plan, host, NOW) == []


def test_a_record_is_kept_unchanged_between_attempts() -> None:
    retry = _retry(2)

    assert track(POOL_BACKOFF, [retry], [], _plan(18, 20), _host(18), NOW) == [retry]


@pytest.mark.parametrize(("now", "held"), [
    pytest.param(NOW, True, id="within its wait the growth is held"),
    pytest.param(NOW + 9 * MINUTE, False, id="once the wait is over it is planned again"),
])
def test_a_pool_is_grown_again_only_once_its_wait_is_over(
    now: datetime.datetime, held: bool
) -> None:
    found = hold(_plan(18, 20), POOL_BACKOFF, [_retry(1)], now)

    assert (found.steps == ()) == held
    assert [f.reason for f in found.findings] == (["HugepagesPartlyAllocated"] if held else [])


@pytest.mark.parametrize("jump", [
    pytest.param(datetime.timedelta(days=365), id="a year"),
    pytest.param(datetime.timedelta(days=2), id="two days"),
])
def test_a_clock_that_jumped_back_does_not_hold_a_pool_longer_than_the_longest_wait(
    jump: datetime.timedelta,
) -> None:
    # The record was written before the clock went back: its next attempt lies `jump` ahead.
    found = hold(_plan(18, 20), POOL_BACKOFF, [_retry(1, wait=jump)], NOW)

    assert [s.planned.id for s in found.steps] == [STEP]
