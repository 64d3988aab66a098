"""The cheapest replica count whose predicted TTFT percentile meets the target.

With ``n`` replicas of capacity ``c`` serving demand ``d``, each runs at utilisation
``u = d / (n c)`` and the model predicts the target percentile of TTFT as
``base + scale * u / (1 - u)``: prefill alone at no load, plus queueing that grows without bound
as a replica nears its capacity (the shape of Kingman's formula; ``scale`` carries the traffic's
burstiness and is learned under load). Meeting a target ``T`` caps the utilisation at
``(T - base) / (T - base + scale)``: the planning ceiling. It follows from the target, so a
tighter target buys more replicas and a looser one fewer, on any traffic. The demand planned for
is the forecast with its burst headroom (scaled by the feedback); a queue left over when new
replicas could arrive (a cold start away) is planned to be cleared within the drain time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from thrifty.policy import types
from thrifty.policy.planner import batching
from thrifty.policy.planner.estimate import Reading, grown_since, settled
from thrifty.policy.planner.forecast import Forecast
from thrifty.policy.planner.state import Source, State
from thrifty.policy.planner.tuning import Tuning

_EPSILON = 1e-9


@dataclass(frozen=True)
class Need:
    """What demand alone asks for, what bound it, and why (for the message)."""

    replicas: int
    because: str
    bound: types.Bound = types.Bound.NONE


def larger(a: Need, b: Need) -> Need:
    return b if b.replicas > a.replicas else a


def ceiling(state: State, spec: types.PolicySpec, tuning: Tuning) -> float:
    """The highest utilisation at which the model predicts the target percentile is met."""
    target = spec.ttft_target_seconds
    base = state.base_ttft
    if target is None or base is None:
        return tuning.utilisation_without_target
    scale = state.queue_scale if state.queue_scale is not None else base
    slack = target - base
    if slack <= 0.0:
        # Prefill alone misses the target: no replica count meets it, and more replicas do not
        # shorten a prefill. Size for throughput as without a target.
        return tuning.utilisation_without_target
    wanted = slack / (slack + scale) if slack + scale > 0.0 else tuning.max_utilisation
    return min(max(wanted, tuning.min_utilisation), tuning.max_utilisation)


def predicted_ttft(state: State, demand: float, replicas: int) -> float | None:
    """The model's TTFT at the target percentile for ``replicas`` serving ``demand`` tokens/s."""
    base = state.base_ttft
    if base is None or state.capacity is None or replicas <= 0:
        return None
    load = demand / (replicas * state.capacity)
    if load >= 1.0:
        return math.inf
    scale = state.queue_scale if state.queue_scale is not None else base
    return base + scale * load / (1.0 - load)


def ceil(value: float) -> int:
    """Ceiling that ignores float noise (2.0000000001 replicas is 2)."""
    if value <= 0.0 or not math.isfinite(value):
        return 0
    return math.ceil(value - _EPSILON)


def need(
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    state: State,
    outlook: Forecast,
    demand: float,
    tuning: Tuning,
) -> Need:
    """Replicas for the forecast demand at the planning ceiling, or for clearing the backlog."""
    by_queue = _by_queue(observation, reading)
    capacity = state.capacity
    if capacity is None or capacity <= 0.0:
        found = by_queue
    elif state.capacity_source == Source.LOWER_BOUND:
        found = _bounded(observation, reading, state, outlook, demand, tuning)
        found = _batch_bound(observation, reading, state, outlook, demand, found, tuning)
        if state.queue_growth > 0.0 and settled(state, observation.now_seconds, tuning):
            # A queue growing in front of replicas serving for a while says the bound is too
            # low to size on. One in front of none (all lost at once), of replicas that have
            # only just come up, or one the replicas are draining, says nothing of their
            # speed: the backlog rule sizes it at the bound.
            found = larger(found, by_queue)
    else:
        limit = ceiling(state, observation.spec, tuning)
        found = _sized(observation, reading, state, outlook, demand, capacity, limit, tuning)
    if reading.waiting > 0.0 or signals.requests_running > 0.0:
        found = larger(found, Need(1, "requests in flight"))
    # The requests running now fit in the batches at the load fraction the scale-down keeps:
    # batches nearly full are saturation arriving, whatever the estimates say.
    batch = tuning.batch_limit(observation.spec.max_num_seqs_per_replica)
    by_batch = ceil(signals.requests_running / (batch * tuning.scale_down_load_fraction))
    if by_batch > found.replicas:
        running = f"{signals.requests_running:,.0f} running"
        found = Need(
            by_batch,
            f"{running} fill {by_batch} replicas' batches to {tuning.scale_down_load_fraction:.0%}",
        )
    if reading.queued:
        found = larger(found, kept_for_queue(observation, reading, state, tuning))
    return _late(observation, reading, state, found, tuning)


