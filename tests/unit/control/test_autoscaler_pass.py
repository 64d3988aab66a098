"""One fleet pass end to end with the real policy, against fakes of the cluster seams.

The fakes keep what was written and fail loudly on a write the scenario forbids, so "Advisory never
touches replicas" is a test that can fail. The two-process and Prometheus-backed versions of these
scenarios run against a real cluster in e2e/test_autoscale.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from thrifty.adapters.kube import Conflict
from thrifty.adapters.operator_metrics import OperatorMetrics
from thrifty.api import costbudget, gpupool, modelservice
from thrifty.autoscaler.observe import ObserveSettings, PodView
from thrifty.autoscaler.world import ServiceKey, ServiceView, SignalsReading, World
from thrifty.control.fleet import FleetPass
from thrifty.control.loops import Loop
from thrifty.control.policies import Registry
from thrifty.policy import types

NS = "team"


def ms_body(name: str, mode: str = "Auto", replicas: int = 1, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": "hf://org/model"},
        "pools": ["h100"],
        "replicas": replicas,
        "scaling": {"minReplicas": 1, "maxReplicas": 6, "queueDepthTargetPerReplica": 4},
        "mode": mode,
        **extra,
    }
    spec["scaling"]["mode"] = spec.pop("mode")
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {
            "namespace": NS,
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "10",
            "generation": 1,
        },
        "spec": spec,
        "status": {"pool": "h100", "pricePerGpuHour": 2.5, "dollarsPerHour": 2.5 * replicas},
    }


POOL = {
    "spec": {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"thrifty.dev/pool": "h100"},
        "pricePerGpuHour": 2.5,
    },
    "status": {"gpusAllocatable": 16, "gpusUsed": 1, "gpusFree": 15},
}


class FakeCluster:
    def __init__(self, bodies: list[dict[str, Any]], *, scaling_allowed: bool = True) -> None:
        self.bodies = {b["metadata"]["name"]: b for b in bodies}
        self.scaling_allowed = scaling_allowed
        self.budget: dict[str, Any] | None = None
        self.hpas: list[str] = []
        self.scaled: list[tuple[str, int]] = []
        self.statuses: list[tuple[str, dict[str, Any], str]] = []

    def read_model_service(self, namespace: str, name: str) -> dict[str, Any]:
        return self.bodies[name]

    def patch_scale(self, namespace: str, name: str, replicas: int) -> str:
        if not self.scaling_allowed:
            raise AssertionError(f"scaled {name} to {replicas} where replicas must not be touched")
        self.scaled.append((name, replicas))
        self.bodies[name]["spec"]["replicas"] = replicas
        self.bodies[name]["metadata"]["resourceVersion"] = "11"
        return "11"

    def world(self) -> World:
        """What kopf's caches would hold: every body, its ready pods, the pool, the budget."""
        services = []
        for name, body in self.bodies.items():
            replicas = int(body["spec"]["replicas"])
            services.append(
                ServiceView(
                    key=ServiceKey(NS, name),
                    uid=body["metadata"]["uid"],
                    model_service=modelservice.ModelService.model_validate(body),
                    resource_version=body["metadata"]["resourceVersion"],
                    generation=1,
                    pods=[PodView(ready=True, scheduled=True)] * replicas,
                    hpas=self.hpas,
                )
            )
        budgets = {}
        if self.budget is not None:
            budgets[ServiceKey(NS, "team")] = costbudget.CostBudget.model_validate(self.budget)
        pools = {"h100": gpupool.GPUPool.model_validate(POOL)}
        return World(services=services, pools=pools, budgets=budgets)

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> None:
        self.statuses.append((name, dict(status), resource_version))
        self.bodies[name]["status"] = {**self.bodies[name]["status"], **status}


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.posted.append((reason, message))


