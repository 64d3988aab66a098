"""Baseline: Knative's Pod Autoscaler (KPA) on request concurrency, at its documented defaults.

KServe's serverless mode scales LLM servers with the KPA, so it is the second reactive baseline.
The arithmetic follows ``pkg/autoscaler/scaling/autoscaler.go`` of knative/serving; the defaults
are those of the ``config-autoscaler`` ConfigMap
(https://knative.dev/docs/serving/autoscaling/kpa-specific/,
https://knative.dev/docs/serving/autoscaling/concurrency/):

- concurrency = in-flight requests (running + waiting, what the queue-proxy counts); target 100 per
  replica (``container-concurrency-target-default``) at 70 % utilisation
  (``container-concurrency-target-percentage``);
- desired = ceil(average concurrency over the 60 s stable window / (target x utilisation)); the
  panic window is 10 % of it (6 s); panic starts when the panic window's desired count is at least
  200 % of the ready replicas and lasts until the stable window passes without that; while
  panicking the count never goes down;
- rates: up at most 1000 x ready, down at most to ready / 2 per decision; a tick every 2 s;
- scale to zero when the stable window saw no traffic, after a 30 s grace period
  (``scale-to-zero-grace-period``); allowed when the minimum scale is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thrifty.policy import common, types

SAMPLES = "concurrency_samples"
PANIC_SINCE = "panic_seconds"
MAX_PANIC_PODS = "max_panic_replicas"
LAST_TICK = "last_tick_seconds"
ZERO_SINCE = "zero_wanted_since_seconds"


@dataclass
class KpaPolicy:
    """Knative KPA on concurrency per replica; ``target_per_replica`` is the knob to sweep."""

    target_per_replica: float = 100.0
    name: str = "kpa"
    target_utilization: float = 0.7
    stable_window_seconds: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_seconds: float = 30.0
    tick_seconds: float = 2.0

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        now = observation.now_seconds
        current = observation.replicas.desired
        last_tick = common.state_float(state, LAST_TICK)
        signals = common.usable_signals(observation)
        tokens = common.served_tokens_per_second(signals) if signals is not None else 0.0
        if last_tick is not None and 0.0 <= now - last_tick < self.tick_seconds:
            return common.decision(
                observation,
                current,
                types.Reason.STEADY,
                types.Bound.NONE,
                "KPA: between ticks",
                tokens,
                state,
            )
        if signals is None:
            return common.decision(
                observation,
                current,
                types.Reason.METRICS_UNAVAILABLE,
                types.Bound.HOLD,
                "KPA: no concurrency metric, holding",
                0.0,
                common.with_updates(state, **{LAST_TICK: now}),
            )
        next_state: dict[str, types.JSONValue] = dict(state)
        next_state[LAST_TICK] = now
        concurrency = signals.requests_running + signals.requests_waiting
        samples = [
            (at, value)
            for at, value in common.state_pairs(state, SAMPLES)
            if now - at < self.stable_window_seconds
        ]
        samples.append((now, concurrency))
        next_state[SAMPLES] = common.pairs_json(samples)
        panic_window = self.stable_window_seconds * self.panic_window_percentage / 100.0
        stable = _mean([value for _, value in samples])
        panic = _mean([value for at, value in samples if now - at < panic_window])

        ready = max(1.0, float(observation.replicas.ready))
        max_up = math.ceil(self.max_scale_up_rate * ready)
        max_down = math.floor(ready / self.max_scale_down_rate) if observation.replicas.ready else 0
        per_replica = self.target_per_replica * self.target_utilization
        stable_want = math.ceil(stable / per_replica)
        panic_want = math.ceil(panic / per_replica)
        desired_stable = min(max(stable_want, max_down), max_up)
        desired_panic = min(max(panic_want, max_down), max_up)

        desired, panicking = self._panic(
            now, panic_want / ready, desired_stable, desired_panic, state, next_state
        )
        spec = observation.spec
        zero_allowed = spec.min_replicas == 0 and spec.scale_to_zero_idle_seconds is not None
        desired = self._zero_grace(now, current, desired, zero_allowed, state, next_state)
        floor = spec.min_replicas if zero_allowed else max(spec.min_replicas, 1)
        replicas = min(max(desired, floor), spec.max_replicas)
        mode = "panic" if panicking else "stable"
        because = (
            f"KPA ({mode}): concurrency {stable:,.1f} over {self.stable_window_seconds:.0f} s, "
            f"{panic:,.1f} over {panic_window:.0f} s / target {per_replica:g} per replica"
        )
        return common.decision(
            observation,
            replicas,
            common.movement_reason(current, replicas),
            types.Bound.NONE,
            because,
            tokens,
            next_state,
        )

    def _panic(
        self,
        now: float,
        panic_ratio: float,
        desired_stable: int,
        desired_panic: int,
        state: types.PolicyState,
        next_state: dict[str, types.JSONValue],
    ) -> tuple[int, bool]:
        """Panic mode: enter at 200 %, stay a stable window past the last over-threshold tick."""
        panic_since = common.state_float(state, PANIC_SINCE)
        max_panic = int(common.state_float(state, MAX_PANIC_PODS) or 0)
        over = panic_ratio >= self.panic_threshold
        if over:
            panic_since = now
        elif panic_since is not None and now - panic_since > self.stable_window_seconds:
            panic_since, max_panic = None, 0
        desired = desired_stable
        if panic_since is not None:
            desired = max(desired, desired_panic)
            max_panic = max(max_panic, desired)  # never down while panicking
            desired = max_panic
        next_state[PANIC_SINCE], next_state[MAX_PANIC_PODS] = panic_since, max_panic
        return desired, panic_since is not None

    def _zero_grace(
        self,
        now: float,
        current: int,
        desired: int,
        zero_allowed: bool,
        state: types.PolicyState,
        next_state: dict[str, types.JSONValue],
    ) -> int:
        """The last replica goes only after the grace period of wanting zero."""
        if desired > 0 or not zero_allowed or current == 0:
            next_state[ZERO_SINCE] = None
            return desired
        zero_since = common.state_float(state, ZERO_SINCE)
        if zero_since is None:
            zero_since = now
        next_state[ZERO_SINCE] = zero_since
        return 0 if now - zero_since >= self.scale_to_zero_grace_seconds else max(current, 1)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
