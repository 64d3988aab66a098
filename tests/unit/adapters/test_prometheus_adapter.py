"""The Prometheus adapter's pure half: the PromQL it builds and how it reads query results."""

from __future__ import annotations

import asyncio
import math
import re
import socket

import pytest

from thrifty.adapters.prometheus import (
    PREFILL_TIME,
    QUEUE_TIME,
    TTFT,
    PrometheusSignals,
    PrometheusUnreachableError,
    QueryResult,
    QueryWindows,
    buckets_by_service,
    build_bucket_query,
    build_held_queries,
    build_pool_queries,
    build_queries,
    label_matchers,
    pool_prefill_by_service,
    signals_from_results,
    values_by_service,
)
from thrifty.api.throughput import WINDOW_SECONDS, PoolPrefill
from thrifty.autoscaler.world import ServiceKey

KEY = ServiceKey("team-a", "llama-8b")
OTHER = ServiceKey("team-b", "llama-8b")

# The metric names real vLLM exposes (reference/vllm.md and the contract test's real scrape).
VLLM_SERIES = {
    "vllm:num_requests_waiting",
    "vllm:num_requests_waiting_by_reason",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:request_prompt_tokens_sum",
    "vllm:request_prompt_tokens_count",
    "vllm:request_generation_tokens_sum",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket",
    "vllm:request_prefill_time_seconds_bucket",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_prefill_time_seconds_count",
}


def test_every_query_selects_the_service_and_uses_only_real_vllm_names() -> None:
    queries = build_queries(KEY)
    assert set(queries) == {
        "requests_waiting",
        "requests_waiting_mean",
        "requests_running",
        "requests_running_mean",
        "kv_cache_usage",
        "prompt_tokens_per_second",
        "generation_tokens_per_second",
        "requests_per_second",
        "tokens_per_finished_request",
        "ttft_p95_seconds",
        "sample_age_seconds",
    }
    histograms = [build_bucket_query(KEY, histogram=h) for h in (TTFT, QUEUE_TIME, PREFILL_TIME)]
    for promql in [*queries.values(), *histograms]:
        names = set(re.findall(r"vllm:[a-z_]+", promql))
        assert names, promql
        assert names <= VLLM_SERIES, promql
        assert promql.count('{namespace="team-a",modelservice="llama-8b"') == promql.count("vllm:")
        assert "by (namespace, modelservice" in promql


def test_the_queue_is_what_waits_for_capacity_where_the_engine_says_why() -> None:
    # Per pod: the capacity reason where vLLM splits the gauge, else the whole gauge (an engine
    # from before the split); e2e/test_queries.py runs it on a real Prometheus.
    for name in ("requests_waiting", "requests_waiting_mean"):
        promql = build_queries(KEY)[name]
        by_reason = 'vllm:num_requests_waiting_by_reason{namespace="team-a",'
        assert f'{by_reason}modelservice="llama-8b",reason="capacity"}}' in promql
        assert ") or sum by (namespace, modelservice, pod) (" in promql
        assert promql.startswith("sum by (namespace, modelservice) (sum by (namespace, ")


def test_windows_reach_the_rate_queries() -> None:
    windows = QueryWindows(rate_seconds=30, ttft_seconds=90)
    queries = build_queries(KEY, windows)
    assert "[30s]" in queries["generation_tokens_per_second"]
    assert "avg_over_time(vllm:num_requests_waiting" in queries["requests_waiting_mean"]
    assert "[30s]" in queries["requests_waiting_mean"]
    assert "avg_over_time(vllm:num_requests_running" in queries["requests_running_mean"]
    assert "[30s]" in queries["requests_running_mean"]
    assert "[90s]" in build_bucket_query(KEY, windows)
    assert "by (namespace, modelservice, le)" in build_bucket_query(KEY, windows)
    assert "[90s]" in queries["ttft_p95_seconds"]
    assert queries["ttft_p95_seconds"].startswith("histogram_quantile(0.95,")


def test_label_values_are_escaped() -> None:
    assert label_matchers(ServiceKey('a"b', "c\\d")) == '{namespace="a\\"b",modelservice="c\\\\d"}'
    assert label_matchers(None) == '{modelservice!=""}'


