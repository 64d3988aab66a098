"""Autoscaled GPUPools: room up to maxNodes, the node start in the cold start, the short backoff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from thrifty import explain
from thrifty.api import gpupool, modelservice
from thrifty.autoscaler import observe
from thrifty.reconciler import placement, pool_capacity

NOW = 1_800_000_000.0
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def spec(**provisioning: Any) -> gpupool.GPUPoolSpec:
    return gpupool.GPUPoolSpec.model_validate(
        {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"karpenter.sh/nodepool": "h100"},
            "pricePerGpuHour": 2.5,
            "provisioning": {
                "mode": "Autoscaled",
                "maxNodes": 2,
                "nodeStartSeconds": 200,
                **provisioning,
            },
        }
    )


def node(name: str, gpus: int = 8) -> placement.NodeInfo:
    return placement.NodeInfo(name, {"karpenter.sh/nodepool": "h100"}, gpus)


def pod(name: str, gpus: int, node_name: str | None, owner: str = "other") -> placement.PodInfo:
    labels = {placement.MODEL_SERVICE_LABEL: owner, placement.POOL_LABEL: "h100"}
    return placement.PodInfo("team", name, node_name, gpus, labels)


def test_an_autoscaled_pool_without_nodes_has_room_up_to_max_nodes() -> None:
    room = placement.room("h100", spec(), [], [], 4, exclude=None)
    assert room.replicas == 4  # 2 nodes to come x 8 GPUs / 4 per replica
    assert room.free_gpus == 16
    existing = spec(mode="Existing", maxNodes=None)
    assert placement.room("h100", existing, [], [], 4, exclude=None).replicas == 0


def test_ready_nodes_count_as_they_are_and_pending_pods_take_the_nodes_to_come() -> None:
    nodes = [node("a")]
    pods = [pod("busy", 6, "a"), pod("waiting", 8, None)]
    room = placement.room("h100", spec(), nodes, pods, 2, exclude=None)
    # node a: 2 free -> 1 replica; one node to come: 4; the waiting pod takes 4 of them.
    assert room.replicas == 1


def test_the_gpu_quota_caps_what_the_autoscaler_may_add() -> None:
    room = placement.room("h100", spec(), [], [], 4, exclude=None)
    capped = gpupool.GPUPoolSpec.model_validate({**spec().to_kube(), "maxGpus": 4})
    assert placement.room("h100", capped, [], [], 4, exclude=None).replicas == 1 < room.replicas
    status = placement.pool_status("h100", capped, [], [])
    assert status.gpus_provisionable == 4


def test_a_short_pool_counts_only_its_existing_nodes() -> None:
    assert placement.room("h100", spec(), [], [], 4, exclude=None, short=True).replicas == 0
    assert placement.pool_status("h100", spec(), [], [], short=True).gpus_provisionable == 0


def test_a_pod_pending_past_the_node_start_and_margin_makes_the_pool_short() -> None:
    deadline = pool_capacity.deadline_seconds(spec())
    assert deadline == 250  # 200 s + a quarter
    on_time = [pool_capacity.PendingPod("team", "p", deadline - 1)]
    assert pool_capacity.shortage(spec(), on_time, [], None, NOW) is None
    late = [pool_capacity.PendingPod("team", "p", deadline + 1)]
    short = pool_capacity.shortage(spec(), late, [], None, NOW)
    assert short is not None and short.reason == explain.NODES_NOT_DELIVERED
    assert "team/p" in short.message and "nodeStartSeconds 200" in short.message
    assert short.until_seconds == NOW + 300
    assert pool_capacity.shortage(spec(mode="Existing"), late, [], None, NOW) is None


def test_a_failure_sign_makes_the_pool_short_and_the_backoff_outlives_it() -> None:
    failure = pool_capacity.NodeFailure(explain.NODE_LAUNCH_FAILED, "ICE", NOW - 10)
    short = pool_capacity.shortage(spec(), [], [failure], None, NOW)
    assert short is not None and short.reason == explain.NODE_LAUNCH_FAILED
    later = NOW + 200
    assert pool_capacity.shortage(spec(), [], [], short, later) == short
    assert pool_capacity.shortage(spec(), [], [], short, NOW + 301) is None
    stale = pool_capacity.NodeFailure(explain.NODE_LAUNCH_FAILED, "old", NOW - 400)
    assert pool_capacity.shortage(spec(), [], [stale], None, NOW) is None


def test_the_shortage_survives_a_round_trip_through_status() -> None:
    failure = pool_capacity.NodeFailure(explain.SCALE_UP_NOT_TRIGGERED, "max size", NOW)
    short = pool_capacity.shortage(spec(), [], [failure], None, NOW)
    assert short is not None
    now = explain.now_rfc3339()
    status = gpupool.GPUPoolStatus(
        conditions=[pool_capacity.condition(spec(), short, now=now, generation=1)],
        capacity_limited_until=pool_capacity.until_text(short),
    )
    back = pool_capacity.shortage_from_status(status)
    assert back == short
    assert pool_capacity.short_now(status, NOW + 299) == short
    assert pool_capacity.short_now(status, NOW + 300) is None
    again = pool_capacity.condition(spec(), back, now=now, generation=1)
    assert again.message.count("counting only the existing nodes") == 1


def test_the_karpenter_node_pool_is_named_or_read_from_the_selector() -> None:
    assert pool_capacity.karpenter_node_pool(spec()) == "h100"
    assert pool_capacity.karpenter_node_pool(spec(karpenterNodePool="gpu")) == "gpu"


def test_autoscaled_requires_max_nodes() -> None:
    with pytest.raises(ValueError, match="maxNodes is required"):
        gpupool.Provisioning.model_validate({"mode": "Autoscaled"})
    assert gpupool.Provisioning.model_validate({}).mode is gpupool.ProvisioningMode.EXISTING


def ms() -> modelservice.ModelService:
    return modelservice.ModelService.model_validate(
        {"spec": {"model": {"uri": "hf://Qwen/Qwen3-0.6B"}, "pools": ["h100"]}}
    )


def test_the_policy_sees_the_nodes_to_come_and_their_start_time() -> None:
    settings = observe.ObserveSettings(cold_start_seconds=30)
    pool = gpupool.GPUPool(spec=spec(), status=placement.pool_status("h100", spec(), [], []))
    seen = observe.observation(
        ms(),
        now_seconds=NOW,
        pods=[],
        pool_name="h100",
        pool=pool,
        signals=None,
        settings=settings,
    )
    assert seen.pool.free_gpus == 16 - 1  # one desired replica not placed yet
    assert seen.spec.cold_start_seconds == 30 + 200
    on_nodes = placement.pool_status("h100", spec(), [node("a")], [])
    warm = observe.observation(
        ms(),
        now_seconds=NOW,
        pods=[],
        pool_name="h100",
        pool=gpupool.GPUPool(spec=spec(), status=on_nodes),
        signals=None,
        settings=settings,
    )
    assert warm.spec.cold_start_seconds == 30  # a Ready node has room: no node to wait for


def test_the_karpenter_example_is_an_autoscaled_pool_with_room_and_no_nodes() -> None:
    example = gpupool.GPUPool.model_validate(
        yaml.safe_load((EXAMPLES / "gpupool-h100-karpenter.yaml").read_text())
    )
    assert pool_capacity.autoscaled(example.spec)
    assert pool_capacity.karpenter_node_pool(example.spec) == "h100"
    assert placement.room("h100-karpenter", example.spec, [], [], 8, exclude=None).replicas == 2
