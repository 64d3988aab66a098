"""A periodic pass that overran its interval does not run the missed ticks back to back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from thrifty.control import loops


def test_a_long_pass_skips_the_ticks_it_missed() -> None:
    started: list[float] = []

    async def work() -> None:
        started.append(time.monotonic())
        if len(started) == 1:
            await asyncio.sleep(0.5)  # ten intervals: a flood of objects

    async def scenario() -> None:
        ready = asyncio.Event()
        ready.set()
        task = asyncio.create_task(loops.Loop("test", 0.05, work, lambda: True).run(ready))
        while len(started) < 5:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(started[1:])]
    assert min(gaps) >= 0.04, f"passes ran back to back after the long one: {gaps}"
