"""The autoscaling timer: per ModelService, each decision interval, read -> decide -> write target.

A kopf timer per ModelService runs one pass: read the object, its replica pods and its pool; read
its signals through the Prometheus adapter; when it shares a CostBudget, get its allowance from
`thrifty.budget` (members of one budget are decided one at a time, under a lock); build the
observation (`thrifty.observe`) and call the policy; write *only* the replica target, through the
scale subresource, so the reconciler stays the only writer of the Deployment; then write status
(one merge patch, only when something changed, guarded by the resourceVersion read), an Event per
scale, and the operator's own metrics.

Modes (`thrifty.autoscaling.authority`): Manual writes nothing but status; Advisory decides and
reports (status, Events, metrics) without touching replicas; Auto scales unless an HPA or another
field manager drives spec.replicas, in which case it acts as Advisory and says why. Only the
operator replica holding the leader Lease acts (`thrifty.control.leadership`); the others' timers
return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf
import pydantic

from thrifty import budget, cost, explain
from thrifty.adapters import kube, operator_metrics
from thrifty.adapters.lease import LeaseStore
from thrifty.adapters.prometheus import (
    HELD_REQUESTS_METRIC,
    PrometheusSignals,
    ServiceKey,
    SignalsReading,
)
from thrifty.adapters.scale import ScaleClient
from thrifty.api import GROUP, VERSION, costbudget, gpupool, modelservice
from thrifty.autoscaler import observe
from thrifty.autoscaler import status as autoscaling
from thrifty.control import leadership
from thrifty.policy import types
from thrifty.policy.thrifty_policy import ThriftyPolicy

log = logging.getLogger(__name__)

PRIORITY_ANNOTATION = "thrifty.dev/budget-priority"
"""Optional integer on a ModelService: within a CostBudget, higher keeps its money longer."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _env_metric_name(name: str, default: str) -> str:
    """A Prometheus metric name, or empty (the feature it feeds is off)."""
    value = os.environ.get(name, default).strip()
    if value and not METRIC_NAME.fullmatch(value):
        raise ValueError(f"{name} must be a Prometheus metric name (or empty), got {value!r}")
    return value


@dataclass(frozen=True)
class AutoscalerSettings:
    """The control loop's knobs, from the environment (THRIFTY_*), with the reason for each."""

    decision_interval_seconds: float = 15.0
    """One decision per scrape interval: deciding faster only re-reads the same samples."""
    prometheus_url: str = "http://127.0.0.1:9090"
    held_requests_metric: str = HELD_REQUESTS_METRIC
    """Gauge of requests a router holds for a ModelService without a ready engine (labels
    `namespace`, `model_service`): the only demand signal at zero replicas. Empty: not read."""
    metrics_port: int = 8080
    """The operator's own /metrics; 0 disables the endpoint."""
    cold_start_seconds: float = 120.0
    staleness_limit_seconds: float = 60.0
    scale_down_step_seconds: float = ThriftyPolicy.scale_down_step_seconds
    """Time between two scale-down steps once the delay has passed (the policy's default)."""
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "thrifty-operator"
    election: leadership.ElectionSettings = field(default_factory=leadership.ElectionSettings)

    @classmethod
    def from_env(cls) -> AutoscalerSettings:
        base = cls()
        election = leadership.ElectionSettings(
            lease_duration_seconds=int(_env_float("THRIFTY_LEASE_DURATION_SECONDS", 15)),
            renew_deadline_seconds=_env_float("THRIFTY_LEASE_RENEW_DEADLINE_SECONDS", 10),
            retry_period_seconds=_env_float("THRIFTY_LEASE_RETRY_PERIOD_SECONDS", 2),
        )
        return cls(
            decision_interval_seconds=_env_float(
                "THRIFTY_DECISION_INTERVAL_SECONDS", base.decision_interval_seconds
            ),
            prometheus_url=os.environ.get("THRIFTY_PROMETHEUS_URL", base.prometheus_url),
            held_requests_metric=_env_metric_name(
                "THRIFTY_HELD_REQUESTS_METRIC", base.held_requests_metric
            ),
            metrics_port=int(_env_float("THRIFTY_METRICS_PORT", base.metrics_port)),
            cold_start_seconds=_env_float("THRIFTY_COLD_START_SECONDS", base.cold_start_seconds),
            staleness_limit_seconds=_env_float(
                "THRIFTY_METRICS_STALENESS_SECONDS", base.staleness_limit_seconds
            ),
            scale_down_step_seconds=_env_float(
                "THRIFTY_SCALE_DOWN_STEP_SECONDS", base.scale_down_step_seconds
            ),
            leader_election=os.environ.get("THRIFTY_LEADER_ELECTION", "true").lower()
            not in ("0", "false", "no"),
            lease_namespace=os.environ.get(
                "THRIFTY_LEASE_NAMESPACE", os.environ.get("POD_NAMESPACE", base.lease_namespace)
            ),
            lease_name=os.environ.get("THRIFTY_LEASE_NAME", base.lease_name),
            election=election,
        )