def _series(key: ServiceKey, value: str) -> dict[str, object]:
    return {
        "metric": {"namespace": key.namespace, "modelservice": key.model_service},
        "value": [1.7e9, value],
    }


def _results(**overrides: dict[ServiceKey, float]) -> dict[str, dict[ServiceKey, float]]:
    base = {
        "requests_waiting": {KEY: 7.0},
        "requests_running": {KEY: 16.0},
        "kv_cache_usage": {KEY: 0.4},
        "prompt_tokens_per_second": {KEY: 900.0},
        "generation_tokens_per_second": {KEY: 2100.0},
        "requests_per_second": {KEY: 3.5},
        "ttft_p95_seconds": {KEY: 0.25},
        "sample_age_seconds": {KEY: 4.0},
    }
    base.update(overrides)
    return base


def _bucket(key: ServiceKey, le: str, value: str) -> dict[str, object]:
    return {
        "metric": {"namespace": key.namespace, "modelservice": key.model_service, "le": le},
        "value": [1.7e9, value],
    }


def test_buckets_are_sorted_per_service_and_unreadable_histograms_are_left_out() -> None:
    found = buckets_by_service(
        [
            _bucket(KEY, "+Inf", "10"),
            _bucket(KEY, "0.5", "4"),
            _bucket(KEY, "2.5", "9"),
            _bucket(KEY, "x", "1"),
            _bucket(OTHER, "0.5", "3"),  # no +Inf bucket: cannot be read
        ]
    )
    assert found == {KEY: ((0.5, 4.0), (2.5, 9.0), (math.inf, 10.0))}


def test_buckets_extrapolated_out_of_order_are_made_cumulative_again() -> None:
    """increase() per bucket series: real vLLM's came out 3.6, 10.7, 9.2 ... in the contract test.
    As histogram_quantile does, a count below the one before it is raised to it."""
    found = buckets_by_service(
        [
            _bucket(KEY, "0.01", "3.6"),
            _bucket(KEY, "0.02", "10.7"),
            _bucket(KEY, "0.04", "9.2"),
            _bucket(KEY, "0.08", "15.3"),
            _bucket(KEY, "+Inf", "15.0"),
        ]
    )
    counts = [count for _, count in found[KEY]]
    assert counts == [3.6, 10.7, 10.7, 15.3, 15.3]


def test_buckets_and_the_gauge_averages_reach_the_signals() -> None:
    buckets = {KEY: ((0.5, 4.0), (math.inf, 10.0))}
    results = _results(requests_waiting_mean={KEY: 1.5}, requests_running_mean={KEY: 7.25})
    reading = signals_from_results(KEY, results, staleness_limit_seconds=60, buckets=buckets)
    assert reading.signals is not None
    assert reading.signals.ttft_buckets == buckets[KEY]
    assert reading.signals.requests_waiting_mean == 1.5
    assert reading.signals.requests_running_mean == 7.25
    bare = signals_from_results(KEY, _results(), staleness_limit_seconds=60)
    assert bare.signals is not None
    assert bare.signals.requests_waiting_mean is None
    assert bare.signals.requests_running_mean is None
    assert bare.signals.ttft_buckets == ()


def test_values_by_service_keeps_services_apart_and_marks_garbage_nan() -> None:
    values = values_by_service([_series(KEY, "3"), _series(OTHER, "NaN")])
    assert values[KEY] == 3.0
    assert math.isnan(values[OTHER])
    assert math.isnan(values_by_service([_series(KEY, "x")])[KEY])


def test_queue_and_prefill_time_buckets_reach_the_signals_apart_from_the_ttft_ones() -> None:
    ttft = {KEY: ((0.5, 4.0), (math.inf, 10.0))}
    waits = {KEY: ((0.3, 9.0), (math.inf, 10.0))}
    prefills = {KEY: ((0.3, 7.0), (math.inf, 10.0))}
    reading = signals_from_results(
        KEY,
        _results(),
        staleness_limit_seconds=60,
        buckets=ttft,
        queue_buckets=waits,
        prefill_buckets=prefills,
    )
    assert reading.signals is not None
    assert reading.signals.ttft_buckets == ttft[KEY]
    assert reading.signals.queue_time_buckets == waits[KEY]
    assert reading.signals.prefill_time_buckets == prefills[KEY]
    assert "increase(vllm:request_queue_time_seconds_bucket{" in build_bucket_query(
        KEY, histogram=QUEUE_TIME
    )
    assert "increase(vllm:request_prefill_time_seconds_bucket{" in build_bucket_query(
        KEY, histogram=PREFILL_TIME
    )


