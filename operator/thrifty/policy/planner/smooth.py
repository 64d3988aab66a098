"""From what demand needs to what is ordered: up at once, down late and by steps, within limits.

A replica removed and ordered back costs a cold start of missed latency, and its cold start is
billed again: removing one pays only if it stays unneeded for longer than a cold start (the
rent-or-buy break-even). So scale-down waits until the need has stayed lower for the scale-down
delay and for at least a cold start, removes at most a step (a quarter, at least one) per step
interval, keeps the highest need of the delay window (the HPA's stabilisation), and never leaves
the remaining replicas above their batch or KV-cache limit with the requests running now.
Then the user's limits: idle scale-to-zero, free GPUs, money caps (`thrifty.policy.limits`), bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from thrifty.policy import limits, types
from thrifty.policy.planner.estimate import Reading
from thrifty.policy.planner.plan import Need, ceil
from thrifty.policy.planner.state import State, trimmed
from thrifty.policy.planner.tuning import Tuning


@dataclass(frozen=True)
class Outcome:
    replicas: int
    reason: types.Reason
    bound: types.Bound
    because: str
    state: State


def settle(
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    state: State,
    need: Need,
    tuning: Tuning,
) -> Outcome:
    spec = observation.spec
    current = observation.replicas.desired
    wanted = min(max(need.replicas, spec.min_replicas, 1), max(spec.max_replicas, 0))
    state = _idle(observation, signals, reading, state)
    if _to_zero(observation, state):
        state = replace(state, below_since=None, needs=())
        if current > 0:
            idle = observation.now_seconds - (state.idle_since or observation.now_seconds)
            outcome = Outcome(
                0, types.Reason.SCALE_TO_ZERO, types.Bound.NONE, f"idle for {idle:.0f} s", state
            )
        else:
            outcome = Outcome(0, types.Reason.STEADY, types.Bound.NONE, "idle at zero", state)
    elif state.idle_since is not None and current > 0 and wanted > current:
        # Nothing arrives, runs or waits: a forecast still carrying the minutes before is no
        # demand, and a replica ordered now would serve nobody (a cap that held the count
        # down while tokens flowed, and binds no more without them, would otherwise lift it).
        outcome = Outcome(
            current,
            types.Reason.STEADY,
            types.Bound.NONE,
            f"{need.because}; idle: no request arriving, running or waiting, none added",
            state,
        )
    else:
        outcome = _smoothed(observation, signals, reading, state, need, wanted, tuning)
    outcome = _limited(observation, signals, reading, need, outcome)
    return _moved(observation, outcome)


def _idle(
    observation: types.Observation, signals: types.Signals, reading: Reading, state: State
) -> State:
    idle = (
        signals.requests_waiting == 0.0
        and reading.waiting == 0.0
        and signals.requests_running == 0.0
        and signals.requests_per_second == 0.0
        and reading.served == 0.0
    )
    if not idle:
        return replace(state, idle_since=None)
    return replace(state, idle_since=state.idle_since or observation.now_seconds)


def _to_zero(observation: types.Observation, state: State) -> bool:
    spec = observation.spec
    if spec.min_replicas != 0 or spec.scale_to_zero_idle_seconds is None:
        return False
    if state.idle_since is None:
        return False
    idle = observation.now_seconds - state.idle_since
    return observation.replicas.desired == 0 or idle >= spec.scale_to_zero_idle_seconds


def _smoothed(
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    state: State,
    need: Need,
    wanted: int,
    tuning: Tuning,
) -> Outcome:
    current = observation.replicas.desired
    target, delayed, state = _stepped(observation, state, wanted, tuning)
    if delayed:
        return Outcome(
            target,
            types.Reason.SCALE_DOWN_DELAYED,
            types.Bound.HOLD,
            f"{need.because}; needs {wanted}, scale-down delayed{_waited_out(observation.spec)}",
            state,
        )
    floor, load = scale_down_floor(observation, signals, tuning)
    missed = _missed_floor(state, need, tuning)
    if missed is not None and missed[0] > floor:
        floor, load = missed
    if target < current and target < floor:
        kept = min(floor, current)
        return Outcome(
            kept,
            types.Reason.SCALE_DOWN_DELAYED,
            types.Bound.HOLD,
            f"{need.because}; needs {wanted}, but {load}: keeping {kept}",
            state,
        )
    return Outcome(target, types.Reason.STEADY, need.bound, need.because, state)


def _delay(spec: types.PolicySpec) -> float:
    """The scale-down delay, and at least a cold start (the rent-or-buy break-even)."""
    return max(spec.scale_down_delay_seconds, spec.cold_start_seconds)


def _waited_out(spec: types.PolicySpec) -> str:
    if _delay(spec) <= spec.scale_down_delay_seconds:
        return ""
    return f" for the {spec.cold_start_seconds:.0f} s cold start"


def _stepped(
    observation: types.Observation, state: State, wanted: int, tuning: Tuning
) -> tuple[int, bool, State]:
    """Up at once; down only after the delay (at least a cold start) of consistently lower
    need, then step by step."""
    current = observation.replicas.desired
    now = observation.now_seconds
    delay = _delay(observation.spec)
    needs = trimmed([*state.needs, (now, float(wanted))], now, max(delay, 1.0))
    state = replace(state, needs=needs)
    if wanted >= current:
        return wanted, False, replace(state, below_since=None)
    below_since = state.below_since
    if below_since is None or below_since > now:
        below_since = now
    state = replace(state, below_since=below_since)
    if now - below_since < delay:
        return current, True, state
    last_down = state.last_scale_down
    if (
        last_down is not None
        and last_down > below_since
        and now - last_down < tuning.scale_down_step_seconds
    ):
        return current, True, state
    step = max(1, math.floor(current * tuning.scale_down_step_fraction))
    safest = int(max(need for _, need in needs))
    return max(safest, current - step), False, state


def _missed_floor(state: State, need: Need, tuning: Tuning) -> tuple[int, str] | None:
    """One more than the count that missed the target lately, while demand is not clearly lower
    than it was then: the last miss is the best evidence of what too few is."""
    if state.missed_replicas is None or state.missed_demand is None:
        return None
    level = state.demand[-1][1] if state.demand else 0.0
    if level < state.missed_demand * (1.0 - tuning.scale_down_margin):
        return None
    kept = state.missed_replicas + 1
    return kept, f"{state.missed_replicas} missed the target lately at this demand"


def scale_down_floor(
    observation: types.Observation, signals: types.Signals, tuning: Tuning
) -> tuple[int, str]:
    """The fewest replicas the requests running now allow, and why.

    Removing a replica moves its running requests onto the others; if that fills their batches
    the queue grows for a whole cold start. Forecasts can be wrong; the requests running are not.
    (Under a material queue the need already keeps the replicas that carry what is served,
    `plan.kept_for_queue`, so the delay's steps never go under them.)
    """
    replicas = observation.replicas
    if replicas.ready <= 0:
        return 0, "no ready replica"
    batch = tuning.batch_limit(observation.spec.max_num_seqs_per_replica)
    batch *= tuning.scale_down_load_fraction
    kv = tuning.full_kv_cache * tuning.scale_down_load_fraction
    running = signals.requests_running
    load = (
        f"{running:,.0f} running ({running / replicas.ready:,.0f} per ready replica, "
        f"KV cache {signals.kv_cache_usage:.0%})"
    )
    if running / replicas.ready >= batch or signals.kv_cache_usage >= kv:
        return replicas.desired, f"{load} near the batch or KV limit"
    by_kv = ceil(signals.kv_cache_usage * replicas.ready / kv)
    return max(ceil(running / batch), by_kv), f"{load} would overload fewer replicas"


def _limited(
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    need: Need,
    outcome: Outcome,
) -> Outcome:
    spec = observation.spec
    cut = limits.binding(limits.limits(observation, signals, reading.served), outcome.replicas)
    if cut is not None:
        outcome = replace(
            outcome,
            replicas=cut.replicas,
            reason=cut.reason,
            bound=cut.bound,
            because=f"{need.because}; needs {outcome.replicas}, but {cut.because}",
        )
    bounded = min(max(outcome.replicas, spec.min_replicas), spec.max_replicas)
    if bounded != outcome.replicas:
        return replace(
            outcome,
            replicas=bounded,
            reason=types.Reason.BOUNDS,
            bound=types.Bound.BOUNDS,
            because=f"{outcome.because}; held within {spec.min_replicas}..{spec.max_replicas}",
        )
    if need.replicas > spec.max_replicas and outcome.replicas == spec.max_replicas:
        return replace(
            outcome,
            reason=types.Reason.BOUNDS,
            bound=types.Bound.BOUNDS,
            because=f"{outcome.because}; needs {need.replicas}, max is {spec.max_replicas}",
        )
    return outcome


def _moved(observation: types.Observation, outcome: Outcome) -> Outcome:
    """The reason as the direction of the change, unless a limit or a hold explains it better."""
    current = observation.replicas.desired
    target, reason, state = outcome.replicas, outcome.reason, outcome.state
    if target > current:
        state = replace(state, last_scale_up=observation.now_seconds)
    elif target < current:
        state = replace(state, last_scale_down=observation.now_seconds)
    limited = reason in (types.Reason.BUDGET_LIMITED, types.Reason.CAPACITY_LIMITED)
    if limited or (reason == types.Reason.BOUNDS and target == current):
        pass
    elif reason == types.Reason.SCALE_TO_ZERO or (target == 0 and current == 0):
        reason = types.Reason.SCALE_TO_ZERO if current > 0 else types.Reason.STEADY
    elif target > current:
        reason = types.Reason.SCALE_FROM_ZERO if current == 0 else types.Reason.SCALE_UP
    elif target < current:
        reason = types.Reason.SCALE_DOWN
    elif reason != types.Reason.SCALE_DOWN_DELAYED:
        replicas = observation.replicas
        waiting = replicas.starting > 0 and target > replicas.ready
        reason = types.Reason.WAITING_FOR_STARTUP if waiting else types.Reason.STEADY
    return replace(outcome, reason=reason, state=state)