class FakeSignals:
    def __init__(self, waiting: float, kv_cache_usage: float = 0.9, running: float = 30) -> None:
        self.waiting = waiting
        self.kv_cache_usage = kv_cache_usage
        self.running = running
        self.per_pool: list[bool] = []

    async def read_all(
        self, keys: Iterable[ServiceKey], per_pool: bool = True
    ) -> dict[ServiceKey, SignalsReading]:
        self.per_pool.append(per_pool)
        signals = types.Signals(
            requests_waiting=self.waiting,
            requests_running=self.running,
            kv_cache_usage=self.kv_cache_usage,
            prompt_tokens_per_second=3000,
            generation_tokens_per_second=800,
            requests_per_second=3,
            ttft_p95_seconds=2.0,
            sample_age_seconds=1,
        )
        return {key: SignalsReading(signals, "read") for key in keys}


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def autoscaler(
    cluster: FakeCluster, waiting: float = 40, signals: FakeSignals | None = None
) -> tuple[FleetPass, FakeEvents]:
    events = FakeEvents()
    scaler = FleetPass(
        cluster=cluster,
        events=events,
        prometheus=signals or FakeSignals(waiting),
        metrics=OperatorMetrics(),
        observe_settings=ObserveSettings(),
        policies=Registry(),
    )
    return scaler, events


def tick(scaler: FleetPass, cluster: FakeCluster, seconds: float = 0.0) -> None:
    asyncio.run(scaler.run_once(cluster.world(), NOW + timedelta(seconds=seconds)))


def test_auto_scales_through_the_scale_subresource_then_writes_status_and_an_event() -> None:
    cluster = FakeCluster([ms_body("chat")])
    scaler, events = autoscaler(cluster)
    tick(scaler, cluster)
    assert cluster.scaled and cluster.scaled[0][1] > 1
    _, status, version = cluster.statuses[0]
    assert version == "11", "the status patch is guarded by the version the scale returned"
    assert status["autoscaler"]["lastDecision"]["reason"] == "ScaleUp"
    assert status["queueDepth"] == 40
    assert [reason for reason, _ in events.posted] == ["ScaleUp"]


def test_advisory_reports_and_never_touches_replicas() -> None:
    cluster = FakeCluster([ms_body("chat", mode="Advisory")], scaling_allowed=False)
    scaler, events = autoscaler(cluster)
    tick(scaler, cluster)
    decision = cluster.statuses[0][1]["autoscaler"]["lastDecision"]
    assert decision["message"].startswith("Advisory:")
    assert decision["replicas"] > 1
    assert [reason for reason, _ in events.posted] == ["AdvisedScaleUp"]
    tick(scaler, cluster, 15)  # the same advice again: no second Event
    assert len(events.posted) == 1


def test_an_hpa_on_the_model_service_turns_auto_into_advisory() -> None:
    cluster = FakeCluster([ms_body("chat")], scaling_allowed=False)
    cluster.hpas = ["chat-hpa"]
    scaler, _ = autoscaler(cluster)
    tick(scaler, cluster)
    assert "chat-hpa" in cluster.statuses[0][1]["autoscaler"]["lastDecision"]["message"]


def test_manual_decides_nothing_but_reports_the_metrics() -> None:
    cluster = FakeCluster([ms_body("chat", mode="Manual")], scaling_allowed=False)
    scaler, events = autoscaler(cluster)
    tick(scaler, cluster)
    status = cluster.statuses[0][1]
    assert status["queueDepth"] == 40
    assert "lastDecision" not in status["autoscaler"]
    assert events.posted == []


def test_a_follower_runs_no_pass_at_all() -> None:
    asked: list[bool] = []
    done = asyncio.Event()

    async def work() -> None:
        raise AssertionError("a follower ran a pass")

    def acting() -> bool:
        asked.append(False)
        if len(asked) == 3:
            done.set()
        return False

    async def scenario() -> None:
        ready = asyncio.Event()
        ready.set()
        task = asyncio.create_task(Loop("test", 0.01, work, acting).run(ready))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()

    asyncio.run(scenario())
    assert len(asked) >= 3


def test_a_failing_pass_does_not_stop_the_loop() -> None:
    passes: list[int] = []
    done = asyncio.Event()

    async def work() -> None:
        passes.append(1)
        if len(passes) == 2:
            done.set()
        raise RuntimeError("boom")

    async def scenario() -> None:
        ready = asyncio.Event()
        ready.set()
        task = asyncio.create_task(Loop("test", 0.01, work, lambda: True).run(ready))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()

    asyncio.run(scenario())
    assert len(passes) >= 2


