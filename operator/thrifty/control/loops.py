"""A periodic pass that acts only on the leader and only once kopf's caches are filled.

The autoscaler's fleet pass and the reconciler's resyncs run on it instead of a kopf timer per
object: one task per kind of work, whatever the number of objects, and no finalizer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from thrifty.adapters import kube

log = logging.getLogger(__name__)


@dataclass
class Loop:
    """Every `interval_seconds`, while `acting()`: `work()`; never dies of one failed pass."""

    name: str
    interval_seconds: float
    work: Callable[[], Awaitable[None]]
    acting: Callable[[], bool]

    async def run(self, ready: asyncio.Event) -> None:
        await ready.wait()
        next_at = time.monotonic()
        while True:
            next_at += self.interval_seconds
            if self.acting():
                try:
                    await self.work()
                except asyncio.CancelledError:
                    raise
                except kube.KubeError as error:
                    # An outage, not a bug: one line, no traceback (the API server restarts).
                    log.warning("%s: pass failed: %s; the next one retries", self.name, error)
                except Exception:
                    log.exception("%s: pass failed; the next one retries", self.name)
            now = time.monotonic()
            # A pass longer than the interval (a flood of objects) skips the ticks it missed
            # instead of running them back to back.
            next_at = max(next_at, now)
            await asyncio.sleep(next_at - now)
