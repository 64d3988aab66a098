"""The limits no demand may pass: free GPUs in the pool and the money caps.

They are not thrifty's opinion but the user's constraints, so they live apart from any sizing rule:
thrifty's policy applies them after sizing, and a user-written policy can apply the same ones.
What wins when they conflict is documented in docs/policy.md ("Money"): ``min_replicas`` over every
cap; a $/1M-tokens cap never below one replica while requests wait or run.
"""

from __future__ import annotations

from dataclasses import dataclass

from thrifty import cost
from thrifty.policy import common, types


@dataclass(frozen=True)
class Limit:
    """The most replicas one constraint allows, and how to report it when it binds."""

    replicas: int
    reason: types.Reason
    bound: types.Bound
    because: str


def scaled_cap(spec: types.PolicySpec, cap: float | None) -> float | None:
    """A spec cap as enforced: a Soft budget may overrun by its declared share, no further."""
    if cap is None:
        return None
    if spec.enforcement == types.Enforcement.SOFT:
        return cap * (1.0 + max(spec.soft_overrun_fraction, 0.0))
    return cap


def dollars_per_hour_cap(observation: types.Observation) -> float | None:
    """The tighter of the spec's $/hour cap (Soft overrun included) and the CostBudget allowance.

    The allowance comes from `thrifty.autoscaler.budget`, which already stretches a Soft budget:
    it is enforced as it is.
    """
    caps = [
        cap
        for cap in (
            scaled_cap(observation.spec, observation.spec.max_dollars_per_hour),
            observation.budget_dollars_per_hour_available,
        )
        if cap is not None
    ]
    return min(caps) if caps else None


def limits(
    observation: types.Observation, signals: types.Signals | None, tokens_per_second: float
) -> list[Limit]:
    """Every limit that applies now (GPUs, $/hour, $/1M tokens), each floored as documented."""
    spec = observation.spec
    found: list[Limit] = []
    gpus = gpu_limit(observation)
    if gpus is not None:
        found.append(gpus)
    replica_cost = common.replica_cost(observation.pool)
    hourly_cap = dollars_per_hour_cap(observation)
    if hourly_cap is not None:
        affordable = replicas_within_hourly_cap(observation, hourly_cap)
        draining = max(observation.replicas.draining, 0)
        found.append(
            Limit(
                max(affordable, spec.min_replicas),
                types.Reason.BUDGET_LIMITED,
                types.Bound.BUDGET,
                f"{cost.format_dollars_per_hour(hourly_cap)} cap allows {affordable}"
                + (f" ({draining} still draining)" if draining else ""),
            )
        )
    token_cap = scaled_cap(spec, spec.max_dollars_per_million_tokens)
    if token_cap is not None and signals is not None:
        by_tokens = cost.replicas_within_dollars_per_million_tokens(
            token_cap, replica_cost, tokens_per_second
        )
        if by_tokens is not None:
            busy = signals.requests_waiting > 0.0 or signals.requests_running > 0.0
            found.append(
                Limit(
                    max(by_tokens, spec.min_replicas, 1 if busy else 0),
                    types.Reason.BUDGET_LIMITED,
                    types.Bound.BUDGET,
                    f"{cost.format_dollars_per_million_tokens(token_cap)} cap at "
                    f"{tokens_per_second:,.0f} tok/s allows {by_tokens}",
                )
            )
    return found


def replicas_within_hourly_cap(observation: types.Observation, cap: float) -> int:
    """The most replicas a $/hour cap allows, counting the draining ones: they still cost.

    New replicas are ordered only while (replicas + draining) x replica cost stays within the cap.
    Draining replicas never cut the replicas already kept within the cap, though: removing one for
    them would drain one more, which would cut again; they are gone within their grace period.
    """
    affordable = cost.replicas_within_dollars_per_hour(cap, common.replica_cost(observation.pool))
    draining = max(observation.replicas.draining, 0)
    if draining == 0:
        return affordable
    kept = min(max(observation.replicas.desired, 0), affordable)
    return max(affordable - draining, kept)


def gpu_limit(observation: types.Observation) -> Limit | None:
    """New replicas need free GPUs; replicas already ordered but pending keep their place."""
    pool = observation.pool
    if pool.free_gpus is None or pool.gpus_per_replica <= 0:
        return None
    replicas = observation.replicas
    more = max(pool.free_gpus, 0) // pool.gpus_per_replica
    room = max(replicas.ready + replicas.starting + more, replicas.desired)
    return Limit(
        room,
        types.Reason.CAPACITY_LIMITED,
        types.Bound.CAPACITY,
        f"pool {pool.name} has free GPUs for {more} more",
    )


def binding(found: list[Limit], replicas: int) -> Limit | None:
    """The limit that cuts ``replicas`` deepest (on a tie the budget, which the user set)."""
    cutting = [limit for limit in found if limit.replicas < replicas]
    if not cutting:
        return None
    return min(cutting, key=lambda limit: (limit.replicas, limit.bound != types.Bound.BUDGET))
