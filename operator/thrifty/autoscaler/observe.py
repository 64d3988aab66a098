"""From what the cluster says about one ModelService to the `Observation` its policy decides on.

The autoscaler reads Kubernetes objects and Prometheus; the policy wants frozen numbers in its own
units. This module is the translation, kept pure so that its choices are tested without a cluster:
which replica count is "desired" when nobody set one, which pods count as starting (scheduled, not
ready) and which as merely ordered (not yet placed, so their cold start has not begun), how many
more GPUs the pool can really give (its free GPUs minus those our own unplaced pods already wait
for), and how a team's CostBudget tightens a member's cost target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from thrifty.api import costbudget, gpupool, modelservice, throughput
from thrifty.policy import types


@dataclass(frozen=True)
class PodView:
    """One replica pod, as the autoscaler sees it (finished pods are left out by the reader)."""

    ready: bool
    scheduled: bool
    """Bound to a node: its cold start (image, weights, compile) is under way or done."""
    starting_seconds: float = 0.0
    """Time since it was scheduled (0 when not scheduled)."""
    terminating: bool = False
    """Deleted but not gone (deletionTimestamp set): finishing its requests, still on its GPUs."""
    cold_start_seconds: float | None = None
    """For a ready pod: how long it took from scheduled to ready (its measured cold start)."""
    pool: str | None = None
    """The GPUPool it was placed on (`thrifty.autoscaler.capacity` counts it in that pool's
    units); None: unknown, it counts as one reference replica."""
    ready_seconds: float | None = None
    """For a ready pod: how long it has been Ready (None: not ready, or unknown)."""


@dataclass(frozen=True)
class ObserveSettings:
    """What the API does not carry but the policy needs, with the reason for each default."""

    cold_start_seconds: float = 120.0
    """Order-to-serving time of a replica when its spec does not say (scaling.coldStartSeconds):
    8B weights from a warm cache and CUDA graphs take ~2 min on an H100 (shared reference
    h100-capacity-and-prices.md)."""
    staleness_limit_seconds: float = 60.0
    """Older metrics mean scrapes are failing: hold rather than act on them (4 scrapes of 15 s)."""


def desired_replicas(ms: modelservice.ModelService) -> int:
    """The scale target: spec.replicas, else what the reconciler last deployed, within bounds."""
    scaling = ms.spec.scaling
    if ms.spec.replicas is not None:
        wanted = ms.spec.replicas
    elif ms.status is not None:
        wanted = ms.status.desired_replicas
    else:
        wanted = scaling.min_replicas
    return min(max(wanted, scaling.min_replicas), scaling.max_replicas)


def replica_counts(desired: int, pods: Sequence[PodView]) -> types.ReplicaCounts:
    """Terminating pods count only as draining, and only when placed (an unplaced one holds no
    GPU): they no longer serve, but still cost, so a $/hour cap must see them."""
    live = [pod for pod in pods if not pod.terminating]
    ready = sum(1 for pod in live if pod.ready)
    starting = [pod for pod in live if pod.scheduled and not pod.ready]
    oldest = max((pod.starting_seconds for pod in starting), default=0.0)
    return types.ReplicaCounts(
        desired=desired,
        ready=ready,
        starting=len(starting),
        oldest_starting_seconds=oldest,
        draining=sum(1 for pod in pods if pod.terminating and pod.scheduled),
    )


def placed_pool_name(ms: modelservice.ModelService) -> str:
    """The pool the replicas run on, or the first acceptable one before placement."""
    if ms.status is not None and ms.status.pool:
        return ms.status.pool
    return ms.spec.pools[0]


def pool_view(
    name: str,
    pool: gpupool.GPUPool,
    gpus_per_replica: int,
    unplaced_replicas: int,
) -> types.PoolView:
    """The pool as the policy needs it. Free GPUs exclude those our unplaced replicas wait for."""
    free: int | None = None
    if pool.status is not None:  # what the nodes have, and what a node autoscaler may add
        room = pool.status.gpus_free + pool.status.gpus_provisionable
        free = max(room - unplaced_replicas * gpus_per_replica, 0)
    return types.PoolView(
        name=name,
        price_per_gpu_hour=pool.spec.price_per_gpu_hour,
        gpus_per_replica=gpus_per_replica,
        free_gpus=free,
    )


def _tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


MIN_COLD_START_SECONDS = 1.0
MAX_COLD_START_SECONDS = 86400.0


def measured_cold_start(pods: Sequence[PodView]) -> float | None:
    """The median scheduled-to-ready time of the ready replicas, or None when none was measured.

    The replicas that serve now started on this model, image, engine arguments and GPU type, so
    they say what the next one will take better than any setting (the median: one replica that
    waited on a cold image cache does not set the rule)."""
    measured = sorted(
        min(max(pod.cold_start_seconds, MIN_COLD_START_SECONDS), MAX_COLD_START_SECONDS)
        for pod in pods
        if pod.ready and not pod.terminating and pod.cold_start_seconds is not None
    )
    if not measured:
        return None
    middle = len(measured) // 2
    if len(measured) % 2:
        return measured[middle]
    return (measured[middle - 1] + measured[middle]) / 2


def cold_start_seconds(
    ms: modelservice.ModelService, settings: ObserveSettings, pods: Sequence[PodView] = ()
) -> float:
    """What a new replica will take to serve: measured on the ready replicas, else the spec's
    prior (scaling.coldStartSeconds), else the operator's default."""
    measured = measured_cold_start(pods)
    if measured is not None:
        return measured
    return float(ms.spec.scaling.cold_start_seconds or settings.cold_start_seconds)


