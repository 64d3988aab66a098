"""Several pools in the simulator: the operator's spread, per-pool prices, seeded reclaims."""

from __future__ import annotations

import pytest
from sim_policies import FixedPolicy

from thrifty.api import gpupool, modelservice
from thrifty.sim import scenario, traces
from thrifty.sim.pools import (
    NOTICE_SECONDS,
    Reclaim,
    ReclaimLog,
    SimPool,
    interruptions,
    nodes_held,
)
from thrifty.sim.profiles import LLAMA_8B_1xH100
from thrifty.sim.runner import SimulationConfig, simulate

LENGTHS = traces.Trace(
    "lengths", tuple(traces.Request(0.0, p, o) for p, o in [(400, 80), (800, 200)]), 1.0, "test"
)


def pool(name: str, kind: gpupool.CapacityType, price: float, gpus: int | None) -> SimPool:
    spec = gpupool.GPUPoolSpec(
        accelerator="H100",
        gpu_memory_gib=80,
        gpus_per_node=8,
        node_selector={"p": name},
        price_per_gpu_hour=price,
        capacity_type=kind,
    )
    return SimPool(name, spec, gpus)


SPOT = pool("spot", gpupool.CapacityType.SPOT, 1.0, 3)
ON_DEMAND = pool("on-demand", gpupool.CapacityType.ON_DEMAND, 2.5, None)


def config(**overrides: object) -> SimulationConfig:
    ms = scenario.model_service(LLAMA_8B_1xH100, min_replicas=1, max_replicas=12)
    spec = ms.spec.model_copy(
        update={"pools": ["spot", "on-demand"], "placement": modelservice.PlacementPolicy.CHEAPEST}
    )
    values: dict[str, object] = {
        "profile": LLAMA_8B_1xH100,
        "model_service": ms.model_copy(update={"spec": spec}),
        "tail_seconds": 60.0,
        "pools": (SPOT, ON_DEMAND),
        "initial_replicas": 4,
    }
    values.update(overrides)
    return SimulationConfig(**values)  # type: ignore[arg-type]


def steady() -> traces.Trace:
    return traces.synthesize(traces.spike(1.0, 1.0, 1200.0, 600.0, 60.0), LENGTHS, seed=1)


def test_interruptions_are_seeded_spot_only_with_a_notice() -> None:
    pools = (SPOT, ON_DEMAND)
    first = interruptions(pools, 36_000.0, 2.0, seed=7)
    assert first == interruptions(pools, 36_000.0, 2.0, seed=7)
    assert first != interruptions(pools, 36_000.0, 2.0, seed=8)
    assert first and {r.pool for r in first} == {"spot"}
    for reclaim in first:
        assert NOTICE_SECONDS[0] <= reclaim.gone_at - reclaim.notice_at <= NOTICE_SECONDS[1]
        assert reclaim.back_at > reclaim.gone_at
    assert interruptions((ON_DEMAND,), 36_000.0, 2.0, seed=7) == ()


def test_replicas_spread_over_pools_and_each_is_billed_at_its_price() -> None:
    result = simulate(steady(), FixedPolicy(4), config())
    # 3 on spot (its quota), the fourth on on-demand, for the whole 1200 s billed.
    assert result.cost_dollars == pytest.approx((3 * 1.0 + 2.5) * 1200 / 3600, rel=0.01)
    assert result.gpu_hours == pytest.approx(4 * 1200 / 3600, rel=0.01)


def test_a_reclaim_is_replaced_at_the_notice_and_spot_is_used_again_after() -> None:
    reclaim = Reclaim("spot", notice_at=300.0, gone_at=390.0, back_at=600.0)
    result = simulate(
        steady(), FixedPolicy(4), config(reclaims=(reclaim,), return_delay_seconds=60.0)
    )
    assert result.reclaims == 1
    # While spot is away, on-demand holds all 4: more than without the reclaim, less than 4
    # on-demand replicas all along.
    calm = simulate(steady(), FixedPolicy(4), config()).cost_dollars
    assert calm < result.cost_dollars < 4 * 2.5 * 1200 / 3600
    # Never a replica left waiting for GPUs the reclaimed pool no longer has.
    assert all(point.pending == 0 for point in result.series)


