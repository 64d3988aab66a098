"""The operator's own /metrics: what thrifty decided, what it costs, and how healthy its loop is.

Operators of thrifty watch these next to vLLM's metrics: desired against current replicas, the
live $/hour and $/1M tokens per ModelService (and the reference price beside it), decisions
counted by reason and by the constraint that bound them, how long a decision and a reconcile take,
and how often Prometheus queries fail.

Every label set a dashboard or alert may select is created at zero as soon as the ModelService is
first seen (and every error kind at start), so `rate()` and `absent()` behave from the first scrape
instead of after the first event. The registry is an object, not prometheus-client's global, so
tests and two operators in one process do not share counters.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from thrifty.policy.types import Bound, Reason

MS_LABELS = ("namespace", "modelservice")

# Decisions take milliseconds; a Prometheus round trip dominates. Reconciles include API writes.
DECISION_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_ERROR_KINDS = ("Unreachable", "QueryFailed", "NoData", "Stale")

RECONCILE_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class OperatorMetrics:
    """All of thrifty's own series, in one registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.desired_replicas = Gauge(
            "thrifty_modelservice_desired_replicas",
            "Replicas thrifty wants for the ModelService (the scale target; advised in Advisory).",
            MS_LABELS,
            registry=r,
        )
        self.advised_replicas = Gauge(
            "thrifty_modelservice_advised_replicas",
            "Replicas the ModelService's advisory policy (spec.scaling.advisoryPolicy) would set.",
            (*MS_LABELS, "policy"),
            registry=r,
        )
        self.advising: dict[tuple[str, str], str] = {}
        self.decision_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}
        """The (reason, bound) series each ModelService has, so forgetting it removes them all."""
        self.current_replicas = Gauge(
            "thrifty_modelservice_current_replicas",
            "Ready replicas of the ModelService's Deployment.",
            MS_LABELS,
            registry=r,
        )
        self.cost_dollars_per_hour = Gauge(
            "thrifty_modelservice_cost_dollars_per_hour",
            "Current spend of the ModelService: replicas x GPUs per replica x price per GPU-hour.",
            MS_LABELS,
            registry=r,
        )
        self.cost_dollars_per_million_tokens = Gauge(
            "thrifty_modelservice_cost_dollars_per_million_tokens",
            "Realised cost per million (prompt + generated) tokens; NaN while no tokens flow.",
            MS_LABELS,
            registry=r,
        )
        self.reference_dollars_per_million_tokens = Gauge(
            "thrifty_modelservice_reference_dollars_per_million_tokens",
            "The reference price (spec.costTarget.referenceDollarsPerMillionTokens) blended by "
            "the service's prompt/generated token mix, per million tokens: what the tokens priced "
            "by the realised gauge would cost bought; NaN without a reference or tokens.",
            MS_LABELS,
            registry=r,
        )
        self.decisions = Counter(
            "thrifty_autoscaler_decisions",
            "Scaling decisions by reason and by the constraint that bound the replica count.",
            (*MS_LABELS, "reason", "bound"),
            registry=r,
        )
        self.decision_seconds = Histogram(
            "thrifty_autoscaler_decision_duration_seconds",
            "Time of one autoscaler pass: query Prometheus, decide, write.",
            registry=r,
            buckets=DECISION_BUCKETS_SECONDS,
        )
        self.reconcile_seconds = Histogram(
            "thrifty_reconcile_duration_seconds",
            "Time of one reconcile of a custom resource.",
            ("kind",),
            registry=r,
            buckets=RECONCILE_BUCKETS_SECONDS,
        )
        self.prometheus_query_errors = Counter(
            "thrifty_prometheus_query_errors",
            "Autoscaler passes whose Prometheus read failed, by kind: Unreachable, QueryFailed "
            "(an error answer or unreadable body), NoData (no vLLM series), Stale (old samples).",
            ("error",),
            registry=r,
        )
        for kind in QUERY_ERROR_KINDS:
            self.prometheus_query_errors.labels(error=kind)
        self.api_requests = Counter(
            "thrifty_kube_api_requests_total",
            "Requests thrifty's own code sent to the API server, by verb (kopf's watches and "
            "its bookkeeping patches not included).",
            ("verb",),
            registry=r,
        )
        for verb in ("get", "list", "patch", "create"):
            self.api_requests.labels(verb=verb)
        self.leader = Gauge(
            "thrifty_leader",
            "1 while this operator process holds the leader Lease and its timers act.",
            registry=r,
        )
        for kind in ("ModelService", "GPUPool", "CostBudget"):
            self.reconcile_seconds.labels(kind=kind)

    def init_modelservice(self, namespace: str, name: str) -> None:
        """Creates every series of one ModelService at zero (NaN for the $/1M tokens pair)."""
        labels = {"namespace": namespace, "modelservice": name}
        self.desired_replicas.labels(**labels)
        self.current_replicas.labels(**labels)
        self.cost_dollars_per_hour.labels(**labels)
        self.cost_dollars_per_million_tokens.labels(**labels).set(float("nan"))
        self.reference_dollars_per_million_tokens.labels(**labels).set(float("nan"))
        # One zero series per reason (bound None), not one per reason and bound: 66 series per
        # ModelService made a 1,000-service operator's /metrics several megabytes.
        for reason in Reason:
            self._decision_series(namespace, name, reason.value, Bound.NONE.value)

    def forget_modelservice(self, namespace: str, name: str) -> None:
        """Drops a deleted ModelService's series so they do not linger as stale gauges."""
        labels = (namespace, name)
        for gauge in (
            self.desired_replicas,
            self.current_replicas,
            self.cost_dollars_per_hour,
            self.cost_dollars_per_million_tokens,
            self.reference_dollars_per_million_tokens,
        ):
            _remove(gauge, labels)
        for reason, bound in self.decision_labels.pop(labels, set()):
            _remove(self.decisions, (*labels, reason, bound))
        advisor = self.advising.pop(labels, None)
        if advisor is not None:
            _remove(self.advised_replicas, (*labels, advisor))

    def observe_advice(self, namespace: str, name: str, policy: str, replicas: int) -> None:
        """The advisory policy's replicas (one series per ModelService: the policy in force)."""
        before = self.advising.get((namespace, name))
        if before is not None and before != policy:
            _remove(self.advised_replicas, (namespace, name, before))
        self.advising[(namespace, name)] = policy
        self.advised_replicas.labels(namespace, name, policy).set(replicas)

    def observe_modelservice(
        self,
        namespace: str,
        name: str,
        *,
        desired_replicas: int,
        ready_replicas: int,
        dollars_per_hour: float,
        dollars_per_million_tokens: float | None,
        reference_dollars_per_million_tokens: float | None,
    ) -> None:
        labels = {"namespace": namespace, "modelservice": name}
        self.desired_replicas.labels(**labels).set(desired_replicas)
        self.current_replicas.labels(**labels).set(ready_replicas)
        self.cost_dollars_per_hour.labels(**labels).set(dollars_per_hour)
        self.cost_dollars_per_million_tokens.labels(**labels).set(
            _or_nan(dollars_per_million_tokens)
        )
        self.reference_dollars_per_million_tokens.labels(**labels).set(
            _or_nan(reference_dollars_per_million_tokens)
        )

    def count_decision(self, namespace: str, name: str, reason: Reason, bound: Bound) -> None:
        self._decision_series(namespace, name, reason.value, bound.value).inc()

    def _decision_series(self, namespace: str, name: str, reason: str, bound: str) -> Counter:
        self.decision_labels.setdefault((namespace, name), set()).add((reason, bound))
        child: Counter = self.decisions.labels(
            namespace=namespace, modelservice=name, reason=reason, bound=bound
        )
        return child

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serves /metrics on `address`:`port` on a background thread (prometheus-client's own
        HTTP server)."""
        prometheus_client.start_http_server(port, addr=address, registry=self.registry)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _remove(collector: Gauge | Counter, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never created: nothing to drop
        collector.remove(*labels)