def kept_for_queue(
    observation: types.Observation, reading: Reading, state: State, tuning: Tuning
) -> Need:
    """Under a material queue, the replicas that carry what is served now, at the ceiling.

    At the limit that is every ready replica: none is removed. But vLLM queues inside each engine,
    so a backlog taken before the fleet grew stays on the replicas that took it, which drain it
    at their capacity while the router sends the arrivals to the rest: replicas beyond what the
    fleet serves may go (among pods alike, a ReplicaSet removes the newest first: those that
    joined after the queue formed), and the backlog drains as fast without them."""
    replicas = observation.replicas
    supply = replicas.ready + replicas.starting
    queued = f"{reading.waiting:,.1f} queued on average"
    capacity = state.capacity
    if capacity is None or capacity <= 0.0 or replicas.ready <= 0:
        return Need(supply, f"{queued}: none removed")
    limit = 1.0
    if state.capacity_source != Source.LOWER_BOUND:
        limit = ceiling(state, observation.spec, tuning)
    kept = ceil(reading.served / (capacity * limit))
    if kept >= replicas.ready:
        # The ready replicas are all at their limit: the queue is the fleet's, and the
        # replicas starting are what it waits for.
        return Need(supply, f"{queued}: none removed")
    return Need(kept, f"{queued}, {reading.served:,.0f} tok/s served: {kept} replicas carry it")


def _bounded(
    observation: types.Observation,
    reading: Reading,
    state: State,
    outlook: Forecast,
    demand: float,
    tuning: Tuning,
) -> Need:
    """Sizing on a lower bound of the capacity (what a replica once served, never saturated).

    A bound says how few replicas surely suffice, not how much headroom there is: it sizes for
    the level at the bound, removes a replica only if the rest carry the forecast at the bound
    (bursts and trend included; a lost bet costs a cold start of missed first tokens), and a
    material queue or a late percentile, which also teach the capacity, order more."""
    replicas = observation.replicas
    capacity = state.capacity or 0.0
    if replicas.ready > 0:
        capacity = max(capacity, reading.served / replicas.serving)
    level = Forecast(outlook.level, 0.0, 0.0, outlook.horizon_seconds, 0.0)
    unplanned = replace(state, headroom=0.0)
    sized = _sized(observation, reading, unplanned, level, demand, capacity, 1.0, tuning)
    carrying = outlook.level <= capacity * replicas.serving * (1.0 + _EPSILON)
    if carrying and not reading.queued and 0 < replicas.ready < sized.replicas:
        # The ready replicas carry the level at the bound as they are: replicas of several
        # speeds are worth a fraction more than their rounded count, not one more replica.
        sized = replace(sized, replicas=replicas.ready)
    supply = replicas.ready + replicas.starting
    carried = ceil(outlook.planned(state.headroom) / capacity)
    if sized.replicas < supply and carried > sized.replicas:
        kept = min(supply, carried)
        return Need(kept, f"{sized.because}; {kept} at the bound carry the forecast's bursts")
    return sized


