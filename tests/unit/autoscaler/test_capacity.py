"""The policy sizes in reference replicas over every acceptable pool, and one pass never hands
out the same free GPUs to two ModelServices."""

from __future__ import annotations

from typing import Any

from thrifty.api import gpupool, modelservice
from thrifty.autoscaler import capacity, plan
from thrifty.autoscaler.observe import ObserveSettings, PodView
from thrifty.autoscaler.world import ServiceKey, ServiceView, SignalsReading, World
from thrifty.policy import types
from thrifty.policy.planner import ThriftyPolicy
from thrifty.reconciler import spread


def pool(name: str, price: float, free: int, **spec: Any) -> gpupool.GPUPool:
    return gpupool.GPUPool.model_validate(
        {
            "spec": {
                "accelerator": "GPU",
                "gpuMemoryGib": 80,
                "gpusPerNode": 8,
                "nodeSelector": {"p": name},
                "pricePerGpuHour": price,
                **spec,
            },
            "status": {"nodes": 1, "gpusAllocatable": free, "gpusFree": free},
        }
    )


POOLS = {
    "h100": pool("h100", 4.0, 2),
    "l4": pool("l4", 0.8, 8, relativeThroughput=0.25),
}
UNITS = capacity.pool_units(POOLS, 120.0, {}, {})


def service(name: str = "svc", replicas: int = 2, pools: list[str] | None = None) -> Any:
    return modelservice.ModelService.model_validate(
        {
            "spec": {
                "model": {"uri": "hf://a/b"},
                "pools": pools or ["h100", "l4"],
                "replicas": replicas,
                "scaling": {"minReplicas": 1, "maxReplicas": 40, "queueDepthTargetPerReplica": 2},
            },
            "status": {"pool": "h100"},
        }
    )


def test_replicas_of_a_slower_pool_count_in_its_units() -> None:
    pods = [
        PodView(ready=True, scheduled=True, pool="h100"),
        *[PodView(ready=True, scheduled=True, pool="l4")] * 4,
        PodView(ready=False, scheduled=True, starting_seconds=5, pool="l4"),
        PodView(ready=False, scheduled=True, starting_seconds=5, pool="l4"),
    ]
    counts = capacity.replica_counts(types.ReplicaCounts(3, 5, 2), pods, UNITS)
    assert (counts.desired, counts.ready, counts.starting) == (3, 2, 1)  # 1 + 4 x 0.25; 0.5
    # What they serve is divided by what they are worth, not by the rounded count.
    assert counts.serving == 2.0
    one_more = capacity.replica_counts(types.ReplicaCounts(3, 6, 1), [*pods, pods[1]], UNITS)
    assert (one_more.ready, one_more.serving) == (2, 2.25)


def test_a_learned_throughput_replaces_the_declared_one_in_the_units() -> None:
    assert capacity.pool_units(POOLS, 120.0, {}, {"l4": 0.5}) == {"h100": 1.0, "l4": 0.5}


def test_free_gpus_are_those_of_every_acceptable_pool_in_reference_replicas() -> None:
    ms = service(replicas=1)
    counts = types.ReplicaCounts(1, 1, 0)
    view = capacity.pool_view(ms, POOLS, UNITS, counts, 1.0, {})
    assert view.free_gpus == 4  # 2 H100 + 8 L4 x 0.25
    assert view.price_per_gpu_hour == 4.0  # status says nothing yet: the main pool's, over 1
    only_h100 = capacity.pool_view(service(pools=["h100"]), POOLS, UNITS, counts, 1.0, {})
    assert only_h100.free_gpus == 2


def test_one_pass_never_orders_more_than_the_pools_hold() -> None:
    """Five services want many more replicas in the same pass; 2 H100 GPUs are free: the
    decisions together order at most 2 (the first one decided takes them)."""
    pools = {"h100": pool("h100", 4.0, 2)}
    names = [f"s{i}" for i in range(5)]
    views = [
        ServiceView(
            key=ServiceKey("ns", name),
            uid=name,
            model_service=service(name, replicas=1, pools=["h100"]),
            resource_version="1",
            generation=1,
            pods=[PodView(ready=True, scheduled=True, pool="h100")],
        )
        for name in names
    ]
    flood = types.Signals(
        requests_waiting=400,
        requests_running=200,
        kv_cache_usage=0.99,
        prompt_tokens_per_second=20000,
        generation_tokens_per_second=3000,
        requests_per_second=40,
        ttft_p95_seconds=9,
        sample_age_seconds=1,
    )
    readings = {view.key: SignalsReading(flood, "read") for view in views}
    decided = plan.decide(
        World(views, pools), readings, {}, 0.0, ObserveSettings(), plan.Fixed(ThriftyPolicy())
    )
    more = sum((d.decision.replicas if d.decision else 1) - 1 for d in decided)
    assert more == 2, [d.decision.replicas if d.decision else None for d in decided]


def test_the_autoscaler_counts_in_the_units_the_spread_placed_with() -> None:
    """A spot pool reclaimed twice an hour, a 300 s cold start: the spread meets 4 reference
    replicas with 5 spot replicas (0.86 each), and the autoscaler reads those 5 as the 4 it
    asked for, not as 5 (which would shrink the over-provisioning away)."""
    spot = pool("spot", 1.0, 8, capacityType="Spot", interruptionRate=0.15)
    pools = {"spot": spot}
    hazards = {"spot": 2.0}
    offer = spread.Offer(
        "spot", spot.spec.capacity_type, 1.0, 1, spread.unit(spot.spec, 300.0, 2.0), room=8
    )
    placed = spread.spread([offer], 4.0, cheapest=True, min_on_demand=0, cold_start_seconds=300)
    assert placed.replicas == {"spot": 5}
    assert capacity.pool_units(pools, 300.0, hazards, {}) == {"spot": offer.unit}
    ms = modelservice.ModelService.model_validate(
        {
            "spec": {
                "model": {"uri": "hf://a/b"},
                "pools": ["spot"],
                "replicas": 4,
                "scaling": {"minReplicas": 1, "maxReplicas": 40, "coldStartSeconds": 300},
            },
            "status": {"pool": "spot"},
        }
    )
    view = ServiceView(
        key=ServiceKey("ns", "svc"),
        uid="svc",
        model_service=ms,
        resource_version="1",
        generation=1,
        pods=[PodView(ready=True, scheduled=True, pool="spot")] * placed.replicas["spot"],
    )
    policy = plan.Fixed(ThriftyPolicy())
    [seen] = plan.decide(
        World([view], pools, observed_hazards=hazards), {}, {}, 0.0, ObserveSettings(), policy
    )
    assert seen.observation.replicas.ready == 4
    [calm] = plan.decide(World([view], pools), {}, {}, 0.0, ObserveSettings(), policy)
    assert calm.observation.replicas.ready == 5  # published rate only: 5 x 1.0
