"""One reconcile pass of a ModelService, planned without I/O: manifests, status and Events.

The kopf handler reads the world (spec, pools, nodes, pods, the Deployment), calls `plan`, and
writes what comes back. Keeping the decisions here means every branch (unknown pool, too many GPUs
per replica, missing Secret, capacity shortfall, a cost cap below the minimum) is a unit test, and
that a pass over an unchanged world returns the status it was given, so nothing gets written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from thrifty import cost, explain
from thrifty.api import common, costbudget, gpupool, modelservice
from thrifty.policy import types as policy_types
from thrifty.reconciler import placement, render


@dataclass(frozen=True)
class DeploymentState:
    """The parts of the Deployment's status a ModelService's status is computed from."""

    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0


@dataclass(frozen=True)
class LostReplica:
    """A replica pod bound to a node that is gone or not Ready: it serves nobody, whatever its own
    status says (on a dead node nobody is left to update it)."""

    pod: str
    node: str
    node_state: str
    """`deleted` or `NotReady`."""
    ready: bool
    """The pod itself still says Ready, so the Deployment still counts it ready."""


def lost_replicas(
    pods: Sequence[Mapping[str, Any]], node_ready: Mapping[str, bool]
) -> list[LostReplica]:
    """This ModelService's pods on nodes that are absent from `node_ready` (deleted) or not Ready.

    Pods already being deleted are left out: their ReplicaSet no longer counts them and has
    replaced them (an eviction after the node-loss toleration, the pod garbage collector)."""
    lost = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        status = pod.get("status") or {}
        node = spec.get("nodeName")
        if not node or meta.get("deletionTimestamp"):
            continue
        if status.get("phase") in ("Succeeded", "Failed") or node_ready.get(node) is True:
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        state = "NotReady" if node in node_ready else "deleted"
        lost.append(LostReplica(str(meta.get("name", "")), str(node), state, ready))
    return sorted(lost, key=lambda one: one.pod)


@dataclass(frozen=True)
class Event:
    type: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What to write. ``manifests`` None: leave existing workloads as they are (spec unusable)."""

    manifests: list[render.Manifest] | None
    status: modelservice.ModelServiceStatus
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Inputs:
    """Everything one pass reads."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: modelservice.ModelServiceStatus
    pools: Mapping[str, gpupool.GPUPoolSpec]
    nodes: Sequence[placement.NodeInfo]
    pods: Sequence[placement.PodInfo]
    deployment: DeploymentState | None
    pod_waiting: Sequence[tuple[str, str]] = ()
    """(reason, message) of this ModelService's waiting containers, e.g. a missing Secret."""
    replicas_holding_gpus: int | None = None
    """This ModelService's pods bound to a node (a pending pod costs nothing); None: unknown,
    the Deployment's replica count is used."""
    now: str = ""
    lost: Sequence[LostReplica] = ()
    """Its replicas on nodes that are gone or not Ready (`lost_replicas`)."""
    node_loss_toleration_seconds: int = render.NODE_LOSS_TOLERATION_SECONDS
    do_not_disrupt: bool = True
    """Whether the engine pods carry the node autoscalers' do-not-disrupt annotations."""
    pool_shortages: Mapping[str, str] = field(default_factory=dict)
    """Pools whose node autoscaler is failing (`pool_capacity`), with the reason: they count
    only their existing nodes."""


def desired_replicas(spec: modelservice.ModelServiceSpec) -> int:
    """THE source of the Deployment's replica count.

    ``spec.replicas`` when set: the autoscaler (mode Auto) or a human (kubectl scale, mode Manual)
    writes it through the scale subresource. Absent (a fresh object applied by GitOps without it):
    the lower bound, but at least one replica, so a new service starts and can be tried.
    """
    if spec.replicas is not None:
        return spec.replicas
    return min(max(spec.scaling.min_replicas, 1), spec.scaling.max_replicas)


def plan(inputs: Inputs) -> Plan:
    try:
        spec = modelservice.ModelServiceSpec.model_validate(inputs.spec)
    except pydantic.ValidationError as error:
        return _degraded(inputs, explain.INVALID_SPEC, _validation_message(error))
    replicas = desired_replicas(spec)
    gpus = spec.engine.gpus_per_replica
    where = placement.choose_pool(
        service=(inputs.namespace, inputs.name),
        acceptable=spec.pools,
        pools=inputs.pools,
        nodes=inputs.nodes,
        pods=inputs.pods,
        gpus_per_replica=gpus,
        replicas=replicas,
        current_pool=inputs.status.pool,
        short_pools=inputs.pool_shortages,
    )
    if where.pool is None:
        return _degraded(inputs, where.problem or explain.INVALID_SPEC, where.message)
    pool = inputs.pools[where.pool]
    target = render.Target(
        name=inputs.name,
        namespace=inputs.namespace,
        uid=inputs.uid,
        spec=spec,
        pool_name=where.pool,
        pool=pool,
        # A replacement for each lost replica, at once: its ReplicaSet still counts the lost pod
        # until it is evicted (the node-loss toleration) or garbage-collected (node deleted).
        replicas=replicas + len(inputs.lost),
        node_loss_toleration_seconds=inputs.node_loss_toleration_seconds,
        do_not_disrupt=inputs.do_not_disrupt,
    )
    status = _status(inputs, spec, where, pool, replicas)
    return Plan(render.manifests(target), status, _events(inputs.status, status))


