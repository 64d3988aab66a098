"""Each pool's relative throughput, learned from its replicas' prefill (thrifty.api.throughput)."""

from __future__ import annotations

from typing import Any

import pytest

from thrifty.api import gpupool, modelservice, throughput
from thrifty.api.throughput import MIN_REQUESTS, PoolPrefill


def pool(accelerator: str, speed: float, memory: int = 80) -> gpupool.GPUPoolSpec:
    return gpupool.GPUPoolSpec(
        accelerator=accelerator,
        gpu_memory_gib=memory,
        gpus_per_node=8,
        node_selector={"pool": accelerator},
        price_per_gpu_hour=1.0,
        relative_throughput=speed,
    )


POOLS = {"h100": pool("H100", 1.0), "l4": pool("L4", 0.3, memory=24)}


def service(max_num_seqs: int = 256) -> modelservice.ModelServiceSpec:
    return modelservice.ModelServiceSpec.model_validate(
        {
            "model": {"name": "llama", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "pools": ["h100", "l4"],
            "engine": {"maxNumSeqs": max_num_seqs},
        }
    )


def sample(pool_name: str, seconds_per_token: float, requests: int = 200) -> PoolPrefill:
    tokens = 1000.0 * requests
    return PoolPrefill(pool_name, seconds_per_token * tokens, tokens, float(requests))


def status(*entries: modelservice.PoolThroughput) -> modelservice.ModelServiceStatus:
    block = modelservice.AutoscalerStatus(pool_throughput=list(entries))
    return modelservice.ModelServiceStatus(autoscaler=block)


def learn(before: modelservice.ModelServiceStatus | None, *samples: PoolPrefill, **kw: Any) -> Any:
    served = kw.get("served", {"h100", "l4"})
    spec = kw.get("spec", service())
    entries = throughput.update(spec, before, kw.get("pools", POOLS), list(samples), served)
    return entries, status(*entries)


def test_a_pool_twice_as_slow_per_prompt_token_is_worth_half_the_anchor() -> None:
    found = throughput.measure(
        [sample("h100", 40e-6), sample("l4", 80e-6, requests=90)],
        {"h100": 1.0, "l4": 0.3},
        {},
    )
    assert list(found) == ["l4"]  # the anchor keeps its declared 1.0
    assert found["l4"][0] == pytest.approx(0.5) and found["l4"][1] == 90


def test_one_pool_or_too_few_requests_teach_nothing() -> None:
    declared = {"h100": 1.0, "l4": 0.3}
    assert throughput.measure([sample("h100", 40e-6)], declared, {}) == {}
    few = sample("l4", 80e-6, requests=MIN_REQUESTS - 1)
    assert throughput.measure([sample("h100", 40e-6), few], declared, {}) == {}


def test_the_anchor_is_the_fastest_declared_pool_at_its_learned_value() -> None:
    """Without the H100, the L4 (learned 0.2) is the anchor for a third pool."""
    declared = {"h100": 1.0, "l4": 0.3, "a10": 0.25}
    found = throughput.measure([sample("l4", 100e-6), sample("a10", 50e-6)], declared, {"l4": 0.2})
    assert list(found) == ["a10"] and found["a10"][0] == pytest.approx(0.4)


def test_a_measurement_within_the_change_band_writes_nothing() -> None:
    entries, _ = learn(None, sample("h100", 40e-6), sample("l4", 40e-6 / 0.32))
    assert entries == []  # 0.32 against the declared 0.3: noise, not news


def test_a_wrong_declaration_is_replaced_then_kept_while_the_pool_is_idle() -> None:
    entries, after = learn(None, sample("h100", 40e-6), sample("l4", 40e-6 / 0.5))
    assert [(e.pool, e.relative_throughput, e.requests) for e in entries] == [("l4", 0.5, 200)]
    assert throughput.learned(service(), after, POOLS) == {"l4": 0.5}
    # The next window: within 10 % of 0.5 changes nothing; the L4 pool empty keeps it.
    same, _ = learn(after, sample("h100", 40e-6), sample("l4", 40e-6 / 0.53))
    assert same == entries
    idle, _ = learn(after, sample("h100", 40e-6))
    assert idle == entries


def test_only_pools_that_served_the_whole_window_are_compared() -> None:
    """A pool that came back mid-window saw only part of the traffic (its backlog, say)."""
    entries, _ = learn(None, sample("h100", 40e-6), sample("l4", 400e-6), served={"h100"})
    assert entries == []


def test_what_was_learned_is_forgotten_when_the_gpu_or_the_engine_changes() -> None:
    _, after = learn(None, sample("h100", 40e-6), sample("l4", 40e-6 / 0.5))
    assert throughput.learned(service(), after, POOLS) == {"l4": 0.5}
    assert throughput.learned(service(max_num_seqs=64), after, POOLS) == {}
    other_gpu = {**POOLS, "l4": pool("L40S", 0.3, memory=48)}
    assert throughput.learned(service(), after, other_gpu) == {}
    entries, _ = learn(after, sample("h100", 40e-6), pools=other_gpu)
    assert entries == []  # a stale measurement is not carried over either


def test_noise_around_the_truth_does_not_ratchet_what_is_learned() -> None:
    """Windows alternately 15 % off either way, for many passes: the anchor stays declared, so
    what is learned stays within the noise of the truth (0.5) instead of feeding on itself."""
    before = None
    for index in range(200):
        noise = 1.15 if index % 2 else 0.87
        _, before = learn(before, sample("h100", 40e-6), sample("l4", 40e-6 / (0.5 * noise)))
    learned = throughput.learned(service(), before, POOLS)
    assert 0.5 * 0.85 <= learned["l4"] <= 0.5 * 1.16


def test_learned_throughput_sets_a_pools_units() -> None:
    l4 = POOLS["l4"]
    assert l4.planned_units(120.0) == pytest.approx(0.3)
    assert l4.planned_units(120.0, throughput=0.5) == pytest.approx(0.5)
