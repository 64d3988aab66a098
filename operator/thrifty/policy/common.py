"""What every policy needs besides its own rule: usable signals, cost projection, messages, state.

thrifty's policy and the baselines must report cost the same way, or the benchmark would compare
arithmetic instead of decisions. They also share the reading of the carried state, which comes back
from a Kubernetes status and so may be missing, partial or of an older shape: reading it never
raises, a bad entry just counts as absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from thrifty import cost
from thrifty.policy import types


def usable_signals(observation: types.Observation) -> types.Signals | None:
    """The signals if they are present, fresh and finite; None means hold."""
    return observation.signals if unusable(observation) is None else None


def unusable(observation: types.Observation) -> str | None:
    """Why the signals cannot be decided on (absent, stale, a number not finite or negative),
    named so that a held decision says which; None when they can."""
    signals = observation.signals
    if signals is None:
        return "metrics unavailable"
    age = signals.sample_age_seconds
    if age > observation.spec.staleness_limit_seconds:
        return f"metrics stale ({age:.0f} s old)"
    numbers = {
        "requests waiting": signals.requests_waiting,
        "requests running": signals.requests_running,
        "KV cache usage": signals.kv_cache_usage,
        "prompt tokens/s": signals.prompt_tokens_per_second,
        "generation tokens/s": signals.generation_tokens_per_second,
        "requests/s": signals.requests_per_second,
        "sample age": age,
        "TTFT p95": 0.0 if signals.ttft_p95_seconds is None else signals.ttft_p95_seconds,
    }
    bad = [f"{name} {value:g}" for name, value in numbers.items() if not value >= 0.0]
    if bad or not math.isfinite(sum(numbers.values())):
        return "metrics invalid (" + ", ".join(bad or ["not finite"]) + ")"
    return None


def served_tokens_per_second(signals: types.Signals) -> float:
    """Prompt + generation tokens per second: the unit of $/1M tokens (see `thrifty.cost`)."""
    return signals.prompt_tokens_per_second + signals.generation_tokens_per_second


def replica_cost(pool: types.PoolView) -> float:
    """$/hour of one replica in this pool."""
    return cost.replica_dollars_per_hour(pool.gpus_per_replica, pool.price_per_gpu_hour)


@dataclass(frozen=True)
class Projection:
    dollars_per_hour: float
    dollars_per_million_tokens: float | None


def project(pool: types.PoolView, replicas: int, tokens_per_second: float) -> Projection:
    """Spend of ``replicas`` and its cost per token if they serve ``tokens_per_second``."""
    spend = cost.dollars_per_hour(replicas, pool.gpus_per_replica, pool.price_per_gpu_hour)
    return Projection(spend, cost.dollars_per_million_tokens(spend, tokens_per_second))


def message(
    observation: types.Observation, replicas: int, because: str, tokens_per_second: float
) -> str:
    """``+2 replicas: <because>; +$6.00/h, projected $0.41/1M tokens`` (or the steady form)."""
    pool = observation.pool
    current = observation.replicas.desired
    after = project(pool, replicas, tokens_per_second)
    per_token = cost.format_dollars_per_million_tokens(after.dollars_per_million_tokens)
    if replicas == current:
        count = f"{replicas} replica{'' if replicas == 1 else 's'}"
        spend_now = cost.format_dollars_per_hour(after.dollars_per_hour)
        return f"{count}: {because}; {spend_now}, {per_token}"
    delta = replicas - current
    count = f"{delta:+d} replica{'' if abs(delta) == 1 else 's'}"
    spend_delta = (
        after.dollars_per_hour - project(pool, current, tokens_per_second).dollars_per_hour
    )
    spend = cost.format_dollars_per_hour_delta(spend_delta)
    projected = (
        f"projected {per_token}" if after.dollars_per_million_tokens is not None else per_token
    )
    return f"{count}: {because}; {spend}, {projected}"


def decision(
    observation: types.Observation,
    replicas: int,
    reason: types.Reason,
    bound: types.Bound,
    because: str,
    tokens_per_second: float,
    state: types.PolicyState,
) -> types.Decision:
    """A decision with its projected cost and its message, all from one projection."""
    projection = project(observation.pool, replicas, tokens_per_second)
    return types.Decision(
        replicas=replicas,
        reason=reason,
        message=message(observation, replicas, because, tokens_per_second),
        bound=bound,
        projected_dollars_per_hour=projection.dollars_per_hour,
        projected_dollars_per_million_tokens=projection.dollars_per_million_tokens,
        state=state,
    )


def movement_reason(current: int, replicas: int) -> types.Reason:
    """The reason a baseline reports: only the direction of the change."""
    if replicas > current:
        return types.Reason.SCALE_FROM_ZERO if current == 0 else types.Reason.SCALE_UP
    if replicas < current:
        return types.Reason.SCALE_TO_ZERO if replicas == 0 else types.Reason.SCALE_DOWN
    return types.Reason.STEADY


def state_float(state: types.PolicyState, key: str) -> float | None:
    """A finite number from the carried state, or None when absent or malformed."""
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def state_pairs(state: types.PolicyState, key: str) -> list[tuple[float, float]]:
    """A list of ``[time, value]`` pairs from the carried state; malformed entries are dropped."""
    value = state.get(key)
    if not isinstance(value, list):
        return []
    pairs: list[tuple[float, float]] = []
    for item in value:
        if isinstance(item, list) and len(item) == 2:
            first = state_float({"v": item[0]}, "v")
            second = state_float({"v": item[1]}, "v")
            if first is not None and second is not None:
                pairs.append((first, second))
    return pairs


def pairs_json(pairs: Sequence[tuple[float, float]]) -> list[types.JSONValue]:
    """The JSON form of `state_pairs`."""
    return [[first, second] for first, second in pairs]


def with_updates(
    state: Mapping[str, types.JSONValue], **updates: types.JSONValue
) -> types.PolicyState:
    """A new state: the old entries with ``updates`` applied (the old mapping is not changed)."""
    merged = dict(state)
    merged.update(updates)
    return merged
