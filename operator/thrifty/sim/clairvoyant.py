"""The clairvoyant bound: a policy that knows every future arrival and pays the same cold start.

No real policy can beat it by much, so it marks the physical limit a policy is measured against
("within 15 % of clairvoyant"). It sizes the fleet from the trace itself: each request brings
engine work (its prompt at the prefill speed, its output at the per-token cost of a busy decode
batch, as large as the engine's sequences and KV cache allow); a fleet of ``n`` replicas clears
any burst of work ``W`` arriving within ``w`` seconds with a queueing delay of at most about
``W / n - w``, so meeting a TTFT target ``s`` needs ``n >= W / (w + s)`` for every window (a
network-calculus arrival-curve bound). It orders each replica a cold start before the window that
needs it, keeps any replica needed again within a cold start (re-ordering would be too late) and
drops the rest at once.

It lives in the simulator, not in ``thrifty.policy``, because it needs the future.

`HindsightPolicy` sizes the same way from the arrivals already seen and nothing later: what a
policy that measured the past perfectly, and had no forecast, would run. A real policy that costs
more than it loses on its estimates; one that costs less, as a predicting one can, gains on its
forecast. It is a reference, not a bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import accumulate

from thrifty import cost
from thrifty.policy.types import Bound, Decision, Observation, PolicyState, Reason
from thrifty.sim.profiles import EngineProfile
from thrifty.sim.traces import Trace

_WINDOWS_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300)


@dataclass
class ClairvoyantPolicy:
    """Minimal replicas for the TTFT target given the future arrivals of ``trace``."""

    trace: Trace
    profile: EngineProfile
    cold_start_seconds: float = 120.0
    ttft_target_seconds: float = 2.0
    utilization: float = 0.9
    """Share of a replica's engine time planned to be busy (headroom for decode interference)."""
    decision_interval_seconds: float = 15.0
    name: str = "clairvoyant"
    _need: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._need = self._need_per_second()

    def request_work_seconds(self, prompt_tokens: int, output_tokens: int) -> float:
        """Engine time one request takes on a busy replica: its decode shares a batch half as
        large as the engine allows, in sequences or in KV-cache tokens (the engine reserves a
        request's prompt and output in the cache, so long requests decode in smaller batches)."""
        profile = self.profile
        footprint = max(1, prompt_tokens + output_tokens)
        fitting = profile.kv_capacity_tokens // footprint
        batch = max(1, min(profile.max_num_seqs, fitting) // 2)
        per_output_token = profile.itl_seconds(batch) / batch
        return prompt_tokens / profile.prefill_tokens_per_second + output_tokens * per_output_token

    def _work_prefix(self, seconds: int) -> list[float]:
        """Engine work arrived before each second (seconds of one replica's time)."""
        work = [0.0] * seconds
        for request in self.trace.requests:
            second = min(seconds - 1, int(request.arrival_seconds))
            # A prompt longer than the target takes that long on any fleet: more replicas cannot
            # help it, so only the share that delays others (up to the target) sizes the fleet.
            own = self.request_work_seconds(request.prompt_tokens, request.output_tokens)
            work[second] += min(own, self.ttft_target_seconds)
        return [0.0, *accumulate(work)]

    def _replicas_for(self, burst: float, window: int) -> float:
        return burst / ((window + self.ttft_target_seconds) * self.utilization)

    def _need_per_second(self) -> list[int]:
        """Replicas needed by the work arriving from each second on."""
        seconds = math.ceil(self.trace.duration_seconds) + max(_WINDOWS_SECONDS) + 1
        prefix = self._work_prefix(seconds)
        need: list[int] = []
        for start in range(seconds):
            best = 0.0
            for window in _WINDOWS_SECONDS:
                end = min(seconds, start + window)
                best = max(best, self._replicas_for(prefix[end] - prefix[start], window))
            need.append(math.ceil(best - 1e-9))
        return need

    def replicas_needed(self, start_seconds: float, end_seconds: float) -> int:
        """Most replicas any second of ``[start, end]`` needs."""
        first = max(0, int(start_seconds))
        last = min(len(self._need), math.ceil(end_seconds) + 1)
        return max(self._need[first:last], default=0)

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        now = observation.now_seconds
        horizon = now + self.cold_start_seconds + self.decision_interval_seconds
        wanted = self.replicas_needed(now, horizon)
        said = f"the next {horizon - now:.0f} s of arrivals need {wanted}"
        return _decision(observation, state, wanted, said, self.ttft_target_seconds)


@dataclass
class HindsightPolicy(ClairvoyantPolicy):
    """The clairvoyant bound's sizing of the arrivals already seen: no forecast, no estimate.

    At each decision it knows every arrival before it exactly, as a perfect measurement would,
    and runs the most replicas any second of the last ``keep_cold_starts`` cold starts needed by
    the clairvoyant bound's count, so a burst is answered a cold start after it is seen and a
    fleet that bursts needed is kept for the next one. Not a bound: a policy that predicts can do
    better. A reference: what perfect measurement alone buys on the trace."""

    keep_cold_starts: float = 4.0
    """How long the most a recent second needed is kept (thrifty's feedback looks back at least
    as far)."""
    name: str = "hindsight"

    def _need_per_second(self) -> list[int]:
        """Replicas needed by the work arrived before each second, within each window before it."""
        seconds = math.ceil(self.trace.duration_seconds) + 1
        prefix = self._work_prefix(seconds)
        need = [0]
        for end in range(1, seconds + 1):
            best = 0.0
            for window in _WINDOWS_SECONDS:
                start = max(0, end - window)
                best = max(best, self._replicas_for(prefix[end] - prefix[start], window))
            need.append(math.ceil(best - 1e-9))
        return need

    def replicas_needed(self, start_seconds: float, end_seconds: float) -> int:
        """Most replicas the arrivals before any second of ``[start, end]`` needed: none after
        ``end`` counts (index i of the needs holds those of the arrivals before second i)."""
        first = max(0, math.ceil(start_seconds))
        last = min(len(self._need) - 1, math.floor(end_seconds))
        return max(self._need[first : last + 1], default=0)

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        now = observation.now_seconds
        kept = self.keep_cold_starts * self.cold_start_seconds
        wanted = self.replicas_needed(now - kept, now)
        said = f"the arrivals of the last {min(kept, now):.0f} s needed {wanted}"
        return _decision(observation, state, wanted, said, self.ttft_target_seconds)


def _decision(
    observation: Observation, state: PolicyState, wanted: int, said: str, ttft_target: float
) -> Decision:
    spec = observation.spec
    wanted = max(spec.min_replicas, wanted)
    replicas = min(wanted, spec.max_replicas)
    bound = Bound.LATENCY_TARGET if replicas == wanted else Bound.BOUNDS
    free = observation.pool.free_gpus
    current = observation.replicas.desired
    if free is not None:
        room = current + free // max(1, observation.pool.gpus_per_replica)
        if replicas > room:
            replicas, bound = room, Bound.CAPACITY
    reason = (
        Reason.SCALE_UP
        if replicas > current
        else Reason.SCALE_DOWN
        if replicas < current
        else Reason.STEADY
    )
    dollars_per_hour = cost.dollars_per_hour(
        replicas, observation.pool.gpus_per_replica, observation.pool.price_per_gpu_hour
    )
    message = (
        f"{current} -> {replicas} replicas: {said} for TTFT <= {ttft_target:g} s; "
        f"{cost.format_dollars_per_hour(dollars_per_hour)}"
    )
    return Decision(replicas, reason, message, bound, dollars_per_hour, None, dict(state))


def opening_replicas(
    trace: Trace, profile: EngineProfile, cold_start_seconds: float, ttft_target_seconds: float
) -> int:
    """Warm replicas at t=0 for a fair comparison: what the trace's first cold start needs, as
    this bound sizes it. A policy opened with fewer misses first tokens no policy could keep
    until its first replicas arrive, a cold start after its first decision. Only the arrivals
    within the widest burst window of that span count, so a long trace costs no more."""
    head = trace.sliced(0.0, cold_start_seconds + max(_WINDOWS_SECONDS) + 1.0)
    bound = ClairvoyantPolicy(head, profile, cold_start_seconds, ttft_target_seconds)
    return max(1, bound.replicas_needed(0.0, cold_start_seconds))
