"""Reclaims seen on a Spot pool, counted in its status, and the rate they say.

The operator sees a pool's nodes tainted for reclaim (`placement.RECLAIM_TAINTS`). Each such
node is counted once (`GPUPoolStatus.reclaimingNodes` holds the ones counted that are still
there), with the node-hours of the pool's nodes over the same time, so that the rate a pool is
planned with is the larger of the published one and `reclaims / node-hours`
(`thrifty.api.spot.observed_hazard`). Node-hours are folded into the status only when the node
count changes or a reclaim is seen: in between the pool had `status.nodes` nodes since
`nodeHoursAt`, which a reader adds, so counting costs no status write of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from thrifty import explain
from thrifty.api import gpupool, spot
from thrifty.reconciler import placement


def count(
    spec: gpupool.GPUPoolSpec,
    old: gpupool.GPUPoolStatus,
    nodes: Iterable[placement.NodeInfo],
    live_nodes: int,
    *,
    now: str,
    now_seconds: float,
) -> dict[str, Any]:
    """The reclaim fields of a Spot pool's new status (none for another pool): ``old``'s
    counters with the nodes newly tainted for reclaim, and the node-hours up to now when
    the pool's ``live_nodes`` (its Ready, untainted nodes) differ from ``old.nodes``."""
    if not spec.is_spot:
        return {}
    going = sorted(
        n.name for n in nodes if n.reclaiming and placement.matches(n, spec.node_selector)
    )
    new = [name for name in going if name not in old.reclaiming_nodes]
    at = explain.parse_time(old.node_hours_at)
    hours, hours_at = old.node_hours, old.node_hours_at
    if at is None:
        hours_at = now
    elif new or live_nodes != old.nodes:
        hours += old.nodes * max(now_seconds - at, 0.0) / spot.SECONDS_PER_HOUR
        hours_at = now
    return {
        "reclaims": old.reclaims + len(new),
        "reclaims_since": old.reclaims_since or now,
        "node_hours": hours,
        "node_hours_at": hours_at,
        "reclaiming_nodes": going,
    }


def observed_hazard(status: gpupool.GPUPoolStatus | None, now_seconds: float) -> float:
    """Reclaims per node-hour the pool's status says, up to ``now_seconds`` (0: none seen)."""
    if status is None or status.reclaims <= 0:
        return 0.0
    at = explain.parse_time(status.node_hours_at)
    since = 0.0 if at is None else max(now_seconds - at, 0.0)
    hours = status.node_hours + status.nodes * since / spot.SECONDS_PER_HOUR
    return spot.observed_hazard(status.reclaims, hours)
