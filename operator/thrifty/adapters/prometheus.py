"""Reads each ModelService's scaling signals from Prometheus: the only module that knows PromQL.

The policy wants one frozen `Signals` value per ModelService per tick, or an explicit "no data"
with the reason, so it can hold replicas instead of guessing. This adapter builds the PromQL from
vLLM's real metric names (checked against real vLLM by e2e/test_vllm_contract.py), runs it through
prometheus-api-client off the event loop, and turns transport and query failures into our own
exceptions and then into a `SignalsReading` with `signals=None` and a reason a human can act on.

Label contract: every vLLM series of a ModelService's pods carries the labels `namespace`, `pod`
and `model_service` (the value of the pod label `thrifty.dev/model-service`). The fleet mirror
(runtime/thrifty_runtime/fleet_mirror.py) registers its engines as file_sd targets with exactly
those labels; on a real cluster a PodMonitor relabels `__meta_kubernetes_namespace` to `namespace`,
`__meta_kubernetes_pod_name` to `pod` and the pod label `thrifty.dev/model-service` to
`model_service` (see docs/runtime.md). Queries group by `namespace` and `model_service`, so one set
of queries serves every ModelService in a tick (`read_all`) and a single one (`read`) alike.

Scale from zero: a ModelService without a ready engine has no vLLM series at all, so its only
demand signal is the requests its router (or gateway) holds for it. The gauge named by
`held_requests_metric` (default `thrifty_router_requests_held`, exported by thrifty's router,
runtime/thrifty_runtime/router.py) carries the same two labels. With no engine series, held
requests become `Signals` with only `requests_waiting` set, so the policy scales from zero; with
engines, held requests add to `requests_waiting`. Neither engine series nor held requests: no
signals, as before (hold; never invent load).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from thrifty.autoscaler.world import ServiceKey, SignalsReading
from thrifty.policy.types import Signals

NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
MODEL_SERVICE_LABEL = "model_service"
POD_MODEL_SERVICE_LABEL = "thrifty.dev/model-service"
"""The pod label the PodMonitor (or the fleet mirror) copies into `model_service`."""

GROUP_BY = f"{NAMESPACE_LABEL}, {MODEL_SERVICE_LABEL}"

HELD_REQUESTS_METRIC = "thrifty_router_requests_held"
"""The router's gauge of requests held for a ModelService without a ready engine."""


class MetricsError(Exception):
    """Prometheus gave no answer; the message says why (the MetricsAvailable reason)."""


class PrometheusUnreachableError(MetricsError):
    """No HTTP answer: connection refused, DNS, timeout."""


class PrometheusQueryError(MetricsError):
    """Prometheus answered with an error status or a body we cannot read."""


@dataclass(frozen=True)
class QueryWindows:
    """Range windows of the rate queries. A window must hold at least two scrapes, so keep it
    four or more scrape intervals long (the defaults suit a 15 s scrape)."""

    rate_seconds: int = 60
    ttft_seconds: int = 120


