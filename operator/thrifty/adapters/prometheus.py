"""Reads each ModelService's scaling signals from Prometheus: the only module that knows PromQL.

The policy wants one frozen `Signals` value per ModelService per tick, or an explicit "no data"
with the reason, so it can hold replicas instead of guessing. This adapter builds the PromQL from
vLLM's real metric names (checked against real vLLM by e2e/test_vllm_contract.py), runs it through
prometheus-api-client off the event loop, and turns transport and query failures into our own
exceptions and then into a `SignalsReading` with `signals=None` and a reason a human can act on.

Label contract: every vLLM series of a ModelService's pods carries the labels `namespace`, `pod`
and `modelservice` (the value of the pod label `thrifty.dev/model-service`). The fleet mirror
(runtime/thrifty_runtime/fleet_mirror.py) registers its engines as file_sd targets with exactly
those labels; on a real cluster a PodMonitor relabels `__meta_kubernetes_namespace` to `namespace`,
`__meta_kubernetes_pod_name` to `pod` and the pod label `thrifty.dev/model-service` to
`modelservice` (see docs/runtime.md). Queries group by `namespace` and `modelservice`, so one set
of queries serves every ModelService in a tick (`read_all`) and a single one (`read`) alike. The
per-pool queries (`build_pool_queries`, from which each pool's speed is learned) also group by
`pool`, the pod label `thrifty.dev/pool`; series without it only teach nothing.

Scale from zero: a ModelService without a ready engine has no vLLM series at all, so its only
demand signal is the requests a gateway holds for it. The gauge named by
`held_requests_metric` (default `thrifty_router_requests_held`, exported by thrifty-gateway,
runtime/thrifty_runtime/gateway/) carries the same two labels. With no engine series, held
requests become `Signals` with only `requests_waiting` set, so the policy scales from zero; with
engines, held requests add to `requests_waiting`. Neither engine series nor held requests: no
signals, as before (hold; never invent load).

Connection: `PrometheusConnection` is everything a real cluster's Prometheus (or any server with its
query API: Thanos Query, Mimir, VictoriaMetrics) may ask of a client: a path prefix, a bearer token
file (re-read when it changes, so a projected service-account token keeps working as the kubelet
rotates it), basic auth from files (a mounted Secret), a CA bundle, a client certificate, extra
headers, and skipping TLS verification only when asked. A refused credential is not an outage: it
becomes `signals=None` with the HTTP status in the reason, so the operator holds and says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import os
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import requests
import requests.auth
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from thrifty.api import throughput
from thrifty.autoscaler.world import ServiceKey, SignalsReading
from thrifty.policy.types import Signals

NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
MODEL_SERVICE_LABEL = "modelservice"
POD_MODEL_SERVICE_LABEL = "thrifty.dev/model-service"
"""The pod label the PodMonitor (or the fleet mirror) copies into `modelservice`."""

GROUP_BY = f"{NAMESPACE_LABEL}, {MODEL_SERVICE_LABEL}"

HELD_REQUESTS_METRIC = "thrifty_router_requests_held"
"""thrifty-gateway's gauge of requests held for a ModelService without a ready endpoint (the
name any other gateway in front must export, or `held_requests_metric` must name its own)."""


class MetricsError(Exception):
    """Prometheus gave no answer; the message says why (the MetricsAvailable reason)."""


class PrometheusUnreachableError(MetricsError):
    """No HTTP answer: connection refused, DNS, timeout."""


class PrometheusQueryError(MetricsError):
    """Prometheus answered with an error status or a body we cannot read."""


class PrometheusCredentialsError(MetricsError):
    """Prometheus refused our credentials (HTTP 401 or 403), or a credential file is unreadable."""


DEFAULT_URL = "http://127.0.0.1:9090"

ENV_PREFIX = "THRIFTY_PROMETHEUS_"
"""Every connection setting is one variable with this prefix (the chart sets them from values)."""

_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CREDENTIAL_HEADERS = ("authorization",)


@dataclass(frozen=True)
class PrometheusConnection:
    """How to reach Prometheus's query API. Files, not values, for every secret: the chart mounts
    them from a Secret or a projected token, and a file can be rotated under a running operator."""

    url: str = DEFAULT_URL
    """Scheme, host and port, optionally with a path (e.g. `https://thanos-query.monitoring:9090`)."""
    path_prefix: str = ""
    """Appended to `url` before `/api/v1/...`: Mimir's `/prometheus`, a proxy's route."""
    bearer_token_file: str = ""
    """Sent as `Authorization: Bearer <file content>`; re-read when the file changes."""
    basic_auth_username_file: str = ""
    basic_auth_password_file: str = ""
    ca_file: str = ""
    """PEM bundle that verifies the server; empty: the system's CAs."""
    cert_file: str = ""
    """Client certificate (PEM) for mutual TLS, with `key_file`."""
    key_file: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers, e.g. `X-Scope-OrgID` for a multi-tenant Mimir or Cortex."""
    insecure_skip_verify: bool = False
    """Do not verify the server's certificate. Only ever as an explicit setting."""

    @property
    def base_url(self) -> str:
        """Where `/api/v1/query` is appended."""
        return self.url.rstrip("/") + self.path_prefix

    @property
    def verify(self) -> bool | str:
        """requests' `verify`: False when told to skip, the CA bundle when given, else True."""
        if self.insecure_skip_verify:
            return False
        return self.ca_file or True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PrometheusConnection:
        """The connection from THRIFTY_PROMETHEUS_* variables; `ValueError` names a bad one."""

        def get(name: str) -> str:
            return env.get(ENV_PREFIX + name, "").strip()

        url = get("URL") or DEFAULT_URL
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"{ENV_PREFIX}URL must be an http:// or https:// URL with a host, got {url!r}"
            )
        if parsed.query or parsed.fragment:
            raise ValueError(f"{ENV_PREFIX}URL must not carry a query or fragment, got {url!r}")
        prefix = get("PATH_PREFIX").strip("/")
        if prefix and any(c in prefix for c in "?#"):
            raise ValueError(f"{ENV_PREFIX}PATH_PREFIX must be a URL path, got {prefix!r}")
        insecure_raw = get("INSECURE_SKIP_VERIFY").lower()
        if insecure_raw not in _TRUE + _FALSE:
            raise ValueError(
                f"{ENV_PREFIX}INSECURE_SKIP_VERIFY must be true or false, got {insecure_raw!r}"
            )
        username, password = get("BASIC_AUTH_USERNAME_FILE"), get("BASIC_AUTH_PASSWORD_FILE")
        if bool(username) != bool(password):
            raise ValueError(
                f"{ENV_PREFIX}BASIC_AUTH_USERNAME_FILE and {ENV_PREFIX}BASIC_AUTH_PASSWORD_FILE "
                "go together: set both or neither"
            )
        token = get("BEARER_TOKEN_FILE")
        if token and username:
            raise ValueError(
                f"{ENV_PREFIX}BEARER_TOKEN_FILE and {ENV_PREFIX}BASIC_AUTH_* both set: "
                "Prometheus takes one Authorization header, choose one"
            )
        cert, key = get("CERT_FILE"), get("KEY_FILE")
        if bool(cert) != bool(key):
            raise ValueError(
                f"{ENV_PREFIX}CERT_FILE and {ENV_PREFIX}KEY_FILE go together: set both or neither"
            )
        headers = _headers(get("HEADERS"))
        if (token or username) and any(n.lower() in _CREDENTIAL_HEADERS for n, _ in headers):
            raise ValueError(
                f"{ENV_PREFIX}HEADERS sets Authorization as well as a bearer token or basic auth"
            )
        return cls(
            url=url,
            path_prefix=f"/{prefix}" if prefix else "",
            bearer_token_file=token,
            basic_auth_username_file=username,
            basic_auth_password_file=password,
            ca_file=get("CA_FILE"),
            cert_file=cert,
            key_file=key,
            headers=headers,
            insecure_skip_verify=insecure_raw in _TRUE,
        )