def test_fresh_results_become_signals() -> None:
    reading = signals_from_results(KEY, _results(), staleness_limit_seconds=60)
    assert reading.signals is not None
    assert reading.signals.requests_waiting == 7.0
    assert reading.signals.requests_running == 16.0
    assert reading.signals.kv_cache_usage == 0.4
    assert reading.signals.generation_tokens_per_second == 2100.0
    assert reading.signals.requests_per_second == 3.5
    assert reading.signals.ttft_p95_seconds == 0.25
    assert reading.signals.sample_age_seconds == 4.0


def test_no_first_token_in_window_is_unknown_not_zero() -> None:
    reading = signals_from_results(
        KEY, _results(ttft_p95_seconds={KEY: math.nan}), staleness_limit_seconds=60
    )
    assert reading.signals is not None
    assert reading.signals.ttft_p95_seconds is None


def test_tokens_per_finished_request_is_unknown_when_none_finished() -> None:
    def per_request(value: float) -> float | None:
        results = _results(tokens_per_finished_request={KEY: value})
        reading = signals_from_results(KEY, results, staleness_limit_seconds=60)
        assert reading.signals is not None
        return reading.signals.tokens_per_finished_request

    assert per_request(1350.0) == 1350.0
    assert per_request(math.nan) is None  # 0 / 0: no request finished in the window
    bare = signals_from_results(KEY, _results(), staleness_limit_seconds=60).signals
    assert bare is not None and bare.tokens_per_finished_request is None


def test_missing_rates_read_as_nothing_yet() -> None:
    reading = signals_from_results(
        KEY,
        _results(generation_tokens_per_second={}, requests_per_second={}),
        staleness_limit_seconds=60,
    )
    assert reading.signals is not None
    assert reading.signals.generation_tokens_per_second == 0.0
    assert reading.signals.requests_per_second == 0.0


def test_another_services_series_do_not_count() -> None:
    only_other = {name: {OTHER: 1.0} for name in _results()}
    reading = signals_from_results(KEY, only_other, staleness_limit_seconds=60)
    assert reading.signals is None
    assert "modelservice='llama-8b'" in reading.reason
    assert "namespace='team-a'" in reading.reason


def test_stale_samples_hold() -> None:
    reading = signals_from_results(
        KEY, _results(sample_age_seconds={KEY: 95.0}), staleness_limit_seconds=60
    )
    assert reading.signals is None
    assert "95 s old" in reading.reason


def test_the_held_requests_query_selects_the_service_by_the_same_labels() -> None:
    queries = build_held_queries(KEY, "thrifty_router_requests_held")
    assert queries["requests_held"] == (
        "sum by (namespace, modelservice) "
        '(thrifty_router_requests_held{namespace="team-a",modelservice="llama-8b"})'
    )
    assert queries["held_sample_age_seconds"].startswith("time() - max by (namespace, ")
    assert "gateway_queue" in build_held_queries(None, "gateway_queue")["requests_held"]


NO_ENGINES: dict[str, dict[ServiceKey, float]] = {name: {} for name in _results()}


def _held(count: float, age: float = 3.0) -> dict[str, dict[ServiceKey, float]]:
    return {"requests_held": {KEY: count}, "held_sample_age_seconds": {KEY: age}}


def test_requests_held_at_zero_engines_are_the_waiting_requests() -> None:
    reading = signals_from_results(KEY, NO_ENGINES | _held(5), staleness_limit_seconds=60)
    signals = reading.signals
    assert signals is not None
    assert signals.requests_waiting == 5.0
    assert (signals.requests_running, signals.kv_cache_usage, signals.requests_per_second) == (
        0.0,
        0.0,
        0.0,
    )
    assert signals.prompt_tokens_per_second == signals.generation_tokens_per_second == 0.0
    assert signals.ttft_p95_seconds is None
    assert signals.sample_age_seconds == 3.0
    assert "5 requests held by the gateway" in reading.reason


