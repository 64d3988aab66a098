"""Runs the simulated engine in real time and keeps vLLM's metrics in step with it.

`thrifty.sim.engine.Engine` is a pure, steppable model with an explicit clock. A server needs the
opposite shape: requests arrive whenever, callers await their first token and their end, and
`/metrics` must read the engine as of now. This driver is that bridge: one asyncio task advances
the engine to the wall clock at its next event, resolves the callers' futures, and feeds
`VllmMetrics`; every read (a scrape, a stream's progress) first brings the engine up to now.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from thrifty.sim.engine import Engine, EngineEvent, EventKind, FinishedReason, RequestTiming
from thrifty.sim.profiles import EngineProfile
from thrifty_runtime.vllm_metrics import VllmMetrics


@dataclass
class Submitted:
    """A caller's view of one request inside the engine."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    arrival: float
    first_token: asyncio.Future[float] = field(repr=False)
    finished: asyncio.Future[tuple[RequestTiming, FinishedReason]] = field(repr=False)


class EngineDriver:
    """Owns one `Engine` and advances it to the wall clock (seconds since the driver started)."""

    def __init__(
        self,
        profile: EngineProfile,
        metrics: VllmMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._origin = clock()
        self.engine = Engine(profile, now=0.0)
        self.metrics = metrics
        self._requests: dict[str, Submitted] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._prompt_tokens_counted = 0
        self._generation_tokens_counted = 0

    def now(self) -> float:
        return self._clock() - self._origin

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="engine-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, prompt_tokens: int, max_tokens: int) -> Submitted:
        """Hands a request to the engine; raises the engine's errors (draining, too long)."""
        loop = asyncio.get_running_loop()
        request_id = f"{next(self._ids):x}"
        arrival = max(self.now(), self.engine.now)
        self.engine.submit(request_id, prompt_tokens, max_tokens, arrival)
        submitted = Submitted(
            request_id,
            prompt_tokens,
            max_tokens,
            arrival,
            loop.create_future(),
            loop.create_future(),
        )
        self._requests[request_id] = submitted
        self._wake.set()
        return submitted

    def abort(self, request_id: str) -> None:
        """The client went away: free its slot (vLLM counts it as finished_reason=abort)."""
        if request_id in self._requests:
            self.engine.abort(request_id, max(self.now(), self.engine.now))
            self.sync()

    def tokens_generated(self, request_id: str) -> int:
        self.sync()
        if request_id not in self._requests:
            return 0
        return self.engine.tokens_generated(request_id)

    def sync(self) -> None:
        """Brings the engine and the metrics up to the wall clock."""
        self._dispatch(self.engine.advance(max(self.now(), self.engine.now)))
        engine = self.engine
        self.metrics.set_load(engine.num_waiting, engine.num_running, engine.kv_cache_usage)
        prompt_total = engine.prompt_tokens_total
        generation_total = int(engine.generation_tokens_total)
        self.metrics.add_tokens(
            prompt_total - self._prompt_tokens_counted,
            generation_total - self._generation_tokens_counted,
        )
        self._prompt_tokens_counted = max(prompt_total, self._prompt_tokens_counted)
        self._generation_tokens_counted = max(generation_total, self._generation_tokens_counted)

    def _dispatch(self, events: list[EngineEvent]) -> None:
        for event in events:
            submitted = self._requests.get(event.request_id)
            if submitted is None:
                continue
            if event.kind is EventKind.FIRST_TOKEN:
                self.metrics.first_token(event.time - submitted.arrival, submitted.prompt_tokens)
                if not submitted.first_token.done():
                    submitted.first_token.set_result(event.time)
            elif event.timing is not None:
                del self._requests[event.request_id]
                reason = event.finished_reason or FinishedReason.LENGTH
                self.metrics.finished(event.timing, reason, submitted.max_tokens)
                if not submitted.first_token.done():
                    submitted.first_token.set_result(event.time)
                if not submitted.finished.done():
                    submitted.finished.set_result((event.timing, reason))

    async def _run(self) -> None:
        while True:
            self.sync()
            next_time = self.engine.next_event_time()
            self._wake.clear()
            timeout = None if next_time is None else max(0.0, next_time - self.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
