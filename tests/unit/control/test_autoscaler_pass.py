"""One autoscaler pass end to end with the real policy, against fakes of the cluster seams.

The fakes keep what was written and fail loudly on a write the scenario forbids, so "Advisory never
touches replicas" is a test that can fail. The two-process and Prometheus-backed versions of these
scenarios run against a real cluster in e2e/test_autoscale.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from thrifty.adapters.kube import Conflict
from thrifty.adapters.operator_metrics import OperatorMetrics
from thrifty.adapters.prometheus import ServiceKey, SignalsReading
from thrifty.autoscaler import observe
from thrifty.control.autoscaler import Autoscaler, AutoscalerSettings
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
        "metadata": {"namespace": NS, "name": name, "resourceVersion": "10", "generation": 1},
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

    def read_pool(self, name: str) -> dict[str, Any] | None:
        return POOL if name == "h100" else None

    def read_budget(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.budget

    def list_model_services(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.bodies.values())

    def replica_pods(self, namespace: str, name: str, now: datetime) -> list[observe.PodView]:
        replicas = int(self.bodies[name]["spec"]["replicas"])
        return [observe.PodView(ready=True, scheduled=True)] * replicas

    def hpas_targeting(self, namespace: str, name: str) -> list[str]:
        return self.hpas

    def patch_scale(self, namespace: str, name: str, replicas: int) -> str:
        if not self.scaling_allowed:
            raise AssertionError(f"scaled {name} to {replicas} where replicas must not be touched")
        self.scaled.append((name, replicas))
        self.bodies[name]["spec"]["replicas"] = replicas
        return "11"

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
    def __init__(self, waiting: float) -> None:
        self.waiting = waiting

    async def read_all(self, keys: Iterable[ServiceKey]) -> dict[ServiceKey, SignalsReading]:
        signals = types.Signals(
            requests_waiting=self.waiting,
            requests_running=30,
            kv_cache_usage=0.9,
            prompt_tokens_per_second=3000,
            generation_tokens_per_second=800,
            requests_per_second=3,
            ttft_p95_seconds=2.0,
            sample_age_seconds=1,
        )
        return {key: SignalsReading(signals, "read") for key in keys}


def autoscaler(
    cluster: FakeCluster, waiting: float = 40, leader: bool = True
) -> tuple[Autoscaler, FakeEvents]:
    events = FakeEvents()
    scaler = Autoscaler(
        scale=cluster,
        kube=events,
        prometheus=FakeSignals(waiting),
        metrics=OperatorMetrics(),
        settings=AutoscalerSettings(leader_election=False),
    )
    if not leader:
        scaler.acting = lambda: False  # type: ignore[method-assign]
    return scaler, events


def tick(scaler: Autoscaler, name: str = "chat") -> None:
    asyncio.run(scaler.tick(NS, name))


def test_auto_scales_through_the_scale_subresource_then_writes_status_and_an_event() -> None:
    cluster = FakeCluster([ms_body("chat")])
    scaler, events = autoscaler(cluster)
    tick(scaler)
    assert cluster.scaled and cluster.scaled[0][1] > 1
    _, status, version = cluster.statuses[0]
    assert version == "11", "the status patch is guarded by the version the scale returned"
    assert status["autoscaler"]["lastDecision"]["reason"] == "ScaleUp"
    assert status["queueDepth"] == 40
    assert [reason for reason, _ in events.posted] == ["ScaleUp"]


def test_advisory_reports_and_never_touches_replicas() -> None:
    cluster = FakeCluster([ms_body("chat", mode="Advisory")], scaling_allowed=False)
    scaler, events = autoscaler(cluster)
    tick(scaler)
    decision = cluster.statuses[0][1]["autoscaler"]["lastDecision"]
    assert decision["message"].startswith("Advisory:")
    assert decision["replicas"] > 1
    assert [reason for reason, _ in events.posted] == ["AdvisedScaleUp"]
    tick(scaler)  # the same advice again: no second Event
    assert len(events.posted) == 1


def test_an_hpa_on_the_model_service_turns_auto_into_advisory() -> None:
    cluster = FakeCluster([ms_body("chat")], scaling_allowed=False)
    cluster.hpas = ["chat-hpa"]
    scaler, _ = autoscaler(cluster)
    tick(scaler)
    assert "chat-hpa" in cluster.statuses[0][1]["autoscaler"]["lastDecision"]["message"]


def test_manual_decides_nothing_but_reports_the_metrics() -> None:
    cluster = FakeCluster([ms_body("chat", mode="Manual")], scaling_allowed=False)
    scaler, events = autoscaler(cluster)
    tick(scaler)
    status = cluster.statuses[0][1]
    assert status["queueDepth"] == 40
    assert "lastDecision" not in status["autoscaler"]
    assert events.posted == []


def test_a_follower_does_nothing_at_all() -> None:
    cluster = FakeCluster([ms_body("chat")], scaling_allowed=False)
    scaler, events = autoscaler(cluster, leader=False)
    tick(scaler)
    assert cluster.statuses == [] and events.posted == []


def test_an_unchanged_world_writes_no_second_status() -> None:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    scaler, _ = autoscaler(cluster, waiting=0)
    tick(scaler)
    writes = len(cluster.statuses)
    tick(scaler)
    assert len(cluster.statuses) == writes


def test_a_hard_team_budget_caps_the_member_and_reports_budget_limited() -> None:
    chat = ms_body("chat", costTarget={"budgetRef": {"name": "team"}})
    batch = ms_body("batch", replicas=2, costTarget={"budgetRef": {"name": "team"}})
    cluster = FakeCluster([chat, batch])
    cluster.budget = {"spec": {"maxDollarsPerHour": 7.5, "enforcement": "Hard"}}
    scaler, _ = autoscaler(cluster)
    tick(scaler, "chat")
    # $7.50/h minus batch's $5.00/h leaves chat one $2.50 replica: it may not grow.
    assert cluster.scaled == []
    conditions = {c["type"]: c for c in cluster.statuses[0][1]["conditions"]}
    assert conditions["BudgetLimited"]["status"] == "True"


def test_the_policy_state_alone_is_checkpointed_once_a_minute() -> None:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    scaler, _ = autoscaler(cluster, waiting=0)
    tick(scaler)
    writes = len(cluster.statuses)
    scaler.state_written_at[f"{NS}/chat"] -= 61  # a minute later, nothing visible changed
    tick(scaler)
    assert len(cluster.statuses) == writes + 1
    assert set(cluster.statuses[-1][1]["autoscaler"]["policyState"])


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
    tick(scaler)
    assert cluster.scaled
    _, status, version = cluster.statuses[0]
    assert version == "12"
    assert status["autoscaler"]["lastScaleTime"]
