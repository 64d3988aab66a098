"""How many replicas of one ModelService go to each of its pools: spill, replace, return.

The autoscaler decides how much serving capacity a ModelService needs, in *reference replicas*
(replicas of a GPUPool with `relativeThroughput` 1). This module turns that into replicas per
pool, where a replica on pool p counts as `unit(p)` reference replicas
(`GPUPoolSpec.planned_units`, the one conversion, which the autoscaler's count of ready
replicas uses too): its relative throughput, times on Spot the share of its time a reclaim is
expected to leave it serving (`thrifty.api.spot`: the pool's hazard over the exposure between
the notice and the replacement's cold start), so that spot replicas are over-provisioned by what
a reclaim is expected to take.

Each pass starts from what is asked for now (the per-pool Deployments) and changes as little as
it can, in this order:

1. *Fit*: a pool keeps no more replicas than it can hold now (a full pool or one whose nodes are
   gone loses the excess at once, so no pod waits Pending for GPUs that are gone). Replicas on a
   node that is being reclaimed (tainted, still there) keep serving until it goes but count for
   nothing: their replacements are ordered at once.
2. *Grow*: while the replicas count for less than the target, one more goes to the best pool with
   room: `minOnDemandReplicas` first on pools that are not Spot, then by rank. The rank is the
   list's order (`Ordered`) or the marginal effective price (`Cheapest`): a replica's $/hour (zero
   inside a reservation) over its unit. A full pool spills to the next at once.
3. *Shrink*: while a replica can go and the rest still count for the target, the dearest goes,
   but a ready one only when the ready replicas left still count for the target: a move never
   drops serving capacity (the new replica is ready before the old one drains).
4. *Return*: when nothing else changed and every replica is ready, the dearest replica is
   replaced by enough replicas on a pool cheaper by at least the hysteresis margin, one replica
   at a time (step 3 drains the old one once the new ones are ready). A pool that lost replicas
   recently is not returned to until its return delay has passed, so a flapping spot pool causes
   no churn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from thrifty import cost, explain
from thrifty.api import gpupool

EPSILON = 1e-9
RETURN_MARGIN = 0.10
"""A return needs the new pool's effective price at least 10 % below the old one: a smaller gap
does not pay for the cold start the move costs (and prices that differ by noise cause no churn)."""


@dataclass(frozen=True)
class Offer:
    """One acceptable pool, as this ModelService sees it this pass."""

    name: str
    capacity_type: gpupool.CapacityType
    price_per_gpu_hour: float
    gpus_per_replica: int
    unit: float
    """Reference replicas one replica here counts as (see the module doc)."""
    room: int
    """Replicas of this service the pool can hold now, its own current ones included."""
    reserved: int | None = None
    """Of those, how many fit inside the reservation (Reserved pools; None: not reserved)."""
    current: int = 0
    """Replicas asked for now (the pool's Deployment)."""
    ready: int = 0
    returnable: bool = True
    """False while the pool is inside its return delay after losing replicas."""
    doomed: int = 0
    """Of ``current``, replicas on nodes being reclaimed: they serve until their node goes, but
    count for nothing (their replacements are ordered now) and are never moved or drained."""
    replaced: int = 0
    """Of ``doomed``, those an earlier pass already counted lost and replaced (the status's
    `reclaiming`): a notice lasts several passes, and its replicas are lost once."""

    @property
    def spot(self) -> bool:
        return self.capacity_type is gpupool.CapacityType.SPOT

    def replica_dollars_per_hour(self) -> float:
        return cost.replica_dollars_per_hour(self.gpus_per_replica, self.price_per_gpu_hour)

    def marginal(self, count: int) -> float:
        """Effective $/hour of the replica number ``count + 1`` here, per reference replica."""
        inside = self.reserved is not None and count < self.reserved
        return (0.0 if inside else self.replica_dollars_per_hour()) / self.unit

    def effective(self) -> float:
        """$/hour of a reference replica's throughput here at list price."""
        return self.replica_dollars_per_hour() / self.unit


def unit(
    pool: gpupool.GPUPoolSpec,
    cold_start_seconds: float,
    observed_hazard: float = 0.0,
    throughput: float | None = None,
) -> float:
    """Reference replicas one replica of ``pool`` counts as (`GPUPoolSpec.planned_units`) for
    a service whose replicas take ``cold_start_seconds`` to serve; ``observed_hazard``: the
    pool's reclaims per node-hour as seen (planned with when above the published rate);
    ``throughput``: what the service learned a replica there serves (`thrifty.api.throughput`),
    None: the pool's declared relativeThroughput."""
    return pool.planned_units(cold_start_seconds, observed_hazard, throughput)


@dataclass(frozen=True)
class Move:
    """A change of pools that is a decision of its own (Event reason, message with the cost)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Spread:
    replicas: dict[str, int]
    """Replicas per offered pool, 0 included."""
    capacity_limited: bool
    message: str
    moves: list[Move] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    """Replicas a pool could no longer hold (reclaimed nodes, quota) since the last pass, per
    pool."""


def units(offers: Sequence[Offer], counts: Mapping[str, int]) -> float:
    return sum(o.unit * counts.get(o.name, 0) for o in offers)


def dollars_per_hour(offers: Sequence[Offer], counts: Mapping[str, int]) -> float:
    return cost.sum_dollars_per_hour(
        o.replica_dollars_per_hour() * counts.get(o.name, 0) for o in offers
    )


def _rank(offer: Offer, index: int, count: int, cheapest: bool) -> tuple[float, int]:
    return (offer.marginal(count), index) if cheapest else (0.0, index)


def _describe(offers: Sequence[Offer], counts: Mapping[str, int]) -> str:
    used = [f"{o.name}={counts.get(o.name, 0)}" for o in offers if counts.get(o.name, 0)]
    return " ".join(used) or "none"


def spread(
    offers: Sequence[Offer],
    target: float,
    *,
    cheapest: bool,
    min_on_demand: int,
    cold_start_seconds: float,
    previous_target: float | None = None,
) -> Spread:
    """Replicas per pool for ``target`` reference replicas (see the module doc for the steps)."""
    keep = {o.name: min(o.current - o.doomed, o.room) for o in offers}
    # What earlier passes left, the doomed they already replaced set aside: lost is the rest.
    before = {o.name: o.current - min(o.replaced, o.doomed) for o in offers}
    lost = {name: before[name] - keep[name] for name in keep if before[name] > keep[name]}
    full: set[str] = set()
    added = _grow(offers, keep, target, cheapest, min_on_demand, full)
    removed = _shrink(offers, keep, target, cheapest, min_on_demand)
    returning: tuple[Offer, Offer, int] | None = None
    if not added and not removed and not lost and not any(o.doomed for o in offers):
        returning = _return(offers, keep, cheapest, min_on_demand)
    short = units(offers, keep) + EPSILON < target
    drained = bool(removed) and not added and previous_target == target
    moves = _moves(offers, before, keep, lost, added, full, returning, drained, cold_start_seconds)
    message = f"{_describe(offers, keep)} for {target:g} reference replicas"
    if short:
        rooms = "; ".join(f"{o.name}: room for {o.room} (x{o.unit:g})" for o in offers)
        gpus = offers[0].gpus_per_replica if offers else 0
        message = (
            f"wants {target:g} replicas x {gpus} GPUs = {target * gpus:g} nvidia.com/gpu "
            f"(reference replicas), but all acceptable pools together hold "
            f"{units(offers, keep):g}: {rooms}"
        )
    asked = {o.name: keep[o.name] + o.doomed for o in offers}
    return Spread(asked, short, message, moves, lost)


def _grow(
    offers: Sequence[Offer],
    keep: dict[str, int],
    target: float,
    cheapest: bool,
    min_on_demand: int,
    full: set[str],
) -> dict[str, int]:
    """Adds replicas to the best pools with room; ``full`` gets the better-ranked pools that
    had no room when a replica went elsewhere (the pools spilled from)."""
    added: dict[str, int] = {}
    while True:
        on_demand = sum(keep[o.name] for o in offers if not o.spot)
        need_base = on_demand < min_on_demand
        if units(offers, keep) + EPSILON >= target and not need_base:
            return added
        eligible = [
            (_rank(o, i, keep[o.name], cheapest), o)
            for i, o in enumerate(offers)
            if not (need_base and o.spot)
        ]
        candidates = [(rank, o) for rank, o in eligible if keep[o.name] < o.room]
        if not candidates:
            return added
        best_rank, best = min(candidates, key=lambda c: c[0])
        full.update(o.name for rank, o in eligible if rank < best_rank)
        keep[best.name] += 1
        added[best.name] = added.get(best.name, 0) + 1


def _shrink(
    offers: Sequence[Offer],
    keep: dict[str, int],
    target: float,
    cheapest: bool,
    min_on_demand: int,
) -> dict[str, int]:
    removed: dict[str, int] = {}
    while True:
        total = units(offers, keep)
        ready = sum(o.unit * min(o.ready, keep[o.name]) for o in offers)
        on_demand = sum(keep[o.name] for o in offers if not o.spot)
        dearest = sorted(
            (
                (_rank(o, i, keep[o.name] - 1, cheapest), o)
                for i, o in enumerate(offers)
                if keep[o.name] > 0
            ),
            key=lambda c: c[0],
            reverse=True,
        )
        chosen = None
        for _, o in dearest:
            if total - o.unit + EPSILON < target:
                continue
            if not o.spot and on_demand - 1 < min_on_demand:
                continue
            ready_gone = o.unit if min(o.ready, keep[o.name]) >= keep[o.name] else 0.0
            if ready_gone and ready - ready_gone + EPSILON < min(target, ready):
                break  # the replacement is not ready yet: wait, drain nothing cheaper either
            chosen = o
            break
        if chosen is None:
            return removed
        keep[chosen.name] -= 1
        removed[chosen.name] = removed.get(chosen.name, 0) + 1


def _return(
    offers: Sequence[Offer], keep: dict[str, int], cheapest: bool, min_on_demand: int
) -> tuple[Offer, Offer, int] | None:
    if any(min(o.ready, keep[o.name]) < keep[o.name] for o in offers):
        return None  # something is starting: one move at a time
    used = [(i, o) for i, o in enumerate(offers) if keep[o.name] > 0]
    if not used:
        return None
    on_demand = sum(keep[o.name] for o in offers if not o.spot)
    index, dearest = max(used, key=lambda c: _rank(c[1], c[0], keep[c[1].name] - 1, cheapest))
    if not dearest.spot and on_demand - 1 < min_on_demand:
        return None
    old_price = dearest.marginal(keep[dearest.name] - 1)
    for i, o in sorted(
        enumerate(offers), key=lambda c: _rank(c[1], c[0], keep[c[1].name], cheapest)
    ):
        if o is dearest or not o.returnable:
            continue
        better = (
            o.marginal(keep[o.name]) <= (1 - RETURN_MARGIN) * old_price if cheapest else i < index
        )
        if not better:
            continue
        count = math.ceil(dearest.unit / o.unit - EPSILON)
        if o.room - keep[o.name] >= count:
            keep[o.name] += count
            return dearest, o, count
    return None


def _moves(
    offers: Sequence[Offer],
    before: Mapping[str, int],
    after: Mapping[str, int],
    lost: Mapping[str, int],
    added: Mapping[str, int],
    full: set[str],
    returning: tuple[Offer, Offer, int] | None,
    drained: bool,
    cold_start_seconds: float,
) -> list[Move]:
    """The pass's change of pools as one decision: reason, replicas before and after, $/hour."""
    delta = cost.format_dollars_per_hour_delta(
        dollars_per_hour(offers, after) - dollars_per_hour(offers, before)
    )
    where = f"{_describe(offers, before)} -> {_describe(offers, after)}, {delta}"
    if lost:
        gone = ", ".join(f"{name} lost {count}" for name, count in lost.items())
        new = ", ".join(f"{k} on {n}" for n, k in added.items()) or "none (no pool has room)"
        return [
            Move(
                explain.CAPACITY_RECLAIMED,
                f"{gone}: replacements ordered at once: {new}, serving in about "
                f"{cold_start_seconds:.0f} s (cold start); {where}",
            )
        ]
    if returning is not None:
        old, new_pool, count = returning
        return [
            Move(
                explain.RETURNING,
                f"{count} replica(s) on {new_pool.name} (${new_pool.effective():.2f}/h per "
                f"reference replica) to replace one on {old.name} (${old.effective():.2f}/h), "
                f"which drains once they are ready; {where}",
            )
        ]
    if drained:
        return [Move(explain.RETURNED, f"the replacement is ready, the old one drains; {where}")]
    if full:
        names = [o.name for o in offers if o.name in full]
        new = ", ".join(f"{count} on {name}" for name, count in added.items())
        return [Move(explain.SPILLED, f"{', '.join(names)} full: {new}; {where}")]
    return []
