"""Baseline: a Kubernetes HPA on ``vllm:num_requests_waiting`` fed by KEDA, at their defaults.

This is how most teams autoscale vLLM today (the KServe and production-stack guides do it), so it
is the baseline thrifty must beat. It reproduces the HPA controller's arithmetic for an External
metric with an ``AverageValue`` target and the default ``behavior`` of ``autoscaling/v2``, and
KEDA's part: the metric refreshed once per polling interval, the 0 <-> 1 activation, the cooldown.

Sources (defaults as documented; the arithmetic follows ``pkg/controller/podautoscaler`` of
kubernetes/kubernetes):

- desired = ceil(metric / target) for an AverageValue target, skipped while
  |metric / (target x current) - 1| <= tolerance (0.1, ``--horizontal-pod-autoscaler-tolerance``);
  the controller syncs every 15 s (``--horizontal-pod-autoscaler-sync-period``).
- default behavior: scale-up stabilization 0 s, policies 100 % or 4 pods per 15 s, select Max;
  scale-down stabilization 300 s (the highest recommendation of the window wins), 100 % per 15 s.
  (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#default-behavior)
- HPA cannot scale from or to zero; KEDA does: it activates the target (0 -> 1) when the metric
  exceeds ``activationThreshold`` (default 0) and deactivates it (-> 0) after ``cooldownPeriod``
  (300 s) without activity; it polls every ``pollingInterval`` (30 s)
  (https://keda.sh/docs/latest/reference/scaledobject-spec/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thrifty.policy import common, types

LAST_SYNC = "last_sync_seconds"
METRIC = "metric_value"
METRIC_TIME = "metric_seconds"
RECOMMENDATIONS = "recommendations"
SCALE_UP_EVENTS = "scale_up_events"
SCALE_DOWN_EVENTS = "scale_down_events"
LAST_ACTIVE = "last_active_seconds"


@dataclass
class HpaPolicy:
    """HPA + KEDA on waiting requests per replica; ``target_per_replica`` is the knob to sweep.

    ``target_per_replica`` None takes the spec's ``queue_target_per_replica``. Scale to zero follows
    the spec's intent (``min_replicas`` 0 with an idle time): KEDA ``minReplicaCount: 0``;
    otherwise the HPA's floor of one replica applies.
    """

    target_per_replica: float | None = None
    name: str = "hpa"
    tolerance: float = 0.1
    sync_period_seconds: float = 15.0
    metric_refresh_seconds: float = 30.0
    """KEDA pollingInterval: the metric the HPA sees changes at most this often."""
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period_seconds: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period_seconds: float = 15.0
    cooldown_seconds: float = 300.0
    """KEDA cooldownPeriod: inactivity before the target goes to zero."""
    activation_threshold: float = 0.0

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        now = observation.now_seconds
        current = observation.replicas.desired
        last_sync = common.state_float(state, LAST_SYNC)
        if last_sync is not None and 0.0 <= now - last_sync < self.sync_period_seconds:
            return self._keep(observation, state, "between HPA syncs")
        signals = common.usable_signals(observation)
        if signals is None:
            held = common.with_updates(state, **{LAST_SYNC: now})
            return common.decision(
                observation,
                current,
                types.Reason.METRICS_UNAVAILABLE,
                types.Bound.HOLD,
                "HPA: metric unavailable, no scaling",
                0.0,
                held,
            )
        next_state = dict(state)
        next_state[LAST_SYNC] = now
        metric = self._metric(signals, now, state, next_state)
        tokens = common.served_tokens_per_second(signals)
        spec = observation.spec
        to_zero_allowed = spec.min_replicas == 0 and spec.scale_to_zero_idle_seconds is not None
        if to_zero_allowed:
            keda = self._keda(observation, metric, state, next_state)
            if keda is not None:
                replicas, because = keda
                return self._result(observation, replicas, because, tokens, next_state)
        if current == 0:
            return self._result(
                observation, max(spec.min_replicas, 1), "HPA: minimum of 1", tokens, next_state
            )
        target = self._target(spec)
        usage_ratio = metric / (target * current)
        if abs(usage_ratio - 1.0) <= self.tolerance:
            raw = current
        else:
            raw = math.ceil(metric / target) if metric > 0 else 0
        stabilized = self._stabilize(now, current, raw, state, next_state)
        # KEDA gives the HPA minReplicas max(minReplicaCount, 1): zero is KEDA's business only.
        floor = max(spec.min_replicas, 1)
        replicas = self._rate_limit(now, current, stabilized, floor, spec.max_replicas, state)
        self._record_event(now, current, replicas, state, next_state)
        because = (
            f"HPA: {metric:,.0f} waiting / target {target:g} per replica -> {raw}"
            f" (stabilized {stabilized})"
        )
        return self._result(observation, replicas, because, tokens, next_state)

    def _target(self, spec: types.PolicySpec) -> float:
        target = self.target_per_replica or spec.queue_target_per_replica
        return max(target, 1e-9)

    def _metric(
        self,
        signals: types.Signals,
        now: float,
        state: types.PolicyState,
        next_state: dict[str, types.JSONValue],
    ) -> float:
        """The waiting requests as KEDA last polled them (refreshed once per polling interval)."""
        polled = common.state_float(state, METRIC)
        polled_at = common.state_float(state, METRIC_TIME)
        if polled is None or polled_at is None or now - polled_at >= self.metric_refresh_seconds:
            polled, polled_at = signals.requests_waiting, now
        next_state[METRIC], next_state[METRIC_TIME] = polled, polled_at
        return polled

    def _keda(
        self,
        observation: types.Observation,
        metric: float,
        state: types.PolicyState,
        next_state: dict[str, types.JSONValue],
    ) -> tuple[int, str] | None:
        """KEDA's activation: 0 -> 1 when active, -> 0 after the cooldown; None: the HPA decides."""
        now = observation.now_seconds
        active = metric > self.activation_threshold
        last_active = now if active else common.state_float(state, LAST_ACTIVE)
        next_state[LAST_ACTIVE] = last_active
        current = observation.replicas.desired
        if current == 0:
            if active:
                return 1, f"KEDA: activated ({metric:,.0f} waiting > {self.activation_threshold:g})"
            return 0, "KEDA: inactive at zero"
        if not active and (last_active is None or now - last_active >= self.cooldown_seconds):
            return 0, f"KEDA: inactive for the {self.cooldown_seconds:.0f} s cooldown"
        return None

    def _stabilize(
        self,
        now: float,
        current: int,
        raw: int,
        state: types.PolicyState,
        next_state: dict[str, types.JSONValue],
    ) -> int:
        """Up: the lowest recommendation of the up window; down: the highest of the down window."""
        window = max(self.scale_up_stabilization_seconds, self.scale_down_stabilization_seconds)
        history = [
            (at, value)
            for at, value in common.state_pairs(state, RECOMMENDATIONS)
            if now - at < window
        ]
        up, down = raw, raw
        for at, value in history:
            if now - at < self.scale_up_stabilization_seconds:
                up = min(up, int(value))
            if now - at < self.scale_down_stabilization_seconds:
                down = max(down, int(value))
        history.append((now, float(raw)))
        next_state[RECOMMENDATIONS] = common.pairs_json(history)
        recommendation = current
        if recommendation < up:
            recommendation = up
        if recommendation > down:
            recommendation = down
        return recommendation

    def _rate_limit(
        self,
        now: float,
        current: int,
        desired: int,
        min_replicas: int,
        max_replicas: int,
        state: types.PolicyState,
    ) -> int:
        """HPA v2 scaling policies (select Max), then the min/max bounds."""
        ups = common.state_pairs(state, SCALE_UP_EVENTS)
        downs = common.state_pairs(state, SCALE_DOWN_EVENTS)
        if desired > current:
            added = _changes_within(ups, now, self.scale_up_period_seconds)
            removed = _changes_within(downs, now, self.scale_up_period_seconds)
            start = current - added + removed
            by_percent = math.ceil(start * (1.0 + self.scale_up_percent / 100.0))
            limit = max(max(by_percent, start + self.scale_up_pods), current)
            desired = min(desired, limit, max_replicas)
        elif desired < current:
            added = _changes_within(ups, now, self.scale_down_period_seconds)
            removed = _changes_within(downs, now, self.scale_down_period_seconds)
            start = current - added + removed
            limit = min(int(start * (1.0 - self.scale_down_percent / 100.0)), current)
            desired = max(desired, limit, min_replicas)
        return min(max(desired, min_replicas), max_replicas)

    def _record_event(
        self,
        now: float,
        current: int,
        replicas: int,
        state: types.PolicyState,
        next_state: dict[str, types.JSONValue],
    ) -> None:
        keep = max(self.scale_up_period_seconds, self.scale_down_period_seconds)
        for key, change in (
            (SCALE_UP_EVENTS, replicas - current),
            (SCALE_DOWN_EVENTS, current - replicas),
        ):
            events = [(at, n) for at, n in common.state_pairs(state, key) if now - at < keep]
            if change > 0:
                events.append((now, float(change)))
            next_state[key] = common.pairs_json(events)

    def _keep(
        self, observation: types.Observation, state: types.PolicyState, because: str
    ) -> types.Decision:
        signals = common.usable_signals(observation)
        tokens = common.served_tokens_per_second(signals) if signals is not None else 0.0
        current = observation.replicas.desired
        return common.decision(
            observation, current, types.Reason.STEADY, types.Bound.NONE, because, tokens, state
        )

    def _result(
        self,
        observation: types.Observation,
        replicas: int,
        because: str,
        tokens: float,
        next_state: dict[str, types.JSONValue],
    ) -> types.Decision:
        return common.decision(
            observation,
            replicas,
            common.movement_reason(observation.replicas.desired, replicas),
            types.Bound.NONE,
            because,
            tokens,
            next_state,
        )


def _changes_within(events: list[tuple[float, float]], now: float, period: float) -> int:
    return int(sum(n for at, n in events if now - at < period))