def _headers(raw: str) -> tuple[tuple[str, str], ...]:
    """THRIFTY_PROMETHEUS_HEADERS: a JSON object of header names to string values."""
    if not raw:
        return ()
    name = f"{ENV_PREFIX}HEADERS"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f'{name} must be a JSON object, e.g. {{"X-Scope-OrgID": "t1"}}: {error}'
        ) from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object of header names to strings, got {raw!r}")
    headers = []
    for key, value in parsed.items():
        if not _HEADER_NAME.fullmatch(key) or not isinstance(value, str) or "\n" in value:
            raise ValueError(f"{name}: {key!r}: {value!r} is not an HTTP header name and string")
        headers.append((key, value))
    return tuple(sorted(headers))


class _CredentialFile:
    """A file's content, read again whenever its modification time, size or inode changes (the
    kubelet replaces a projected token or a Secret's files by swapping a symlink)."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self._what = what
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._content = ""

    def read(self) -> str:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            with self._lock:
                if stamp != self._stamp:
                    with open(self.path, encoding="utf-8") as file:
                        self._content = file.read().strip()
                    self._stamp = stamp
                content = self._content
        except (OSError, UnicodeDecodeError) as error:
            raise PrometheusCredentialsError(
                f"cannot read the Prometheus {self._what} file {self.path}: "
                f"{getattr(error, 'strerror', None) or type(error).__name__}"
            ) from error
        if not content:
            raise PrometheusCredentialsError(
                f"the Prometheus {self._what} file {self.path} is empty"
            )
        return content


class _BearerTokenAuth(requests.auth.AuthBase):
    def __init__(self, path: str) -> None:
        self._token = _CredentialFile(path, "bearer token")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.read()}"
        return request


class _BasicAuthFromFiles(requests.auth.AuthBase):
    def __init__(self, username_path: str, password_path: str) -> None:
        self._username = _CredentialFile(username_path, "basic-auth username")
        self._password = _CredentialFile(password_path, "basic-auth password")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        basic = requests.auth.HTTPBasicAuth(self._username.read(), self._password.read())
        return basic(request)


def session_auth(connection: PrometheusConnection) -> requests.auth.AuthBase | None:
    """The request authentication the connection asks for, reading its files on each request."""
    if connection.bearer_token_file:
        return _BearerTokenAuth(connection.bearer_token_file)
    if connection.basic_auth_username_file:
        return _BasicAuthFromFiles(
            connection.basic_auth_username_file, connection.basic_auth_password_file
        )
    return None


_STATUS = re.compile(r"HTTP Status Code (\d{3})")


def http_status(error: PrometheusApiClientException) -> int | None:
    """The HTTP status prometheus-api-client put in its message, if any."""
    found = _STATUS.search(str(error))
    return int(found.group(1)) if found else None


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


@dataclass(frozen=True)
class QueryWindows:
    """Range windows of the rate queries. A window must hold at least two scrapes, so keep it
    four or more scrape intervals long (the defaults suit a 15 s scrape)."""

    rate_seconds: int = 60
    ttft_seconds: int = 120


def _quote(value: str) -> str:
    """A PromQL string literal: double-quoted, with backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def label_matchers(key: ServiceKey | None, *extra: str) -> str:
    """`{namespace="ns",modelservice="ms"}` for one ModelService, `{modelservice!=""}` for all;
    ``extra`` matchers (e.g. `reason="capacity"`) follow them."""
    if key is None:
        matchers = [f'{MODEL_SERVICE_LABEL}!=""']
    else:
        matchers = [
            f"{NAMESPACE_LABEL}={_quote(key.namespace)}",
            f"{MODEL_SERVICE_LABEL}={_quote(key.model_service)}",
        ]
    return "{" + ",".join([*matchers, *extra]) + "}"


