"""The operator's API writes run in threads; every write `write_concurrency` allows in flight
must get one, whatever the machine's CPU count (the loop's default pool has CPUs + 4)."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import threading

import kopf
from kvtune_operator.controller import handlers
from kvtune_operator.controller.settings import Settings


def test_every_write_in_flight_gets_a_thread() -> None:
    in_flight = 20
    # Passes only when all of them are blocked in it at the same time.
    together = threading.Barrier(in_flight, timeout=10)

    async def scenario() -> None:
        memo = kopf.Memo(settings=Settings(write_concurrency=in_flight))
        # Called with what kopf gives every startup handler, as kopf calls it.
        sizing = handlers.size_write_threads(
            settings=kopf.OperatorSettings(), retry=0, started=datetime.datetime.now(datetime.UTC),
            runtime=datetime.timedelta(0), logger=logging.getLogger(__name__), memo=memo)
        assert inspect.isawaitable(sizing)
        await sizing
        await asyncio.gather(*(asyncio.to_thread(together.wait) for _ in range(in_flight)))

    asyncio.run(scenario())
