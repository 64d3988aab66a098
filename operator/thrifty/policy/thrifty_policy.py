"""thrifty's scaling policy: size for token demand and backlog, then apply delay, capacity, money.

Reactive autoscalers scale on one metric against a fixed per-replica target. This policy instead
asks how many replicas the *tokens* need, with a capacity per replica it learns from the metrics
(tokens/s while replicas are saturated), and it counts that a replica ordered now serves only after
its cold start: a backlog the current and starting replicas clear before new ones could arrive does
not order new ones. It scales up at once, down only after a delay and a step at a time, to zero only
when allowed and idle, never orders replicas the pool has no GPUs for, and never lets a Hard budget
be passed. See docs/policy.md for the algorithm and the reasons for each default.

Pure and deterministic: everything it remembers travels in `Decision.state` (a JSON mapping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thrifty import cost
from thrifty.policy import common, limits, types

# Keys of the carried state. Stable names: the operator persists them in status.
CAPACITY = "capacity_tokens_per_second_per_replica"
CAPACITY_SOURCE = "capacity_source"
TOKENS_PER_REQUEST = "tokens_per_request"
LAST_SEEN = "last_observed_seconds"
READY = "ready_replicas"
READY_SINCE = "ready_since_seconds"
BELOW_SINCE = "below_since_seconds"
RECENT_NEEDS = "recent_needs"
WAITING = "requests_waiting"
QUEUE_GROWTH = "queue_growth_requests_per_second"
RECENT_DEMAND = "recent_demand"
IDLE_SINCE = "idle_since_seconds"
LAST_SCALE_UP = "last_scale_up_seconds"
LAST_SCALE_DOWN = "last_scale_down_seconds"

# Where the capacity estimate comes from. Only a prior or saturated replicas tell what a replica
# *can* do; throughput below saturation only shows what it did (a lower bound).
PRIOR = "prior"
SATURATED = "saturated"
LOWER_BOUND = "lower-bound"

_EPSILON = 1e-9
MAX_TOKENS_PER_REQUEST = 1_000_000.0
"""No context is longer: a larger ratio of token and request rates is a rate-window artefact."""


@dataclass(frozen=True)
class _Need:
    """What demand alone asks for, and why (for the message)."""

    replicas: int
    because: str
    bound: types.Bound = types.Bound.NONE


@dataclass
class ThriftyPolicy:
    """Scale on learned token capacity, backlog and cold start, within capacity and budget.

    Every parameter has a default chosen for vLLM on GPUs (docs/policy.md says why).
    """

    name: str = "thrifty"
    target_utilization: float = 0.85
    """Share of the learned saturated throughput a replica is planned to carry in steady state."""
    saturation_kv_usage: float = 0.9
    """KV-cache usage at which a replica counts as saturated (besides a non-empty queue)."""
    capacity_time_constant_seconds: float = 120.0
    """How fast the learned capacity follows saturated samples (EWMA time constant)."""
    settle_seconds: float = 120.0
    """After the ready count changes, rates mix old and new replicas: learn nothing until then."""
    backlog_drain_ttft_multiple: float = 30.0
    """A backlog is to be cleared within this many TTFT targets, and within one cold start."""
    min_drain_seconds: float = 10.0
    scale_down_step_fraction: float = 0.25
    """At most this share of the replicas (and at least one) is removed per step."""
    scale_down_step_seconds: float = 60.0
    """Time between two scale-down steps once the scale-down delay has passed."""
    batch_limit_requests_per_replica: float = 256.0
    """The engine's running-batch limit (vLLM ``--max-num-seqs``) when the spec does not give it
    (``max_num_seqs_per_replica``). 256, the smallest common default (1024 on H100-class GPUs), so
    the scale-down guard errs toward keeping replicas."""
    scale_down_load_fraction: float = 0.75
    """A scale-down must leave each remaining replica at most this share of the batch limit and of
    ``saturation_kv_usage``; none at all while requests wait or the fleet is already there."""
    need_memory_seconds: float = 0.0
    """Scale down no lower than the highest need of this window (at least the scale-down delay):
    bursty traffic keeps the replicas its bursts need instead of paying a cold start each time."""
    probe_min_replicas: int = 3
    """The headroom probe (unknown capacity) removes one replica only from this many: from 2 to 1
    it doubles each replica's load, and a lost bet queues requests for a whole cold start."""
    demand_window_seconds: float = 60.0
    """Steady sizing counts a demand level only when an earlier tick of this window (Prometheus'
    rate window) reached it too: a burst of seconds lifts a 1-minute rate for a whole minute."""

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        signals = common.usable_signals(observation)
        if signals is None:
            return self._hold(observation, state)
        demand = self.demand_tokens_per_second(observation, signals, state)
        learned = self._learn(observation, signals, state)
        level, learned[RECENT_DEMAND] = self.held_demand(observation, state, demand)
        need = self._need(observation, signals, learned, demand, level)
        return self._constrain(observation, signals, learned, need, demand)

    def held_demand(
        self, observation: types.Observation, state: types.PolicyState, demand: float
    ) -> tuple[float, list[types.JSONValue]]:
        """The demand level an earlier tick of the rate window also reached (``demand`` if none),
        and the window's demands to carry to the next tick.

        A burst of a few seconds lifts a 1-minute rate for a whole minute: sized for at once, it
        ordered replicas that came a cold start later, after the burst. A level seen at two ticks
        is the one steady sizing plans for; a queue the burst leaves is the backlog's business.
        """
        now = observation.now_seconds
        earlier = [
            (at, tokens)
            for at, tokens in common.state_pairs(state, RECENT_DEMAND)
            if 0.0 <= now - at < self.demand_window_seconds
        ]
        recent = common.pairs_json([*earlier, (now, demand)])
        if not earlier:
            return demand, recent
        return min(demand, max(tokens for _, tokens in earlier)), recent

    def demand_tokens_per_second(
        self, observation: types.Observation, signals: types.Signals, state: types.PolicyState
    ) -> float:
        """Served tokens/s, plus the arrivals a queue growing for two ticks shows beyond them.

        Saturated replicas serve at most their capacity, so the served rate alone hides how far
        demand is above it; the growth of the queue measures the rest. Only growth seen at two
        ticks in a row counts (the lower of the two): one tick's jump is a burst the queue
        already holds, and taking it for a rate sized fleets for bursts lasting seconds.
        """
        served = common.served_tokens_per_second(signals)
        tokens_per_request = common.state_float(state, TOKENS_PER_REQUEST)
        if signals.requests_per_second > 0.0 and served > 0.0:
            tokens_per_request = min(served / signals.requests_per_second, MAX_TOKENS_PER_REQUEST)
        growth = min(
            self.queue_growth(observation, signals, state),
            common.state_float(state, QUEUE_GROWTH) or 0.0,
        )
        if tokens_per_request is None or growth <= 0.0:
            return served
        return served + growth * tokens_per_request

    def queue_growth(
        self, observation: types.Observation, signals: types.Signals, state: types.PolicyState
    ) -> float:
        """Requests/s the queue grew by since the last tick (0 when it did not grow)."""
        previous = common.state_float(state, WAITING)
        last_seen = common.state_float(state, LAST_SEEN)
        if previous is None or last_seen is None:
            return 0.0
        elapsed = observation.now_seconds - last_seen
        if elapsed <= 0.0 or signals.requests_waiting <= previous:
            return 0.0
        return (signals.requests_waiting - previous) / elapsed

    # --- missing data -------------------------------------------------------------------------

    def _hold(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        """Keep the count; only the bounds and a $/hour cap (they need no metrics) may move it."""
        spec = observation.spec
        current = observation.replicas.desired
        next_state = common.with_updates(
            state,
            **{
                BELOW_SINCE: None,
                RECENT_NEEDS: [],
                IDLE_SINCE: None,
                WAITING: None,
                QUEUE_GROWTH: None,
                RECENT_DEMAND: [],
            },
        )
        signals = observation.signals
        if signals is None:
            because = "metrics unavailable, holding"
        else:
            because = f"metrics stale or invalid ({signals.sample_age_seconds:.0f} s old), holding"
        target = min(max(current, spec.min_replicas), spec.max_replicas)
        reason, bound = types.Reason.METRICS_UNAVAILABLE, types.Bound.HOLD
        if target != current:
            reason, bound = types.Reason.BOUNDS, types.Bound.BOUNDS
            because = f"{because} within {spec.min_replicas}..{spec.max_replicas} replicas"
        cap = limits.dollars_per_hour_cap(observation)
        if cap is not None:
            affordable = limits.replicas_within_hourly_cap(observation, cap)
            allowed = max(affordable, spec.min_replicas)
            if allowed < target:
                spend_cap = cost.format_dollars_per_hour(cap)
                because = f"metrics unavailable, but {target} replicas pass the {spend_cap} cap"
                target, reason, bound = allowed, types.Reason.BUDGET_LIMITED, types.Bound.BUDGET
        return common.decision(observation, target, reason, bound, because, 0.0, next_state)

    # --- learning -----------------------------------------------------------------------------

    def _learn(
        self, observation: types.Observation, signals: types.Signals, state: types.PolicyState
    ) -> dict[str, types.JSONValue]:
        """Next state's learned values: per-replica capacity, tokens per request, ready tracking."""
        now = observation.now_seconds
        ready = observation.replicas.ready
        learned: dict[str, types.JSONValue] = dict(state)
        previous_ready = common.state_float(state, READY)
        ready_since = common.state_float(state, READY_SINCE)
        if previous_ready is None or int(previous_ready) != ready or ready_since is None:
            ready_since = now
        learned[READY] = ready
        learned[READY_SINCE] = ready_since
        last_seen = common.state_float(state, LAST_SEEN)
        learned[QUEUE_GROWTH] = self.queue_growth(observation, signals, state)
        learned[LAST_SEEN] = now
        learned[WAITING] = signals.requests_waiting

        tokens_per_second = common.served_tokens_per_second(signals)
        if signals.requests_per_second > 0.0 and tokens_per_second > 0.0:
            sample = min(tokens_per_second / signals.requests_per_second, MAX_TOKENS_PER_REQUEST)
            previous = common.state_float(state, TOKENS_PER_REQUEST)
            learned[TOKENS_PER_REQUEST] = self._ewma(previous, sample, now, last_seen)

        capacity, source = _capacity(state)
        if capacity is None and observation.spec.capacity_tokens_per_second_per_replica:
            capacity, source = observation.spec.capacity_tokens_per_second_per_replica, PRIOR
        settled = ready > 0 and now - ready_since >= self.settle_seconds
        if settled and tokens_per_second > 0.0:
            per_replica = tokens_per_second / ready
            target = observation.spec.ttft_p95_target_seconds
            late = target is not None and (signals.ttft_p95_seconds or 0.0) > target
            if self._saturated(signals, ready, observation.spec):
                # At saturation the throughput is the capacity: follow it, smoothed. Above a
                # mere lower bound it is also a better lower bound: take it at once.
                if capacity is None or (source == LOWER_BOUND and per_replica > capacity):
                    capacity = per_replica
                else:
                    capacity = self._ewma(capacity, per_replica, now, last_seen)
                source = SATURATED
            elif not late and (capacity is None or per_replica > capacity):
                # Below saturation it is only a lower bound: a replica did at least this much,
                # within the latency target (a late burst shows throughput nobody should plan on).
                capacity, source = per_replica, source or LOWER_BOUND
        learned[CAPACITY], learned[CAPACITY_SOURCE] = capacity, source
        return learned

    def _saturated(self, signals: types.Signals, ready: int, spec: types.PolicySpec) -> bool:
        """At its limit: requests queue (one per replica at least), the KV cache is full, or the
        running batches are as near the engine's max-num-seqs as the load guard allows.

        A single waiting request is a scheduler step, not a fleet at its limit. A batch that
        full is one the guard would not add to by removing a replica: the throughput that
        fills it is what a replica carries, even before anything queues.
        """
        batch = self.batch_limit(spec) * self.scale_down_load_fraction
        return (
            signals.requests_waiting >= max(ready, 1)
            or signals.kv_cache_usage >= self.saturation_kv_usage
            or signals.requests_running >= max(ready, 1) * batch
        )

    def _ewma(
        self, previous: float | None, sample: float, now: float, last_seen: float | None
    ) -> float:
        if previous is None:
            return sample
        elapsed = (
            self.capacity_time_constant_seconds if last_seen is None else max(now - last_seen, 0.0)
        )
        weight = 1.0 - math.exp(-elapsed / self.capacity_time_constant_seconds)
        return previous + weight * (sample - previous)

    # --- demand -------------------------------------------------------------------------------

    def drain_seconds(self, spec: types.PolicySpec) -> float:
        """How soon a backlog must be cleared, from the latency target; at most the cold start."""
        wanted = spec.cold_start_seconds
        if spec.ttft_p95_target_seconds is not None:
            wanted = min(wanted, spec.ttft_p95_target_seconds * self.backlog_drain_ttft_multiple)
        return max(wanted, self.min_drain_seconds)

    def _need(
        self,
        observation: types.Observation,
        signals: types.Signals,
        learned: dict[str, types.JSONValue],
        demand: float,
        level: float,
    ) -> _Need:
        capacity, source = _capacity(learned)
        by_queue = self._need_by_queue(observation, signals)
        if capacity is None or capacity <= 0.0:
            # Nothing known about a replica: keep what serves while busy, grow by the queue.
            busy = signals.requests_waiting > 0.0 or signals.requests_running > 0.0
            supply = observation.replicas.ready + observation.replicas.starting
            held = _Need(supply if busy else 0, "capacity not learned yet")
            need = max(by_queue, held, key=lambda n: n.replicas)
        elif source == LOWER_BOUND:
            # Replicas can do at least `capacity`: enough to size a scale-down (no headroom
            # needed, it was done), never a reason to add one. Adding is the queue's business.
            # What each ready replica serves now is a lower bound too, even with a late TTFT
            # (not learned then: nobody should plan on a late burst): a lower figure would order
            # replicas for the very demand the ready ones are serving.
            if observation.replicas.ready > 0:
                serving = common.served_tokens_per_second(signals) / observation.replicas.ready
                capacity = max(capacity, serving)
            need = self._need_from_capacity(
                observation, signals, learned, capacity, demand, level, 1.0
            )
            need = max(need, by_queue, key=lambda n: n.replicas)
        else:
            need = self._need_from_capacity(
                observation, signals, learned, capacity, demand, level, self.target_utilization
            )
        if source != PRIOR and source != SATURATED and self._roomy(observation, signals):
            # Unknown capacity cannot prove fewer replicas suffice; clear headroom lets the
            # policy try one fewer (after the scale-down delay); the queue and TTFT undo it.
            supply = observation.replicas.ready + observation.replicas.starting
            if supply >= self.probe_min_replicas:
                probe = _Need(supply - 1, "ample headroom (capacity not known): trying one fewer")
                need = min(need, probe, key=lambda n: n.replicas)
        if signals.requests_waiting > 0.0 or signals.requests_running > 0.0:
            need = max(need, _Need(1, "requests in flight"), key=lambda n: n.replicas)
        if signals.requests_waiting > 0.0:
            # A queue means the replicas are saturated whatever the estimate says: remove none.
            supply = observation.replicas.ready + observation.replicas.starting
            queued = _Need(supply, f"{signals.requests_waiting:,.0f} queued: no replica removed")
            need = max(need, queued, key=lambda n: n.replicas)
        return self._latency(observation, signals, learned, need)

    def _need_from_capacity(
        self,
        observation: types.Observation,
        signals: types.Signals,
        learned: dict[str, types.JSONValue],
        capacity: float,
        demand: float,
        level: float,
        utilization: float,
    ) -> _Need:
        """Steady demand (the held ``level``) at the target utilisation, or the backlog left when
        new replicas arrive (at the current ``demand``)."""
        spec = observation.spec
        replicas = observation.replicas
        steady = _ceil(level / (capacity * utilization))
        tokens_per_request = common.state_float(learned, TOKENS_PER_REQUEST) or 0.0
        backlog = signals.requests_waiting * tokens_per_request
        # The backlog as it will be when a replica ordered now starts serving: the ready replicas
        # work on it until then, the starting ones join after their remaining cold start.
        cold_start = spec.cold_start_seconds
        remaining = (
            max(cold_start - replicas.oldest_starting_seconds, 0.0) if replicas.starting else 0.0
        )
        remaining = min(remaining, cold_start)
        # Without a queue the fleet keeps up by observation: only a backlog can be left over.
        if backlog <= 0.0:
            remaining = cold_start = 0.0
        left = max(backlog + (demand - replicas.ready * capacity) * remaining, 0.0)
        supply = replicas.ready + replicas.starting
        left = max(left + (demand - supply * capacity) * (cold_start - remaining), 0.0)
        drain = self.drain_seconds(spec)
        with_backlog = _ceil((demand + left / drain) / capacity) if left > 0.0 else 0
        if with_backlog > steady:
            return _Need(
                with_backlog,
                f"{signals.requests_waiting:,.0f} queued ({backlog:,.0f} tokens) would outlast the "
                f"{cold_start:.0f} s cold start; clearing it in {drain:.0f} s at "
                f"{capacity:,.0f} tok/s per replica",
            )
        return _Need(
            steady,
            f"{level:,.0f} tok/s at {capacity:,.0f} tok/s per replica "
            f"({utilization:.0%} target utilisation)",
        )

    def _roomy(self, observation: types.Observation, signals: types.Signals) -> bool:
        """No queue, KV cache at most half the saturation level, TTFT at most half the target."""
        target = observation.spec.ttft_p95_target_seconds
        ttft = signals.ttft_p95_seconds
        return (
            signals.requests_waiting == 0.0
            and signals.kv_cache_usage <= self.saturation_kv_usage / 2.0
            and (target is None or ttft is None or ttft <= target / 2.0)
        )

    def _need_by_queue(self, observation: types.Observation, signals: types.Signals) -> _Need:
        """Until a replica's capacity is known: the spec's queue target per replica."""
        replicas = observation.replicas
        target = observation.spec.queue_target_per_replica
        supply = replicas.ready + replicas.starting
        by_queue = _ceil(signals.requests_waiting / target) if target > 0 else supply
        return _Need(
            by_queue,
            f"{signals.requests_waiting:,.0f} queued vs target {target * max(supply, 1):,.0f}",
        )

    def _latency(
        self,
        observation: types.Observation,
        signals: types.Signals,
        learned: dict[str, types.JSONValue],
        need: _Need,
    ) -> _Need:
        """TTFT p95 over target while requests queue: never scale down, and add one replica once
        the last one serves.

        Only a queue says more replicas would help. Late first tokens without one come from
        prompts whose prefill alone takes that long, or from a burst already over (the TTFT
        window lags by minutes): a replica ordered then serves nobody sooner.
        """
        spec = observation.spec
        target = spec.ttft_p95_target_seconds
        ttft = signals.ttft_p95_seconds
        if target is None or ttft is None or ttft <= target or signals.requests_waiting <= 0.0:
            return need
        replicas = observation.replicas
        base = max(need.replicas, replicas.desired)
        last_up = common.state_float(learned, LAST_SCALE_UP)
        quiet = (
            last_up is None
            or observation.now_seconds - last_up >= spec.cold_start_seconds + self.settle_seconds
        )
        over = f"TTFT p95 {ttft:.2f} s > target {target:.2f} s"
        if replicas.starting == 0 and quiet:
            return _Need(base + 1, over, types.Bound.LATENCY_TARGET)
        if base > need.replicas:
            return _Need(base, f"{over}, waiting for the last scale-up", types.Bound.LATENCY_TARGET)
        return need

    # --- smoothing, idleness, capacity, budget, bounds ----------------------------------------

    def _constrain(
        self,
        observation: types.Observation,
        signals: types.Signals,
        learned: dict[str, types.JSONValue],
        need: _Need,
        tokens_per_second: float,
    ) -> types.Decision:
        spec = observation.spec
        current = observation.replicas.desired
        now = observation.now_seconds
        wanted = min(max(need.replicas, spec.min_replicas, 1), max(spec.max_replicas, 0))

        idle = (
            signals.requests_waiting == 0.0
            and signals.requests_running == 0.0
            and signals.requests_per_second == 0.0
            and tokens_per_second == 0.0
        )
        idle_since = common.state_float(learned, IDLE_SINCE) if idle else None
        if idle and idle_since is None:
            idle_since = now
        learned[IDLE_SINCE] = idle_since
        zero_allowed = spec.min_replicas == 0 and spec.scale_to_zero_idle_seconds is not None
        to_zero = (
            zero_allowed
            and idle_since is not None
            and (current == 0 or now - idle_since >= (spec.scale_to_zero_idle_seconds or 0.0))
        )

        reason, bound, because = types.Reason.STEADY, need.bound, need.because
        if to_zero:
            target = 0
            learned[BELOW_SINCE], learned[RECENT_NEEDS] = None, []
            if current > 0:
                reason, bound = types.Reason.SCALE_TO_ZERO, types.Bound.NONE
                because = f"idle for {now - (idle_since or now):.0f} s"
            else:
                because = "idle at zero"
        else:
            target, delayed = self._smooth(observation, learned, wanted)
            floor, load = self.scale_down_floor(observation, signals)
            if delayed:
                reason, bound = types.Reason.SCALE_DOWN_DELAYED, types.Bound.HOLD
                because = f"{because}; needs {wanted}, scale-down delayed"
            elif target < current and target < floor:
                target = min(floor, current)
                reason, bound = types.Reason.SCALE_DOWN_DELAYED, types.Bound.HOLD
                because = f"{because}; needs {wanted}, but {load}: keeping {target}"

        cut = limits.binding(limits.limits(observation, signals, tokens_per_second), target)
        if cut is not None:
            reason, bound = cut.reason, cut.bound
            because = f"{need.because}; needs {target}, but {cut.because}"
            target = cut.replicas
        bounded = min(max(target, spec.min_replicas), spec.max_replicas)
        if bounded != target:
            reason, bound = types.Reason.BOUNDS, types.Bound.BOUNDS
            because = f"{because}; held within {spec.min_replicas}..{spec.max_replicas} replicas"
        elif need.replicas > spec.max_replicas and target == spec.max_replicas:
            reason, bound = types.Reason.BOUNDS, types.Bound.BOUNDS
            because = f"{because}; needs {need.replicas}, max is {spec.max_replicas}"
        target = bounded

        reason = _movement_reason(observation, target, reason, to_zero)
        if target > current:
            learned[LAST_SCALE_UP] = now
        elif target < current:
            learned[LAST_SCALE_DOWN] = now
        return common.decision(
            observation, target, reason, bound, because, tokens_per_second, learned
        )

    def scale_down_floor(
        self, observation: types.Observation, signals: types.Signals
    ) -> tuple[int, str]:
        """The fewest replicas the load in flight allows, and why.

        Removing a replica moves its running requests onto the others; if that fills their batches
        or KV caches the queue explodes, and a replica ordered back serves only a cold start later.
        Estimates of demand can be wrong; the requests running now are not.
        """
        replicas = observation.replicas
        if signals.requests_waiting > 0.0:
            return replicas.desired, f"{signals.requests_waiting:,.0f} requests waiting"
        if replicas.ready <= 0:
            return 0, "no ready replica"
        batch = self.batch_limit(observation.spec) * self.scale_down_load_fraction
        kv = self.saturation_kv_usage * self.scale_down_load_fraction
        running = signals.requests_running
        load = (
            f"{running:,.0f} running ({running / replicas.ready:,.0f} per ready replica, "
            f"KV cache {signals.kv_cache_usage:.0%})"
        )
        if running / replicas.ready >= batch or signals.kv_cache_usage >= kv:
            return replicas.desired, f"{load} near the batch or KV limit"
        by_batch = _ceil(running / batch) if batch > 0.0 else replicas.desired
        by_kv = _ceil(signals.kv_cache_usage * replicas.ready / kv) if kv > 0.0 else 0
        return max(by_batch, by_kv), f"{load} would overload fewer replicas"

    def batch_limit(self, spec: types.PolicySpec) -> float:
        """Running requests one replica can batch: the engine's setting, else the default."""
        if spec.max_num_seqs_per_replica is not None and spec.max_num_seqs_per_replica > 0:
            return float(spec.max_num_seqs_per_replica)
        return self.batch_limit_requests_per_replica

    def _smooth(
        self, observation: types.Observation, learned: dict[str, types.JSONValue], wanted: int
    ) -> tuple[int, bool]:
        """Up at once; down only after the delay of consistently lower need, then step by step."""
        current = observation.replicas.desired
        now = observation.now_seconds
        delay = observation.spec.scale_down_delay_seconds
        window = max(delay, self.need_memory_seconds)
        recent = [
            (at, need)
            for at, need in common.state_pairs(learned, RECENT_NEEDS)
            if 0.0 <= now - at < window
        ]
        recent.append((now, float(wanted)))
        learned[RECENT_NEEDS] = common.pairs_json(recent)
        if wanted >= current:
            learned[BELOW_SINCE] = None
            return wanted, False
        below_since = common.state_float(learned, BELOW_SINCE)
        if below_since is None or below_since > now:
            below_since = now
        learned[BELOW_SINCE] = below_since
        if now - below_since < delay:
            return current, True
        last_down = common.state_float(learned, LAST_SCALE_DOWN)
        if (
            last_down is not None
            and last_down > below_since
            and now - last_down < self.scale_down_step_seconds
        ):
            return current, True
        step = max(1, math.floor(current * self.scale_down_step_fraction))
        # The highest need of the delay window, like the HPA's stabilization: the safest of them.
        safest = int(max(need for _, need in recent))
        return max(safest, current - step), False


def _movement_reason(
    observation: types.Observation, target: int, reason: types.Reason, to_zero: bool
) -> types.Reason:
    current = observation.replicas.desired
    if reason in (types.Reason.BUDGET_LIMITED, types.Reason.CAPACITY_LIMITED):
        return reason
    if reason == types.Reason.BOUNDS and target == current:
        return reason
    if to_zero:
        return types.Reason.SCALE_TO_ZERO if current > 0 else types.Reason.STEADY
    if target > current:
        return types.Reason.SCALE_FROM_ZERO if current == 0 else types.Reason.SCALE_UP
    if target < current:
        return types.Reason.SCALE_DOWN
    if reason == types.Reason.SCALE_DOWN_DELAYED:
        return reason
    replicas = observation.replicas
    if replicas.starting > 0 and target > replicas.ready:
        return types.Reason.WAITING_FOR_STARTUP
    return types.Reason.STEADY


def _ceil(value: float) -> int:
    """Ceiling that ignores float noise (2.0000000001 replicas is 2)."""
    if value <= 0.0 or not math.isfinite(value):
        return 0
    return math.ceil(value - _EPSILON)


def _capacity(state: types.PolicyState) -> tuple[float | None, str | None]:
    """The carried capacity estimate and its source (a missing source reads as a lower bound)."""
    capacity = common.state_float(state, CAPACITY)
    source = state.get(CAPACITY_SOURCE)
    if capacity is None:
        return None, None
    return capacity, source if source in (PRIOR, SATURATED, LOWER_BOUND) else LOWER_BOUND