def _status(
    inputs: Inputs,
    spec: modelservice.ModelServiceSpec,
    where: placement.Placement,
    pool: gpupool.GPUPoolSpec,
    replicas: int,
) -> modelservice.ModelServiceStatus:
    deployment = serving(inputs.deployment or DeploymentState(), inputs.lost)
    gpus = spec.engine.gpus_per_replica
    now, generation = inputs.now, inputs.generation
    degraded = _problems(inputs, spec, pool, gpus)
    conditions = [
        explain.condition(
            explain.DEGRADED,
            degraded is not None,
            degraded[0] if degraded else explain.AS_EXPECTED,
            degraded[1] if degraded else "",
            now=now,
            generation=generation,
        ),
        _capacity_condition(
            inputs.status,
            where,
            short=any(name in inputs.pool_shortages for name in spec.pools),
            now=now,
            generation=generation,
        ),
        _lost_condition(inputs.lost, now=now, generation=generation),
        _progressing(deployment, replicas, now=now, generation=generation),
    ]
    merged = explain.set_conditions(inputs.status.conditions, conditions)
    merged = explain.with_rollups(merged, now=now, generation=generation)
    return inputs.status.model_copy(
        update={
            "observed_generation": generation,
            "replicas": deployment.replicas,
            "desired_replicas": replicas,
            "ready_replicas": deployment.ready_replicas,
            "selector": render.selector_string(inputs.name),
            "pool": where.pool,
            "gpus_per_replica": gpus,
            "price_per_gpu_hour": pool.price_per_gpu_hour,
            "dollars_per_hour": cost.dollars_per_hour(
                _replicas_paid(inputs, deployment), gpus, pool.price_per_gpu_hour
            ),
            "conditions": merged,
        }
    )


def serving(deployment: DeploymentState, lost: Sequence[LostReplica]) -> DeploymentState:
    """The Deployment's counts without its lost replicas (and the replacements ordered for them):
    ready replicas are those on existing, Ready nodes."""
    if not lost:
        return deployment
    gone = len(lost)
    return dataclasses.replace(
        deployment,
        replicas=max(deployment.replicas - gone, 0),
        ready_replicas=max(deployment.ready_replicas - sum(1 for one in lost if one.ready), 0),
        updated_replicas=max(deployment.updated_replicas - gone, 0),
    )


def _lost_condition(lost: Sequence[LostReplica], *, now: str, generation: int) -> common.Condition:
    if not lost:
        return explain.condition(
            explain.REPLICAS_LOST,
            False,
            explain.NO_REPLICA_LOST,
            "every replica is on an existing, Ready node",
            now=now,
            generation=generation,
        )
    where = ", ".join(f"{one.pod} on node {one.node} ({one.node_state})" for one in lost)
    count = len(lost)
    return explain.condition(
        explain.REPLICAS_LOST,
        True,
        explain.NODE_LOST,
        f"{count} {'replica' if count == 1 else 'replicas'} lost, "
        f"{count} {'replacement' if count == 1 else 'replacements'} ordered: {where}",
        now=now,
        generation=generation,
    )


def _replicas_paid(inputs: Inputs, deployment: DeploymentState) -> int:
    """Replicas on GPUs. The pods are listed before the Deployment is read, so a pod bound and
    ready in between shows in the Deployment's ready count only: a ready replica holds its GPUs."""
    if inputs.replicas_holding_gpus is None:
        return deployment.replicas
    return max(inputs.replicas_holding_gpus, deployment.ready_replicas)


