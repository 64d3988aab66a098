"""Several GPU pools in a simulation, and a seeded spot-interruption process.

The fleet can hold replicas on several pools (price, speed factor, quota); each decision's
target is spread over them by the operator's own `thrifty.reconciler.spread`, so the simulator
and the operator place replicas alike. Spot pools are reclaimed by a seeded Poisson process:
each reclaim gives a notice (30-120 s, as AWS gives 2 minutes and Google Cloud 30 s), during
which the pool counts as tainted (its replicas drain and are replaced elsewhere), then the pool's
replicas are gone until the capacity comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from thrifty.api import gpupool
from thrifty.reconciler import spread
from thrifty.sim.fleet import Fleet, ReplicaState

NOTICE_SECONDS = (30.0, 120.0)
"""Google Cloud gives 30 s, AWS 120 s."""
OUTAGE_SECONDS = (600.0, 1800.0)
"""How long reclaimed capacity stays away (10-30 min)."""


@dataclass(frozen=True)
class SimPool:
    """One pool of the simulation: the GPUPool as a user writes it, and its GPUs (None: as many
    as asked for)."""

    name: str
    spec: gpupool.GPUPoolSpec
    gpus: int | None = None


@dataclass(frozen=True)
class Reclaim:
    """One interruption of a spot pool."""

    pool: str
    notice_at: float
    gone_at: float
    back_at: float


def interruptions(
    pools: tuple[SimPool, ...],
    duration_seconds: float,
    per_hour: float,
    seed: int,
) -> tuple[Reclaim, ...]:
    """Reclaims of every Spot pool over ``duration_seconds``: a Poisson process of ``per_hour``
    reclaims an hour per pool, notice and outage drawn from the bands above. Same seed, same
    reclaims."""
    rng = random.Random(seed)
    found = []
    for pool in pools:
        if pool.spec.capacity_type is not gpupool.CapacityType.SPOT or per_hour <= 0:
            continue
        t = 0.0
        while True:
            t += rng.expovariate(per_hour / 3600.0)
            if t >= duration_seconds:
                break
            notice = rng.uniform(*NOTICE_SECONDS)
            outage = rng.uniform(*OUTAGE_SECONDS)
            found.append(Reclaim(pool.name, t, t + notice, t + notice + outage))
            t += notice + outage
    return tuple(sorted(found, key=lambda r: r.notice_at))


UNLIMITED_ROOM = 10_000
"""Replicas a pool without a GPU limit can take: more than any ModelService's maxReplicas."""


def offer(
    pool: SimPool, fleet: Fleet, gpus_per_replica: int, *, tainted: bool, returnable: bool
) -> spread.Offer:
    """One pool of the virtual fleet as the operator's spread sees it: a tainted pool (reclaim
    notice) has no room, and its replicas serve on but count for nothing."""
    limit = fleet.limits[pool.name]
    room = UNLIMITED_ROOM if limit is None else limit // gpus_per_replica
    if tainted:
        room = 0
    current = fleet.in_pool(pool.name) - fleet.in_pool(pool.name, ReplicaState.DRAINING)
    reserved = pool.spec.capacity_type is gpupool.CapacityType.RESERVED
    return spread.Offer(
        name=pool.name,
        capacity_type=pool.spec.capacity_type,
        price_per_gpu_hour=pool.spec.price_per_gpu_hour,
        gpus_per_replica=gpus_per_replica,
        unit=pool.spec.replica_units(),
        room=room,
        reserved=room if reserved else None,
        current=current,
        ready=fleet.in_pool(pool.name, ReplicaState.READY),
        returnable=returnable,
        doomed=current if tainted else 0,
    )