def test_no_engines_and_nothing_held_is_still_no_signals() -> None:
    for held in ({}, _held(0), _held(7, age=95.0), _held(math.nan)):
        reading = signals_from_results(KEY, NO_ENGINES | held, staleness_limit_seconds=60)
        assert reading.signals is None, held
        assert "no vLLM series" in reading.reason


def test_held_requests_add_to_the_engines_queue() -> None:
    reading = signals_from_results(KEY, _results() | _held(2), staleness_limit_seconds=60)
    assert reading.signals is not None
    assert reading.signals.requests_waiting == 9.0
    assert reading.signals.requests_running == 16.0


def test_held_requests_never_revive_stale_engine_samples() -> None:
    stale = _results(sample_age_seconds={KEY: 95.0}) | _held(4)
    assert signals_from_results(KEY, stale, staleness_limit_seconds=60).signals is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(30)
def test_unreachable_prometheus_gives_none_and_the_reason() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    source = PrometheusSignals(url, timeout_seconds=2)
    try:
        reading = asyncio.run(source.read("team-a", "llama-8b"))
        with pytest.raises(PrometheusUnreachableError):
            source.query("vllm:num_requests_running")
    finally:
        source.close()
    assert reading.signals is None
    assert reading.reason.startswith(f"Prometheus unreachable at {url}")


def test_pool_queries_sum_each_pools_finished_prefill_over_the_window() -> None:
    queries = build_pool_queries(KEY)
    assert set(queries) == {"prefill_seconds", "prompt_tokens", "requests"}
    for promql in queries.values():
        assert set(re.findall(r"vllm:[a-z_]+", promql)) <= VLLM_SERIES
        assert "by (namespace, modelservice, pool)" in promql
        assert f"[{WINDOW_SECONDS}s]" in promql and "increase(" in promql


def _pool_series(key: ServiceKey, pool: str | None, value: str) -> dict[str, object]:
    labels = {"namespace": key.namespace, "modelservice": key.model_service}
    if pool is not None:
        labels["pool"] = pool
    return {"metric": labels, "value": [1.7e9, value]}


def test_pool_answers_become_each_services_samples_and_partial_ones_are_left_out() -> None:
    found = pool_prefill_by_service(
        {
            "prefill_seconds": [
                _pool_series(KEY, "h100", "4"),
                _pool_series(KEY, "l4", "12"),
                _pool_series(KEY, None, "9"),  # a target without the pool label
                _pool_series(OTHER, "h100", "1"),
            ],
            "prompt_tokens": [
                _pool_series(KEY, "h100", "100000"),
                _pool_series(KEY, "l4", "90000"),
                _pool_series(OTHER, "h100", "NaN"),
            ],
            "requests": [_pool_series(KEY, "h100", "100"), _pool_series(KEY, "l4", "90")],
        }
    )
    assert found == {
        KEY: (PoolPrefill("h100", 4.0, 100000.0, 100.0), PoolPrefill("l4", 12.0, 90000.0, 90.0))
    }


def test_the_per_pool_queries_are_sent_only_when_asked_for() -> None:
    """Only a service on two pools or more learns each pool's speed: a round for services on
    one pool each leaves the three per-pool queries out."""

    class Recorded(PrometheusSignals):
        def __init__(self) -> None:
            super().__init__(f"http://127.0.0.1:{_closed_port()}", timeout_seconds=1)
            self.sent: list[str] = []

        def query(self, promql: str) -> QueryResult:
            self.sent.append(promql)
            return []

    pool_queries = set(build_pool_queries(None).values())
    for per_pool in (False, True):
        source = Recorded()
        try:
            source.read_all_blocking([KEY, ServiceKey("team-b", "x")], per_pool)
        finally:
            source.close()
        assert (pool_queries <= set(source.sent)) is per_pool
        assert not per_pool or len(source.sent) == len(set(source.sent))