def test_an_unchanged_world_writes_no_second_status() -> None:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    scaler, _ = autoscaler(cluster, signals=FakeSignals(0, kv_cache_usage=0.2, running=4))
    for seconds in range(0, 150, 15):  # first sight, then the capacity learned after 120 s
        tick(scaler, cluster, seconds)
    settled = len(cluster.statuses)
    for seconds in range(150, 900, 15):
        tick(scaler, cluster, seconds)
    assert len(cluster.statuses) == settled, "a settled ModelService writes nothing"


def test_a_hard_team_budget_caps_the_member_and_reports_budget_limited() -> None:
    chat = ms_body("chat", costTarget={"budgetRef": {"name": "team"}})
    batch = ms_body("batch", replicas=2, costTarget={"budgetRef": {"name": "team"}})
    cluster = FakeCluster([chat, batch])
    cluster.budget = {"spec": {"maxDollarsPerHour": 7.5, "enforcement": "Hard"}}
    scaler, _ = autoscaler(cluster)
    tick(scaler, cluster)
    # $7.50/h minus batch's $5.00/h leaves chat one $2.50 replica: it may not grow.
    assert cluster.scaled == []
    chat_status = next(status for name, status, _ in cluster.statuses if name == "chat")
    conditions = {c["type"]: c for c in chat_status["conditions"]}
    assert conditions["BudgetLimited"]["status"] == "True"


def test_the_policy_state_stays_in_memory_and_is_checkpointed_on_flush() -> None:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    scaler, _ = autoscaler(cluster, waiting=0)
    for seconds in (0, 15, 30):
        tick(scaler, cluster, seconds)
    writes = len(cluster.statuses)
    assert scaler.states["uid-chat"], "the state is carried in memory between passes"
    assert asyncio.run(scaler.flush()) == 1
    assert len(cluster.statuses) == writes + 1
    assert cluster.statuses[-1][1]["autoscaler"]["policyState"] == dict(scaler.states["uid-chat"])
    assert asyncio.run(scaler.flush()) == 0, "status already holds it"


def test_a_deleted_model_service_is_forgotten() -> None:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    scaler, _ = autoscaler(cluster, waiting=0)
    tick(scaler, cluster)
    assert "uid-chat" in scaler.states
    del cluster.bodies["chat"]
    tick(scaler, cluster, 15)
    assert scaler.states == {} and scaler.statuses == {}


def test_a_status_write_lost_to_the_reconciler_is_retried_on_the_fresh_object() -> None:
    cluster = FakeCluster([ms_body("chat")])
    conflicts = [Conflict("409 the reconciler wrote first")]
    write = cluster.patch_status

    def racing(namespace: str, name: str, status: Mapping[str, Any], version: str) -> None:
        if conflicts:
            cluster.bodies[name]["metadata"]["resourceVersion"] = "12"
            raise conflicts.pop()
        write(namespace, name, status, version)

    cluster.patch_status = racing  # type: ignore[method-assign,assignment]
    scaler, _ = autoscaler(cluster)
    tick(scaler, cluster)
    assert cluster.scaled
    _, status, version = cluster.statuses[0]
    assert version == "12"
    assert status["autoscaler"]["lastScaleTime"]


def test_the_spec_chooses_the_policy_and_its_parameters() -> None:
    static = ms_body("chat", replicas=1)
    static["spec"]["scaling"]["policy"] = {"name": "static", "parameters": {"replicas": 3}}
    cluster = FakeCluster([static])
    scaler, _ = autoscaler(cluster)
    tick(scaler, cluster)
    assert cluster.scaled == [("chat", 3)]


def test_an_advisory_policy_is_reported_beside_the_decision_and_never_applied() -> None:
    body = ms_body("chat", replicas=2)
    body["spec"]["scaling"]["policy"] = {"name": "static", "parameters": {"replicas": 2}}
    body["spec"]["scaling"]["advisoryPolicy"] = {"name": "thrifty"}
    cluster = FakeCluster([body])
    scaler, _ = autoscaler(cluster)
    tick(scaler, cluster)
    assert cluster.scaled == [], "static 2 holds; the advice is not applied"
    advisory = cluster.statuses[0][1]["autoscaler"]["advisory"]
    assert advisory["policy"] == "thrifty" and advisory["replicas"] > 2
    assert "uid-chat/advisory" in scaler.states, "the advisory policy carries its own state"
    sample = scaler.metrics.advised_replicas.labels(NS, "chat", "thrifty")._value.get()
    assert sample == advisory["replicas"]


