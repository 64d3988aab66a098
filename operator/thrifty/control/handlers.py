"""kopf handlers: read the world through the adapter, call the pure core, write what changed.

Level-triggered: every watch event of a ModelService (and of the Deployments it owns) and a
periodic timer run the same idempotent pass, so a missed event, a restart or a freed GPU all end in
the same state. A pass over an unchanged world writes nothing: server-side apply of identical
manifests is a no-op for the API server, and status is patched only where it differs.

A user's mistake (unknown pool, too many GPUs per replica, missing Secret) is written to the
``Degraded`` condition with an Event and is not raised: the timer re-checks it, so the object heals
by itself when the pool or Secret appears, and no error loop or crash touches other objects. A
pass that fails (the API server refused or failed) puts the object in exponential backoff for the
periodic resyncs (`thrifty.control.backoff`); its next change still reaches it at once.

Only the leader acts, and only on an object that exists now: a pass whose object was deleted (its
uid gone from the watch cache, or from the API server when workloads are about to be applied) does
nothing, so a create-and-delete never leaves a Deployment behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf
import pydantic

from thrifty import explain
from thrifty.adapters import kube as kube_adapter
from thrifty.adapters import node_autoscaler, operator_metrics
from thrifty.api import GROUP, VERSION, costbudget, gpupool, modelservice
from thrifty.control import backoff as backoff_module
from thrifty.control import caches as caches_module
from thrifty.control import loops
from thrifty.control import settings as settings_module
from thrifty.reconciler import placement, pool_capacity, reclaims, reconcile

FINALIZER = f"{GROUP}/finalizer"
log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's own bookkeeping in thrifty-named annotations, never in ``.status``."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # Events are thrifty's own (explain reasons); kopf only posts its warnings and errors.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    watch_only_thrifty_deployments(settings)
    memo.kube = kube_adapter.Kube(kube_adapter.connect())
    memo.thrifty_applied = {}
    memo.thrifty_claims = ClaimLedger()
    memo.thrifty_backoff = backoff_module.Backoff(settings_module.from_env().retry_seconds)
    memo.locks = {}
    memo.locks_guard = threading.Lock()


def watch_only_thrifty_deployments(settings: kopf.OperatorSettings) -> None:
    """Ask the API server for thrifty's Deployments only (a label selector on the list and the
    watch, kopf's `settings.watching.label_selectors`): a handler's `labels=` filter is applied
    by kopf after every Deployment of the cluster has been listed and streamed to it."""
    settings.watching.label_selectors["apps", "deployments"] = placement.MODEL_SERVICE_LABEL


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


def _lock(memo: kopf.Memo, key: str) -> threading.Lock:
    """One pass at a time per object: the timer and the watch may fire together."""
    with memo.locks_guard:
        lock: threading.Lock = memo.locks.setdefault(key, threading.Lock())
        return lock


def _forget_locks(memo: kopf.Memo, live: set[str]) -> None:
    """Drops the locks of objects that no longer exist (bounded by the objects, not by time)."""
    with memo.locks_guard:
        for key in [key for key, lock in memo.locks.items() if key not in live]:
            if not memo.locks[key].locked():
                del memo.locks[key]


def _leading(memo: kopf.Memo) -> bool:
    """Whether this process may act now (it holds the Lease, or election is off)."""
    leading: Callable[[], bool] = getattr(memo, "thrifty_leading", lambda: True)
    return leading()


# --- ModelService -------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "modelservices")
def model_service_event(
    type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    if type == "DELETED" or not _leading(memo):
        return  # a follower acts on nothing: the leader's resyncs cover what it did not see
    _guarded_pass(
        memo, body.metadata.namespace or "", body.metadata.name or "", lambda: body, logger
    )


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "thrifty"})
def deployment_event(
    type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """A replica became ready or went away: refresh its ModelService's status now."""
    owner = body.metadata.labels.get(placement.MODEL_SERVICE_LABEL)
    namespace = body.metadata.namespace
    if type == "DELETED" or not owner or not namespace or not _leading(memo):
        return
    caches: caches_module.Caches = memo.thrifty_caches
    current = caches.model_service(namespace, owner)
    if current is None:
        return  # its ModelService is gone: nothing to reconcile, the garbage collector cleans up
    _guarded_pass(memo, namespace, owner, lambda: current, logger)