SETTINGS = AutoscalerSettings.from_env()
"""Read once at import: kopf needs the timer interval when the decorator runs."""


def query_error_kind(reason: str) -> str:
    """The error label of a failed Prometheus read, from the adapter's reason text."""
    if "unreachable" in reason:
        return "Unreachable"
    if "old (limit" in reason:
        return "Stale"
    if "no vLLM series" in reason:
        return "NoData"
    return "QueryFailed"


def _now() -> tuple[float, str, datetime]:
    moment = datetime.now(UTC)
    return moment.timestamp(), explain.now_rfc3339(moment), moment


BATCH_REUSE_SECONDS = 2.0
"""How old a batch of Prometheus readings may be and still serve another timer: well below the
scrape interval, so reuse never hides a new sample for long."""


@dataclass
class SignalsBatch:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    read_at: float = -math.inf
    readings: dict[ServiceKey, SignalsReading] = field(default_factory=dict)


class ClusterAccess(Protocol):
    """The autoscaler's reads and writes (`thrifty.adapters.scale.ScaleClient`)."""

    def read_model_service(self, namespace: str, name: str) -> dict[str, Any]: ...
    def read_pool(self, name: str) -> dict[str, Any] | None: ...
    def read_budget(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_model_services(self, namespace: str) -> list[dict[str, Any]]: ...
    def replica_pods(self, namespace: str, name: str, now: datetime) -> list[observe.PodView]: ...
    def hpas_targeting(self, namespace: str, name: str) -> list[str]: ...
    def patch_scale(self, namespace: str, name: str, replicas: int) -> str: ...
    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> None: ...


class EventSink(Protocol):
    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class SignalsSource(Protocol):
    async def read_all(self, keys: Iterable[ServiceKey]) -> dict[ServiceKey, SignalsReading]: ...


@dataclass
class Autoscaler:
    """Everything the timers share in one operator process (kept in kopf's memo)."""

    scale: ClusterAccess
    kube: EventSink
    prometheus: SignalsSource
    metrics: operator_metrics.OperatorMetrics
    settings: AutoscalerSettings
    elector: leadership.LeaderElector | None = None
    policy: types.ScalingPolicy = field(default_factory=ThriftyPolicy)
    demand_dollars_per_hour: dict[str, float] = field(default_factory=dict)
    """Each budget member's last unconstrained demand, so a member's budget share knows what the
    others want. Rebuilt within one interval after a restart (until then: their current spend)."""
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    state_written_at: dict[str, float] = field(default_factory=dict)
    """Monotonic time of each ModelService's last status write (for the state checkpoint)."""
    seen: set[tuple[str, str]] = field(default_factory=set)

    batch: SignalsBatch = field(default_factory=lambda: SignalsBatch())

    def acting(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    def lock(self, key: str) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    async def tick(self, namespace: str, name: str) -> None:
        if not self.acting():
            return
        started = time.perf_counter()
        try:
            await self._tick(namespace, name)
        except kube.NotFound:
            return  # deleted between the timer firing and the read
        except kube.KubeError as error:
            log.warning(
                "autoscaler %s/%s: API server: %s (next tick retries)", namespace, name, error
            )
        finally:
            self.metrics.decision_seconds.observe(time.perf_counter() - started)

    async def _tick(self, namespace: str, name: str) -> None:
        body = await asyncio.to_thread(self.scale.read_model_service, namespace, name)
        try:
            ms = modelservice.ModelService.model_validate(body)
        except pydantic.ValidationError:
            return  # the reconciler reports Degraded with the field; nothing to scale
        if (namespace, name) not in self.seen:
            self.seen.add((namespace, name))
            self.metrics.init_modelservice(namespace, name)
        pool_name = observe.placed_pool_name(ms)
        pool_body = await asyncio.to_thread(self.scale.read_pool, pool_name)
        if pool_body is None:
            return  # the reconciler reports UnknownPool
        pool = gpupool.GPUPool.model_validate(pool_body)
        now_seconds, now_text, moment = _now()
        pods = await asyncio.to_thread(self.scale.replica_pods, namespace, name, moment)
        reading = await self._signals(namespace, name)
        if reading.signals is None:
            self.metrics.prometheus_query_errors.labels(
                error=query_error_kind(reading.reason)
            ).inc()
        budget_ref = ms.spec.cost_target.budget_ref
        lock_key = f"{namespace}/budget/{budget_ref.name}" if budget_ref else f"{namespace}/{name}"
        async with self.lock(lock_key):
            await self._decide_and_write(
                body, ms, pool_name, pool, pods, reading, (now_seconds, now_text)
            )

    async def _signals(self, namespace: str, name: str) -> SignalsReading:
        """This ModelService's reading from one batch of queries for every ModelService seen.

        Timers of all ModelServices fire at about the same moments, so one round of queries
        (one per signal, grouped by ModelService) serves them all instead of a round each."""
        key = ServiceKey(namespace, name)
        batch = self.batch
        async with batch.lock:
            fresh = time.monotonic() - batch.read_at <= BATCH_REUSE_SECONDS
            if not fresh or key not in batch.readings:
                keys = {ServiceKey(ns, n) for ns, n in self.seen} | {key}
                batch.readings = await self.prometheus.read_all(sorted(keys, key=str))
                batch.read_at = time.monotonic()
            return batch.readings[key]

    async def _decide_and_write(
        self,
        body: Mapping[str, Any],
        ms: modelservice.ModelService,
        pool_name: str,
        pool: gpupool.GPUPool,
        pods: list[observe.PodView],
        reading: SignalsReading,
        now: tuple[float, str],
    ) -> None:
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        now_seconds, now_text = now
        team = await self._budget(ms, namespace)
        settings = observe.ObserveSettings(
            cold_start_seconds=self.settings.cold_start_seconds,
            staleness_limit_seconds=self.settings.staleness_limit_seconds,
        )

        def observe_with(allowance: float | None) -> types.Observation:
            return observe.observation(
                ms,
                now_seconds=now_seconds,
                pods=pods,
                pool_name=pool_name,
                pool=pool,
                signals=reading.signals,
                settings=settings,
                budget=team,
                budget_dollars_per_hour_available=allowance,
            )

        obs = observe_with(None)
        allowance = await self._allowance(ms, namespace, name, team, obs)
        if allowance is not None:
            obs = observe_with(allowance)
        mode = ms.spec.scaling.mode
        decision = None
        if mode is not types.ScalingMode.MANUAL:
            decision = self.policy.decide(obs, observe.policy_state(ms))
        hpas: list[str] = []
        if mode is types.ScalingMode.AUTO:
            hpas = await asyncio.to_thread(self.scale.hpas_targeting, namespace, name)
        authority = autoscaling.authority(mode, hpas, meta.get("managedFields") or [])
        resource_version = str(meta["resourceVersion"])
        desired = obs.replicas.desired
        scaled = False
        if (
            decision is not None
            and authority.mode is types.ScalingMode.AUTO
            and decision.replicas != desired
        ):
            resource_version = await asyncio.to_thread(
                self.scale.patch_scale, namespace, name, decision.replicas
            )
            scaled = True
        status = ms.status or modelservice.ModelServiceStatus()
        spend = status.dollars_per_hour
        if spend is None:
            spend = cost.dollars_per_hour(
                obs.replicas.ready, obs.pool.gpus_per_replica, obs.pool.price_per_gpu_hour
            )
        result = autoscaling.PassResult(
            decision=decision,
            signals=reading.signals,
            metrics_reason=reading.reason,
            authority=authority,
            scaled=scaled,
            dollars_per_hour=spend,
            now=now_text,
            generation=meta.get("generation"),
        )
        after = await self._write_status(namespace, name, status, result, resource_version)
        previous = status.autoscaler.last_decision if status.autoscaler else None
        if decision is not None and (previous is None or previous.message != decision.message):
            log.info(
                "%s/%s %s: %s [%s, bound %s]",
                namespace,
                name,
                authority.mode.value,
                decision.message,
                decision.reason.value,
                decision.bound.value,
            )
        event = autoscaling.event_for(result, previous, desired)
        if event is not None:
            await asyncio.to_thread(self.kube.event, body, *event)
        self._report(namespace, name, decision, desired, obs, after)

    async def _write_status(
        self,
        namespace: str,
        name: str,
        status: modelservice.ModelServiceStatus,
        result: autoscaling.PassResult,
        resource_version: str,
    ) -> modelservice.ModelServiceStatus:
        """One status patch when something changed (or the state checkpoint is due). When the
        reconciler wrote in between (a scale makes it write), re-read once and patch again, so a
        scale's decision, time and policy state are never lost."""
        key = f"{namespace}/{name}"
        for attempt in range(2):
            after = autoscaling.next_status(status, result)
            checkpoint_due = (
                time.monotonic() - self.state_written_at.get(key, -math.inf)
                >= autoscaling.STATE_CHECKPOINT_SECONDS
            )
            changed = autoscaling.status_changed(status, after) or (
                checkpoint_due
                and autoscaling.status_changed(status, after, include_policy_state=True)
            )
            if not changed:
                return after
            try:
                await asyncio.to_thread(
                    self.scale.patch_status,
                    namespace,
                    name,
                    autoscaling.status_patch(after),
                    resource_version,
                )
                self.state_written_at[key] = time.monotonic()
                return after
            except kube.Conflict:
                if attempt:
                    log.info("autoscaler %s/%s: status kept changing; next tick", namespace, name)
                    return after
            fresh = await asyncio.to_thread(self.scale.read_model_service, namespace, name)
            resource_version = str(fresh["metadata"]["resourceVersion"])
            status = modelservice.ModelServiceStatus.model_validate(fresh.get("status") or {})
        return after

    def _report(
        self,
        namespace: str,
        name: str,
        decision: types.Decision | None,
        desired: int,
        obs: types.Observation,
        after: modelservice.ModelServiceStatus,
    ) -> None:
        if decision is not None:
            self.metrics.count_decision(namespace, name, decision.reason, decision.bound)
        self.metrics.observe_modelservice(
            namespace,
            name,
            desired_replicas=decision.replicas if decision is not None else desired,
            ready_replicas=obs.replicas.ready,
            dollars_per_hour=after.dollars_per_hour
            or cost.dollars_per_hour(
                obs.replicas.ready, obs.pool.gpus_per_replica, obs.pool.price_per_gpu_hour
            ),
            dollars_per_million_tokens=after.dollars_per_million_tokens,
        )

    async def _budget(
        self, ms: modelservice.ModelService, namespace: str
    ) -> costbudget.CostBudget | None:
        ref = ms.spec.cost_target.budget_ref
        if ref is None:
            return None
        found = await asyncio.to_thread(self.scale.read_budget, namespace, ref.name)
        if found is None:
            return None
        try:
            return costbudget.CostBudget.model_validate(found)
        except pydantic.ValidationError:
            return None

    async def _allowance(
        self,
        ms: modelservice.ModelService,
        namespace: str,
        name: str,
        team: costbudget.CostBudget | None,
        unconstrained: types.Observation,
    ) -> float | None:
        """This member's share of a Hard team budget's $/hour (None: no such budget)."""
        if team is None or team.spec.enforcement is not types.Enforcement.HARD:
            return None
        cap = team.spec.max_dollars_per_hour
        ref = ms.spec.cost_target.budget_ref
        if cap is None or ref is None:
            return None
        me = f"{namespace}/{name}"
        wanted = self.policy.decide(unconstrained, observe.policy_state(ms))
        self.demand_dollars_per_hour[me] = wanted.projected_dollars_per_hour
        bodies = await asyncio.to_thread(self.scale.list_model_services, namespace)
        members = [
            member for member in (self._member(b, ref.name) for b in bodies) if member is not None
        ]
        return budget.allowances(cap, members).get(me)

    def _member(self, body: Mapping[str, Any], budget_name: str) -> budget.BudgetMember | None:
        try:
            ms = modelservice.ModelService.model_validate(body)
        except pydantic.ValidationError:
            return None
        ref = ms.spec.cost_target.budget_ref
        if ref is None or ref.name != budget_name:
            return None
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        status = ms.status or modelservice.ModelServiceStatus()
        gpus = ms.spec.engine.gpus_per_replica
        price = status.price_per_gpu_hour or 0.0
        current = cost.dollars_per_hour(observe.desired_replicas(ms), gpus, price)
        try:
            priority = int((meta.get("annotations") or {}).get(PRIORITY_ANNOTATION, 0))
        except ValueError:
            priority = 0
        return budget.BudgetMember(
            key=key,
            current_dollars_per_hour=current,
            demand_dollars_per_hour=self.demand_dollars_per_hour.get(key, current),
            floor_dollars_per_hour=cost.dollars_per_hour(ms.spec.scaling.min_replicas, gpus, price),
            priority=priority,
            dollars_per_million_tokens=status.dollars_per_million_tokens,
        )


@contextlib.contextmanager
def timed_reconcile(memo: kopf.Memo, kind: str = "ModelService") -> Iterator[None]:
    """Times a reconcile pass into thrifty_reconcile_duration_seconds (the reconciler's handlers
    wrap their pass in it; the metrics live with the autoscaler in the memo)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        autoscaler: Autoscaler | None = getattr(memo, "thrifty_autoscaler", None)
        if autoscaler is not None:
            seconds = time.perf_counter() - started
            autoscaler.metrics.reconcile_seconds.labels(kind=kind).observe(seconds)


# --- kopf wiring ------------------------------------------------------------------------------


@kopf.on.startup()
async def start_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    settings = SETTINGS
    api = kube.connect()
    metrics = operator_metrics.OperatorMetrics()
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_port)
        except OSError as error:
            # Scaling matters more than its own telemetry: keep running, say it loudly.
            log.error("operator /metrics not served on port %s: %s", settings.metrics_port, error)
    elector = None
    if settings.leader_election:
        store = LeaseStore(api, settings.lease_namespace, settings.lease_name)
        elector = leadership.LeaderElector(
            store,
            leadership.default_identity(),
            settings.election,
            on_change=lambda leading: metrics.leader.set(1 if leading else 0),
        )
        memo.thrifty_election_task = asyncio.create_task(elector.run())
    memo.thrifty_autoscaler = Autoscaler(
        scale=ScaleClient(api),
        kube=kube.Kube(api),
        prometheus=PrometheusSignals(
            settings.prometheus_url,
            staleness_limit_seconds=settings.staleness_limit_seconds,
            held_requests_metric=settings.held_requests_metric,
        ),
        metrics=metrics,
        settings=settings,
        elector=elector,
        policy=ThriftyPolicy(scale_down_step_seconds=settings.scale_down_step_seconds),
    )


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "thrifty_election_task", None)
    if task is not None:
        task.cancel()  # its finally-block releases the Lease, so a peer takes over at once
        await asyncio.gather(task, return_exceptions=True)


@kopf.timer(
    GROUP,
    VERSION,
    "modelservices",
    interval=SETTINGS.decision_interval_seconds,
    sharp=True,
)
async def autoscale(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    autoscaler: Autoscaler | None = getattr(memo, "thrifty_autoscaler", None)
    if autoscaler is not None and namespace is not None:
        await autoscaler.tick(namespace, name)


@kopf.on.delete(GROUP, VERSION, "modelservices", optional=True)
async def forget_metrics(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    autoscaler: Autoscaler | None = getattr(memo, "thrifty_autoscaler", None)
    if autoscaler is not None and namespace is not None:
        autoscaler.metrics.forget_modelservice(namespace, name)
        autoscaler.seen.discard((namespace, name))
        autoscaler.demand_dollars_per_hour.pop(f"{namespace}/{name}", None)
