"""kopf handlers: read the world through the adapter, call the pure core, write what changed.

Level-triggered: every watch event of a ModelService (and of the Deployments it owns) and a
periodic timer run the same idempotent pass, so a missed event, a restart or a freed GPU all end in
the same state. A pass over an unchanged world writes nothing: server-side apply of identical
manifests is a no-op for the API server, and status is patched only where it differs.

A user's mistake (unknown pool, too many GPUs per replica, missing Secret) is written to the
``Degraded`` condition with an Event and is not raised: the timer re-checks it, so the object heals
by itself when the pool or Secret appears, and no error loop or crash touches other objects.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import pydantic

from thrifty import explain, placement, reconcile, render
from thrifty.adapters import kube as kube_adapter
from thrifty.api import GROUP, VERSION, costbudget, gpupool, modelservice
from thrifty.control import autoscaler
from thrifty.control import settings as settings_module

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
    memo.kube = kube_adapter.Kube(kube_adapter.connect())
    memo.locks = {}
    memo.locks_guard = threading.Lock()


def _lock(memo: kopf.Memo, key: str) -> threading.Lock:
    """One pass at a time per object: the timer and the watch may fire together."""
    with memo.locks_guard:
        lock: threading.Lock = memo.locks.setdefault(key, threading.Lock())
        return lock


# --- ModelService -------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "modelservices")
def model_service_event(
    type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    if type == "DELETED":
        return
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
    if type == "DELETED" or not owner or not namespace:
        return
    kube: kube_adapter.Kube = memo.kube
    _guarded_pass(memo, namespace, owner, lambda: kube.get_model_service(namespace, owner), logger)


def _guarded_pass(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    load: Callable[[], Mapping[str, Any]],
    logger: kopf.Logger,
) -> None:
    """One pass at a time per object, on a snapshot taken inside the lock.

    kopf updates a timer's ``body`` in place as watch events arrive; reading the status at the
    start and the resourceVersion at the end of a pass would pair an old status with a new version
    and defeat the write precondition. A deep copy, taken once the lock is held, is consistent.
    """
    with _lock(memo, f"ms/{namespace}/{name}"), autoscaler.timed_reconcile(memo):
        try:
            body = copy.deepcopy(dict(load()))
            if body["metadata"].get("deletionTimestamp"):
                return  # owner references let the garbage collector remove the workloads
            reconcile_model_service(memo.kube, body, logger)
        except kube_adapter.NotFound:
            return
        except kube_adapter.Conflict:
            logger.debug("status changed while reconciling; the next event reconciles again")
        except kube_adapter.KubeError as error:
            raise kopf.TemporaryError(str(error), delay=_retry_seconds(memo)) from error


def _pools(bodies: list[dict[str, Any]], logger: kopf.Logger) -> dict[str, gpupool.GPUPoolSpec]:
    pools = {}
    for body in bodies:
        name = body["metadata"]["name"]
        try:
            pools[name] = gpupool.GPUPoolSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as error:
            logger.warning(f"GPUPool {name} is invalid and ignored: {error}")
    return pools


def _deployment_state(deployment: Mapping[str, Any] | None) -> reconcile.DeploymentState | None:
    if deployment is None:
        return None
    status = deployment.get("status") or {}
    return reconcile.DeploymentState(
        generation=int(deployment["metadata"].get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        replicas=int(status.get("replicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
    )


def reconcile_model_service(
    kube: kube_adapter.Kube, body: Mapping[str, Any], logger: kopf.Logger | logging.Logger
) -> None:
    """One pass: read, plan, apply the manifests, write status and Events if anything changed."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    raw_pods = kube.active_pods()
    own = [
        p
        for p in raw_pods
        if p["metadata"].get("namespace") == namespace
        and (p["metadata"].get("labels") or {}).get(placement.MODEL_SERVICE_LABEL) == name
    ]
    try:
        current = modelservice.ModelServiceStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        current = modelservice.ModelServiceStatus()
    inputs = reconcile.Inputs(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        generation=int(meta.get("generation", 0)),
        spec=body.get("spec") or {},
        status=current,
        pools=_pools(kube.list_gpu_pools(), logger),
        nodes=kube.nodes(),
        pods=[kube_adapter.pod_info(p) for p in raw_pods],
        deployment=_deployment_state(kube.read_deployment(namespace, render.engine_name(name))),
        pod_waiting=[w for p in own for w in kube_adapter.waiting_reasons(p)],
        replicas_holding_gpus=sum(1 for p in own if (p.get("spec") or {}).get("nodeName")),
        now=explain.now_rfc3339(),
    )
    result = reconcile.plan(inputs)
    if result.manifests is not None:
        for manifest in result.manifests:
            applied = kube.apply(manifest)
            if manifest["kind"] == "Deployment":
                # Plan again with what the apply returned: a changed replica count shows at once.
                after = _deployment_state(applied)
                if after != inputs.deployment:
                    result = reconcile.plan(_replace_deployment(inputs, after))
    _write_status(kube, body, "modelservices", current.to_kube(), result.status.to_kube())
    for event in result.events:
        kube.event(_involved(body, "ModelService"), event.type, event.reason, event.message)
        logger.info(f"{event.reason}: {event.message}")


