"""Several GPU pools in a simulation, and a seeded spot-interruption process.

The fleet can hold replicas on several pools (price, speed factor, quota); each decision's
target is spread over them by the operator's own `thrifty.reconciler.spread`, so the simulator
and the operator place replicas alike. Spot pools are reclaimed by a seeded Poisson process:
each reclaim gives a notice (30-120 s, as AWS gives 2 minutes and Google Cloud 30 s), during
which the pool counts as tainted (its replicas drain and are replaced elsewhere), then the pool's
replicas are gone until the capacity comes back.

The simulation learns each spot pool's reclaim hazard as the operator counts it in a GPUPool's
status: nodes reclaimed over node-hours seen (`ReclaimLog`), and plans the pool with it once it
is above the published rate, so a pool reclaimed twice an hour is planned as such from its
first reclaim.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from thrifty.api import gpupool, spot
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
    speed: float | None = None
    """How fast a replica here really is, against the engine profile (prefill and decode alike);
    None: as fast as the spec says (`GPUPoolSpec.speed`). A speed the spec gets wrong is
    what thrifty learns (`thrifty.api.throughput`)."""

    @property
    def true_speed(self) -> float:
        return self.spec.speed if self.speed is None else self.speed


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


@dataclass
class ReclaimLog:
    """Per spot pool: nodes seen reclaimed and node-seconds seen, for `spot.observed_hazard`."""

    reclaimed: dict[str, int] = field(default_factory=dict)
    node_seconds: dict[str, float] = field(default_factory=dict)

    def seen(self, pool: str, nodes: int, seconds: float) -> None:
        """``nodes`` of ``pool`` were up for ``seconds``."""
        if nodes > 0 and seconds > 0:
            self.node_seconds[pool] = self.node_seconds.get(pool, 0.0) + nodes * seconds

    def reclaim(self, pool: str, nodes: int) -> None:
        """A reclaim notice came for the ``nodes`` of ``pool`` in use."""
        if nodes > 0:
            self.reclaimed[pool] = self.reclaimed.get(pool, 0) + nodes

    def hazards(self) -> dict[str, float]:
        """Reclaims per node-hour seen on each pool with a reclaim."""
        return {
            pool: spot.observed_hazard(
                count, self.node_seconds.get(pool, 0.0) / spot.SECONDS_PER_HOUR
            )
            for pool, count in self.reclaimed.items()
        }


def nodes_held(pool: SimPool, gpus: int) -> int:
    """Nodes ``gpus`` GPUs of ``pool`` take (replicas packed onto as few nodes as they fit)."""
    return math.ceil(gpus / pool.spec.gpus_per_node)


UNLIMITED_ROOM = 10_000
"""Replicas a pool without a GPU limit can take: more than any ModelService's maxReplicas."""


def offer(
    pool: SimPool,
    fleet: Fleet,
    gpus_per_replica: int,
    *,
    tainted: bool,
    returnable: bool,
    cold_start_seconds: float,
    observed_hazard: float = 0.0,
    learned: float | None = None,
) -> spread.Offer:
    """One pool of the virtual fleet as the operator's spread sees it: a tainted pool (reclaim
    notice) has no room, and its replicas serve on but count for nothing. Its unit is the
    operator's (`spread.unit`) at the service's cold start, the hazard seen so far and the
    throughput learned there (``learned``; None: the declared one)."""
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
        unit=spread.unit(pool.spec, cold_start_seconds, observed_hazard, learned),
        room=room,
        reserved=room if reserved else None,
        current=current,
        ready=fleet.in_pool(pool.name, ReplicaState.READY),
        returnable=returnable,
        doomed=current if tainted else 0,
    )