@kopf.on.event("", "v1", "nodes")
def node_event(
    type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """A node deleted, gone NotReady, Ready again or tainted for reclaim (a spot interruption):
    reconcile the ModelServices with replicas on it now, so lost replicas are reported and
    replaced in seconds, and replacements are ordered on the next pool at once, not at the next
    resync (and dropped as soon as the node is back). A pass over an unchanged world writes
    nothing, so a node's routine status updates cost no API request."""
    caches: caches_module.Caches | None = getattr(memo, "thrifty_caches", None)
    name = body.metadata.name
    if caches is None or not name or not _leading(memo):
        return  # a follower acts on nothing, as for every other watch event
    for namespace, owner in caches.services_on(name):
        current = caches.model_service(namespace, owner)
        if current is not None:
            _guarded_pass(memo, namespace, owner, functools.partial(dict, current), logger)
    # The pools on that node say so now too, not at their next resync (they disagreed for 40 s);
    # a refresh that changes nothing writes nothing.
    labels = dict(body.metadata.labels)
    for pool in caches.pool_bodies():
        selector = (pool.get("spec") or {}).get("nodeSelector") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            with timed_reconcile(memo, "GPUPool"):
                _log_failure(
                    f"GPUPool {pool['metadata']['name']}",
                    functools.partial(refresh_gpu_pool, memo.kube, pool, logger, caches),
                )


def _guarded_pass(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    load: Callable[[], Mapping[str, Any]],
    logger: kopf.Logger | logging.Logger,
) -> str:
    """One pass at a time per object, on a snapshot taken inside the lock; returns its outcome
    (see `reconcile_model_service`), "gone" for an object deleted meanwhile.

    kopf updates a timer's ``body`` in place as watch events arrive; reading the status at the
    start and the resourceVersion at the end of a pass would pair an old status with a new version
    and defeat the write precondition. A deep copy, taken once the lock is held, is consistent.
    A failure (the API server failed or refused) backs the object off for the periodic resyncs.
    """
    backoff: backoff_module.Backoff = memo.thrifty_backoff
    with _lock(memo, f"ms/{namespace}/{name}"), timed_reconcile(memo):
        body = copy.deepcopy(dict(load()))
        uid = str(body["metadata"].get("uid", ""))
        if body["metadata"].get("deletionTimestamp") or not _cached(memo, namespace, name, uid):
            return GONE  # owner references let the garbage collector remove the workloads
        try:
            outcome = reconcile_model_service(
                memo.kube,
                body,
                logger,
                memo.thrifty_caches,
                memo.thrifty_applied,
                _ledger(memo),
                _settings(memo),
            )
        except kube_adapter.NotFound:
            return GONE
        except kube_adapter.Conflict:
            logger.debug("status changed while reconciling; the next event reconciles again")
            return SETTLED
        except kube_adapter.KubeError as error:
            delay = backoff.failed(uid, time.monotonic())
            raise kopf.TemporaryError(
                f"{error} (periodic retries back off: next in {delay:.0f} s)",
                delay=_retry_seconds(memo),
            ) from error
        if outcome == REFUSED:
            backoff.failed(uid, time.monotonic())
        else:
            backoff.succeeded(uid)
        return outcome


def _cached(memo: kopf.Memo, namespace: str, name: str, uid: str) -> bool:
    """Whether the watch cache still holds this very object (not deleted, not a namesake)."""
    caches: caches_module.Caches | None = getattr(memo, "thrifty_caches", None)
    if caches is None:
        return True
    current = caches.model_service(namespace, name)
    return current is not None and str((current.get("metadata") or {}).get("uid")) == uid


def _pools(bodies: list[dict[str, Any]], logger: kopf.Logger) -> dict[str, gpupool.GPUPoolSpec]:
    pools = {}
    for body in bodies:
        name = body["metadata"]["name"]
        try:
            pools[name] = gpupool.GPUPoolSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as error:
            logger.warning(f"GPUPool {name} is invalid and ignored: {error}")
    return pools


def _observed_hazards(bodies: list[dict[str, Any]], now_seconds: float) -> dict[str, float]:
    """Reclaims per node-hour each pool's status counted (`reclaims`), where any were seen."""
    hazards = {}
    for body in bodies:
        try:
            status = gpupool.GPUPoolStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError:
            continue
        hazard = reclaims.observed_hazard(status, now_seconds)
        if hazard > 0:
            hazards[body["metadata"]["name"]] = hazard
    return hazards


def _shortages(bodies: list[dict[str, Any]], now_seconds: float) -> dict[str, str]:
    """Pools whose node autoscaler is failing (GPUPool CapacityLimited in force), with why."""
    short = {}
    for body in bodies:
        try:
            status = gpupool.GPUPoolStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError:
            continue
        found = pool_capacity.short_now(status, now_seconds)
        if found is not None:
            short[body["metadata"]["name"]] = f"{found.reason}: {found.message}"
    return short


def _pool_of(deployment: Mapping[str, Any]) -> str | None:
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    pool = labels.get(placement.POOL_LABEL)
    return str(pool) if pool else None


def _by_pool(deployments: Sequence[Mapping[str, Any]]) -> dict[str, reconcile.DeploymentState]:
    return {
        pool: reconcile.deployment_state(d)
        for d in deployments
        if (pool := _pool_of(d)) is not None
    }


Failures = list[tuple[dict[str, Any], str, bool]]


def _apply_all(
    kube: kube_adapter.Kube,
    inputs: reconcile.Inputs,
    result: reconcile.Plan,
    owned: Sequence[Mapping[str, Any]],
) -> tuple[reconcile.Plan, Failures, tuple[int, ...]]:
    """Applies every manifest, the Deployments first; returns the plan made again with what the
    applies returned (a changed replica count shows at once), the failures (manifest, error,
    refused) and the Deployments' generations after the apply."""
    failures: Failures = []
    deployments = {str(d["metadata"]["name"]): d for d in owned}
    for manifest in result.manifests or []:
        try:
            after_apply = kube.apply(manifest)
        except kube_adapter.Conflict:
            raise
        except kube_adapter.KubeError as error:
            # Reported in Degraded and an Event, applied again at the next resync; the other
            # objects still go (a Service refused by a quota keeps no replica from starting).
            failures.append((manifest, str(error), isinstance(error, kube_adapter.Invalid)))
            continue
        if manifest["kind"] == "Deployment":
            deployments[str(after_apply["metadata"]["name"])] = after_apply
    by_pool = _by_pool(list(deployments.values()))
    if by_pool != inputs.deployments:
        again = reconcile.plan(dataclasses.replace(inputs, deployments=by_pool))
        # The moves were decided before the apply: planned again after it, they look done.
        result = dataclasses.replace(again, claims=result.claims, moves=result.moves)
    generations = tuple(
        sorted(int(d["metadata"].get("generation", 0)) for d in deployments.values())
    )
    return result, failures, generations


@dataclasses.dataclass
class ClaimLedger:
    """GPUs each ModelService's last placement in this process claimed, per pool.

    Reconciles of different ModelServices run at the same time, and the pods a placement orders
    show in the caches only later. A placement reads the others' claims and records its own under
    one lock, so two simultaneous placements never count the same free GPUs (`placement.room`
    subtracts what a claim holds beyond its pods)."""

    claims: dict[tuple[str, str], dict[str, int]] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def forget_all_but(self, live: set[tuple[str, str]]) -> None:
        with self.lock:
            for key in [key for key in self.claims if key not in live]:
                del self.claims[key]


class ClusterView(Protocol):
    """What a reconcile reads (`thrifty.control.caches.Caches`: kopf's watch caches)."""

    def all_nodes(self) -> list[placement.NodeInfo]: ...
    def all_gpu_pods(self) -> list[placement.PodInfo]: ...
    def pool_bodies(self) -> list[dict[str, Any]]: ...
    def replica_pods(self, namespace: str, name: str) -> list[dict[str, Any]]: ...
    def owned_deployments(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]: ...
    def model_services_in(self, namespace: str) -> list[dict[str, Any]]: ...
    def node_readiness(self) -> dict[str, bool]: ...


SETTLED, APPLIED, REFUSED, GONE = "settled", "applied", "refused", "gone"
"""Outcomes of a pass: nothing to apply; workloads applied; the API server refused or failed a
workload (`Degraded`, `ApplyFailed` or `ApplyError`: the periodic resyncs back off); the object
is deleted or being deleted."""

Applied = MutableMapping[str, tuple[str, tuple[int, ...]]]
"""Per ModelService uid: the digest of the manifests last applied and the generations its
Deployments had after that apply (someone else's edit raises one)."""


def digest(manifests: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()


def reconcile_model_service(
    kube: kube_adapter.Kube,
    body: Mapping[str, Any],
    logger: kopf.Logger | logging.Logger,
    view: ClusterView,
    applied: Applied,
    ledger: ClaimLedger | None = None,
    config: settings_module.Settings | None = None,
) -> str:
    """One pass: plan from the caches, apply the manifests when they would change something,
    write status and Events if anything changed; returns the outcome (SETTLED, APPLIED, REFUSED
    or GONE). Reads nothing from the API server, except, right before a pass applies anything,
    whether this very ModelService still exists: the watch event that started the pass may be
    older than a delete that already returned, and a Deployment applied for a deleted owner would
    start GPU pods until the garbage collector caught up."""
    ledger = ledger or ClaimLedger()
    config = config or settings_module.Settings()
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    try:
        current = modelservice.ModelServiceStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        current = modelservice.ModelServiceStatus()
    owned = view.owned_deployments(namespace, name, uid)
    with ledger.lock:
        inputs = _reconcile_inputs(body, current, owned, view, ledger, config, logger)
        inputs, result = _plan(inputs, owned)
        if result.manifests is not None:
            ledger.claims[(namespace, name)] = dict(result.claims)
    manifests = result.manifests or []
    wanted = digest(manifests)
    generations = tuple(sorted(int(d["metadata"].get("generation", 0)) for d in owned))
    rendered = {str(m["metadata"]["name"]) for m in manifests if m["kind"] == "Deployment"}
    missing = rendered - {str(d["metadata"]["name"]) for d in owned}
    outcome = SETTLED
    if manifests and (missing or applied.get(uid) != (wanted, generations)):
        if not kube.model_service_exists(namespace, name, uid):
            logger.info(f"ModelService {namespace}/{name} ({uid}) is gone: not applied")
            return GONE
        outcome = APPLIED
        result, failures, after = _apply_all(kube, inputs, result, owned)
        if failures:
            result = reconcile.apply_failed(inputs, result, failures)
            outcome = REFUSED
        else:
            applied[uid] = (wanted, after)
    for gone in result.prune:
        kube.delete_deployment(namespace, gone)
        logger.info(f"deleted Deployment {gone}: no pool of the ModelService uses it")
    _write_status(kube, body, "modelservices", current.to_kube(), result.status.to_kube())
    for event in result.events + (result.moves if outcome in (APPLIED, REFUSED) else []):
        kube.event(_involved(body, "ModelService"), event.type, event.reason, event.message)
        logger.info(f"{event.reason}: {event.message}")
    return outcome


def _reconcile_inputs(
    body: Mapping[str, Any],
    current: modelservice.ModelServiceStatus,
    owned: list[dict[str, Any]],
    view: ClusterView,
    ledger: ClaimLedger,
    config: settings_module.Settings,
    logger: kopf.Logger | logging.Logger,
) -> reconcile.Inputs:
    """What one pass plans from, read from the caches (the ledger's claims under its lock)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    own = view.replica_pods(namespace, name)
    nodes = view.node_readiness()
    holding: dict[str, int] = {}
    for pod in own:
        pool = ((pod.get("metadata") or {}).get("labels") or {}).get(placement.POOL_LABEL)
        # A pod bound to a deleted node holds no GPU anyone pays for: the machine is gone.
        if (pod.get("spec") or {}).get("nodeName") in nodes and pool:
            holding[pool] = holding.get(pool, 0) + 1
    moment = datetime.now(UTC)
    pool_bodies = view.pool_bodies()
    return reconcile.Inputs(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        generation=int(meta.get("generation", 0)),
        spec=body.get("spec") or {},
        status=current,
        pools=_pools(pool_bodies, logger),
        nodes=view.all_nodes(),
        pods=view.all_gpu_pods(),
        deployments=_by_pool(owned),
        orphans={},
        pod_waiting=[w for p in own for w in kube_adapter.waiting_reasons(p)],
        replicas_holding_gpus=holding,
        claims={key: dict(value) for key, value in ledger.claims.items()},
        now=explain.now_rfc3339(moment),
        now_seconds=moment.timestamp(),
        return_delay_seconds=config.return_delay_seconds,
        cold_start_seconds=config.cold_start_seconds,
        lost=reconcile.lost_replicas(own, nodes),
        node_loss_toleration_seconds=config.node_loss_toleration_seconds,
        do_not_disrupt=config.do_not_disrupt,
        pool_shortages=_shortages(pool_bodies, moment.timestamp()),
        observed_hazards=_observed_hazards(pool_bodies, moment.timestamp()),
    )


def _plan(
    inputs: reconcile.Inputs, owned: list[dict[str, Any]]
) -> tuple[reconcile.Inputs, reconcile.Plan]:
    """The pass's plan, planned again with the owned Deployments it does not render (a pool no
    longer offered, or the pre-spread single one): they count in status, and are pruned once
    the offered pools serve."""
    result = reconcile.plan(inputs)
    rendered = {m["metadata"]["name"] for m in result.manifests or [] if m["kind"] == "Deployment"}
    orphans = {
        str(d["metadata"]["name"]): reconcile.deployment_state(d)
        for d in owned
        if d["metadata"]["name"] not in rendered
    }
    if result.manifests is None or not orphans:
        return inputs, result
    inputs = dataclasses.replace(inputs, orphans=orphans)
    return inputs, reconcile.plan(inputs)


def _involved(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": dict(body["metadata"])}


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields that differ (a field only in ``old`` is left alone: another
    writer, such as the autoscaler, owns it)."""
    return {key: value for key, value in new.items() if old.get(key) != value}


def _write_status(
    kube: kube_adapter.Kube,
    body: Mapping[str, Any],
    plural: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> None:
    patch = status_patch(old, new)
    if not patch:
        return
    meta = body["metadata"]
    kube.patch_status(
        plural,
        meta["name"],
        patch,
        namespace=meta.get("namespace"),
        # Conditions are a list that a merge patch replaces whole: only write over what was read.
        resource_version=meta.get("resourceVersion") if "conditions" in patch else None,
    )


# --- GPUPool ------------------------------------------------------------------------------------


def refresh_gpu_pool(
    kube: kube_adapter.Kube,
    body: Mapping[str, Any],
    logger: kopf.Logger | logging.Logger,
    view: ClusterView,
    now_seconds: float | None = None,
) -> None:
    name = body["metadata"]["name"]
    try:
        spec = gpupool.GPUPoolSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as error:
        logger.warning(f"GPUPool {name} is invalid: {error}")
        return
    old = gpupool.GPUPoolStatus.model_validate(body.get("status") or {})
    now_seconds = time.time() if now_seconds is None else now_seconds
    now = explain.now_rfc3339(datetime.fromtimestamp(now_seconds, UTC))
    short = _pool_shortage(kube, name, spec, old, view, now_seconds)
    pods = view.all_gpu_pods()
    computed = placement.pool_status(name, spec, view.all_nodes(), pods, short is not None)
    generation = int(body["metadata"].get("generation", 0))
    conditions = explain.set_condition(
        old.conditions, _pool_ready(spec, computed, now=now, generation=generation)
    )
    if pool_capacity.autoscaled(spec) or explain.find(conditions, explain.CAPACITY_LIMITED):
        limited = pool_capacity.condition(spec, short, now=now, generation=generation)
        conditions = explain.set_condition(conditions, limited)
    counted = reclaims.count(spec, old, view.all_nodes(), pods, now=now, now_seconds=now_seconds)
    new = computed.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions,
            "capacity_limited_until": pool_capacity.until_text(short),
            **counted,
        }
    )
    _write_status(kube, body, "gpupools", old.to_kube(), new.to_kube())
    for changed in explain.transitions(old.conditions, new.conditions):
        if changed.type == explain.CAPACITY_LIMITED and changed.status.value == "True":
            kube.event(_involved(body, "GPUPool"), "Warning", changed.reason, changed.message)