def test_the_replacement_starts_at_the_notice_while_the_old_replicas_still_serve() -> None:
    reclaim = Reclaim("spot", notice_at=300.0, gone_at=420.0, back_at=1200.0)
    result = simulate(steady(), FixedPolicy(4), config(reclaims=(reclaim,)))
    during = [p for p in result.series if 300.0 < p.time < 420.0]
    assert during and all(p.ready >= 4 for p in during)  # 3 spot + 1 on-demand still serve
    assert any(p.starting == 3 for p in during)  # the replacements, ordered at the notice


def test_the_reclaim_log_learns_reclaims_per_node_hour() -> None:
    log = ReclaimLog()
    log.seen("spot", 2, 900.0)  # 2 nodes for 15 min: half a node-hour
    assert log.hazards() == {}  # nothing reclaimed: planned at the published rate
    log.reclaim("spot", 1)
    assert log.hazards() == {"spot": 2.0}
    log.reclaim("spot", 0)  # a reclaim of a pool we hold no node of says nothing
    assert log.hazards() == {"spot": 2.0}
    assert nodes_held(SPOT, 9) == 2 and nodes_held(SPOT, 0) == 0


def test_a_pool_reclaimed_once_is_planned_with_the_hazard_seen() -> None:
    """Published rate: 4 spot replicas hold 4 reference replicas. One reclaim after 300 s of one
    node (2 an hour seen, over at least half a node-hour): once spot is back, it is planned with
    what was seen, and holds the 4 with more replicas than before (each counts 0.95 of one:
    exp(-2 x 90 s / 3600))."""
    unlimited = SimPool("spot", SPOT.spec, None)
    reclaim = Reclaim("spot", notice_at=300.0, gone_at=330.0, back_at=360.0)
    options = {"pools": (unlimited, ON_DEMAND), "return_delay_seconds": 0.0}
    calm = simulate(steady(), FixedPolicy(4), config(**options))
    assert calm.series[-1].desired == 4
    stormy = simulate(steady(), FixedPolicy(4), config(reclaims=(reclaim,), **options))
    assert stormy.series[-1].desired > 4


def test_a_pool_slower_than_declared_is_learned_and_sized_for() -> None:
    """The cheap pool is declared as fast as an H100 but its replicas serve 0.6 as fast. Once
    both pools have served for the measurement window, thrifty reads the cheap pool as about 0.6
    of the H100 (the anchor: first of two pools declared alike) by prefill seconds per prompt
    token, and holds 4 reference replicas with one more H100 replica (2 slow count 1.2); told
    not to learn, it keeps counting the slow replicas as H100s."""
    slow = SimPool("slow", pool("slow", gpupool.CapacityType.ON_DEMAND, 1.0, 2).spec, 2, speed=0.6)
    fast = pool("fast", gpupool.CapacityType.ON_DEMAND, 2.5, None)
    ms = scenario.model_service(LLAMA_8B_1xH100, min_replicas=1, max_replicas=12)
    spec = ms.spec.model_copy(
        update={"pools": ["fast", "slow"], "placement": modelservice.PlacementPolicy.CHEAPEST}
    )
    options = {"pools": (fast, slow), "model_service": ms.model_copy(update={"spec": spec})}
    trace = traces.synthesize(traces.spike(2.0, 2.0, 1500.0, 600.0, 60.0), LENGTHS, seed=1)
    learned = simulate(trace, FixedPolicy(4), config(**options))
    assert learned.learned_throughput["slow"] == pytest.approx(0.6, rel=0.1)
    assert learned.series[-1].desired == 5
    assert learned.series[-1].dollars_per_hour == pytest.approx(2 * 1.0 + 3 * 2.5)
    declared = simulate(trace, FixedPolicy(4), config(learn_throughput=False, **options))
    assert declared.learned_throughput == {}
    assert declared.series[-1].desired == 4
    assert declared.series[-1].dollars_per_hour == pytest.approx(2 * 1.0 + 2 * 2.5)
