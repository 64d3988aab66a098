"""The fleet plan: budgets planned across their members, over many passes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty import cost
from thrifty.api import costbudget, gpupool, modelservice
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