def _capacity_condition(
    status: modelservice.ModelServiceStatus,
    where: placement.Placement,
    *,
    short: bool = False,
    now: str,
    generation: int,
) -> common.Condition:
    """CapacityLimited: the replicas asked for do not fit, or the autoscaler wanted more than the
    pool can give and ordered only what fits (no pod waits; its decision says what is missing).
    Reason PoolShort when an acceptable pool's node autoscaler is failing (the message says
    which and why), else InsufficientGPUs."""
    decision = status.autoscaler.last_decision if status.autoscaler else None
    autoscaler_bound = decision is not None and decision.bound == policy_types.Bound.CAPACITY.value
    limited = where.capacity_limited or autoscaler_bound
    message = where.message
    if autoscaler_bound and not where.capacity_limited and decision is not None:
        message = f"autoscaler: {decision.message}"
    return explain.condition(
        explain.CAPACITY_LIMITED,
        limited,
        (explain.POOL_SHORT if short else explain.INSUFFICIENT_GPUS)
        if limited
        else explain.ENOUGH_CAPACITY,
        message,
        now=now,
        generation=generation,
    )


def _progressing(
    deployment: DeploymentState, replicas: int, *, now: str, generation: int
) -> common.Condition:
    observed = deployment.observed_generation >= deployment.generation
    done = (
        observed
        and deployment.updated_replicas >= replicas
        and deployment.ready_replicas >= replicas
        and deployment.replicas == replicas
    )
    if done:
        reason = explain.SCALED_TO_ZERO if replicas == 0 else explain.ROLLED_OUT
        message = f"{deployment.ready_replicas} of {replicas} replicas ready"
        return explain.condition(
            explain.PROGRESSING, False, reason, message, now=now, generation=generation
        )
    message = f"{deployment.ready_replicas} of {replicas} replicas ready"
    return explain.condition(
        explain.PROGRESSING,
        True,
        explain.REPLICAS_STARTING,
        message,
        now=now,
        generation=generation,
    )


def _problems(
    inputs: Inputs, spec: modelservice.ModelServiceSpec, pool: gpupool.GPUPoolSpec, gpus: int
) -> tuple[str, str] | None:
    """A user's mistake that still lets the workload be rendered: (reason, message) or None."""
    missing = secret_not_found(inputs.pod_waiting)
    if missing is not None:
        return explain.SECRET_NOT_FOUND, (
            f"{missing}: create it in namespace {inputs.namespace} or fix "
            "spec.engine.hfTokenSecretRef / spec.engine.env"
        )
    target = spec.cost_target
    cap = target.max_dollars_per_hour
    if cap is not None and target.enforcement is policy_types.Enforcement.HARD:
        floor = cost.dollars_per_hour(spec.scaling.min_replicas, gpus, pool.price_per_gpu_hour)
        if floor > cap:
            return explain.COST_CAP_BELOW_MINIMUM, (
                f"scaling.minReplicas {spec.scaling.min_replicas} x {gpus} GPUs x "
                f"${pool.price_per_gpu_hour:.2f} = {cost.format_dollars_per_hour(floor)} exceeds "
                f"costTarget.maxDollarsPerHour {cost.format_dollars_per_hour(cap)} (Hard): "
                "lower minReplicas, raise the cap or use enforcement Soft"
            )
    return None


def secret_not_found(waiting: Sequence[tuple[str, str]]) -> str | None:
    """The kubelet's message when a container references a Secret (or key) that is missing."""
    for reason, message in waiting:
        if (
            reason == "CreateContainerConfigError"
            and "secret" in message
            and "not found" in message
        ):
            return message
    return None


def _degraded(inputs: Inputs, reason: str, message: str) -> Plan:
    now, generation = inputs.now, inputs.generation
    conditions = explain.set_condition(
        inputs.status.conditions,
        explain.condition(explain.DEGRADED, True, reason, message, now=now, generation=generation),
    )
    conditions = explain.with_rollups(conditions, now=now, generation=generation)
    status = inputs.status.model_copy(
        update={"observed_generation": generation, "conditions": conditions}
    )
    return Plan(None, status, _events(inputs.status, status))


def apply_failed(
    inputs: Inputs, planned: Plan, failures: Sequence[tuple[render.Manifest, str, bool]]
) -> Plan:
    """Some rendered objects were not applied; the others were, and the planned status stands.

    Each failure is (manifest, error, refused): refused (422) means the object itself is wrong,
    the spec's to fix (`ApplyFailed`, Stalled); anything else (a quota, a full IP range, a webhook
    or the API server failing) is `ApplyError`, tried again at the next resync. Either way
    `Degraded` and its Event name every object and the server's message: never a silent retry."""
    refused = any(refusal for _, _, refusal in failures)
    reason = explain.APPLY_FAILED if refused else explain.APPLY_ERROR
    message = "; ".join(
        f"{'the API server refused' if refusal else 'could not apply'} "
        f"{manifest['kind']} {manifest['metadata']['name']}: {error}"
        for manifest, error, refusal in failures
    )
    now, generation = inputs.now, inputs.generation
    conditions = explain.set_condition(
        planned.status.conditions,
        explain.condition(explain.DEGRADED, True, reason, message, now=now, generation=generation),
    )
    conditions = explain.with_rollups(conditions, now=now, generation=generation)
    status = planned.status.model_copy(update={"conditions": conditions})
    return Plan(planned.manifests, status, _events(inputs.status, status))


