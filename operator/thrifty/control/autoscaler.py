"""kopf wiring of the autoscaler: watch caches, the leader-only fleet loop, startup and cleanup.

kopf indexes keep what a pass reads in memory, fed by one watch per kind: ModelServices, GPUPools,
CostBudgets, the replica pods (label `thrifty.dev/model-service`) and the HorizontalPodAutoscalers
that target a ModelService. One asyncio task per operator process runs `thrifty.control.fleet`
once per decision interval while this process holds the leader Lease (`thrifty.control.leadership`),
and the periodic resync of the reconciler with it: no per-object timers, so thrifty needs no
finalizer on the objects it serves and deleting one never waits for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
import pydantic

from thrifty import placement
from thrifty.adapters import operator_metrics
from thrifty.adapters.scale import pod_view
from thrifty.api import GROUP, VERSION, costbudget, gpupool, modelservice
from thrifty.autoscaler.world import ServiceKey, ServiceView, World

log = logging.getLogger(__name__)


# --- watch caches ------------------------------------------------------------------------------


def _copy(body: Mapping[str, Any], *paths: tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of the given paths only: a cache entry holds what a pass reads, no more."""
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = body
        for part in path:
            source = source.get(part) if isinstance(source, Mapping) else None
        if source is None:
            continue
        target = out
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = copy.deepcopy(source)
    return out


@kopf.index(GROUP, VERSION, "modelservices")
def thrifty_model_services(
    body: kopf.Body, namespace: str | None, name: str | None, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", name or ""): copy.deepcopy(dict(body))}


@kopf.index(GROUP, VERSION, "gpupools")
def thrifty_gpu_pools(body: kopf.Body, name: str | None, **_: Any) -> dict[str, dict[str, Any]]:
    return {name or "": copy.deepcopy(dict(body))}


@kopf.index(GROUP, VERSION, "costbudgets")
def thrifty_cost_budgets(
    body: kopf.Body, namespace: str | None, name: str | None, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", name or ""): copy.deepcopy(dict(body))}


@kopf.index("", "v1", "pods", labels={placement.MODEL_SERVICE_LABEL: kopf.PRESENT})
def thrifty_replica_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    owner = str(labels.get(placement.MODEL_SERVICE_LABEL, ""))
    kept = _copy(
        body,
        ("metadata", "name"),
        ("metadata", "creationTimestamp"),
        ("metadata", "deletionTimestamp"),
        ("spec", "nodeName"),
        ("status", "phase"),
        ("status", "conditions"),
    )
    return {(namespace or "", owner): kept}


def _targets_model_service(spec: kopf.Spec, **_: Any) -> bool:
    ref = spec.get("scaleTargetRef") or {}
    return ref.get("kind") == "ModelService" and str(ref.get("apiVersion", "")).startswith(
        f"{GROUP}/"
    )


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", when=_targets_model_service)
def thrifty_hpas(
    spec: kopf.Spec, namespace: str | None, name: str | None, **_: Any
) -> dict[tuple[str, str], str]:
    return {(namespace or "", str(spec["scaleTargetRef"]["name"])): name or ""}


def _values(index: kopf.Index[Any, Any], key: Any) -> list[Any]:
    return list(index[key]) if key in index else []


@dataclass(frozen=True)
class Caches:
    """The indexes a pass reads (live views, kept up to date by kopf's watches)."""

    model_services: kopf.Index[tuple[str, str], dict[str, Any]]
    gpu_pools: kopf.Index[str, dict[str, Any]]
    cost_budgets: kopf.Index[tuple[str, str], dict[str, Any]]
    pods: kopf.Index[tuple[str, str], dict[str, Any]]
    hpas: kopf.Index[tuple[str, str], str]

    def world(self, now: datetime) -> World:
        """The world of one pass. Objects that fail validation are left out (the reconciler
        reports them), so are objects being deleted: no pass acts on them."""
        pools = {}
        for name in self.gpu_pools:
            for body in self.gpu_pools[name]:
                with contextlib.suppress(pydantic.ValidationError):
                    pools[name] = gpupool.GPUPool.model_validate(body)
        budgets = {}
        for namespace, name in self.cost_budgets:
            for body in self.cost_budgets[namespace, name]:
                with contextlib.suppress(pydantic.ValidationError):
                    budgets[ServiceKey(namespace, name)] = costbudget.CostBudget.model_validate(
                        body
                    )
        services = []
        for key in self.model_services:
            for body in self.model_services[key]:
                view = self._service(key, body, now)
                if view is not None:
                    services.append(view)
        return World(services=services, pools=pools, budgets=budgets)

    def _service(
        self, key: tuple[str, str], body: Mapping[str, Any], now: datetime
    ) -> ServiceView | None:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        try:
            ms = modelservice.ModelService.model_validate(body)
        except pydantic.ValidationError:
            return None
        pods = (pod_view(pod, now) for pod in _values(self.pods, key))
        return ServiceView(
            key=ServiceKey(*key),
            uid=str(meta.get("uid", "")),
            model_service=ms,
            resource_version=str(meta.get("resourceVersion", "")),
            generation=meta.get("generation"),
            pods=[pod for pod in pods if pod is not None],
            hpas=sorted(_values(self.hpas, key)),
            managed_fields=list(meta.get("managedFields") or []),
        )


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class Loop:
    """Every `interval` seconds, while leading: `work()`; never dies of one failed pass."""

    name: str
    interval_seconds: float
    work: Callable[[], Awaitable[None]]
    acting: Callable[[], bool]

    async def run(self, ready: asyncio.Event) -> None:
        await ready.wait()
        next_at = time.monotonic()
        while True:
            next_at += self.interval_seconds
            if self.acting():
                try:
                    await self.work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: pass failed; the next one retries", self.name)
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))


@kopf.on.event(GROUP, VERSION, "modelservices")
def indexes_ready(memo: kopf.Memo, **_: Any) -> None:
    """kopf calls resource handlers only once every index has listed its objects: the first
    call proves a pass would see the whole world, not a half-filled cache."""
    ready: asyncio.Event | None = getattr(memo, "thrifty_indexed", None)
    if ready is not None and not ready.is_set():
        ready.set()


@contextlib.contextmanager
def timed_reconcile(memo: kopf.Memo, kind: str = "ModelService") -> Iterator[None]:
    """Times a reconcile pass into thrifty_reconcile_duration_seconds."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics: operator_metrics.OperatorMetrics | None = getattr(memo, "thrifty_metrics", None)
        if metrics is not None:
            metrics.reconcile_seconds.labels(kind=kind).observe(time.perf_counter() - started)