def build_queries(key: ServiceKey | None, windows: QueryWindows = QueryWindows()) -> dict[str, str]:
    """Every PromQL query the operator runs, by the `Signals` field it feeds. Each result has one
    series per (namespace, modelservice)."""
    sel = label_matchers(key)
    rate = f"[{windows.rate_seconds}s]"
    ttft = f"[{windows.ttft_seconds}s]"
    return {
        "requests_waiting": _waiting_for_capacity(key),
        # One scrape of the gauge shows a scheduler step; its average over the window, a queue.
        "requests_waiting_mean": _waiting_for_capacity(key, rate),
        "requests_running": f"sum by ({GROUP_BY}) (vllm:num_requests_running{sel})",
        "requests_running_mean": (
            f"sum by ({GROUP_BY}) (avg_over_time(vllm:num_requests_running{sel}{rate}))"
        ),
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
        # Per finished request, from the token histograms vLLM observes at each finish: token
        # rates over request rates count work on requests still in flight.
        "tokens_per_finished_request": (
            f"(sum by ({GROUP_BY}) (rate(vllm:request_prompt_tokens_sum{sel}{rate}))"
            f" + sum by ({GROUP_BY}) (rate(vllm:request_generation_tokens_sum{sel}{rate})))"
            f" / sum by ({GROUP_BY}) (rate(vllm:request_prompt_tokens_count{sel}{rate}))"
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


WAITING = "vllm:num_requests_waiting"
WAITING_BY_REASON = "vllm:num_requests_waiting_by_reason"
"""vLLM's split of `WAITING`: ``reason="capacity"`` (waiting for a place in the batch) and
``reason="deferred"`` (held by a transient constraint: a LoRA budget, a KV transfer, a blocked
status such as a grammar still compiling). Older engines export only the total."""


def _waiting_for_capacity(key: ServiceKey | None, window: str = "") -> str:
    """Requests waiting for a place in a batch, per ModelService: per pod, the ``capacity``
    reason where the engine gives reasons, else all it has waiting.

    More replicas shorten a queue for capacity; requests deferred for a KV transfer or a grammar
    wait as long on any number of replicas, and counted as a queue they would order replicas and
    teach a saturation that is not there. Chosen per pod, so a rollout between engine versions
    counts every pod once."""
    sel = label_matchers(key)
    capacity = label_matchers(key, 'reason="capacity"')
    by_pod = f"{GROUP_BY}, {POD_LABEL}"

    def per_pod(series: str) -> str:
        read = f"avg_over_time({series}{window})" if window else series
        return f"sum by ({by_pod}) ({read})"

    return (
        f"sum by ({GROUP_BY}) ({per_pod(WAITING_BY_REASON + capacity)} or {per_pod(WAITING + sel)})"
    )


TTFT = "vllm:time_to_first_token_seconds"
"""vLLM's histogram of each request's time to first token."""
QUEUE_TIME = "vllm:request_queue_time_seconds"
"""vLLM's histogram of how long each finished request waited to be scheduled."""
PREFILL_TIME = "vllm:request_prefill_time_seconds"
"""vLLM's histogram of each finished request's time from scheduled to first token."""


def build_bucket_query(
    key: ServiceKey | None,
    windows: QueryWindows = QueryWindows(),
    histogram: str = TTFT,
) -> str:
    """A histogram over the TTFT window, one series per (namespace, modelservice, le): the TTFT
    one by default, from which any percentile and the share within a target are read
    (`Signals.ttft_buckets`), `QUEUE_TIME` (`Signals.queue_time_buckets`) or `PREFILL_TIME`
    (`Signals.prefill_time_buckets`)."""
    sel = label_matchers(key)
    return f"sum by ({GROUP_BY}, le) (increase({histogram}_bucket{sel}[{windows.ttft_seconds}s]))"


POOL_LABEL = "pool"
"""The label the PodMonitor (or the fleet mirror) copies the pod label `thrifty.dev/pool` into."""

_POOL_SUMS = {
    "prefill_seconds": f"{PREFILL_TIME}_sum",
    "prompt_tokens": "vllm:request_prompt_tokens_sum",
    "requests": f"{PREFILL_TIME}_count",
}


def build_pool_queries(key: ServiceKey | None) -> dict[str, str]:
    """Per (namespace, modelservice, pool), the prefill seconds, prompt tokens and count of the
    requests that finished over `throughput.WINDOW_SECONDS` (`PoolPrefill`)."""
    sel = label_matchers(key)
    window = f"[{throughput.WINDOW_SECONDS}s]"
    return {
        name: f"sum by ({GROUP_BY}, {POOL_LABEL}) (increase({metric}{sel}{window}))"
        for name, metric in _POOL_SUMS.items()
    }


def pool_prefill_by_service(
    results: Mapping[str, QueryResult],
) -> dict[ServiceKey, tuple[throughput.PoolPrefill, ...]]:
    """`build_pool_queries`' answers as each service's `PoolPrefill` per pool; a series without
    a pool label (a target the PodMonitor did not label) or with an unreadable value is left
    out."""
    sums: dict[tuple[ServiceKey, str], dict[str, float]] = {}
    for name, result in results.items():
        for series in result:
            labels = series.get("metric", {})
            pool = str(labels.get(POOL_LABEL, ""))
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if pool and math.isfinite(value):
                key = ServiceKey(
                    str(labels.get(NAMESPACE_LABEL, "")), str(labels.get(MODEL_SERVICE_LABEL, ""))
                )
                sums.setdefault((key, pool), {})[name] = value
    found: dict[ServiceKey, list[throughput.PoolPrefill]] = {}
    for (key, pool), values in sorted(sums.items()):
        if set(values) == set(_POOL_SUMS):
            found.setdefault(key, []).append(throughput.PoolPrefill(pool=pool, **values))
    return {key: tuple(pools) for key, pools in found.items()}


Buckets = tuple[tuple[float, float], ...]


def buckets_by_service(result: QueryResult) -> dict[ServiceKey, Buckets]:
    """Cumulative (upper bound, count) per ModelService, ascending; unreadable series are left
    out, and so is a service whose histogram lacks its +Inf bucket (it cannot be read).

    `increase()` extrapolates each bucket's series on its own, so a bucket can come out above
    the next one (real vLLM gave 10.7 then 9.2); as Prometheus' histogram_quantile does, each
    count is raised to the largest below it, so the histogram stays cumulative."""
    found: dict[ServiceKey, list[tuple[float, float]]] = {}
    for series in result:
        labels = series.get("metric", {})
        key = ServiceKey(
            str(labels.get(NAMESPACE_LABEL, "")), str(labels.get(MODEL_SERVICE_LABEL, ""))
        )
        try:
            bound = float(labels["le"])
            count = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(count) and count >= 0.0 and not math.isnan(bound):
            found.setdefault(key, []).append((bound, count))
    return {
        key: _cumulative(sorted(pairs))
        for key, pairs in found.items()
        if any(math.isinf(bound) for bound, _ in pairs)
    }


def _cumulative(pairs: Sequence[tuple[float, float]]) -> Buckets:
    counts = itertools.accumulate((count for _, count in pairs), max)
    return tuple((bound, count) for (bound, _), count in zip(pairs, counts, strict=True))


def build_held_queries(key: ServiceKey | None, metric: str) -> dict[str, str]:
    """The held-requests gauge, summed over gateway replicas, and the age of its newest
    sample."""
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
    """(requests held, age of the sample); (0, inf) when absent, unreadable or stale: a gateway
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
    buckets: Mapping[ServiceKey, Buckets] | None = None,
    queue_buckets: Mapping[ServiceKey, Buckets] | None = None,
    prefill_buckets: Mapping[ServiceKey, Buckets] | None = None,
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
    per_request = results.get("tokens_per_finished_request", {}).get(key)
    signals = Signals(
        # Requests the gateway holds wait too, only in front of the engines' queues.
        requests_waiting=value("requests_waiting") + held,
        requests_running=value("requests_running"),
        kv_cache_usage=value("kv_cache_usage"),
        prompt_tokens_per_second=value("prompt_tokens_per_second"),
        generation_tokens_per_second=value("generation_tokens_per_second"),
        requests_per_second=value("requests_per_second"),
        # NaN when no first token landed in the window: unknown, not zero.
        ttft_p95_seconds=ttft if ttft is not None and math.isfinite(ttft) else None,
        sample_age_seconds=age,
        requests_waiting_mean=_mean_waiting(key, results, held),
        requests_running_mean=_gauge_mean("requests_running_mean", key, results),
        # NaN (0 / 0) when no request finished in the window.
        tokens_per_finished_request=(
            per_request if per_request is not None and math.isfinite(per_request) else None
        ),
        ttft_buckets=(buckets or {}).get(key, ()),
        queue_time_buckets=(queue_buckets or {}).get(key, ()),
        prefill_time_buckets=(prefill_buckets or {}).get(key, ()),
    )
    # The condition message stays the same from pass to pass (the age is in the signals): a
    # number that moves every scrape would cost a status write per pass on a settled service.
    return SignalsReading(
        signals, f"read from Prometheus (samples newer than {staleness_limit_seconds:.0f} s)"
    )


def _mean_waiting(
    key: ServiceKey, results: Mapping[str, Mapping[ServiceKey, float]], held: float
) -> float | None:
    mean = _gauge_mean("requests_waiting_mean", key, results)
    return None if mean is None else mean + held


def _gauge_mean(
    name: str, key: ServiceKey, results: Mapping[str, Mapping[ServiceKey, float]]
) -> float | None:
    """An ``avg_over_time`` answer; None when not queried or not finite."""
    mean = results.get(name, {}).get(key)
    return max(mean, 0.0) if mean is not None and math.isfinite(mean) else None


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
        f"no ready engine; {held:.0f} requests held by the gateway, read as waiting",
    )


@dataclass(frozen=True)
class _Answers:
    values: dict[str, dict[ServiceKey, float]]
    histograms: dict[str, dict[ServiceKey, Buckets]]
    pools: dict[ServiceKey, tuple[throughput.PoolPrefill, ...]]


class PrometheusSignals:
    """The operator's window on Prometheus. Blocking HTTP runs in a worker thread."""

    def __init__(
        self,
        connection: PrometheusConnection | str,
        *,
        timeout_seconds: float = 5.0,
        staleness_limit_seconds: float = 60.0,
        windows: QueryWindows = QueryWindows(),
        held_requests_metric: str = HELD_REQUESTS_METRIC,
    ) -> None:
        """`held_requests_metric`: the gauge of requests a gateway holds for a
        ModelService without a ready engine (labels `namespace`, `modelservice`); empty: none.
        `connection`: a `PrometheusConnection`, or a plain URL (no auth, default TLS)."""
        if isinstance(connection, str):
            connection = PrometheusConnection(url=connection)
        self.connection = connection
        self.url = connection.base_url
        self._held_requests_metric = held_requests_metric
        self._timeout_seconds = timeout_seconds
        self._staleness_limit_seconds = staleness_limit_seconds
        self._windows = windows
        # No retries inside a tick: the next tick is the retry, and a dead Prometheus must not
        # stall the control loop for the client's default back-off (seconds per query).
        session = requests.Session()
        session.verify = connection.verify
        if connection.cert_file:
            session.cert = (connection.cert_file, connection.key_file)
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(connection.headers) or None,
            auth=session_auth(connection),
            retry=Retry(total=0),
            session=session,
        )

    def close(self) -> None:
        self._client.close()

    def query(self, promql: str) -> QueryResult:
        """One instant query; raises `MetricsError` subclasses, never library errors."""
        try:
            result = self._client.custom_query(promql, timeout=self._timeout_seconds)
        except requests.exceptions.SSLError as error:
            raise PrometheusUnreachableError(
                f"Prometheus unreachable at {self.url}: TLS failed ({_ssl_reason(error)}); "
                "check the CA bundle and client certificate"
            ) from error
        except requests.exceptions.RequestException as error:
            raise PrometheusUnreachableError(
                f"Prometheus unreachable at {self.url}: {type(error).__name__}"
            ) from error
        except PrometheusApiClientException as error:
            status = http_status(error)
            if status in (401, 403):
                raise PrometheusCredentialsError(
                    f"Prometheus at {self.url} refused the credentials: {_status_text(status)}; "
                    "check the bearer token or basic-auth Secret"
                ) from error
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

    def _query_all(self, key: ServiceKey | None, per_pool: bool) -> _Answers:
        """Runs every query; raises `MetricsError` on the first failure. The histograms come
        by name (`TTFT`, `QUEUE_TIME`, `PREFILL_TIME`); the per-pool ones only if ``per_pool``."""
        queries = build_queries(key, self._windows)
        if self._held_requests_metric:
            queries |= build_held_queries(key, self._held_requests_metric)
        values = {name: values_by_service(self.query(promql)) for name, promql in queries.items()}
        histograms = {
            name: buckets_by_service(self.query(build_bucket_query(key, self._windows, name)))
            for name in (TTFT, QUEUE_TIME, PREFILL_TIME)
        }
        pools = pool_prefill_by_service(
            {name: self.query(promql) for name, promql in build_pool_queries(key).items()}
            if per_pool
            else {}
        )
        return _Answers(values, histograms, pools)

    def read_all_blocking(
        self, keys: Iterable[ServiceKey], per_pool: bool = True
    ) -> dict[ServiceKey, SignalsReading]:
        """One round of queries for many ModelServices (one query per signal, not per service).
        ``per_pool``: also each pool's prefill, which only a service on two pools or more uses
        (three queries fewer a round otherwise: a managed Prometheus bills by the query)."""
        wanted = list(keys)
        selector = wanted[0] if len(wanted) == 1 else None
        try:
            answers = self._query_all(selector, per_pool)
        except MetricsError as error:
            return {key: SignalsReading(None, str(error)) for key in wanted}
        histograms = answers.histograms
        readings = {}
        for key in wanted:
            reading = signals_from_results(
                key,
                answers.values,
                staleness_limit_seconds=self._staleness_limit_seconds,
                buckets=histograms[TTFT],
                queue_buckets=histograms[QUEUE_TIME],
                prefill_buckets=histograms[PREFILL_TIME],
            )
            if reading.signals is not None:
                reading = dataclasses.replace(reading, pool_prefill=answers.pools.get(key, ()))
            readings[key] = reading
        return readings

    async def read_all(
        self, keys: Iterable[ServiceKey], per_pool: bool = True
    ) -> dict[ServiceKey, SignalsReading]:
        return await asyncio.to_thread(self.read_all_blocking, list(keys), per_pool)

    async def read(self, namespace: str, model_service: str) -> SignalsReading:
        """The signals of one ModelService, or None and the reason."""
        key = ServiceKey(namespace, model_service)
        return (await self.read_all([key]))[key]


def _ssl_reason(error: requests.exceptions.SSLError) -> str:
    """The innermost reason of a TLS failure (`CERTIFICATE_VERIFY_FAILED`, `tlsv13 alert
    certificate required`), without the URL and pool noise urllib3 wraps it in."""
    text = str(error)
    found = re.search(r"\[SSL: ([A-Z0-9_]+)\]", text) or re.search(
        r"SSLError\(\d+, '(?:\[SSL\] )?([^'(]+?)\s*(?:\(_ssl[^']*)?'", text
    )
    return found.group(1) if found else type(error).__name__
