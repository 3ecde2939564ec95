"""kopf's index readiness gate, as kvtune installs it: waiters wake when the set changes state,
and only then, however many toggles come and go."""

from __future__ import annotations

import asyncio
import typing as t

import pytest
from kopf._cogs.aiokits import aiotoggles
from kvtune_operator.common import kopf_toggles
from kvtune_operator.common.kopf_toggles import QuietToggleSet
from kvtune_operator.controller import (
    handlers,  # noqa: F401  (installs the set, as `kvtune operator` does)
)


def test_kopf_builds_its_toggle_sets_from_the_quiet_one() -> None:
    assert aiotoggles.ToggleSet is QuietToggleSet


def test_waiters_wake_once_when_the_last_object_is_indexed() -> None:
    async def scenario() -> tuple[list[bool], int]:
        gate = QuietToggleSet(all)
        toggles = [await gate.make_toggle(name=f"node-{i}") for i in range(100)]
        wakeups = 0
        real_notify_all = gate._condition.notify_all

        def counting_notify_all() -> None:
            nonlocal wakeups
            wakeups += 1
            real_notify_all()

        gate._condition.notify_all = counting_notify_all  # type: ignore[method-assign]
        waiters = [asyncio.create_task(gate.wait_for(True)) for _ in range(50)]
        await asyncio.sleep(0)
        for toggle in toggles[:-1]:
            await gate.drop_toggle(toggle)
        await asyncio.sleep(0)
        pending = [not w.done() for w in waiters]
        await gate.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        return pending, wakeups

    pending, wakeups = asyncio.run(scenario())
    assert all(pending)
    assert wakeups == 1


def test_a_toggle_turned_on_still_wakes_the_waiters_of_an_any_set() -> None:
    async def scenario() -> None:
        paused = QuietToggleSet(any)
        peering = await paused.make_toggle(name="peering")
        waiter = asyncio.create_task(paused.wait_for(True))
        await asyncio.sleep(0)
        assert not waiter.done()
        await peering.turn_to(True)
        await asyncio.wait_for(waiter, timeout=5)
        await paused.drop_toggle(peering)
        assert paused.is_off()

    asyncio.run(scenario())


def test_a_kopf_whose_toggle_set_changed_shape_keeps_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Reshaped:  # what a later kopf might have instead
        def __init__(self, fn: t.Any) -> None:
            self.fn = fn

    monkeypatch.setattr(aiotoggles, "ToggleSet", Reshaped)
    assert kopf_toggles.install() is False
    # Read through vars(): to mypy the attribute is still kopf's class, whatever setattr did.
    assert vars(aiotoggles)["ToggleSet"] is Reshaped


def test_kopf_145s_toggle_set_has_the_shape_the_fix_was_written_for() -> None:
    # The original class, as kopf ships it (the module's ToggleSet is replaced on import).
    assert kopf_toggles._shaped_as_expected(QuietToggleSet.__mro__[1])