def _quote(value: str) -> str:
    """A PromQL string literal: double-quoted, with backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def label_matchers(key: ServiceKey | None) -> str:
    """`{namespace="ns",model_service="ms"}` for one ModelService, `{model_service!=""}` for all."""
    if key is None:
        return f'{{{MODEL_SERVICE_LABEL}!=""}}'
    return (
        f"{{{NAMESPACE_LABEL}={_quote(key.namespace)},"
        f"{MODEL_SERVICE_LABEL}={_quote(key.model_service)}}}"
    )


def build_queries(key: ServiceKey | None, windows: QueryWindows = QueryWindows()) -> dict[str, str]:
    """Every PromQL query the operator runs, by the `Signals` field it feeds. Each result has one
    series per (namespace, model_service)."""
    sel = label_matchers(key)
    rate = f"[{windows.rate_seconds}s]"
    ttft = f"[{windows.ttft_seconds}s]"
    return {
        "requests_waiting": f"sum by ({GROUP_BY}) (vllm:num_requests_waiting{sel})",
        "requests_running": f"sum by ({GROUP_BY}) (vllm:num_requests_running{sel})",
        "kv_cache_usage": f"avg by ({GROUP_BY}) (vllm:kv_cache_usage_perc{sel})",
        "prompt_tokens_per_second": (
            f"sum by ({GROUP_BY}) (rate(vllm:prompt_tokens_total{sel}{rate}))"
        ),
        "generation_tokens_per_second": (
            f"sum by ({GROUP_BY}) (rate(vllm:generation_tokens_total{sel}{rate}))"
        ),
        "requests_per_second": (
            f"sum by ({GROUP_BY}) (rate(vllm:request_success_total{sel}{rate}))"
        ),
        "ttft_p95_seconds": (
            f"histogram_quantile(0.95, sum by ({GROUP_BY}, le) "
            f"(rate(vllm:time_to_first_token_seconds_bucket{sel}{ttft})))"
        ),
        # Prometheus's own clock (not ours) measures the age, so clock skew cannot fake freshness.
        "sample_age_seconds": (
            f"time() - max by ({GROUP_BY}) (timestamp(vllm:num_requests_running{sel}))"
        ),
    }


def build_held_queries(key: ServiceKey | None, metric: str) -> dict[str, str]:
    """The held-requests gauge, summed over router replicas, and the age of its newest sample."""
    sel = label_matchers(key)
    return {
        "requests_held": f"sum by ({GROUP_BY}) ({metric}{sel})",
        "held_sample_age_seconds": f"time() - max by ({GROUP_BY}) (timestamp({metric}{sel}))",
    }


QueryResult = Sequence[Mapping[str, Any]]
"""The `result` list of an instant vector query: [{"metric": {...}, "value": [ts, "v"]}, ...]."""


def values_by_service(result: QueryResult) -> dict[ServiceKey, float]:
    """One float per ModelService from an instant vector; unparsable values become NaN."""
    values: dict[ServiceKey, float] = {}
    for series in result:
        labels = series.get("metric", {})
        key = ServiceKey(
            str(labels.get(NAMESPACE_LABEL, "")), str(labels.get(MODEL_SERVICE_LABEL, ""))
        )
        try:
            values[key] = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            values[key] = math.nan
    return values


def _finite_or(value: float | None, default: float) -> float:
    return value if value is not None and math.isfinite(value) else default


def held_requests(
    key: ServiceKey,
    results: Mapping[str, Mapping[ServiceKey, float]],
    *,
    staleness_limit_seconds: float,
) -> tuple[float, float]:
    """(requests held, age of the sample); (0, inf) when absent, unreadable or stale: a router
    that stopped reporting is not evidence of demand."""
    held = results.get("requests_held", {}).get(key)
    age = results.get("held_sample_age_seconds", {}).get(key)
    if held is None or age is None or not math.isfinite(held) or not math.isfinite(age):
        return 0.0, math.inf
    age = max(0.0, age)
    if age > staleness_limit_seconds:
        return 0.0, math.inf
    return max(held, 0.0), age


def signals_from_results(
    key: ServiceKey,
    results: Mapping[str, Mapping[ServiceKey, float]],
    *,
    staleness_limit_seconds: float,
) -> SignalsReading:
    """The pure decision of what one ModelService's query results mean."""
    held, held_age = held_requests(key, results, staleness_limit_seconds=staleness_limit_seconds)
    age = results["sample_age_seconds"].get(key)
    has_gauges = key in results["requests_waiting"] and key in results["requests_running"]
    if age is None or not has_gauges or not math.isfinite(age):
        if held > 0.0:
            return _held_only(held, held_age)
        return SignalsReading(
            None,
            f"no vLLM series in Prometheus for {MODEL_SERVICE_LABEL}={key.model_service!r} in "
            f"{NAMESPACE_LABEL}={key.namespace!r}: no ready engine is being scraped, or its "
            "targets lack these labels",
        )
    age = max(0.0, age)
    if age > staleness_limit_seconds:
        return SignalsReading(
            None,
            f"newest vLLM sample for {key} is {age:.0f} s old "
            f"(limit {staleness_limit_seconds:.0f} s): scrapes are failing",
        )

    def value(name: str) -> float:
        # A rate over a window with fewer than two samples is absent: read it as "nothing yet".
        return _finite_or(results[name].get(key), 0.0)

    ttft = results["ttft_p95_seconds"].get(key)
    signals = Signals(
        # Requests the router holds wait too, only in front of the engines' queues.
        requests_waiting=value("requests_waiting") + held,
        requests_running=value("requests_running"),
        kv_cache_usage=value("kv_cache_usage"),
        prompt_tokens_per_second=value("prompt_tokens_per_second"),
        generation_tokens_per_second=value("generation_tokens_per_second"),
        requests_per_second=value("requests_per_second"),
        # NaN when no first token landed in the window: unknown, not zero.
        ttft_p95_seconds=ttft if ttft is not None and math.isfinite(ttft) else None,
        sample_age_seconds=age,
    )
    # The condition message stays the same from pass to pass (the age is in the signals): a
    # number that moves every scrape would cost a status write per pass on a settled service.
    return SignalsReading(
        signals, f"read from Prometheus (samples newer than {staleness_limit_seconds:.0f} s)"
    )


