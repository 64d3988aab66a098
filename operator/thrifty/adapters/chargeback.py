"""The PromQL behind `thrifty report`: tenants' tokens and ModelServices' cost per period.

Three instant queries at the end of each period, over the period's length:

- tokens per tenant, ModelService and kind: `increase` of the gateway's
  `thrifty_gateway_tokens_total`;
- each ModelService's cost: the operator's `thrifty_modelservice_cost_dollars_per_hour`
  integrated over the period (a 1-minute subquery: sum of samples x
  1/60 h);
- each ModelService's reference price, as the gateway exports it.

`thrifty.chargeback.allocate` turns them into lines. Library errors become `MetricsError`s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from thrifty import chargeback
from thrifty.adapters.prometheus import PrometheusQueryError, PrometheusUnreachableError

TOKENS_METRIC = "thrifty_gateway_tokens_total"
COST_METRIC = "thrifty_modelservice_cost_dollars_per_hour"
REFERENCE_METRIC = "thrifty_gateway_reference_dollars_per_million_tokens"
RESOLUTION_SECONDS = 60

Query = Callable[[str, float], list[dict[str, Any]]]
"""(promql, unix time) -> the instant vector."""


def build_queries(
    window_seconds: int, resolution_seconds: int = RESOLUTION_SECONDS
) -> dict[str, str]:
    w, r = window_seconds, resolution_seconds
    return {
        "tokens": (
            f"sum by (tenant, namespace, modelservice, kind) (increase({TOKENS_METRIC}[{w}s]))"
        ),
        "dollars": (
            f"sum by (namespace, modelservice) "
            f"(sum_over_time({COST_METRIC}[{w}s:{r}s])) * {r} / 3600"
        ),
        "reference": (
            f"max by (namespace, modelservice, kind) (last_over_time({REFERENCE_METRIC}[{w}s]))"
        ),
    }


def periods(
    start: dt.datetime, end: dt.datetime, step: dt.timedelta
) -> list[tuple[str, dt.datetime, int]]:
    """(label, end, seconds) of each period from `start` to `end`; the last may be shorter."""
    found = []
    at = start
    while at < end:
        until = min(at + step, end)
        label = at.date().isoformat() if step == dt.timedelta(days=1) else at.isoformat()
        found.append((label, until, int((until - at).total_seconds())))
        at = until
    return found


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def read(
    query: Query,
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
    resolution_seconds: int = RESOLUTION_SECONDS,
) -> tuple[list[chargeback.TenantUsage], list[chargeback.ServiceCost]]:
    """`resolution_seconds`: the step of the cost integral (at least the scrape interval)."""
    usage: list[chargeback.TenantUsage] = []
    costs: list[chargeback.ServiceCost] = []
    for label, until, seconds in periods(start, end, step):
        if seconds < resolution_seconds:
            continue
        queries = build_queries(seconds, resolution_seconds)
        at = until.timestamp()
        tokens: dict[tuple[str, str, str], dict[str, int]] = {}
        for sample in query(queries["tokens"], at):
            metric = sample["metric"]
            key = (metric.get("tenant", ""), metric.get("namespace", ""), metric["modelservice"])
            tokens.setdefault(key, {})[metric.get("kind", "")] = round(_value(sample))
        for (tenant, namespace, model_service), kinds in sorted(tokens.items()):
            usage.append(
                chargeback.TenantUsage(
                    label,
                    tenant,
                    namespace,
                    model_service,
                    kinds.get("prompt", 0),
                    kinds.get("completion", 0),
                )
            )
        reference: dict[tuple[str, str], dict[str, Decimal]] = {}
        for sample in query(queries["reference"], at):
            metric = sample["metric"]
            key2 = (metric.get("namespace", ""), metric.get("modelservice", ""))
            reference.setdefault(key2, {})[metric.get("kind", "")] = Decimal(str(_value(sample)))
        for sample in query(queries["dollars"], at):
            metric = sample["metric"]
            key2 = (metric.get("namespace", ""), metric.get("modelservice", ""))
            price = reference.get(key2, {})
            costs.append(
                chargeback.ServiceCost(
                    label,
                    key2[0],
                    key2[1],
                    Decimal(str(_value(sample))),
                    price.get("prompt"),
                    price.get("completion"),
                )
            )
    return usage, costs


def prometheus_query(url: str, timeout_seconds: float = 30.0) -> Query:
    """An instant-query function on the Prometheus at `url`."""
    client = PrometheusConnect(url=url.rstrip("/"), disable_ssl=True, retry=Retry(total=2))

    def query(promql: str, at: float) -> list[dict[str, Any]]:
        try:
            result = client.custom_query(promql, params={"time": at}, timeout=timeout_seconds)
        except requests.exceptions.RequestException as error:
            raise PrometheusUnreachableError(f"Prometheus unreachable at {url}: {error}") from error
        except (PrometheusApiClientException, ValueError) as error:
            raise PrometheusQueryError(f"Prometheus at {url} refused a query: {error}") from error
        if not isinstance(result, list):
            raise PrometheusQueryError(f"Prometheus at {url} sent a non-vector result")
        return result

    return query