def _pool_ready(
    spec: gpupool.GPUPoolSpec, computed: gpupool.GPUPoolStatus, *, now: str, generation: int
) -> Any:
    if pool_capacity.autoscaled(spec):
        return explain.condition(
            explain.READY,
            True,
            explain.POOL_AUTOSCALED,
            f"{computed.nodes} nodes, up to {spec.provisioning.max_nodes} from the node "
            f"autoscaler ({computed.gpus_provisionable} GPUs more)",
            now=now,
            generation=generation,
        )
    return explain.condition(
        explain.READY,
        computed.nodes > 0,
        explain.POOL_READY if computed.nodes else explain.POOL_HAS_NO_NODES,
        f"{computed.nodes} nodes, {computed.gpus_allocatable} GPUs allocatable"
        if computed.nodes
        else f"no Ready, schedulable node matches nodeSelector {dict(spec.node_selector)}",
        now=now,
        generation=generation,
    )


def pending_pods(
    pool: str, view: ClusterView, now_seconds: float
) -> list[pool_capacity.PendingPod]:
    """thrifty's pods placed on ``pool`` and not bound to a node, with how long they waited."""
    pending = []
    for pod in view.all_gpu_pods():
        if pod.node_name is not None or pod.labels.get(placement.POOL_LABEL) != pool:
            continue
        owner = pod.model_service
        if owner is None:
            continue
        created = next(
            (
                (body.get("metadata") or {}).get("creationTimestamp")
                for body in view.replica_pods(*owner)
                if (body.get("metadata") or {}).get("name") == pod.name
            ),
            None,
        )
        since = _epoch(created) if created else now_seconds
        pending.append(pool_capacity.PendingPod(pod.namespace, pod.name, now_seconds - since))
    return pending


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _pool_shortage(
    kube: kube_adapter.Kube,
    name: str,
    spec: gpupool.GPUPoolSpec,
    old: gpupool.GPUPoolStatus,
    view: ClusterView,
    now_seconds: float,
) -> pool_capacity.Shortage | None:
    """Whether an Autoscaled pool's node autoscaler is failing: read its signs only while pods
    wait for a node (a few list calls), else carry the backoff in force."""
    if not pool_capacity.autoscaled(spec):
        return None
    pending = pending_pods(name, view, now_seconds)
    failures: list[pool_capacity.NodeFailure] = []
    if pending:
        node_pool = pool_capacity.karpenter_node_pool(spec)
        failures = node_autoscaler.failures(kube, node_pool, pending, now_seconds)
    previous = pool_capacity.shortage_from_status(old)
    return pool_capacity.shortage(spec, pending, failures, previous, now_seconds)


