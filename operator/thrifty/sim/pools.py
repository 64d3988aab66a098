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
