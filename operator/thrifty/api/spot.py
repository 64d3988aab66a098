"""What a spot reclaim is expected to take from a replica: the exposure model.

A reclaim hurts the SLO only between the node going and its replacement serving. thrifty orders
the replacement when the notice comes (the reclaim taint), so the capacity is missing for

    exposure = max(0, replacement ready time - notice)

seconds, the ready time being the service's cold start (plus the node wait of an Autoscaled
pool). Clouds publish a *monthly* fraction `r` of a pool's nodes reclaimed (AWS Spot Instance
Advisor: H100 0.10-0.20); as a constant per-node hazard that is `-ln(1 - r) / 730` per hour.
A replica is then missing its capacity for a share `1 - exp(-hazard x exposure)` of the time
(each reclaim costs `exposure` seconds, and they come at `hazard` per hour), so a spot replica
counts `exp(-hazard x exposure)` of its throughput when sizing, to the nearest percent: at
published rates that is 1 (0.99999 before rounding), at an observed two reclaims an hour and a
270 s exposure it is 0.86.

Pure arithmetic; `GPUPoolSpec.planned_units` applies it to a pool (the one conversion).
"""

from __future__ import annotations

import math

HOURS_PER_MONTH = 730.0
"""8,760 hours a year over 12: the month the clouds' monthly interruption bands mean."""
SECONDS_PER_HOUR = 3600.0
PRECISION = 0.01
"""Units are planned to 1 % of a replica's throughput. A smaller expected loss is noise against
a throughput prior given to one or two digits, and the spread meets a target by whole replicas:
10 reference replicas at 0.99999 each would take an 11th replica to cover 0.0001 of one."""
MIN_NODE_HOURS = 0.5
"""The least node-hours a rate is estimated over: one reclaim seen counts as at most two an
hour. A first reclaim after a few node-minutes says the pool is reclaimed often, not that it is
reclaimed every few minutes (the estimate from one event is that noisy), and two an hour is
already a pool no published band comes near."""
MIN_SURVIVAL = 0.5
"""A spot replica counts at least half its throughput: a pool that loses more than half its
time to reclaims is no capacity to plan on, and a unit of 0 would make its price infinite."""


def hazard_from_monthly(fraction: float) -> float:
    """Reclaims per node-hour from the monthly fraction of nodes reclaimed (a constant hazard
    over 730 hours leaves ``1 - fraction`` of the nodes); infinite at a fraction of 1."""
    if fraction >= 1.0:
        return math.inf
    return -math.log1p(-max(fraction, 0.0)) / HOURS_PER_MONTH


def observed_hazard(reclaims: int, node_hours: float) -> float:
    """Reclaims per node-hour as seen: nodes reclaimed over node-hours of nodes seen, at least
    `MIN_NODE_HOURS` of them (0 before any reclaim)."""
    if reclaims <= 0:
        return 0.0
    return reclaims / max(node_hours, MIN_NODE_HOURS)


def exposure_seconds(ready_seconds: float, notice_seconds: float) -> float:
    """Seconds a reclaimed replica's capacity is missing: its replacement, ordered at the
    notice, serves ``ready_seconds`` later, while the old one serves through the notice."""
    return max(0.0, ready_seconds - notice_seconds)


def survival(hazard_per_hour: float, exposure: float) -> float:
    """The share of a spot replica's throughput that sizing counts on: ``exp(-hazard x
    exposure)`` to the nearest `PRECISION`, at least `MIN_SURVIVAL`. 1 when the notice covers
    the replacement's start, and at published rates (a loss under half a percent)."""
    if exposure <= 0.0 or hazard_per_hour <= 0.0:
        return 1.0
    if math.isinf(hazard_per_hour):
        return MIN_SURVIVAL
    kept = math.exp(-hazard_per_hour * exposure / SECONDS_PER_HOUR)
    return max(round(round(kept / PRECISION) * PRECISION, 6), MIN_SURVIVAL)
