"""The operator's watch caches: what every pass reads, kept in memory by kopf's watches.

kopf indexes, fed by one watch per kind: ModelServices, GPUPools, CostBudgets, Nodes (allocatable
GPUs), the pods that hold or wait for GPUs (every namespace: a pool's free GPUs count everyone's),
thrifty's replica pods, thrifty's Deployments and the HorizontalPodAutoscalers that target a
ModelService. The autoscaler's fleet pass and the reconciler read them instead of the API server,
so a pass costs the same number of API requests (none) whatever the number of pods and nodes; only
writes go to the API server. Each entry is a copy of the fields a pass reads, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
import pydantic

from thrifty.adapters import kube
from thrifty.adapters.scale import pod_view
from thrifty.api import GROUP, VERSION, costbudget, gpupool, modelservice
from thrifty.autoscaler import status as status_rules
from thrifty.autoscaler.observe import PodView
from thrifty.autoscaler.world import ServiceKey, ServiceView, World
from thrifty.reconciler import placement, pool_capacity, reclaims, reconcile

log = logging.getLogger(__name__)


# --- watch caches ------------------------------------------------------------------------------


def _owner(namespace: str | None, labels: kopf.Labels) -> tuple[str, str]:
    """The ModelService a labelled child (pod, Deployment) belongs to: the key of its entry."""
    return (namespace or "", str(labels.get(placement.MODEL_SERVICE_LABEL, "")))


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
    kept = _copy(
        body,
        ("apiVersion",),
        ("kind",),
        ("metadata", "name"),
        ("metadata", "namespace"),
        ("metadata", "uid"),
        ("metadata", "resourceVersion"),
        ("metadata", "generation"),
        ("metadata", "deletionTimestamp"),
        ("spec",),
        ("status",),
    )
    # Of managedFields, only who owns spec.replicas matters (thrifty steps back to Advisory).
    owners = [
        {**entry, "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        for entry in (body.get("metadata") or {}).get("managedFields") or []
        if status_rules.owns_replicas(entry.get("fieldsV1") or {})
    ]
    kept["metadata"]["managedFields"] = copy.deepcopy(owners)
    return {(namespace or "", name or ""): kept}


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
    kept = _copy(
        body,
        ("metadata", "name"),
        ("metadata", "creationTimestamp"),
        ("metadata", "deletionTimestamp"),
        ("metadata", "labels", placement.POOL_LABEL),
        ("spec", "nodeName"),
        ("status", "phase"),
        ("status", "conditions"),
        ("status", "containerStatuses"),
    )
    return {_owner(namespace, labels): kept}


def _holds_gpus(body: kopf.Body, **_: Any) -> bool:
    phase = (body.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and kube.pod_gpus(body) > 0


@kopf.index("", "v1", "pods", when=_holds_gpus)
def thrifty_gpu_pods(
    body: kopf.Body, namespace: str | None, name: str | None, **_: Any
) -> dict[tuple[str, str], placement.PodInfo]:
    """Every pod that holds or waits for GPUs, in every namespace: a pool's free GPUs."""
    return {(namespace or "", name or ""): kube.pod_info(body)}


@kopf.index("", "v1", "nodes")
def thrifty_nodes(body: kopf.Body, name: str | None, **_: Any) -> dict[str, placement.NodeInfo]:
    return {name or "": kube.node_info(body)}


@kopf.index("", "v1", "nodes")
def thrifty_node_readiness(body: kopf.Body, name: str | None, **_: Any) -> dict[str, bool]:
    """Ready or not, whether cordoned or not: a replica on a node absent here (deleted) or not
    Ready is lost (`reconcile.lost_replicas`)."""
    return {name or "": kube.node_ready(body)}


