"""thrifty's scaling policy: the cheapest replica count a latency model predicts meets the target.

Each tick, from windowed signals (rates, the waiting and running gauges averaged over the window,
the TTFT histogram) and the state carried from the last tick:

1. read: served tokens/s, the average queue, the TTFT at the target percentile (`estimate.read`);
2. feedback: move the headroom by log(measured / target), bounded and slow, and never under the
   percentile's z while the first tokens late lately are more than it allows (`estimate.feedback`);
3. learn: per-replica capacity at saturation, base TTFT, tokens per request, and short of
   saturation the limit the running batch's slowdown points at (`estimate.learn`, `batching`);
4. forecast: demand a cold start ahead = level + rising trend (the lesser of the served total's
   and the arrivals') + z(percentile) x burstiness;
5. plan: the fewest replicas whose utilisation stays under 1 - base/target, so the predicted
   TTFT percentile meets the target, or that clear the queue left when they arrive; on a lower
   bound of the capacity, the level at the bound and its trend at 3/4 of the batch's limit;
6. smooth and limit: up at once, down after the delay (at least a cold start) by steps, never
   under the running load, then scale-to-zero, free GPUs, money caps and bounds (`smooth`).

Missing or stale metrics hold the count (only bounds and a $/hour cap may move it). Pure and
deterministic: the state travels in `Decision.state`. docs/policy.md has the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from thrifty import cost
from thrifty.policy import common, limits, types
from thrifty.policy.planner import estimate, forecast, plan, smooth
from thrifty.policy.planner.state import State, load, trimmed
from thrifty.policy.planner.tuning import Tuning

__all__ = ["State", "ThriftyPolicy", "Tuning"]


@dataclass(frozen=True)
class ThriftyPolicy(Tuning):
    name: str = "thrifty"

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        carried = load(state)
        signals = common.usable_signals(observation)
        if signals is None:
            return self._hold(observation, carried)
        reading = estimate.read(
            signals, observation.spec, carried, self, observation.replicas.ready
        )
        carried = estimate.feedback(carried, observation, reading, self)
        growth_before = carried.queue_growth
        carried = estimate.learn(carried, observation, signals, reading, self)
        demand = self.demand(carried, reading, min(growth_before, carried.queue_growth))
        spec = observation.spec
        window = forecast.window_seconds(spec.cold_start_seconds)
        now = observation.now_seconds
        arrived = self.arrivals(signals, reading, demand)
        carried = replace(
            carried,
            demand=trimmed([*carried.demand, (now, demand)], now, window),
            arrivals=trimmed([*carried.arrivals, (now, arrived)], now, window),
        )
        outlook = forecast.forecast(
            carried.demand,
            now,
            spec.cold_start_seconds,
            spec.ttft_target_quantile,
            carried.arrivals,
        )
        carried = estimate.remember_miss(carried, observation, reading, outlook.level, self)
        need = plan.need(observation, signals, reading, carried, outlook, demand, self)
        outcome = smooth.settle(observation, signals, reading, carried, need, self)
        return common.decision(
            observation,
            outcome.replicas,
            outcome.reason,
            outcome.bound,
            outcome.because,
            reading.served,
            outcome.state.to_json(),
        )

    def demand(self, state: State, reading: estimate.Reading, growth: float) -> float:
        """Served tokens/s plus the arrivals a queue growing at two ticks in a row shows.

        Saturated replicas serve at most their capacity; the queue's growth measures the rest.
        One tick's jump is a burst the queue already holds: taken for a rate, it would size the
        fleet for a burst of seconds, a cold start too late."""
        if state.tokens_per_request is None or growth <= 0.0:
            return reading.served
        return reading.served + growth * state.tokens_per_request

    @staticmethod
    def arrivals(signals: types.Signals, reading: estimate.Reading, demand: float) -> float:
        """Prompt tokens/s, grown by what a growing queue adds to the demand: saturated
        replicas prefill no faster than they serve."""
        if reading.served <= 0.0:
            return signals.prompt_tokens_per_second
        return signals.prompt_tokens_per_second * demand / reading.served

    def _hold(self, observation: types.Observation, state: State) -> types.Decision:
        """Keep the count; only the bounds and a $/hour cap (they need no metrics) may move it."""
        spec = observation.spec
        current = observation.replicas.desired
        kept = replace(
            state,
            below_since=None,
            needs=(),
            idle_since=None,
            waiting=None,
            demand=(),
            arrivals=(),
        )
        because = f"{common.unusable(observation) or 'metrics unusable'}, holding"
        target = min(max(current, spec.min_replicas), spec.max_replicas)
        reason, bound = types.Reason.METRICS_UNAVAILABLE, types.Bound.HOLD
        if target != current:
            reason, bound = types.Reason.BOUNDS, types.Bound.BOUNDS
            because = f"{because} within {spec.min_replicas}..{spec.max_replicas} replicas"
        cap = limits.dollars_per_hour_cap(observation)
        if cap is not None:
            allowed = max(limits.replicas_within_hourly_cap(observation, cap), spec.min_replicas)
            if allowed < target:
                spend_cap = cost.format_dollars_per_hour(cap)
                because = f"metrics unavailable, but {target} replicas pass the {spend_cap} cap"
                target, reason, bound = allowed, types.Reason.BUDGET_LIMITED, types.Bound.BUDGET
        return common.decision(observation, target, reason, bound, because, 0.0, kept.to_json())