def _held_only(held: float, age: float) -> SignalsReading:
    """No engine is serving but requests wait for one: that is all the load there is to see."""
    signals = Signals(
        requests_waiting=held,
        requests_running=0.0,
        kv_cache_usage=0.0,
        prompt_tokens_per_second=0.0,
        generation_tokens_per_second=0.0,
        requests_per_second=0.0,
        ttft_p95_seconds=None,
        sample_age_seconds=age,
    )
    return SignalsReading(
        signals,
        f"no ready engine; {held:.0f} requests held by the router, read as waiting",
    )


class PrometheusSignals:
    """The operator's window on Prometheus. Blocking HTTP runs in a worker thread."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 5.0,
        staleness_limit_seconds: float = 60.0,
        windows: QueryWindows = QueryWindows(),
        held_requests_metric: str = HELD_REQUESTS_METRIC,
    ) -> None:
        """`held_requests_metric`: the gauge of requests a router or gateway holds for a
        ModelService without a ready engine (labels `namespace`, `model_service`); empty: none."""
        self.url = url.rstrip("/")
        self._held_requests_metric = held_requests_metric
        self._timeout_seconds = timeout_seconds
        self._staleness_limit_seconds = staleness_limit_seconds
        self._windows = windows
        # No retries inside a tick: the next tick is the retry, and a dead Prometheus must not
        # stall the control loop for the client's default back-off (seconds per query).
        self._client = PrometheusConnect(url=self.url, disable_ssl=True, retry=Retry(total=0))

    def close(self) -> None:
        self._client.close()

    def query(self, promql: str) -> QueryResult:
        """One instant query; raises `MetricsError` subclasses, never library errors."""
        try:
            result = self._client.custom_query(promql, timeout=self._timeout_seconds)
        except requests.exceptions.RequestException as error:
            raise PrometheusUnreachableError(
                f"Prometheus unreachable at {self.url}: {type(error).__name__}"
            ) from error
        except PrometheusApiClientException as error:
            raise PrometheusQueryError(f"Prometheus at {self.url} refused a query: {error}") from (
                error
            )
        except ValueError as error:  # a body that is not JSON
            raise PrometheusQueryError(f"Prometheus at {self.url} sent an unreadable answer") from (
                error
            )
        if not isinstance(result, list):
            raise PrometheusQueryError(f"Prometheus at {self.url} sent a non-vector result")
        return result

    def _query_all(self, key: ServiceKey | None) -> dict[str, dict[ServiceKey, float]]:
        """Runs every query; raises `MetricsError` on the first failure."""
        queries = build_queries(key, self._windows)
        if self._held_requests_metric:
            queries |= build_held_queries(key, self._held_requests_metric)
        return {name: values_by_service(self.query(promql)) for name, promql in queries.items()}

    def read_all_blocking(self, keys: Iterable[ServiceKey]) -> dict[ServiceKey, SignalsReading]:
        """One round of queries for many ModelServices (one query per signal, not per service)."""
        wanted = list(keys)
        selector = wanted[0] if len(wanted) == 1 else None
        try:
            results = self._query_all(selector)
        except MetricsError as error:
            return {key: SignalsReading(None, str(error)) for key in wanted}
        return {
            key: signals_from_results(
                key,
                results,
                staleness_limit_seconds=self._staleness_limit_seconds,
            )
            for key in wanted
        }

    async def read_all(self, keys: Iterable[ServiceKey]) -> dict[ServiceKey, SignalsReading]:
        return await asyncio.to_thread(self.read_all_blocking, list(keys))

    async def read(self, namespace: str, model_service: str) -> SignalsReading:
        """The signals of one ModelService, or None and the reason."""
        key = ServiceKey(namespace, model_service)
        return (await self.read_all([key]))[key]
