"""kopf's readiness gate for its indexes, made linear in the number of indexed objects.

Why: before kopf runs any handler or daemon, it waits until every object of every indexed
resource is in its index. It counts them with one `ToggleSet`: a toggle per object not yet
indexed, and each object's worker, once its object is indexed, waits on the set until no toggle
is left. kopf 1.45 wakes every waiter whenever a toggle is added or dropped, although what they
wait for (the set turning on) happens once, at the end: 2 x N x N wake-ups for N nodes. Measured
on a local apiserver: 4.5 s of startup at 1,000 nodes, 14 s at 2,000, minutes at 5,000, all of it
before the first reconcile pass.

`QuietToggleSet` wakes its waiters only when adding or dropping a toggle changes the set's state,
which is all that their condition reads (a toggle turned on or off still wakes them, as kopf's
own `Toggle.turn_to` does); `install()` makes kopf build its sets from it.

This reaches into kopf's private module, so `install()` first checks that the class still has
the shape this was written against (kopf 1.45's `_condition`, `_toggles`, `make_toggle`,
`drop_toggle`, `drop_toggles`); a kopf that changed it keeps its own class, slower at startup
but correct, and the operator logs why. Both kopf processes install it: the operator and the
webhook index every node.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable

from kopf._cogs.aiokits import aiotoggles

log = logging.getLogger(__name__)


class QuietToggleSet(aiotoggles.ToggleSet):
    """kopf's `ToggleSet`, notifying its waiters only when its state changes."""

    async def make_toggle(self, __val: bool = False, *, name: str | None = None
                          ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            was_on = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != was_on:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            was_on = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != was_on:
                self._condition.notify_all()


def install() -> bool:
    """Make kopf create its toggle sets (index readiness, operator pause) as `QuietToggleSet`,
    if kopf's class is still the one this was written for; whether it did. kopf reads the class
    from its module when it starts, so call this before."""
    if aiotoggles.ToggleSet is QuietToggleSet:
        return True
    if not _shaped_as_expected(aiotoggles.ToggleSet):
        log.warning("kopf's ToggleSet is not the one kvtune's startup fix was written for "
                    "(kopf 1.45): keeping kopf's own, whose startup grows with nodes squared")
        return False
    aiotoggles.ToggleSet = QuietToggleSet  # type: ignore[misc]
    return True


def _shaped_as_expected(cls: type) -> bool:
    try:
        probe = cls(all)
    except Exception:
        return False
    coroutines = ("make_toggle", "drop_toggle", "drop_toggles", "wait_for")
    return (
        isinstance(getattr(probe, "_condition", None), asyncio.Condition)
        and isinstance(getattr(probe, "_toggles", None), set)
        and callable(getattr(cls, "is_on", None))
        and all(inspect.iscoroutinefunction(getattr(cls, m, None)) for m in coroutines)
    )