@kopf.index("apps", "v1", "deployments", labels={placement.MODEL_SERVICE_LABEL: kopf.PRESENT})
def thrifty_deployments(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    kept = _copy(
        body,
        ("metadata", "name"),
        ("metadata", "generation"),
        ("metadata", "ownerReferences"),
        ("metadata", "annotations"),
        ("metadata", "labels", placement.POOL_LABEL),
        ("spec", "replicas"),
        ("status",),
    )
    return {_owner(namespace, labels): kept}


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


def _pool_status(body: Mapping[str, Any]) -> gpupool.GPUPoolStatus | None:
    try:
        return gpupool.GPUPoolStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        return None


def _values(index: kopf.Index[Any, Any], key: Any) -> list[Any]:
    return list(index[key]) if key in index else []


@dataclass
class Caches:
    """The indexes a pass reads (live views, kept up to date by kopf's watches)."""

    model_services: kopf.Index[tuple[str, str], dict[str, Any]]
    gpu_pools: kopf.Index[str, dict[str, Any]]
    cost_budgets: kopf.Index[tuple[str, str], dict[str, Any]]
    pods: kopf.Index[tuple[str, str], dict[str, Any]]
    hpas: kopf.Index[tuple[str, str], str]
    gpu_pods: kopf.Index[tuple[str, str], placement.PodInfo]
    nodes: kopf.Index[str, placement.NodeInfo]
    deployments: kopf.Index[tuple[str, str], dict[str, Any]]
    node_ready: kopf.Index[str, bool]
    listed_gpu_pods: list[placement.PodInfo] | None = None
    """Set when the operator serves only some namespaces: its watches then see only their pods,
    but a pool's free GPUs count every namespace's, so `refresh_gpu_pods` lists them."""

    @classmethod
    def from_kwargs(cls, indexes: dict[str, Any]) -> Caches:
        """From the keywords kopf passes handlers (each index under its function's name)."""
        return cls(
            model_services=indexes["thrifty_model_services"],
            gpu_pools=indexes["thrifty_gpu_pools"],
            cost_budgets=indexes["thrifty_cost_budgets"],
            pods=indexes["thrifty_replica_pods"],
            hpas=indexes["thrifty_hpas"],
            gpu_pods=indexes["thrifty_gpu_pods"],
            nodes=indexes["thrifty_nodes"],
            deployments=indexes["thrifty_deployments"],
            node_ready=indexes["thrifty_node_readiness"],
        )

    def all_nodes(self) -> list[placement.NodeInfo]:
        return [node for name in list(self.nodes) for node in _values(self.nodes, name)]

    def all_gpu_pods(self) -> list[placement.PodInfo]:
        if self.listed_gpu_pods is not None:
            return self.listed_gpu_pods
        return [pod for key in list(self.gpu_pods) for pod in _values(self.gpu_pods, key)]

    def refresh_gpu_pods(self, api: kube.Kube) -> None:
        """One list of every namespace's GPU pods (namespaced operators only; see above)."""
        pods = (kube.pod_info(pod) for pod in api.active_pods())
        self.listed_gpu_pods = [pod for pod in pods if pod.gpus > 0]

    def node_readiness(self) -> dict[str, bool]:
        """Every node by name: Ready or not (a deleted node is absent)."""
        return {name: all(_values(self.node_ready, name)) for name in list(self.node_ready)}

    def services_on(self, node: str) -> list[tuple[str, str]]:
        """The ModelServices with a replica pod bound to `node` (namespace, name)."""
        return sorted(
            {
                key
                for key in list(self.pods)
                for pod in _values(self.pods, key)
                if (pod.get("spec") or {}).get("nodeName") == node
            }
        )

    def pool_bodies(self) -> list[dict[str, Any]]:
        return [body for name in list(self.gpu_pools) for body in _values(self.gpu_pools, name)]

    def replica_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return _values(self.pods, (namespace, name))

    def model_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = _values(self.model_services, (namespace, name))
        return found[0] if found else None

    def model_services_in(self, namespace: str) -> list[dict[str, Any]]:
        return [
            body
            for key in list(self.model_services)
            if key[0] == namespace
            for body in _values(self.model_services, key)
        ]

    def owned_deployments(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        """This ModelService's Deployments, one per pool, found by label (and owned by this very
        object: a namesake that was deleted and created again owns nothing of the old one's)."""
        found = []
        for body in _values(self.deployments, (namespace, name)):
            owners = (body.get("metadata") or {}).get("ownerReferences") or []
            if any(owner.get("uid") == uid for owner in owners):
                found.append(body)
        return found

    def world(self, now: datetime) -> World:
        """The world of one pass. Objects that fail validation are left out (the reconciler
        reports them), so are objects being deleted: no pass acts on them. A pool's free GPUs are
        counted now, from the cached nodes and pods, not read from its status (refreshed only
        every pool resync): a scale decided on a stale count would order pods that stay Pending."""
        pools = {}
        hazards = {}
        nodes, pods = self.all_nodes(), self.all_gpu_pods()
        for name in self.gpu_pools:
            for body in self.gpu_pools[name]:
                with contextlib.suppress(pydantic.ValidationError):
                    spec = gpupool.GPUPoolSpec.model_validate(body.get("spec") or {})
                    stored = _pool_status(body)
                    short = pool_capacity.short_now(stored, now.timestamp())
                    live = placement.pool_status(name, spec, nodes, pods, short is not None)
                    pools[name] = gpupool.GPUPool(spec=spec, status=live)
                    hazard = reclaims.observed_hazard(stored, now.timestamp())
                    if hazard > 0:
                        hazards[name] = hazard
        budgets = {}
        for namespace, name in self.cost_budgets:
            for body in self.cost_budgets[namespace, name]:
                with contextlib.suppress(pydantic.ValidationError):
                    budgets[ServiceKey(namespace, name)] = costbudget.CostBudget.model_validate(
                        body
                    )
        services = []
        ready_nodes = self.node_readiness()
        for key in self.model_services:
            for body in self.model_services[key]:
                view = self._service(key, body, now, ready_nodes)
                if view is not None:
                    services.append(view)
        return World(services=services, pools=pools, budgets=budgets, observed_hazards=hazards)

    def _service(
        self,
        key: tuple[str, str],
        body: Mapping[str, Any],
        now: datetime,
        ready_nodes: Mapping[str, bool],
    ) -> ServiceView | None:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        try:
            ms = modelservice.ModelService.model_validate(body)
        except pydantic.ValidationError:
            return None
        replica_pods = _values(self.pods, key)
        lost = {one.pod for one in reconcile.lost_replicas(replica_pods, ready_nodes)}
        # A lost replica serves nobody and its cold start says nothing: to the policy it is one
        # ordered but not placed, whose replacement the reconciler has ordered.
        pods = (
            PodView(ready=False, scheduled=False)
            if (pod.get("metadata") or {}).get("name") in lost
            else pod_view(pod, now)
            for pod in replica_pods
        )
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


@kopf.on.event(GROUP, VERSION, "modelservices", id="indexes_ready")
@kopf.on.event(GROUP, VERSION, "gpupools", id="indexes_ready_pools")
@kopf.on.event(GROUP, VERSION, "costbudgets", id="indexes_ready_budgets")
def indexes_ready(memo: kopf.Memo, **_: Any) -> None:
    """kopf calls resource handlers only once every index has listed its objects: the first
    call proves a pass would see the whole world, not a half-filled cache. Any of thrifty's
    kinds will do: pools get their status before the first ModelService exists."""
    ready: asyncio.Event | None = getattr(memo, "thrifty_indexed", None)
    if ready is not None and not ready.is_set():
        ready.set()
