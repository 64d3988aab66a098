"""Reclaims counted in a Spot pool's status, each node once, with the node-hours they are
counted over, and the rate they say."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from thrifty import explain
from thrifty.api import gpupool
from thrifty.reconciler import placement, reclaims

T0 = 1_800_000_000.0
SPOT = gpupool.GPUPoolSpec(
    accelerator="H100",
    gpu_memory_gib=80,
    gpus_per_node=8,
    node_selector={"p": "spot"},
    price_per_gpu_hour=1.0,
    capacity_type=gpupool.CapacityType.SPOT,
    interruption_rate=0.15,
)


def node(name: str, reclaiming: bool = False, pool: str = "spot") -> placement.NodeInfo:
    return placement.NodeInfo(name, {"p": pool}, 8, reclaiming=reclaiming)


def replica(on: str, owner: str | None = "llama") -> placement.PodInfo:
    labels = {placement.MODEL_SERVICE_LABEL: owner} if owner else {}
    return placement.PodInfo("default", f"{owner}-{on}", on, 8, labels)


def after(
    old: gpupool.GPUPoolStatus,
    nodes: list[placement.NodeInfo],
    at: float,
    held: tuple[str, ...] = ("a", "b", "x"),
) -> Any:
    """The pool's status after a refresh at ``at`` over ``nodes``, a replica on each node named
    in ``held``."""
    live = len(placement.pool_nodes(SPOT, nodes))
    now = explain.now_rfc3339(datetime.fromtimestamp(at, UTC))
    pods = [replica(n.name) for n in nodes if n.name in held]
    counted = reclaims.count(SPOT, old, nodes, pods, now=now, now_seconds=at)
    return old.model_copy(update={"nodes": live, **counted})


def test_each_reclaimed_node_counts_once_over_the_node_hours_seen() -> None:
    start = after(gpupool.GPUPoolStatus(), [node("a"), node("b"), node("x", pool="other")], T0)
    assert (start.reclaims, start.node_hours, start.serving_nodes) == (0, 0.0, 2)
    assert reclaims.observed_hazard(start, T0 + 3600) == 0.0  # none seen: published rate
    # Half an hour later b is tainted: 2 nodes x 0.5 h seen, one reclaim.
    tainted = after(start, [node("a"), node("b", reclaiming=True)], T0 + 1800)
    assert (tainted.reclaims, tainted.node_hours, tainted.serving_nodes) == (1, 1.0, 1)
    assert tainted.reclaiming_nodes == ["b"]
    assert reclaims.observed_hazard(tainted, T0 + 1800) == 1.0
    # The node stays tainted for a while: still one reclaim; one node counted since.
    later = after(tainted, [node("a"), node("b", reclaiming=True)], T0 + 1900)
    assert later == tainted  # nothing to write
    assert reclaims.observed_hazard(later, T0 + 3600) == pytest.approx(1 / 1.5)
    gone = after(later, [node("a")], T0 + 2000)
    assert (gone.reclaims, gone.reclaiming_nodes) == (1, [])
    assert gone.reclaims_since == start.reclaims_since


def test_a_node_autoscaler_taking_an_empty_node_is_no_reclaim() -> None:
    # Karpenter taints a node it consolidates as it taints one the cloud interrupts; the engine
    # pods' do-not-disrupt annotations keep it to nodes without a replica. Those nodes' hours
    # are not counted either: the rate is per node-hour of nodes serving.
    start = after(gpupool.GPUPoolStatus(), [node("a"), node("b")], T0, held=("a",))
    assert (start.serving_nodes, start.nodes) == (1, 2)
    emptied = after(start, [node("a"), node("b", reclaiming=True)], T0 + 1800, held=("a",))
    assert (emptied.reclaims, emptied.reclaiming_nodes) == (0, ["b"])
    assert reclaims.observed_hazard(emptied, T0 + 3600) == 0.0
    # An hour in, a's node goes with its replica: one reclaim over a's hour alone, not b's too.
    lost = after(emptied, [node("a", reclaiming=True)], T0 + 3600, held=("a",))
    assert (lost.reclaims, lost.node_hours, lost.serving_nodes) == (1, 1.0, 0)
    # Nor does a pod that is not a ModelService's make a node serving.
    other = reclaims.count(
        SPOT, start, [node("c", reclaiming=True)], [replica("c", None)], now="x", now_seconds=T0
    )
    assert other["reclaims"] == 0


def test_pools_that_are_not_spot_count_nothing() -> None:
    on_demand = SPOT.model_copy(update={"capacity_type": gpupool.CapacityType.ON_DEMAND})
    counted = reclaims.count(
        on_demand,
        gpupool.GPUPoolStatus(),
        [node("a", True)],
        [replica("a")],
        now="x",
        now_seconds=T0,
    )
    assert counted == {}
    assert reclaims.observed_hazard(None, T0) == 0.0