def _batch_bound(
    observation: types.Observation,
    reading: Reading,
    state: State,
    outlook: Forecast,
    demand: float,
    found: Need,
    tuning: Tuning,
) -> Need:
    """On a bound, replicas for the level and its rising trend at the share of the limit the
    running batch gives that a scale-down keeps, when even the most that limit may be is short.

    A bound cannot say how far off the limit is, so `_bounded` sizes the level alone and the
    limit is found by running into it, a cold start too late for a rising demand. The running
    batch's slowdown says where the limit is before it is reached (`batching`); its upper
    confidence bound orders only what the samples are sure of. The fleet is kept under the
    share of it the scale-down leaves replicas at (`Tuning.scale_down_load_fraction`): the
    line has no latency model to say how close is safe, and a fleet near the limit has a cold
    start of any rise the forecast is slow to see to fill its batches; bursts are left to the
    rules a queue triggers, as on a bound."""
    if state.batch_capacity is None or state.batch_error is None:
        return found
    estimate = batching.Estimate(state.batch_capacity, state.batch_error)
    upper = estimate.upper()
    if upper <= (state.capacity or 0.0):
        return found
    trend = Forecast(outlook.level, outlook.trend, 0.0, outlook.horizon_seconds, 0.0)
    at_limit = replace(state, headroom=0.0, capacity=upper)
    limit = tuning.scale_down_load_fraction
    sized = _sized(observation, reading, at_limit, trend, demand, upper, limit, tuning)
    if sized.replicas <= found.replicas:
        return found
    return Need(
        sized.replicas,
        f"{sized.because}; {upper:,.0f} tok/s per replica is the most the running batch's "
        f"slowdown allows ({estimate.tokens_per_second:,.0f} ±{estimate.relative_error:.0%})",
        sized.bound,
    )


def _sized(
    observation: types.Observation,
    reading: Reading,
    state: State,
    outlook: Forecast,
    demand: float,
    capacity: float,
    limit: float,
    tuning: Tuning,
) -> Need:
    spec = observation.spec
    planned = outlook.planned(state.headroom)
    steady = ceil(planned / (capacity * limit))
    supply = observation.replicas.ready + observation.replicas.starting
    if steady < supply:
        # Hysteresis: fewer replicas only if they would meet the target with a margin too; a
        # count that flips at the threshold costs a cold start of misses at each flip.
        margin = ceil(planned / (capacity * limit * (1.0 - tuning.scale_down_margin)))
        steady = max(steady, min(supply, margin))
    backlog = _backlog_need(observation, reading, state, demand, capacity, tuning)
    if backlog is not None and backlog.replicas > steady:
        return backlog
    target = spec.ttft_target_seconds
    burst = f" ±{outlook.spread:,.0f}" if outlook.spread >= 0.5 else ""
    bound = types.Bound.LATENCY_TARGET if target is not None else types.Bound.NONE
    return Need(
        steady,
        f"{planned:,.0f} tok/s forecast (level {outlook.level:,.0f}{burst}) "
        f"{_per_replica(state, spec, planned, steady, capacity, limit)}",
        bound,
    )


def _per_replica(
    state: State,
    spec: types.PolicySpec,
    planned: float,
    replicas: int,
    capacity: float,
    limit: float,
) -> str:
    """What a replica is planned at, and the latency model's prediction where it planned: on a
    lower bound of the capacity the model has no utilisation to predict from."""
    if state.capacity_source == Source.LOWER_BOUND and limit >= 1.0:
        served = f"{capacity:,.0f} tok/s per replica"
        return f"on a bound of {served} (the most one served, never saturated)"
    said = f"at {capacity:,.0f} tok/s per replica, {limit:.0%} utilisation"
    target = spec.ttft_target_seconds
    if state.capacity_source == Source.LOWER_BOUND or target is None:
        return said
    predicted = predicted_ttft(state, planned, replicas)
    if predicted is None or not math.isfinite(predicted):
        return said
    percentile = spec.ttft_target_percentile
    return f"{said}, predicted {percentile} TTFT {predicted:.2f} s (target {target:g} s)"


def drain_seconds(spec: types.PolicySpec, tuning: Tuning) -> float:
    """How soon a backlog must be cleared, from the latency target; at most the cold start."""
    wanted = spec.cold_start_seconds
    if spec.ttft_target_seconds is not None:
        wanted = min(wanted, spec.ttft_target_seconds * tuning.backlog_drain_ttft_multiple)
    return max(wanted, tuning.min_drain_seconds)


