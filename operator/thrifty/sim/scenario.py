"""The ModelService and GPUPool a simulation runs, as the objects a user would apply.

`thrifty simulate`, the benchmark and the tests describe what they simulate with the same custom
resources the operator serves (built here from a few knobs, or read from a user's YAML), and the
policy sees them through the operator's own translation (`thrifty.autoscaler.observe`): no second
path from settings to the policy's spec.
"""

from __future__ import annotations

from typing import Any

from thrifty.api import gpupool, modelservice
from thrifty.policy.types import Enforcement
from thrifty.sim.profiles import EngineProfile

SIM_POOL = "h100-on-demand"


def model_service(
    profile: EngineProfile,
    *,
    min_replicas: int = 1,
    max_replicas: int = 32,
    queue_target_per_replica: float = 8.0,
    ttft_target_seconds: float | None = None,
    ttft_percentile: str = "p95",
    max_dollars_per_hour: float | None = None,
    max_dollars_per_million_tokens: float | None = None,
    enforcement: Enforcement = Enforcement.HARD,
    cold_start_seconds: float | None = None,
    pool: str = SIM_POOL,
) -> modelservice.ModelService:
    """A ModelService for `profile` (its max-num-seqs, its cold start unless given)."""
    cost: dict[str, Any] = {"enforcement": enforcement.value}
    if max_dollars_per_hour is not None:
        cost["maxDollarsPerHour"] = max_dollars_per_hour
    if max_dollars_per_million_tokens is not None:
        cost["maxDollarsPerMillionTokens"] = max_dollars_per_million_tokens
    latency: dict[str, Any] = {"percentile": ttft_percentile}
    if ttft_target_seconds is not None:
        latency["timeToFirstTokenSeconds"] = ttft_target_seconds
    cold_start = (
        cold_start_seconds if cold_start_seconds is not None else profile.cold_start_seconds
    )
    body = {
        "metadata": {"name": "sim", "namespace": "sim"},
        "spec": {
            "model": {"uri": "hf://sim/model"},
            "engine": {
                "tensorParallelSize": profile.gpus_per_replica,
                "maxNumSeqs": profile.max_num_seqs,
            },
            "pools": [pool],
            "scaling": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "queueDepthTargetPerReplica": queue_target_per_replica,
                "coldStartSeconds": max(1, round(cold_start)),
            },
            "latencyTarget": latency,
            "costTarget": cost,
        },
    }
    return modelservice.ModelService.model_validate(body)


def gpu_pool(price_per_gpu_hour: float, gpus: int | None) -> gpupool.GPUPool:
    """The simulated pool: its price, and its GPUs (None: as many as asked for)."""
    body: dict[str, Any] = {
        "spec": {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"thrifty.dev/pool": SIM_POOL},
            "pricePerGpuHour": price_per_gpu_hour,
        }
    }
    if gpus is not None:
        body["status"] = {"gpusAllocatable": gpus, "gpusUsed": 0, "gpusFree": gpus}
    return gpupool.GPUPool.model_validate(body)
