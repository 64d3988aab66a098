"""Builders of policy observations for the policy tests: realistic defaults, one knob at a time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from thrifty.policy import types

# An 8B model on one H100 at $3/GPU-hour, 8,000 tok/s per replica at saturation.
PRICE_PER_GPU_HOUR = 3.0
CAPACITY = 8000.0


def signals(**overrides: Any) -> types.Signals:
    base = types.Signals(
        requests_waiting=0.0,
        requests_running=20.0,
        kv_cache_usage=0.3,
        prompt_tokens_per_second=3000.0,
        generation_tokens_per_second=3000.0,
        requests_per_second=4.0,
        ttft_p95_seconds=0.5,
        sample_age_seconds=5.0,
    )
    return replace(base, **overrides)


def spec(**overrides: Any) -> types.PolicySpec:
    base = types.PolicySpec(
        min_replicas=1,
        max_replicas=20,
        queue_target_per_replica=10.0,
        scale_down_delay_seconds=300.0,
        scale_to_zero_idle_seconds=None,
        ttft_target_seconds=2.0,
        ttft_target_quantile=0.95,
        max_dollars_per_hour=None,
        max_dollars_per_million_tokens=None,
        enforcement=types.Enforcement.HARD,
        soft_overrun_fraction=0.0,
        cold_start_seconds=120.0,
        staleness_limit_seconds=60.0,
        capacity_tokens_per_second_per_replica=CAPACITY,
        max_num_seqs_per_replica=None,
        replica_shape="h100-on-demand/8b",
    )
    return replace(base, **overrides)


def observation(
    *,
    now: float = 1000.0,
    sig: types.Signals | None = None,
    missing: bool = False,
    desired: int = 2,
    ready: int | None = None,
    starting: int = 0,
    oldest_starting_seconds: float = 0.0,
    draining: int = 0,
    free_gpus: int | None = None,
    gpus_per_replica: int = 1,
    price: float = PRICE_PER_GPU_HOUR,
    budget: float | None = None,
    **spec_overrides: Any,
) -> types.Observation:
    return types.Observation(
        now_seconds=now,
        signals=None if missing else (sig if sig is not None else signals()),
        replicas=types.ReplicaCounts(
            desired=desired,
            ready=desired - starting if ready is None else ready,
            starting=starting,
            oldest_starting_seconds=oldest_starting_seconds,
            draining=draining,
        ),
        pool=types.PoolView(
            name="h100-on-demand",
            price_per_gpu_hour=price,
            gpus_per_replica=gpus_per_replica,
            free_gpus=free_gpus,
        ),
        spec=spec(**spec_overrides),
        budget_dollars_per_hour_available=budget,
    )