def _backlog_need(
    observation: types.Observation,
    reading: Reading,
    state: State,
    demand: float,
    capacity: float,
    tuning: Tuning,
) -> Need | None:
    """The queue as it will be when a replica ordered now starts serving, cleared in the drain
    time: the ready replicas work on it until then, the starting ones join when they are up.

    A backlog stays in the engines that took it (`kept_for_queue`): they drain it no faster than
    their own capacity, however many join, while the router (thrifty's gateway balances on
    requests in flight) sends the arrivals to the rest. With a measured capacity, replicas
    beyond those that carry the arrivals would wait for a queue they cannot take (a random case
    with a 600-s cold start ordered 29 for a backlog the three ready replicas had drained before
    any came up). On a prior or a lower bound neither count is known, and the queue is sized as
    if shared: a bound read in a cold open's first window can be a burst of prefill above what a
    replica sustains (4,720 tok/s for a Qwen3-32B that serves 3,000), and the demand a growing
    queue shows lags it. A queue held at the router, with no replica ready, is shared by
    whichever come up."""
    backlog = reading.waiting_now * (state.tokens_per_request or 0.0)
    if backlog <= 0.0 or not reading.queued:
        return None  # a few prompts a step held back are cleared by the next steps
    spec = observation.spec
    replicas = observation.replicas
    cold_start = spec.cold_start_seconds
    remaining = 0.0
    if replicas.starting:
        remaining = min(max(cold_start - replicas.oldest_starting_seconds, 0.0), cold_start)
    left = max(backlog + (demand - replicas.ready * capacity) * remaining, 0.0)
    supply = replicas.ready + replicas.starting
    left = max(left + (demand - supply * capacity) * (cold_start - remaining), 0.0)
    if left <= 0.0:
        return None
    drain = drain_seconds(spec, tuning)
    queued = (
        f"{reading.waiting_now:,.0f} queued ({backlog:,.0f} tokens) would outlast the "
        f"{cold_start:.0f} s cold start"
    )
    holding = replicas.ready * capacity
    if state.capacity_source == Source.SATURATED and 0.0 < holding < left / drain:
        carrying = ceil(demand / capacity)
        return Need(
            replicas.ready + carrying,
            f"{queued}; it stays on the {replicas.ready} ready, "
            f"which drain it at {holding:,.0f} tok/s however many join, and {carrying} more "
            f"carry the arrivals at {capacity:,.0f} tok/s each",
        )
    return Need(
        ceil((demand + left / drain) / capacity),
        f"{queued}; clearing it in {drain:.0f} s at {capacity:,.0f} tok/s per replica",
    )


def _by_queue(observation: types.Observation, reading: Reading) -> Need:
    """Until a replica's capacity is known: the spec's queue target per replica."""
    replicas = observation.replicas
    target = observation.spec.queue_target_per_replica
    supply = replicas.ready + replicas.starting
    count = ceil(reading.waiting / target) if target > 0 else supply
    return Need(count, f"{reading.waiting:,.0f} queued vs target {target * max(supply, 1):,.0f}")


def _late(
    observation: types.Observation, reading: Reading, state: State, found: Need, tuning: Tuning
) -> Need:
    """The fast half of the feedback: TTFT over target adds one replica once the last scale-up
    serves, if replicas can help: a material queue waits, or prefill alone takes well under the
    target (so the load made it late). Otherwise the prompts' prefill alone takes that long."""
    spec = observation.spec
    target = spec.ttft_target_seconds
    if target is None or reading.ttft is None or reading.ttft <= target:
        return found
    prefill_fits = state.base_ttft is not None and state.base_ttft < target / 2.0
    if not reading.queued and not prefill_fits:
        return found
    if grown_since(state, observation.now_seconds, reading.ttft, tuning):
        return found  # the window's late first tokens queued for the smaller fleet
    replicas = observation.replicas
    base = max(found.replicas, replicas.desired)
    quiet = (
        state.last_scale_up is None
        or observation.now_seconds - state.last_scale_up
        >= spec.cold_start_seconds + tuning.settle_seconds
    )
    over = f"TTFT {spec.ttft_target_percentile} {reading.ttft:.2f} s > target {target:g} s"
    if replicas.starting == 0 and quiet:
        return Need(base + 1, over, types.Bound.LATENCY_TARGET)
    if base > found.replicas:
        return Need(base, f"{over}, waiting for the last scale-up", types.Bound.LATENCY_TARGET)
    return found