# --- CostBudget ---------------------------------------------------------------------------------


def refresh_cost_budget(
    kube: kube_adapter.Kube,
    body: Mapping[str, Any],
    logger: kopf.Logger | logging.Logger,
    view: ClusterView,
) -> None:
    meta = body["metadata"]
    try:
        spec = costbudget.CostBudgetSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as error:
        logger.warning(f"CostBudget {meta['name']} is invalid: {error}")
        return
    old = costbudget.CostBudgetStatus.model_validate(body.get("status") or {})
    members = reconcile.budget_members(meta["name"], view.model_services_in(meta["namespace"]))
    new = reconcile.budget_status(
        spec,
        old,
        members,
        now=explain.now_rfc3339(),
        generation=int(meta.get("generation", 0)),
    )
    _write_status(kube, body, "costbudgets", old.to_kube(), new.to_kube())
    for changed in explain.transitions(old.conditions, new.conditions):
        if changed.status.value == "True":
            kube.event(_involved(body, "CostBudget"), "Warning", changed.reason, changed.message)


# --- periodic resync ----------------------------------------------------------------------------


def _settings(memo: kopf.Memo) -> settings_module.Settings:
    config: settings_module.Settings | None = getattr(memo, "thrifty_settings", None)
    return config or settings_module.Settings()


