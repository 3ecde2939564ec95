"""The operator's API writes run in threads; every write `write_concurrency` allows in flight
must get one, whatever the machine's CPU count (the loop's default pool has CPUs + 4)."""

from __future__ import annotations

import asyncio
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
        await handlers.size_write_threads(memo=memo)
        await asyncio.gather(*(asyncio.to_thread(together.wait) for _ in range(in_flight)))

    asyncio.run(scenario())
