"""A steppable model of one vLLM replica: continuous batching, KV capacity, chunked prefill.

The fleet simulator runs many of these, and the runtime's vLLM-compatible server runs one per
process, so both see the same engine. It is a fluid model between events rather than a per-token
loop: between two events (an admission, a prompt finishing prefill, a sequence finishing decode)
every rate is constant, so an hour of traffic costs a few events per request, not one Python step
per generated token.

The model, per step of vLLM's v1 scheduler with chunked prefill:

- a FIFO waiting queue; the head is scheduled (vLLM's RUNNING) when the running batch has fewer
  than ``max_num_seqs`` sequences, the KV cache can hold its prompt plus all its output tokens
  (reserving the output avoids preemption, so KV use never passes capacity), and the prompts
  already scheduled leave token budget in the current step. As in vLLM's v1 scheduler, a burst
  of long prompts therefore shows as ``num_requests_waiting``, not as a huge running batch;
- a step carries one token for each decoding sequence plus up to ``max_num_batched_tokens`` minus
  that of prompt tokens, taken FIFO from the admitted prompts; its time is
  ``ITL(c) + prompt_tokens / prefill_tokens_per_second``;
- the prompt's last step yields the first token; the request then decodes one token per step.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from thrifty.sim.profiles import EngineProfile

# Progress below this many tokens counts as done: guards against float residue at event times.
_EPSILON_TOKENS = 1e-6


class EventKind(StrEnum):
    FIRST_TOKEN = "first_token"
    FINISHED = "finished"


class FinishedReason(StrEnum):
    """vLLM's ``finished_reason`` label values that the model can produce."""

    LENGTH = "length"
    ABORT = "abort"


class EngineDrainingError(RuntimeError):
    """The engine is draining and takes no new request."""


class RequestTooLongError(ValueError):
    """Prompt plus output exceed the model length or the whole KV cache: vLLM rejects it."""


class ClockError(ValueError):
    """A call asked the engine to go back in time."""