def _replace_deployment(
    inputs: reconcile.Inputs, deployment: reconcile.DeploymentState | None
) -> reconcile.Inputs:
    return dataclasses.replace(inputs, deployment=deployment)


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
    kube: kube_adapter.Kube, body: Mapping[str, Any], logger: kopf.Logger | logging.Logger
) -> None:
    name = body["metadata"]["name"]
    try:
        spec = gpupool.GPUPoolSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as error:
        logger.warning(f"GPUPool {name} is invalid: {error}")
        return
    old = gpupool.GPUPoolStatus.model_validate(body.get("status") or {})
    computed = placement.pool_status(
        name, spec, kube.nodes(), [kube_adapter.pod_info(p) for p in kube.active_pods()]
    )
    generation = int(body["metadata"].get("generation", 0))
    ready = explain.condition(
        explain.READY,
        computed.nodes > 0,
        explain.POOL_READY if computed.nodes else explain.POOL_HAS_NO_NODES,
        f"{computed.nodes} nodes, {computed.gpus_allocatable} GPUs allocatable"
        if computed.nodes
        else f"no Ready, schedulable node matches nodeSelector {dict(spec.node_selector)}",
        now=explain.now_rfc3339(),
        generation=generation,
    )
    new = computed.model_copy(
        update={
            "observed_generation": generation,
            "conditions": explain.set_condition(old.conditions, ready),
        }
    )
    _write_status(kube, body, "gpupools", old.to_kube(), new.to_kube())


# --- CostBudget ---------------------------------------------------------------------------------


def refresh_cost_budget(
    kube: kube_adapter.Kube, body: Mapping[str, Any], logger: kopf.Logger | logging.Logger
) -> None:
    meta = body["metadata"]
    try:
        spec = costbudget.CostBudgetSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as error:
        logger.warning(f"CostBudget {meta['name']} is invalid: {error}")
        return
    old = costbudget.CostBudgetStatus.model_validate(body.get("status") or {})
    members = reconcile.budget_members(meta["name"], kube.list_model_services(meta["namespace"]))
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


def _retry_seconds(memo: kopf.Memo) -> float:
    config: settings_module.Settings | None = getattr(memo, "thrifty_settings", None)
    return (config or settings_module.Settings()).retry_seconds


def _log_failure(what: str, call: Callable[[], None]) -> None:
    """One object's failed resync is logged and retried next period; the others go on."""
    try:
        call()
    except kopf.TemporaryError as error:
        log.warning("%s: %s (next resync retries)", what, error)
    except kube_adapter.Conflict:
        log.debug("%s changed while refreshing; the next resync refreshes again", what)
    except kube_adapter.KubeError as error:
        log.warning("%s: API server: %s (next resync retries)", what, error)


def resync_loops(
    memo: kopf.Memo, config: settings_module.Settings, acting: Callable[[], bool]
) -> list[autoscaler.Loop]:
    """The periodic passes over every object, from the watch caches: ModelServices reconciled
    (freed capacity, deleted pools, missing Secrets), GPUPool and CostBudget status refreshed.
    One loop each on the leader instead of a kopf timer per object: timers would put a finalizer
    on every object, and deleting one would then wait for a running operator."""
    caches: autoscaler.Caches = memo.thrifty_caches

    async def model_services() -> None:
        for (namespace, name), bodies in list(caches.model_services.items()):
            for body in list(bodies):
                once = functools.partial(
                    _guarded_pass, memo, namespace, name, functools.partial(dict, body), log
                )
                await asyncio.to_thread(_log_failure, f"ModelService {namespace}/{name}", once)

    async def pools() -> None:
        for name, bodies in list(caches.gpu_pools.items()):
            for body in list(bodies):
                with autoscaler.timed_reconcile(memo, "GPUPool"):
                    await asyncio.to_thread(
                        _log_failure,
                        f"GPUPool {name}",
                        functools.partial(refresh_gpu_pool, memo.kube, body, log),
                    )

    async def budgets() -> None:
        for (namespace, name), bodies in list(caches.cost_budgets.items()):
            for body in list(bodies):
                with autoscaler.timed_reconcile(memo, "CostBudget"):
                    await asyncio.to_thread(
                        _log_failure,
                        f"CostBudget {namespace}/{name}",
                        functools.partial(refresh_cost_budget, memo.kube, body, log),
                    )

    return [
        autoscaler.Loop("ModelService resync", config.resync_seconds, model_services, acting),
        autoscaler.Loop("GPUPool status", config.pool_resync_seconds, pools, acting),
        autoscaler.Loop("CostBudget status", config.budget_resync_seconds, budgets, acting),
    ]