def policy_spec(
    ms: modelservice.ModelService,
    settings: ObserveSettings,
    budget: costbudget.CostBudget | None = None,
    pods: Sequence[PodView] = (),
) -> types.PolicySpec:
    """The spec in the policy's units. A Hard team budget's $/1M tokens cap binds each member: if
    every member stays under it, so does the team. The cold start is measured on `pods` when any
    ready one says how long it took."""
    spec = ms.spec
    scaling = spec.scaling
    team_cap = None
    if budget is not None and budget.spec.enforcement is types.Enforcement.HARD:
        team_cap = budget.spec.max_dollars_per_million_tokens
    idle = scaling.scale_to_zero_idle_seconds if scaling.min_replicas == 0 else None
    return types.PolicySpec(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        queue_target_per_replica=scaling.queue_depth_target_per_replica,
        scale_down_delay_seconds=float(scaling.scale_down_delay_seconds),
        scale_to_zero_idle_seconds=None if idle is None else float(idle),
        ttft_target_seconds=spec.latency_target.seconds,
        ttft_target_quantile=spec.latency_target.quantile,
        max_dollars_per_hour=spec.cost_target.max_dollars_per_hour,
        max_dollars_per_million_tokens=_tighter(
            spec.cost_target.max_dollars_per_million_tokens, team_cap
        ),
        enforcement=spec.cost_target.enforcement,
        soft_overrun_fraction=spec.cost_target.soft_overrun_fraction,
        cold_start_seconds=cold_start_seconds(ms, settings, pods),
        staleness_limit_seconds=settings.staleness_limit_seconds,
        capacity_tokens_per_second_per_replica=None,
        max_num_seqs_per_replica=spec.engine.max_num_seqs,
        replica_shape=replica_shape(ms),
    )


def replica_shape(ms: modelservice.ModelService) -> str:
    """What one replica's speed depends on: its pools (GPU types), the model and engine arguments.

    What the policy learned about a replica (capacity, base latency) is reset when this changes.
    Over several pools it learns in reference replicas (`thrifty.autoscaler.capacity`), which a
    move between them does not change: the acceptable pools are the shape, not where most of
    the replicas are this minute (a spot reclaim would otherwise forget the capacity at the
    moment a backlog needs it most). One pool: the same shape as before pools were spread."""
    return f"{'+'.join(sorted(ms.spec.pools))}/{throughput.engine_digest(ms.spec)}"


def policy_state(ms: modelservice.ModelService) -> types.PolicyState:
    """The state the policy returned last tick, as persisted in status (empty on first sight)."""
    if ms.status is None or ms.status.autoscaler is None:
        return {}
    state: Mapping[str, types.JSONValue] | None = ms.status.autoscaler.policy_state
    return dict(state) if state else {}


def observation(
    ms: modelservice.ModelService,
    *,
    now_seconds: float,
    pods: Sequence[PodView],
    pool_name: str,
    pool: gpupool.GPUPool,
    signals: types.Signals | None,
    settings: ObserveSettings,
    budget: costbudget.CostBudget | None = None,
    budget_dollars_per_hour_available: float | None = None,
) -> types.Observation:
    """One ModelService at one tick. `now_seconds` is wall-clock epoch time, because the policy
    state it stamps survives operator restarts and moves between operator replicas."""
    desired = desired_replicas(ms)
    gpus_per_replica = ms.spec.engine.gpus_per_replica
    placed = sum(1 for pod in pods if pod.scheduled and not pod.terminating)
    spec = policy_spec(ms, settings, budget, pods)
    on_nodes = pool.status.gpus_free if pool.status is not None else 0
    node_wait = pool.spec.node_wait_seconds(on_nodes, gpus_per_replica)
    if node_wait:  # the next replica waits for a new node first: part of its cold start
        spec = dataclasses.replace(spec, cold_start_seconds=spec.cold_start_seconds + node_wait)
    return types.Observation(
        now_seconds=now_seconds,
        signals=signals,
        replicas=replica_counts(desired, pods),
        pool=pool_view(pool_name, pool, gpus_per_replica, max(desired - placed, 0)),
        spec=spec,
        budget_dollars_per_hour_available=budget_dollars_per_hour_available,
    )