@dataclass(frozen=True)
class RequestTiming:
    """Timestamps of one request, in the caller's clock (seconds)."""

    arrival: float
    scheduled: float | None
    first_token: float | None
    finished: float
    prompt_tokens: int
    output_tokens: int
    """Tokens generated (fewer than asked when aborted)."""

    @property
    def queue_seconds(self) -> float:
        """Time in the waiting queue, as vLLM's ``request_queue_time_seconds``."""
        return (self.scheduled if self.scheduled is not None else self.finished) - self.arrival

    @property
    def prefill_seconds(self) -> float | None:
        """Scheduled to first token, as vLLM's ``request_prefill_time_seconds``."""
        if self.scheduled is None or self.first_token is None:
            return None
        return self.first_token - self.scheduled

    @property
    def ttft_seconds(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def e2e_seconds(self) -> float:
        return self.finished - self.arrival

    @property
    def mean_itl_seconds(self) -> float | None:
        """Mean time between output tokens after the first (None with fewer than two tokens)."""
        if self.first_token is None or self.output_tokens < 2:
            return None
        return (self.finished - self.first_token) / (self.output_tokens - 1)


@dataclass(frozen=True)
class EngineEvent:
    kind: EventKind
    request_id: str
    time: float
    tokens_generated: int
    timing: RequestTiming | None = None
    """Set on FINISHED events."""
    finished_reason: FinishedReason | None = None


class _Request:
    __slots__ = (
        "aborted",
        "arrival",
        "decode_start",
        "first_token",
        "max_output_tokens",
        "prefill_target",
        "prompt_tokens",
        "request_id",
        "scheduled",
        "stage",
    )

    def __init__(
        self, request_id: str, prompt_tokens: int, max_output_tokens: int, now: float
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.max_output_tokens = max_output_tokens
        self.arrival = now
        self.scheduled: float | None = None
        self.first_token: float | None = None
        self.prefill_target = 0.0
        self.decode_start = 0.0
        self.stage = "waiting"
        self.aborted = False


class Engine:
    """One replica. Time only moves forward, through ``advance``, ``submit`` or ``abort``."""

    def __init__(self, profile: EngineProfile, now: float = 0.0) -> None:
        self.profile = profile
        self._clock = now
        self._draining = False
        self._waiting: deque[_Request] = deque()
        self._prefill: deque[_Request] = deque()
        # Cumulative prompt tokens prefilled / enqueued: a request's prefill ends when the
        # progress reaches the enqueued total at its admission (FIFO without per-request updates).
        self._prefill_progress = 0.0
        self._prefill_enqueued = 0.0
        # Every decoding sequence gains one token per step, so one counter tracks them all.
        self._decode_progress = 0.0
        self._decode_heap: list[tuple[float, int, _Request]] = []
        self._decoding = 0
        self._decode_start_sum = 0.0
        self._seq = itertools.count()
        self._requests: dict[str, _Request] = {}
        self._reserved_kv_tokens = 0
        self._prompt_kv_tokens = 0
        self._prompt_tokens_total = 0
        self._generation_tokens_done = 0
        self._pending_events: list[EngineEvent] = []
        # Next internal event time as of the last run; rates are constant until then, so it stays
        # valid until a submit or an abort changes the batch. Lets a fleet skip engines with
        # nothing due.
        self._next_time: float | None = None
        self._next_time_valid = True

    # -- gauges and counters -------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self._clock

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._prefill) + self._decoding

    @property
    def num_requests(self) -> int:
        """Waiting plus running: what a least-loaded router compares."""
        return len(self._waiting) + len(self._prefill) + self._decoding

    @property
    def kv_cache_usage(self) -> float:
        """Share of the KV cache holding tokens (prompts admitted plus tokens generated)."""
        used = self._prompt_kv_tokens + self._live_generated_tokens()
        return min(1.0, used / self.profile.kv_capacity_tokens)

    @property
    def kv_reserved_tokens(self) -> int:
        """KV tokens promised to admitted requests (prompt plus full output)."""
        return self._reserved_kv_tokens

    @property
    def prompt_tokens_total(self) -> int:
        return self._prompt_tokens_total

    @property
    def generation_tokens_total(self) -> float:
        """Output tokens so far, counting the partial progress of running sequences."""
        return self._generation_tokens_done + self._live_generated_tokens()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def idle(self) -> bool:
        return self.num_requests == 0 and not self._pending_events

    def tokens_generated(self, request_id: str) -> int:
        """Output tokens a live request has so far (0 while waiting or in prefill)."""
        request = self._requests[request_id]
        if request.stage == "decoding":
            return 1 + int(self._decode_progress - request.decode_start + _EPSILON_TOKENS)
        return 0

    def _live_generated_tokens(self) -> float:
        # Each decoding sequence has its first token plus the steps since it started decoding.
        return self._decoding * (1.0 + self._decode_progress) - self._decode_start_sum

    # -- commands ------------------------------------------------------------------------------

    def start_draining(self) -> None:
        """Rejects new requests from now on; those already accepted run to completion."""
        self._draining = True

    def submit(
        self, request_id: str, prompt_tokens: int, max_output_tokens: int, now: float
    ) -> None:
        """Accepts a request arriving at ``now`` (not before the engine's clock)."""
        if self._draining:
            raise EngineDrainingError(f"engine is draining; request {request_id} rejected")
        if prompt_tokens < 1 or max_output_tokens < 1:
            raise ValueError("a request needs at least one prompt token and one output token")
        needed = prompt_tokens + max_output_tokens
        if needed > min(self.profile.max_model_len, self.profile.kv_capacity_tokens):
            raise RequestTooLongError(
                f"request {request_id} needs {needed} tokens; the engine holds at most "
                f"{min(self.profile.max_model_len, self.profile.kv_capacity_tokens)}"
            )
        if request_id in self._requests:
            raise ValueError(f"request id {request_id} is already in the engine")
        self._pending_events.extend(self._run_until(now))
        request = _Request(request_id, prompt_tokens, max_output_tokens, now)
        self._requests[request_id] = request
        self._waiting.append(request)
        self._admit()
        self._next_time_valid = False

    def abort(self, request_id: str, now: float) -> bool:
        """Drops a request wherever it is; False when it is unknown or already finished."""
        self._pending_events.extend(self._run_until(now))
        request = self._requests.get(request_id)
        if request is None:
            return False
        tokens = self.tokens_generated(request_id)
        if request.stage == "waiting":
            self._waiting.remove(request)
        elif request.stage == "prefill":
            self._remove_from_prefill(request)
        else:
            request.aborted = True  # lazily dropped from the heap
            self._decoding -= 1
            self._decode_start_sum -= request.decode_start
            if not self._decoding:
                # No live sequence, but the aborted one's heap entry keeps the reset below from
                # running: what the sum holds now is float residue, and a residue of 1e-19 made
                # the KV usage negative, which the operator rightly refuses as a metric.
                self._decode_start_sum = 0.0
            self._generation_tokens_done += tokens
        self._release(request)
        self._pending_events.append(
            self._finished_event(request, now, tokens, FinishedReason.ABORT)
        )
        self._admit()
        self._next_time_valid = False
        return True

    def advance(self, until: float) -> list[EngineEvent]:
        """Runs the engine up to ``until`` and returns what happened, in time order."""
        events = self._pending_events
        self._pending_events = []
        events.extend(self._run_until(until))
        return events

    def next_event_time(self) -> float | None:
        """When the next first token or finish happens if nothing else arrives (None: idle)."""
        if self._pending_events:
            return self._clock
        if not self._next_time_valid:
            prefill_rate, decode_rate = self._rates()
            self._next_time = self._next_internal_time(prefill_rate, decode_rate)
            self._next_time_valid = True
        return self._next_time

    # -- the model -----------------------------------------------------------------------------

    def _rates(self) -> tuple[float, float]:
        """Prompt tokens/s and decode tokens/s per sequence under the current batch."""
        profile = self.profile
        decoding = self._decoding
        step = profile.itl0_seconds + profile.itl_slope_seconds * decoding
        pending_prompt = self._prefill_enqueued - self._prefill_progress
        if self._prefill and pending_prompt > 0.0:
            chunk = min(float(profile.max_num_batched_tokens - decoding), pending_prompt)
            chunk = max(chunk, min(pending_prompt, 1.0))
            step += chunk / profile.prefill_tokens_per_second
            return chunk / step, (1.0 / step if decoding else 0.0)
        return 0.0, (1.0 / step if decoding else 0.0)

    def _next_internal_time(self, prefill_rate: float, decode_rate: float) -> float | None:
        best: float | None = None
        if self._prefill:
            remaining = self._prefill[0].prefill_target - self._prefill_progress
            if remaining <= _EPSILON_TOKENS:
                best = self._clock
            elif prefill_rate > 0.0:
                best = self._clock + remaining / prefill_rate
        heap = self._decode_heap
        while heap and heap[0][2].aborted:
            heapq.heappop(heap)
        if heap and decode_rate > 0.0:
            remaining = heap[0][0] - self._decode_progress
            t = self._clock + max(0.0, remaining) / decode_rate
            best = t if best is None else min(best, t)
        if self._waiting and prefill_rate > 0.0 and self._head_fits():
            # The head waits only for step budget: it is scheduled once the prompts ahead of
            # it leave room in a step.
            excess = self._prefill_enqueued - self._prefill_progress - self._step_budget() + 1.0
            t = self._clock + max(0.0, excess) / prefill_rate
            best = t if best is None else min(best, t)
        return best

    def _step_budget(self) -> float:
        """Prompt tokens one step can take besides one token per decoding sequence."""
        return float(max(1, self.profile.max_num_batched_tokens - self._decoding))

    def _head_fits(self) -> bool:
        """Whether the batch and the KV cache have room for the head of the waiting queue."""
        head = self._waiting[0]
        if self.num_running >= self.profile.max_num_seqs:
            return False
        need = head.prompt_tokens + head.max_output_tokens
        return self._reserved_kv_tokens + need <= self.profile.kv_capacity_tokens

    def _run_until(self, until: float) -> list[EngineEvent]:
        if until < self._clock - 1e-9:
            raise ClockError(f"engine clock is at {self._clock}; cannot go back to {until}")
        events: list[EngineEvent] = []
        if not self._prefill and not self._decoding:
            # Idle (waiting requests are always admitted into an empty batch): nothing to run.
            self._clock = max(until, self._clock)
            self._next_time, self._next_time_valid = None, True
            return events
        while True:
            prefill_rate, decode_rate = self._rates()
            t_next = self._next_internal_time(prefill_rate, decode_rate)
            if t_next is None or t_next > until:
                self._progress(max(until, self._clock), prefill_rate, decode_rate)
                self._next_time, self._next_time_valid = t_next, True
                return events
            self._progress(t_next, prefill_rate, decode_rate)
            self._complete_prefills(events)
            self._complete_decodes(events)
            self._admit()

    def _progress(self, t: float, prefill_rate: float, decode_rate: float) -> None:
        dt = t - self._clock
        if dt > 0.0:
            self._prefill_progress += prefill_rate * dt
            self._decode_progress += decode_rate * dt
        self._clock = t

    def _complete_prefills(self, events: list[EngineEvent]) -> None:
        while (
            self._prefill
            and self._prefill[0].prefill_target - self._prefill_progress <= _EPSILON_TOKENS
        ):
            request = self._prefill.popleft()
            request.first_token = self._clock
            self._prompt_tokens_total += request.prompt_tokens
            events.append(EngineEvent(EventKind.FIRST_TOKEN, request.request_id, self._clock, 1))
            if request.max_output_tokens == 1:
                self._generation_tokens_done += 1
                self._finish(request, 1, events)
            else:
                request.stage = "decoding"
                request.decode_start = self._decode_progress
                self._decoding += 1
                self._decode_start_sum += request.decode_start
                target = self._decode_progress + request.max_output_tokens - 1
                heapq.heappush(self._decode_heap, (target, next(self._seq), request))
        if not self._prefill:
            # Resynchronise the cumulative counters so float error does not accumulate.
            self._prefill_progress = self._prefill_enqueued = 0.0

    def _complete_decodes(self, events: list[EngineEvent]) -> None:
        heap = self._decode_heap
        while heap and (
            heap[0][2].aborted or heap[0][0] - self._decode_progress <= _EPSILON_TOKENS
        ):
            _, _, request = heapq.heappop(heap)
            if request.aborted:
                continue
            self._decoding -= 1
            self._decode_start_sum -= request.decode_start
            if not self._decoding:
                self._decode_start_sum = 0.0  # residue (aborted entries may still be queued)
            self._generation_tokens_done += request.max_output_tokens
            self._finish(request, request.max_output_tokens, events)
        if not self._decoding and not heap:
            self._decode_progress = self._decode_start_sum = 0.0

    def _finish(self, request: _Request, tokens: int, events: list[EngineEvent]) -> None:
        self._release(request)
        events.append(self._finished_event(request, self._clock, tokens, FinishedReason.LENGTH))

    def _finished_event(
        self, request: _Request, now: float, tokens: int, reason: FinishedReason
    ) -> EngineEvent:
        timing = RequestTiming(
            arrival=request.arrival,
            scheduled=request.scheduled,
            first_token=request.first_token,
            finished=now,
            prompt_tokens=request.prompt_tokens,
            output_tokens=tokens,
        )
        return EngineEvent(EventKind.FINISHED, request.request_id, now, tokens, timing, reason)

    def _release(self, request: _Request) -> None:
        del self._requests[request.request_id]
        if request.stage != "waiting":
            self._reserved_kv_tokens -= request.prompt_tokens + request.max_output_tokens
            self._prompt_kv_tokens -= request.prompt_tokens
        request.stage = "done"

    def _remove_from_prefill(self, request: _Request) -> None:
        index = self._prefill.index(request)
        previous = self._prefill[index - 1].prefill_target if index else self._prefill_progress
        remaining = request.prefill_target - max(previous, self._prefill_progress)
        del self._prefill[index]
        for later in itertools.islice(self._prefill, index, None):
            later.prefill_target -= remaining
        self._prefill_enqueued -= remaining

    def _admit(self) -> None:
        while self._waiting and self._head_fits():
            pending_prompt = self._prefill_enqueued - self._prefill_progress
            if pending_prompt > self._step_budget() - 1.0 + _EPSILON_TOKENS:
                return  # no token budget left in this step: vLLM keeps it WAITING
            head = self._waiting.popleft()
            need = head.prompt_tokens + head.max_output_tokens
            head.stage = "prefill"
            head.scheduled = self._clock
            self._reserved_kv_tokens += need
            self._prompt_kv_tokens += head.prompt_tokens
            self._prefill_enqueued += head.prompt_tokens
            head.prefill_target = self._prefill_enqueued
            self._prefill.append(head)
