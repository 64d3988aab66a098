"""The GPUPool status pass for an Autoscaled pool: what it counts, when it reads the node
autoscaler's signs, and the CapacityLimited it writes and keeps through the backoff."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from thrifty import explain
from thrifty.adapters import node_autoscaler
from thrifty.api import gpupool
from thrifty.control import handlers
from thrifty.reconciler import placement, pool_capacity

LOG = logging.getLogger("test")
NOW = 1_800_000_000.0
POOL: dict[str, Any] = {
    "metadata": {"name": "h100", "generation": 1},
    "spec": {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"karpenter.sh/nodepool": "h100"},
        "pricePerGpuHour": 2.5,
        "provisioning": {"mode": "Autoscaled", "maxNodes": 2, "nodeStartSeconds": 200},
    },
}


def created(seconds_ago: float) -> str:
    return explain.now_rfc3339(datetime.fromtimestamp(NOW - seconds_ago, UTC))


class FakeKube:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.events: list[tuple[str, str]] = []

    def patch_status(self, plural: str, name: str, patch: Mapping[str, Any], **_: Any) -> None:
        self.status.update(patch)

    def event(self, involved: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


class View:
    def __init__(self, waited: float | None) -> None:
        self.waited = waited

    def all_nodes(self) -> list[placement.NodeInfo]:
        return []

    def all_gpu_pods(self) -> list[placement.PodInfo]:
        if self.waited is None:
            return []
        labels = {placement.MODEL_SERVICE_LABEL: "chat", placement.POOL_LABEL: "h100"}
        return [placement.PodInfo("team", "chat-1", None, 8, labels)]

    def replica_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        if self.waited is None:
            return []
        return [{"metadata": {"name": "chat-1", "creationTimestamp": created(self.waited)}}]


@pytest.fixture
def signs(monkeypatch: pytest.MonkeyPatch) -> list[pool_capacity.NodeFailure]:
    """What the node autoscaler says (the adapter's list calls replaced)."""
    said: list[pool_capacity.NodeFailure] = []

    def failures(*args: Any) -> list[pool_capacity.NodeFailure]:
        return list(said)

    monkeypatch.setattr(node_autoscaler, "failures", failures)
    return said


def refresh(kube: FakeKube, view: View, at: float) -> dict[str, Any]:
    """One pass over the pool as its status stands in ``kube``; the status after it."""
    body = {**POOL, "status": dict(kube.status)}
    handlers.refresh_gpu_pool(kube, body, LOG, view, now_seconds=at)  # type: ignore[arg-type]
    return kube.status


def test_an_idle_autoscaled_pool_is_ready_with_gpus_to_come(signs: list[Any]) -> None:
    kube = FakeKube()
    refresh(kube, View(waited=None), NOW)
    status = gpupool.GPUPoolStatus.model_validate(kube.status)
    assert status.gpus_provisionable == 16 and status.nodes == 0
    ready = explain.find(status.conditions, explain.READY)
    assert ready is not None and ready.reason == explain.POOL_AUTOSCALED
    limited = explain.find(status.conditions, explain.CAPACITY_LIMITED)
    assert limited is not None and limited.status.value == "False"


def test_a_pod_waiting_too_long_marks_the_pool_short_until_the_backoff_ends(
    signs: list[Any],
) -> None:
    kube = FakeKube()
    refresh(kube, View(waited=100), NOW)
    assert gpupool.GPUPoolStatus.model_validate(kube.status).gpus_provisionable == 16
    refresh(kube, View(waited=400), NOW)
    status = gpupool.GPUPoolStatus.model_validate(kube.status)
    limited = explain.find(status.conditions, explain.CAPACITY_LIMITED)
    assert limited is not None and limited.reason == explain.NODES_NOT_DELIVERED
    assert status.gpus_provisionable == 0
    assert ("Warning", explain.NODES_NOT_DELIVERED) in kube.events
    # The pod got its node after all: the pool stays short through the backoff, then recovers.
    during = gpupool.GPUPoolStatus.model_validate(refresh(kube, View(waited=None), NOW + 200))
    assert during.gpus_provisionable == 0 and during.capacity_limited_until is not None
    after = gpupool.GPUPoolStatus.model_validate(refresh(kube, View(waited=None), NOW + 301))
    found = explain.find(after.conditions, explain.CAPACITY_LIMITED)
    assert found is not None and found.status.value == "False"
    assert after.gpus_provisionable == 16


def test_a_launch_failure_marks_the_pool_short_at_once(signs: list[Any]) -> None:
    signs.append(pool_capacity.NodeFailure(explain.NODE_LAUNCH_FAILED, "Karpenter ICE", NOW))
    kube = FakeKube()
    refresh(kube, View(waited=5), NOW)
    status = gpupool.GPUPoolStatus.model_validate(kube.status)
    limited = explain.find(status.conditions, explain.CAPACITY_LIMITED)
    assert limited is not None and limited.reason == explain.NODE_LAUNCH_FAILED
    assert "Karpenter ICE" in limited.message
