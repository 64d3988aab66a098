"""Observations are built the way Prometheus would answer the operator's queries."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from sim_policies import ScheduledPolicy

from thrifty.policy.types import Signals
from thrifty.sim import scenario
from thrifty.sim.observe import TTFT_BUCKETS_SECONDS, Histogram, Metrics, histogram_quantile
from thrifty.sim.profiles import LLAMA_8B_1xH100
from thrifty.sim.runner import SimulationConfig, simulate
from thrifty.sim.traces import Request, Trace


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert histogram_quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(1.5)
    assert histogram_quantile(0.95, bounds, [10, 0, 10, 0]) == pytest.approx(2.0 + 2.0 * 0.9)
    assert histogram_quantile(0.99, bounds, [1, 0, 0, 99]) == 4.0  # rank in +Inf
    assert histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None


def test_histogram_counts_into_vllm_buckets() -> None:
    histogram = Histogram()
    for value in (0.0005, 0.001, 0.3, 5000.0):
        histogram.observe(value)
    counts = histogram.snapshot()
    assert counts[0] == 2  # le=0.001 includes the bound itself
    assert counts[TTFT_BUCKETS_SECONDS.index(0.5)] == 1
    assert counts[-1] == 1 and histogram.total == 4


def _steady_trace(seed: int, rate: float, seconds: float) -> Trace:
    rng = random.Random(seed)
    requests = []
    t = rng.expovariate(rate)
    while t < seconds:
        requests.append(Request(t, rng.randint(500, 6000), rng.randint(20, 300)))
        t += rng.expovariate(rate)
    return Trace("steady", tuple(requests), seconds, "test traffic")


def _two_replicas(metrics: Metrics = Metrics.VLLM) -> SimulationConfig:
    """Two warm replicas held for the whole trace."""
    return SimulationConfig(
        profile=LLAMA_8B_1xH100,
        model_service=scenario.model_service(
            LLAMA_8B_1xH100, min_replicas=2, max_replicas=2, queue_target_per_replica=4
        ),
        initial_replicas=2,
        tail_seconds=0.0,
        metrics=metrics,
    )


def test_rates_and_ttft_quantile_match_the_truth_on_a_steady_load() -> None:
    trace = _steady_trace(seed=3, rate=8.0, seconds=900.0)
    policy = ScheduledPolicy([(0.0, 2)])
    result = simulate(trace, policy, _two_replicas())
    settled = [o for o in policy.seen if 300.0 <= o.now_seconds <= 880.0]
    assert settled and all(o.signals is not None for o in settled)
    mean_prompt = sum(r.prompt_tokens for r in trace.requests) / len(trace.requests)
    mean_output = sum(r.output_tokens for r in trace.requests) / len(trace.requests)
    rps = [o.signals.requests_per_second for o in settled if o.signals]
    prompt = [o.signals.prompt_tokens_per_second for o in settled if o.signals]
    generation = [o.signals.generation_tokens_per_second for o in settled if o.signals]
    assert sum(rps) / len(rps) == pytest.approx(8.0, rel=0.1)
    assert sum(prompt) / len(prompt) == pytest.approx(8.0 * mean_prompt, rel=0.1)
    assert sum(generation) / len(generation) == pytest.approx(8.0 * mean_output, rel=0.1)
    # Two replicas for 8 requests/s of these sizes: hardly any request waits to be scheduled.
    waits = [o.signals.queue_time_buckets for o in settled if o.signals]
    assert all(w and w[-1][0] == math.inf and w[0][1] >= 0.9 * w[-1][1] for w in waits)
    # The same finished requests, scheduled to first token: vLLM's prefill-time histogram.
    prefills = [o.signals.prefill_time_buckets for o in settled if o.signals]
    assert all(p and p[-1] == (math.inf, w[-1][1]) for p, w in zip(prefills, waits, strict=True))
    per_request = [o.signals.tokens_per_finished_request for o in settled if o.signals]
    assert all(p is not None for p in per_request)
    mean = sum(p or 0.0 for p in per_request) / len(per_request)
    assert mean == pytest.approx(mean_prompt + mean_output, rel=0.1)
    assert all(0 <= o.signals.sample_age_seconds <= 10.0 for o in settled if o.signals)
    # The running batch averaged over the rate window (avg_over_time) averages the same gauge.
    gauge = [o.signals.requests_running for o in settled if o.signals]
    running = [o.signals.requests_running_mean for o in settled if o.signals]
    assert all(r is not None and 0.0 < r <= max(gauge) for r in running)
    assert sum(r or 0.0 for r in running) / len(running) == pytest.approx(
        sum(gauge) / len(gauge), rel=0.15
    )

    # The p95 from the 2-minute histogram window tracks the true p95 of those requests.
    for observation in settled[::8]:
        assert observation.signals is not None
        estimate = observation.signals.ttft_p95_seconds
        now = observation.now_seconds
        window = sorted(
            ttft
            for request, ttft in zip(trace.requests, result.ttft_seconds, strict=True)
            if now - 120.0 <= request.arrival_seconds + ttft <= now - 10.0
        )
        truth = window[math.ceil(0.95 * len(window)) - 1]
        assert estimate is not None
        upper = next(b for b in TTFT_BUCKETS_SECONDS if b >= truth)
        lower = max((b for b in TTFT_BUCKETS_SECONDS if b < truth), default=0.0)
        assert lower - 0.05 <= estimate <= upper + 0.05, (now, estimate, truth)


def test_no_signals_before_two_scrapes() -> None:
    trace = _steady_trace(seed=1, rate=1.0, seconds=60.0)
    policy = ScheduledPolicy([(0.0, 1)])
    config = SimulationConfig(
        profile=LLAMA_8B_1xH100,
        model_service=scenario.model_service(
            LLAMA_8B_1xH100, min_replicas=1, max_replicas=1, queue_target_per_replica=4
        ),
        decision_interval_seconds=5.0,
        scrape_interval_seconds=10.0,
        tail_seconds=0.0,
    )
    simulate(trace, policy, config)
    assert policy.seen[0].now_seconds == 5.0 and policy.seen[0].signals is None
    assert policy.seen[-1].signals is not None


def test_basic_metrics_give_no_queue_prefill_or_token_histograms() -> None:
    # The same run with engines that export the gauges, counters and TTFT histogram only: the
    # policy sees the same rates and TTFT, and none of what the other histograms give.
    trace = _steady_trace(seed=3, rate=8.0, seconds=300.0)
    seen: dict[Metrics, list[Signals]] = {}
    for metrics in Metrics:
        policy = ScheduledPolicy([(0.0, 2)])
        simulate(trace, policy, _two_replicas(metrics))
        seen[metrics] = [o.signals for o in policy.seen if o.signals is not None]
    full, basic = seen[Metrics.VLLM], seen[Metrics.BASIC]
    assert len(full) == len(basic) > 10
    assert all(s.queue_time_buckets and s.prefill_time_buckets for s in full[-5:])
    assert all(s.tokens_per_finished_request is not None for s in full[-5:])
    assert not any(s.queue_time_buckets or s.prefill_time_buckets for s in basic)
    assert all(s.tokens_per_finished_request is None for s in basic)
    stripped = [
        replace(s, queue_time_buckets=(), prefill_time_buckets=(), tokens_per_finished_request=None)
        for s in full
    ]
    assert stripped == basic
