"""Reclaims seen on a Spot pool, counted in its status, and the rate they say.

The operator sees a pool's nodes tainted for reclaim (`placement.RECLAIM_TAINTS`). Each such
node is seen once (`GPUPoolStatus.reclaimingNodes` holds the ones still there) and counted if it
held a ModelService's replica, over the node-hours of the pool's nodes holding one, so that the
rate a pool is planned with is the larger of the published one and `reclaims / node-hours`
(`thrifty.api.spot.observed_hazard`). Engine pods carry the node autoscalers' do-not-disrupt
annotations, so a node autoscaler takes only empty nodes: those are its scale-downs (Karpenter's
consolidation taints them as it taints an interrupted node), not reclaims. The simulator counts
the nodes its replicas hold the same way (`thrifty.sim.pools.ReclaimLog`). Node-hours are folded
into the status only when the count of serving nodes changes or a reclaim is seen: in between
the pool had `status.servingNodes` of them since `nodeHoursAt`, which a reader adds, so counting
costs no status write of its own.
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
    pods: Iterable[placement.PodInfo],
    *,
    now: str,
    now_seconds: float,
) -> dict[str, Any]:
    """The reclaim fields of a Spot pool's new status (none for another pool): ``old``'s
    counters with the serving nodes newly tainted for reclaim, and the node-hours up to now
    when the count of serving nodes differs from ``old.serving_nodes``."""
    if not spec.is_spot:
        return {}
    held = {pod.node_name for pod in pods if pod.model_service is not None and pod.node_name}
    members = [n for n in nodes if placement.matches(n, spec.node_selector)]
    going = sorted(n.name for n in members if n.reclaiming)
    new = [name for name in going if name not in old.reclaiming_nodes and name in held]
    serving = sum(1 for n in members if n.name in held and not n.reclaiming)
    at = explain.parse_time(old.node_hours_at)
    hours, hours_at = old.node_hours, old.node_hours_at
    if at is None:
        hours_at = now
    elif new or serving != old.serving_nodes:
        hours += old.serving_nodes * max(now_seconds - at, 0.0) / spot.SECONDS_PER_HOUR
        hours_at = now
    return {
        "reclaims": old.reclaims + len(new),
        "reclaims_since": old.reclaims_since or now,
        "node_hours": hours,
        "node_hours_at": hours_at,
        "serving_nodes": serving,
        "reclaiming_nodes": going,
    }


def observed_hazard(status: gpupool.GPUPoolStatus | None, now_seconds: float) -> float:
    """Reclaims per node-hour the pool's status says, up to ``now_seconds`` (0: none seen)."""
    if status is None or status.reclaims <= 0:
        return 0.0
    at = explain.parse_time(status.node_hours_at)
    since = 0.0 if at is None else max(now_seconds - at, 0.0)
    hours = status.node_hours + status.serving_nodes * since / spot.SECONDS_PER_HOUR
    return spot.observed_hazard(status.reclaims, hours)