def _validation_message(error: pydantic.ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"])
        parts.append(f"spec.{where}: {problem['msg']}" if where else problem["msg"])
    return "; ".join(parts)


_WARNING_WHEN_TRUE = {explain.DEGRADED, explain.CAPACITY_LIMITED, explain.REPLICAS_LOST}


def _events(
    before: modelservice.ModelServiceStatus, after: modelservice.ModelServiceStatus
) -> list[Event]:
    """An Event per condition whose status or reason changed, and one when the pool changes."""
    events = []
    if after.pool is not None and after.pool != before.pool:
        reason = explain.PLACED if before.pool is None else explain.POOL_CHANGED
        events.append(Event("Normal", reason, f"placed on GPUPool {after.pool}"))
    for changed in explain.transitions(before.conditions, after.conditions):
        if changed.type == explain.READY and changed.status is common.ConditionStatus.FALSE:
            continue  # its cause already has an Event of its own
        if changed.type == explain.STALLED:
            continue  # Degraded's Event names the same reason and message
        true = changed.status is common.ConditionStatus.TRUE
        warning = true and changed.type in _WARNING_WHEN_TRUE
        first_seen = explain.find(before.conditions, changed.type) is None
        if changed.type in _WARNING_WHEN_TRUE and not true and first_seen:
            continue  # "no problem" on a new object is not news
        message = changed.message or f"{changed.type} is {changed.status.value}"
        events.append(Event("Warning" if warning else "Normal", changed.reason, message))
    # More replicas lost while some already were: the condition stays True, the news is new.
    lost_before = explain.find(before.conditions, explain.REPLICAS_LOST)
    lost_after = explain.find(after.conditions, explain.REPLICAS_LOST)
    if (
        lost_before is not None
        and lost_after is not None
        and lost_before.status is common.ConditionStatus.TRUE
        and lost_after.status is common.ConditionStatus.TRUE
        and lost_before.message != lost_after.message
    ):
        events.append(Event("Warning", lost_after.reason, lost_after.message))
    return events


# --- CostBudget status --------------------------------------------------------------------------

"""CostBudget condition: True while the members spend more per hour than the budget allows."""


def budget_members(
    budget: str, model_services: Sequence[Mapping[str, Any]]
) -> list[costbudget.BudgetMember]:
    """The ModelServices (bodies of one namespace) whose costTarget.budgetRef names ``budget``."""
    members = []
    for body in model_services:
        ref = ((body.get("spec") or {}).get("costTarget") or {}).get("budgetRef") or {}
        if ref.get("name") != budget:
            continue
        spent = (body.get("status") or {}).get("dollarsPerHour") or 0.0
        members.append(
            costbudget.BudgetMember(name=body["metadata"]["name"], dollars_per_hour=float(spent))
        )
    return sorted(members, key=lambda m: m.name)


def budget_status(
    spec: costbudget.CostBudgetSpec,
    old: costbudget.CostBudgetStatus,
    members: Sequence[costbudget.BudgetMember],
    *,
    now: str,
    generation: int,
) -> costbudget.CostBudgetStatus:
    spent = cost.sum_dollars_per_hour(m.dollars_per_hour for m in members)
    cap = spec.max_dollars_per_hour
    remaining = None if cap is None else cost.sum_dollars_per_hour([cap, -spent])
    over = remaining is not None and remaining < 0
    message = f"{len(members)} members spend {cost.format_dollars_per_hour(spent)}" + (
        "" if cap is None else f" of {cost.format_dollars_per_hour(cap)}"
    )
    exceeded = explain.condition(
        explain.BUDGET_EXCEEDED,
        over,
        explain.OVER_BUDGET if over else explain.WITHIN_BUDGET,
        message,
        now=now,
        generation=generation,
    )
    # Ready (the printer column's Status): the budget is computed and its members are within it.
    ready = explain.condition(
        explain.READY,
        not over,
        explain.OVER_BUDGET if over else explain.WITHIN_BUDGET,
        message,
        now=now,
        generation=generation,
    )
    return old.model_copy(
        update={
            "observed_generation": generation,
            "dollars_per_hour": spent,
            "remaining_dollars_per_hour": remaining,
            "members": list(members),
            "conditions": explain.set_conditions(old.conditions, [exceeded, ready]),
        }
    )
