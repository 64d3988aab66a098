"""Holding requests for a ModelService that cannot take them yet, bounded, released gradually.

A ModelService at zero replicas (or whose first replica is still starting) has no ready endpoint:
its requests wait here, first in first out, as Knative's activator holds requests for a revision
at zero. The number waiting per ModelService is the gauge `thrifty_router_requests_held`: the
operator reads it as the queue of a ModelService without engines and scales it from zero.

Bounded three ways: at most `per_service_cap` waiting for one ModelService and `total_cap` in all
(beyond them a request is refused at once with 429 and `Retry-After`), and none waits longer than
`timeout_seconds` (then 503 with `Retry-After`). A held request keeps only its body and a future.

Released gradually: when endpoints become ready, at most `release_per_endpoint` released requests
per ready endpoint are in flight at once; each that finishes lets the next one go. A backlog of a
thousand requests does not land on the first engine the moment it is ready, and an engine that
becomes ready a little later gets its share. While requests wait, new ones queue behind them
(first come, first served); once the queue is empty, requests go straight to the endpoints.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from thrifty_runtime.gateway.catalog import ServiceKey


class HoldRejectedError(Exception):
    """The caps are reached: the request is not held."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class HoldTimeoutError(Exception):
    """No release within the timeout."""


class HoldCancelledError(Exception):
    """The gateway let the request go unserved (it is shutting down)."""


@dataclass(frozen=True)
class HoldSettings:
    per_service_cap: int = 1000
    """A cold start of a few minutes at a few requests per second, per ModelService."""
    total_cap: int = 10_000
    """Bounds the gateway's memory: bodies of held requests are kept (~1 KiB to 1 MiB each)."""
    timeout_seconds: float = 300.0
    """Knative's default request timeout: long enough for an 8B model's cold start (~2 min)."""
    release_per_endpoint: int = 32
    """Released requests in flight per ready endpoint while a backlog drains."""
    retry_after_seconds: int = 10
    """Told to refused clients: about the time a replica takes to warm up a little more."""


@dataclass
class _Queue:
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    released_in_flight: int = 0


class Holding:
    """Per-ModelService FIFO queues. `ready(key)` says how many endpoints the ModelService has;
    `on_held(key, n)` is told each queue's length when it changes (the gauge)."""

    def __init__(
        self,
        settings: HoldSettings,
        ready: Callable[[ServiceKey], int],
        on_held: Callable[[ServiceKey, int], None],
    ) -> None:
        self.settings = settings
        self._ready = ready
        self._on_held = on_held
        self._queues: dict[ServiceKey, _Queue] = {}
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def held(self, key: ServiceKey) -> int:
        queue = self._queues.get(key)
        return len(queue.waiters) if queue else 0

    def must_wait(self, key: ServiceKey) -> bool:
        """A request for `key` goes to the queue (no endpoint, or others wait before it)."""
        queue = self._queues.get(key)
        return self._ready(key) == 0 or (queue is not None and bool(queue.waiters))

    async def wait(self, key: ServiceKey) -> None:
        """Waits for the request's turn. On return the caller owns a release slot and must call
        `finished(key)` when its request ends. Raises `HoldRejectedError`, `HoldTimeoutError`,
        `HoldCancelledError`, or the caller's own cancellation (a client that left)."""
        queue = self._queues.setdefault(key, _Queue())
        if len(queue.waiters) >= self.settings.per_service_cap:
            raise HoldRejectedError("model")
        if self._total >= self.settings.total_cap:
            raise HoldRejectedError("gateway")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.waiters.append(waiter)
        self._total += 1
        self._on_held(key, len(queue.waiters))
        released = False
        try:
            self.release(key)
            async with asyncio.timeout(self.settings.timeout_seconds):
                await waiter
            released = True
        except TimeoutError as error:
            raise HoldTimeoutError from error
        except asyncio.CancelledError:
            if waiter.cancelled() and not _task_cancelling():
                raise HoldCancelledError from None  # cancelled by `cancel_all`, not our task
            raise
        finally:
            self._total -= 1
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                queue.waiters.remove(waiter)  # still queued: left early
            if not released and waiter.done() and not waiter.cancelled():
                self.finished(key)  # released, but the caller left before using its slot
            self._on_held(key, len(queue.waiters))
            self._forget_if_idle(key)

    def finished(self, key: ServiceKey) -> None:
        """A released request ended: its slot goes to the next one waiting."""
        queue = self._queues.get(key)
        if queue is None:
            return
        queue.released_in_flight -= 1
        self.release(key)
        self._forget_if_idle(key)

    def release(self, key: ServiceKey) -> None:
        """Lets waiting requests go while the ModelService's endpoints have release slots."""
        queue = self._queues.get(key)
        if queue is None:
            return
        slots = self._ready(key) * self.settings.release_per_endpoint
        while queue.waiters and queue.released_in_flight < slots:
            waiter = queue.waiters.popleft()
            if waiter.done():
                continue
            waiter.set_result(None)
            queue.released_in_flight += 1
        self._on_held(key, len(queue.waiters))

    def cancel_all(self) -> None:
        """Refuses everything held (the gateway is shutting down)."""
        for queue in self._queues.values():
            for waiter in queue.waiters:
                waiter.cancel()

    def _forget_if_idle(self, key: ServiceKey) -> None:
        queue = self._queues.get(key)
        if queue is not None and not queue.waiters and queue.released_in_flight <= 0:
            del self._queues[key]


def _task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
