"""The policy sizes in reference replicas: one replica on a pool counts as that pool's units.

A ModelService may run on GPUs of different speeds (an H100 pool and an L4 pool) and on spot
capacity that is over-provisioned by what a reclaim is expected to take (`thrifty.api.spot`).
The policy is a black box that returns a replica count; it decides in *reference replicas*
(`relativeThroughput` 1), and the replicas it reads are counted in the same unit: a ready L4
replica at 0.3 counts 0.3. The signals it divides by that count (queue, tokens/s) are then per
reference replica. The unit of a pool is `GPUPoolSpec.planned_units` at the service's prior
cold start (`pool_units`); the reconciler's spread over pools uses the same one at the same
cold start.

A service on a single pool of `relativeThroughput` 1 sees exactly what it saw before pools
could be spread over.

`Claimed` is what this pass already handed out: when many ModelServices scale up in one pass,
each one sees the pools' free GPUs minus what the ones decided before it took, so the pass never
orders more than the pools hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence

from thrifty.api import gpupool, modelservice
from thrifty.autoscaler.observe import PodView
from thrifty.policy import types

EPSILON = 1e-9

Claimed = MutableMapping[str, int]
"""GPUs per pool this pass's decisions already ordered."""

Units = Mapping[str, float]
"""Reference replicas one replica of each pool counts as, for one ModelService."""


def pool_units(
    pools: Mapping[str, gpupool.GPUPool],
    cold_start_seconds: float,
    observed_hazards: Mapping[str, float],
    learned: Mapping[str, float],
) -> dict[str, float]:
    """Each pool's unit for a service whose replicas take ``cold_start_seconds`` to serve, at
    the larger of each pool's published and observed reclaim hazard and at the service's
    learned throughput there when it has one (`GPUPoolSpec.planned_units`, as the reconciler's
    spread counts them)."""
    return {
        name: pool.spec.planned_units(
            cold_start_seconds, observed_hazards.get(name, 0.0), learned.get(name)
        )
        for name, pool in pools.items()
    }


def _unit(units: Units, name: str | None) -> float:
    return units.get(name or "", 1.0)


def _room(pool: gpupool.GPUPool) -> int:
    """GPUs free on the nodes, and those a node autoscaler may still add (an Autoscaled pool)."""
    status = pool.status
    return 0 if status is None else status.gpus_free + status.gpus_provisionable


def replica_counts(
    counts: types.ReplicaCounts,
    pods: Sequence[PodView],
    units: Units,
) -> types.ReplicaCounts:
    """``counts`` (from `observe.replica_counts`) with ready, starting and draining replicas in
    reference replicas. Ready ones are rounded down: the spread meets a target of N with units
    in [N, N + one replica's units), so a fleet that holds its target reads exactly N ready (the
    over-provisioning of spot replicas is not capacity the policy asked for); starting and
    draining ones are rounded to the nearest."""
    live = [pod for pod in pods if not pod.terminating]
    ready = sum(_unit(units, pod.pool) for pod in live if pod.ready)
    starting = sum(_unit(units, pod.pool) for pod in live if pod.scheduled and not pod.ready)
    draining = sum(_unit(units, pod.pool) for pod in pods if pod.terminating and pod.scheduled)
    return types.ReplicaCounts(
        desired=counts.desired,
        ready=math.floor(ready + EPSILON),
        starting=_nearest(starting),
        oldest_starting_seconds=counts.oldest_starting_seconds,
        draining=_nearest(draining),
        ready_units=ready,
    )


def _nearest(units: float) -> int:
    """Half up: 0.5 of a replica is one, 0.3 is none (Python's round() would round 2.5 to 2)."""
    return math.floor(units + 0.5 + EPSILON)


def pool_view(
    ms: modelservice.ModelService,
    pools: Mapping[str, gpupool.GPUPool],
    units: Units,
    counts: types.ReplicaCounts,
    placed_units: float,
    claimed: Mapping[str, int],
) -> types.PoolView:
    """Every acceptable pool as one, in reference replicas: the free GPUs of all (minus what
    this pass claimed and what our own unplaced replicas wait for), and the $/GPU-hour of a
    reference replica that the reconciler's spread plans with (status.pricePerGpuHour)."""
    gpus = ms.spec.engine.gpus_per_replica
    known = [name for name in ms.spec.pools if name in pools]
    status = ms.status or modelservice.ModelServiceStatus()
    main = status.pool if status.pool is not None and status.pool in pools else known[0]
    first = pools[main]
    price = status.price_per_gpu_hour
    if price is None or not status.pools:
        price = first.spec.price_per_gpu_hour / _unit(units, main)
    free: int | None = None
    if all(pools[name].status is not None for name in known):
        room = 0.0
        for name in known:
            left = max(_room(pools[name]) - claimed.get(name, 0), 0)
            room += (left // gpus) * _unit(units, name)
        unplaced = max(counts.desired - placed_units, 0.0)
        free = max(math.floor(room - unplaced + EPSILON), 0) * gpus
    return types.PoolView(
        name=main,
        price_per_gpu_hour=price,
        gpus_per_replica=gpus,
        free_gpus=free,
    )


def placed_units(pods: Sequence[PodView], units: Units) -> float:
    return sum(_unit(units, pod.pool) for pod in pods if pod.scheduled and not pod.terminating)


def claim(
    ms: modelservice.ModelService,
    pools: Mapping[str, gpupool.GPUPool],
    units: Units,
    more: int,
    claimed: Claimed,
) -> None:
    """Records that ``more`` reference replicas were ordered for ``ms``: their GPUs, taken from
    its pools in its order of preference, are no longer free for the rest of this pass."""
    gpus = ms.spec.engine.gpus_per_replica
    left = float(more)
    for name in ms.spec.pools:
        pool = pools.get(name)
        if pool is None or pool.status is None or left <= EPSILON:
            continue
        unit = _unit(units, name)
        free = max(_room(pool) - claimed.get(name, 0), 0) // gpus
        take = min(free, math.ceil(left / unit - EPSILON))
        claimed[name] = claimed.get(name, 0) + take * gpus
        left -= take * unit
