"""The fleet plan: budgets planned across their members, over many passes."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty import cost
from thrifty.api import costbudget, gpupool, modelservice, throughput
from thrifty.autoscaler import plan
from thrifty.autoscaler.observe import ObserveSettings, PodView
from thrifty.autoscaler.world import ServiceKey, ServiceView, SignalsReading, World
from thrifty.policy import types
from thrifty.policy.planner import ThriftyPolicy

PRICE = 2.5
POOL = gpupool.GPUPool.model_validate(
    {
        "spec": {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"p": "h100"},
            "pricePerGpuHour": PRICE,
        }
    }
)


def member(name: str, replicas: int, priority: int) -> modelservice.ModelService:
    body: dict[str, Any] = {
        "spec": {
            "model": {"uri": "hf://a/b"},
            "pools": ["h100"],
            "replicas": replicas,
            "scaling": {"minReplicas": 1, "maxReplicas": 12, "queueDepthTargetPerReplica": 2},
            "costTarget": {"budgetRef": {"name": "team"}, "budgetPriority": priority},
        },
        "status": {"pool": "h100", "pricePerGpuHour": PRICE},
    }
    return modelservice.ModelService.model_validate(body)


def signals(waiting: float) -> types.Signals:
    return types.Signals(
        requests_waiting=waiting,
        requests_running=20,
        kv_cache_usage=0.5,
        prompt_tokens_per_second=1000 + 100 * waiting,
        generation_tokens_per_second=300,
        requests_per_second=2,
        ttft_p95_seconds=0.3 + waiting / 10,
        sample_age_seconds=2,
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(3, 10),
    st.lists(st.integers(0, 3), min_size=2, max_size=4),
    st.lists(
        st.lists(st.sampled_from([0.0, 5.0, 60.0, 400.0]), min_size=4, max_size=4),
        min_size=8,
        max_size=30,
    ),
)
def test_members_planned_together_never_pass_a_hard_cap(
    cap_replicas: int, priorities: list[int], loads: list[list[float]]
) -> None:
    cap = cap_replicas * PRICE
    names = [f"m{i}" for i in range(len(priorities))]
    replicas = dict.fromkeys(names, 1)
    team = costbudget.CostBudget.model_validate(
        {"spec": {"maxDollarsPerHour": cap, "enforcement": "Hard"}}
    )
    states: dict[str, types.PolicyState] = {}
    policies = plan.Fixed(ThriftyPolicy())
    for tick, load in enumerate(loads):
        views = [
            ServiceView(
                key=ServiceKey("ns", name),
                uid=name,
                model_service=member(name, replicas[name], priorities[i]),
                resource_version="1",
                generation=1,
                pods=[PodView(ready=True, scheduled=True)] * replicas[name],
            )
            for i, name in enumerate(names)
        ]
        world = World(views, {"h100": POOL}, {ServiceKey("ns", "team"): team})
        readings = {
            view.key: SignalsReading(signals(load[i % len(load)]), "read")
            for i, view in enumerate(views)
        }
        decided = plan.decide(world, readings, states, 15.0 * tick, ObserveSettings(), policies)
        for one in decided:
            assert one.decision is not None
            states[one.view.uid] = one.state
            replicas[one.view.key.model_service] = one.decision.replicas
        spend = sum(cost.dollars_per_hour(n, 1, PRICE) for n in replicas.values())
        assert spend <= max(cap, len(names) * PRICE) + 1e-9, (tick, replicas)


def test_a_pass_learns_each_pools_throughput_from_pools_that_served_the_window() -> None:
    """Prefill samples from two pools whose replicas served the whole window: the slower pool's
    measured speed goes to status, and the next pass counts its replicas at it."""
    l4 = POOL.model_copy(
        update={
            "spec": POOL.spec.model_copy(
                update={
                    "accelerator": "NVIDIA-L4",
                    "gpu_memory_gib": 24,
                    "relative_throughput": 1.0,
                }
            )
        }
    )
    base = member("m", 3, 0)
    spec = base.spec.model_copy(
        update={
            "pools": ["h100", "l4"],
            "cost_target": base.spec.cost_target.model_copy(update={"budget_ref": None}),
        }
    )
    ms = base.model_copy(update={"spec": spec})

    def view(ready_for: float) -> ServiceView:
        pods = [
            PodView(ready=True, scheduled=True, pool=name, ready_seconds=ready_for)
            for name in ("h100", "h100", "l4")
        ]
        return ServiceView(ServiceKey("ns", "m"), "m", ms, "1", 1, pods)

    prefill = (
        throughput.PoolPrefill("h100", 40.0, 1_000_000.0, 1000.0),
        throughput.PoolPrefill("l4", 20.0, 250_000.0, 250.0),  # 80 us/token: half as fast
    )
    reading = SignalsReading(signals(0.0), "read", prefill)
    world = World([view(900.0)], {"h100": POOL, "l4": l4})
    [one] = plan.decide(
        world, {view(900.0).key: reading}, {}, 0.0, ObserveSettings(), plan.Fixed(ThriftyPolicy())
    )
    assert [(e.pool, e.relative_throughput) for e in one.pool_throughput or ()] == [("l4", 0.5)]
    after = plan.report(one, "2026-12-05T13:00:00Z").status
    assert after.autoscaler is not None and after.autoscaler.pool_throughput == one.pool_throughput
    # The next pass counts the 3 ready replicas as 1 + 1 + 0.5.
    learned = ms.model_copy(update={"status": after})
    again = World([dataclasses.replace(view(900.0), model_service=learned)], world.pools)
    [two] = plan.decide(again, {}, {}, 15.0, ObserveSettings(), plan.Fixed(ThriftyPolicy()))
    assert two.observation.replicas.serving == 2.5
    # A pool back for 5 minutes only saw part of the window: nothing is measured.
    young = World([view(300.0)], world.pools)
    [three] = plan.decide(
        young, {view(300.0).key: reading}, {}, 0.0, ObserveSettings(), plan.Fixed(ThriftyPolicy())
    )
    assert three.pool_throughput == []


def test_a_latency_target_prometheus_cannot_measure_is_a_condition_and_one_warning() -> None:
    """Requests finish but no TTFT histogram series comes back (its buckets dropped by a metric
    filter): the target cannot be checked. Status says so, and one Warning Event, not one per
    pass; with the histogram back the condition returns to MetricsRead."""
    body = member("m", 2, 0).model_dump(by_alias=True, exclude_none=True)
    body["spec"]["latencyTarget"] = {"timeToFirstTokenSeconds": 2, "percentile": "p90"}
    body["spec"]["costTarget"] = {}
    ms = modelservice.ModelService.model_validate(body)
    blind = dataclasses.replace(signals(0.0), ttft_p95_seconds=None)
    measured = dataclasses.replace(blind, ttft_buckets=((2.0, 10.0), (float("inf"), 10.0)))
    pods = [PodView(ready=True, scheduled=True)] * 2
    status = ms.status

    def one_pass(seen: types.Signals, at: float) -> plan.ServicePlan:
        nonlocal status
        view = ServiceView(ServiceKey("ns", "m"), "m", ms.model_copy(update={"status": status}),
                           "1", 1, pods)  # fmt: skip
        world = World([view], {"h100": POOL})
        reading = {view.key: SignalsReading(seen, "read from Prometheus")}
        [decided] = plan.decide(
            world, reading, {}, at, ObserveSettings(), plan.Fixed(ThriftyPolicy())
        )
        planned = plan.report(decided, "2026-12-06T12:00:00Z")
        status = planned.status
        return planned

    first, second = one_pass(blind, 0.0), one_pass(blind, 15.0)
    warnings = [e for e in (*first.events, *second.events) if e[0] == "Warning"]
    assert [reason for _, reason, _ in warnings] == ["LatencyUnmeasured"]
    assert "2 s at p90" in warnings[0][2] and "time_to_first_token_seconds_bucket" in warnings[0][2]
    metrics = [c for c in second.status.conditions if c.type == "MetricsAvailable"]
    assert metrics[0].status.value == "True" and metrics[0].reason == "LatencyUnmeasured"
    back = one_pass(measured, 30.0)
    metrics = [c for c in back.status.conditions if c.type == "MetricsAvailable"]
    assert metrics[0].reason == "MetricsRead" and not back.events