def test_a_policy_module_must_be_allowed_else_thrifty_decides_and_says_why() -> None:
    body = ms_body("chat", replicas=1)
    body["spec"]["scaling"]["policy"] = {
        "name": "thrifty.policy.static:StaticPolicy",
        "parameters": {"replicas": 4},
    }
    refused = FakeCluster([copy.deepcopy(body)])
    scaler, _ = autoscaler(refused)
    tick(scaler, refused)
    message = refused.statuses[0][1]["autoscaler"]["lastDecision"]["message"]
    assert "not in THRIFTY_POLICY_MODULES" in message
    allowed = FakeCluster([copy.deepcopy(body)])
    scaler, _ = autoscaler(allowed)
    scaler.policies = Registry(allowed_modules=frozenset({"thrifty.policy.static"}))
    tick(scaler, allowed)
    assert allowed.scaled == [("chat", 4)]


def test_bad_policy_parameters_fall_back_to_thrifty_with_the_reason() -> None:
    body = ms_body("chat", replicas=1)
    body["spec"]["scaling"]["policy"] = {"name": "hpa", "parameters": {"noSuchKnob": 1}}
    cluster = FakeCluster([body])
    scaler, _ = autoscaler(cluster)
    tick(scaler, cluster)
    message = cluster.statuses[0][1]["autoscaler"]["lastDecision"]["message"]
    assert message.startswith("policy hpa unavailable (bad parameters")


def test_the_reference_price_reaches_status_and_metrics_beside_the_realised_one() -> None:
    price = {"referenceDollarsPerMillionTokens": {"input": 0.10, "output": 0.20}}
    cluster = FakeCluster([ms_body("chat", replicas=2, costTarget=price)])
    scaler, _ = autoscaler(cluster, signals=FakeSignals(0, kv_cache_usage=0.2, running=4))
    tick(scaler, cluster)
    _, status, _ = cluster.statuses[0]
    # 3000 prompt + 800 generated tok/s: (0.10 x 3000 + 0.20 x 800) / 3800 = $0.1211/1M;
    # $5.00/h over 3800 tok/s = $0.3655/1M realised.
    assert status["referenceDollarsPerMillionTokens"] == 0.1211
    assert status["dollarsPerMillionTokens"] == 0.3655
    assert status["savingsVsReference"] == round((0.1211 - 0.3655) / 0.1211, 3)
    labels = {"namespace": NS, "modelservice": "chat"}
    registry = scaler.metrics.registry
    gauge = "thrifty_modelservice_reference_dollars_per_million_tokens"
    assert registry.get_sample_value(gauge, labels) == 0.1211
    realised = "thrifty_modelservice_cost_dollars_per_million_tokens"
    assert registry.get_sample_value(realised, labels) == 0.3655


def test_a_settled_model_service_with_a_reference_writes_no_second_status() -> None:
    price = {"referenceDollarsPerMillionTokens": {"input": 0.10, "output": 0.20}}
    cluster = FakeCluster([ms_body("chat", replicas=2, costTarget=price)])
    scaler, _ = autoscaler(cluster, signals=FakeSignals(0, kv_cache_usage=0.2, running=4))
    for seconds in range(0, 150, 15):
        tick(scaler, cluster, seconds)
    settled = len(cluster.statuses)
    assert cluster.bodies["chat"]["status"]["referenceDollarsPerMillionTokens"] == 0.1211
    for seconds in range(150, 900, 15):
        tick(scaler, cluster, seconds)
    assert len(cluster.statuses) == settled, "a settled ModelService writes nothing"


def test_each_pools_speed_is_read_only_while_a_service_spans_pools() -> None:
    """The per-pool queries cost a managed Prometheus three queries a round; only a service on
    two pools or more learns from them."""
    signals = FakeSignals(0)
    cluster = FakeCluster([ms_body("chat")])
    scaler, _ = autoscaler(cluster, signals=signals)
    tick(scaler, cluster)
    cluster.bodies["other"] = ms_body("other", pools=["h100", "spot"])
    tick(scaler, cluster, 15)
    assert signals.per_pool == [False, True]