def _ledger(memo: kopf.Memo) -> ClaimLedger:
    """The process's claims (made at startup; made here for a memo that skipped it)."""
    ledger: ClaimLedger | None = getattr(memo, "thrifty_claims", None)
    if ledger is None:
        ledger = memo.thrifty_claims = ClaimLedger()
    return ledger


def _retry_seconds(memo: kopf.Memo) -> float:
    return _settings(memo).retry_seconds


def _log_failure(what: str, call: Callable[[], object]) -> None:
    """One object's failed resync is logged and retried next period; the others go on."""
    try:
        call()
    except kopf.TemporaryError as error:
        log.warning("%s: %s", what, error)
    except kube_adapter.Conflict:
        log.debug("%s changed while refreshing; the next resync refreshes again", what)
    except kube_adapter.KubeError as error:
        log.warning("%s: API server: %s (next resync retries)", what, error)


def resync_loops(
    memo: kopf.Memo, config: settings_module.Settings, acting: Callable[[], bool]
) -> list[loops.Loop]:
    """The periodic passes over every object, from the watch caches: ModelServices reconciled
    (freed capacity, deleted pools, missing Secrets), GPUPool and CostBudget status refreshed.
    One loop each on the leader instead of a kopf timer per object: timers would put a finalizer
    on every object, and deleting one would then wait for a running operator. An object whose
    passes fail sits out resyncs in exponential backoff (`thrifty.control.backoff`)."""
    caches: caches_module.Caches = memo.thrifty_caches
    backoff: backoff_module.Backoff = memo.thrifty_backoff

    async def model_services() -> None:
        live = {
            str((body.get("metadata") or {}).get("uid"))
            for bodies in list(caches.model_services.values())
            for body in list(bodies)
        }
        for uid in [uid for uid in memo.thrifty_applied if uid not in live]:
            del memo.thrifty_applied[uid]  # bounded by the objects that exist
        _ledger(memo).forget_all_but(set(caches.model_services))
        backoff.keep_only(live)
        _forget_locks(memo, {f"ms/{namespace}/{name}" for namespace, name in caches.model_services})
        before = dict(memo.thrifty_applied)
        skipped = 0
        for (namespace, name), bodies in list(caches.model_services.items()):
            for body in list(bodies):
                uid = str((body.get("metadata") or {}).get("uid"))
                if not backoff.due(uid, time.monotonic()):
                    skipped += 1
                    continue
                once = functools.partial(
                    _guarded_pass, memo, namespace, name, functools.partial(dict, body), log
                )
                await asyncio.to_thread(_log_failure, f"ModelService {namespace}/{name}", once)
        applied = sum(1 for uid, done in memo.thrifty_applied.items() if before.get(uid) != done)
        log.info(
            "ModelService resync pass: %d objects, %d applied, %d backing off",
            len(live),
            applied,
            skipped,
        )

    async def pools() -> None:
        for name, bodies in list(caches.gpu_pools.items()):
            for body in list(bodies):
                with timed_reconcile(memo, "GPUPool"):
                    await asyncio.to_thread(
                        _log_failure,
                        f"GPUPool {name}",
                        functools.partial(refresh_gpu_pool, memo.kube, body, log, caches),
                    )

    async def budgets() -> None:
        for (namespace, name), bodies in list(caches.cost_budgets.items()):
            for body in list(bodies):
                with timed_reconcile(memo, "CostBudget"):
                    await asyncio.to_thread(
                        _log_failure,
                        f"CostBudget {namespace}/{name}",
                        functools.partial(refresh_cost_budget, memo.kube, body, log, caches),
                    )

    return [
        loops.Loop("ModelService resync", config.resync_seconds, model_services, acting),
        loops.Loop("GPUPool status", config.pool_resync_seconds, pools, acting),
        loops.Loop("CostBudget status", config.budget_resync_seconds, budgets, acting),
    ]
