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
from thrifty.api import common, costbudget, gpupool, modelservice, throughput
from thrifty.policy import types as policy_types
from thrifty.reconciler import placement, render, spread


@dataclass(frozen=True)
class DeploymentState:
    """The parts of the Deployment's status a ModelService's status is computed from."""

    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    desired: int | None = None
    """spec.replicas: what was asked for (None: unknown, status.replicas stands in)."""
    placed: int | None = None
    """Of spec.replicas, those the spread placed (`render.PLACED_ANNOTATION`), the others
    replacing lost replicas (None: unknown, as written by an operator of before)."""

    @property
    def asked(self) -> int:
        return self.replicas if self.desired is None else self.desired


def deployment_state(deployment: Mapping[str, Any]) -> DeploymentState:
    """What a pass reads of one of its Deployments (a watch cache's body or an apply's answer)."""
    status = deployment.get("status") or {}
    desired = (deployment.get("spec") or {}).get("replicas")
    annotations = deployment["metadata"].get("annotations") or {}
    return DeploymentState(
        generation=int(deployment["metadata"].get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        replicas=int(status.get("replicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        desired=None if desired is None else int(desired),
        placed=_int_or_none(annotations.get(render.PLACED_ANNOTATION)),
    )


def _int_or_none(text: object) -> int | None:
    try:
        return None if text is None else max(int(str(text)), 0)
    except ValueError:
        return None


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
    pool: str = ""
    """The GPUPool its Deployment places on (the pod's `thrifty.dev/pool` label)."""


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
        pool = str((meta.get("labels") or {}).get(placement.POOL_LABEL, ""))
        lost.append(LostReplica(str(meta.get("name", "")), str(node), state, ready, pool))
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
    prune: list[str] = field(default_factory=list)
    """Deployments of this ModelService to delete: their pool is no longer offered, or they are
    the single Deployment of before pools were spread over (once the new ones serve)."""
    claims: dict[str, int] = field(default_factory=dict)
    """GPUs this plan claims per pool (see `placement.Claims`)."""
    moves: list[Event] = field(default_factory=list)
    """The Events of the pool moves this plan makes (Spilled, CapacityReclaimed, Returning...):
    news only from the pass that applies them, as a pass over an unchanged world writes
    nothing."""


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
    deployments: Mapping[str, DeploymentState]
    """This ModelService's Deployments by pool."""
    orphans: Mapping[str, DeploymentState] = field(default_factory=dict)
    """Its other Deployments by name: a pool no longer offered, or the pre-spread single one."""
    pod_waiting: Sequence[tuple[str, str]] = ()
    """(reason, message) of this ModelService's waiting containers, e.g. a missing Secret."""
    replicas_holding_gpus: Mapping[str, int] | None = None
    """Per pool, this ModelService's pods bound to a node (a pending pod costs nothing); None:
    unknown, the Deployments' replica counts are used."""
    claims: placement.Claims = field(default_factory=dict)
    """GPUs other ModelServices were given by placements not yet seen as pods."""
    now: str = ""
    now_seconds: float = 0.0
    return_delay_seconds: float = 600.0
    """How long a pool that lost replicas is not returned to (see `spread`)."""
    cold_start_seconds: float = 120.0
    lost: Sequence[LostReplica] = ()
    """Its replicas on nodes that are gone or not Ready (`lost_replicas`)."""
    node_loss_toleration_seconds: int = render.NODE_LOSS_TOLERATION_SECONDS
    do_not_disrupt: bool = True
    """Whether the engine pods carry the node autoscalers' do-not-disrupt annotations."""
    pool_shortages: Mapping[str, str] = field(default_factory=dict)
    """Pools whose node autoscaler is failing (`pool_capacity`), with the reason: they count
    only their existing nodes."""
    observed_hazards: Mapping[str, float] = field(default_factory=dict)
    """Reclaims per node-hour seen on each Spot pool (`reclaims.observed_hazard`): a pool is
    planned with it when above its published interruptionRate, as the autoscaler plans it."""


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
    known = [name for name in spec.pools if name in inputs.pools]
    if not known:
        return _degraded(
            inputs,
            explain.UNKNOWN_POOL,
            f"spec.pools: none of the acceptable GPUPools exists: {', '.join(spec.pools)}",
        )
    suitable = [name for name in known if inputs.pools[name].gpus_per_node >= gpus]
    if not suitable:
        largest = max(inputs.pools[name].gpus_per_node for name in known)
        return _degraded(
            inputs,
            explain.GPUS_PER_REPLICA_TOO_LARGE,
            f"a replica needs {gpus} GPUs on one node, but the largest nodes of GPUPools "
            f"{', '.join(known)} have {largest}: lower tensorParallelSize x "
            "pipelineParallelSize or add a pool with bigger nodes",
        )
    usable = [name for name in suitable if model_fits(spec, inputs.pools[name])]
    if not usable:
        return _degraded(inputs, explain.POOL_TOO_SMALL, _too_small(spec, suitable, inputs.pools))
    cold_start = float(spec.scaling.cold_start_seconds or inputs.cold_start_seconds)
    offers = _offers(inputs, spec, usable, cold_start)
    previous = inputs.status.desired_replicas if inputs.status.observed_generation else None
    spread_ = spread.spread(
        offers,
        float(replicas),
        cheapest=spec.placement is modelservice.PlacementPolicy.CHEAPEST,
        min_on_demand=spec.min_on_demand_replicas,
        cold_start_seconds=cold_start,
        previous_target=None if previous is None else float(previous),
    )
    targets = [
        render.Target(
            name=inputs.name,
            namespace=inputs.namespace,
            uid=inputs.uid,
            spec=spec,
            pool_name=offer.name,
            pool=inputs.pools[offer.name],
            # A replacement for each lost replica, at once: its ReplicaSet still counts the lost
            # pod until it is evicted (the node-loss toleration) or garbage-collected.
            replicas=spread_.replicas[offer.name] + _lost_in(inputs.lost, offer.name),
            placed=spread_.replicas[offer.name],
            node_loss_toleration_seconds=inputs.node_loss_toleration_seconds,
            do_not_disrupt=inputs.do_not_disrupt,
        )
        for offer in offers
    ]
    status = _status(inputs, spec, offers, spread_, replicas)
    return Plan(
        render.manifests(targets),
        status,
        _events(inputs.status, status),
        prune=_prune(inputs, spread_, offers),
        claims={name: count * gpus for name, count in spread_.replicas.items() if count},
        moves=[Event("Normal", move.reason, move.message) for move in spread_.moves],
    )


MEMORY_HEADROOM = 1.2
"""A replica's share of the weights must fit in its GPUs' memory 1.2 times over: the rest is
activations, CUDA graphs and at least some KV cache (vLLM refuses to start without it)."""


def model_fits(spec: modelservice.ModelServiceSpec, pool: gpupool.GPUPoolSpec) -> bool:
    """Whether a replica's share of the weights (spec.model.weightsGib over tensor x pipeline
    parallel) fits in one GPU of ``pool`` at the engine's memory utilisation. Unknown size: yes."""
    weights = spec.model.weights_gib
    if weights is None:
        return True
    usable = pool.gpu_memory_gib * (spec.engine.gpu_memory_utilization or 0.9)
    return weights / spec.engine.gpus_per_replica * MEMORY_HEADROOM <= usable


def _too_small(
    spec: modelservice.ModelServiceSpec,
    names: Sequence[str],
    pools: Mapping[str, gpupool.GPUPoolSpec],
) -> str:
    share = (spec.model.weights_gib or 0.0) / spec.engine.gpus_per_replica
    sizes = ", ".join(f"{name} has {pools[name].gpu_memory_gib:g} GiB" for name in names)
    return (
        f"spec.model.weightsGib {spec.model.weights_gib:g} over {spec.engine.gpus_per_replica} "
        f"GPUs is {share:g} GiB per GPU (x{MEMORY_HEADROOM:g} with the KV cache), more than "
        f"the GPUs of GPUPools {', '.join(names)} hold (gpuMemoryGib: {sizes})"
    )


def _offers(
    inputs: Inputs,
    spec: modelservice.ModelServiceSpec,
    names: Sequence[str],
    cold_start_seconds: float,
) -> list[spread.Offer]:
    gpus = spec.engine.gpus_per_replica
    service = (inputs.namespace, inputs.name)
    before = {entry.pool: entry for entry in inputs.status.pools}
    speeds = throughput.in_use(spec, inputs.status, inputs.pools)
    going = {node.name for node in inputs.nodes if node.reclaiming}
    doomed: dict[str, int] = {}
    for pod in inputs.pods:
        if pod.model_service == service and pod.node_name in going:
            pool_name = pod.labels.get(placement.POOL_LABEL, "")
            doomed[pool_name] = doomed.get(pool_name, 0) + 1
    offers = []
    for name in names:
        pool = inputs.pools[name]
        where = placement.room(
            name,
            pool,
            inputs.nodes,
            inputs.pods,
            gpus,
            exclude=service,
            claims=inputs.claims,
            short=name in inputs.pool_shortages,
        )
        reserved = None
        if pool.capacity_type is gpupool.CapacityType.RESERVED:
            if pool.reserved_gpus is None:
                reserved = where.replicas
            else:
                reserved = max(pool.reserved_gpus - where.thrifty_gpus, 0) // gpus
        deployment = inputs.deployments.get(name)
        # What the spread placed there: the replacements of lost replicas are not its own, also
        # once a lost pod is gone (garbage-collected, evicted) and its replacement is a pod like
        # any other: read as placed, it would be lost again (a second CapacityReclaimed) where
        # the pool has no room, or kept at once, all of them, where its node is back.
        asked = 0 if deployment is None else deployment.asked
        current = max(asked - _lost_in(inputs.lost, name), 0)
        if deployment is not None and deployment.placed is not None:
            current = min(current, deployment.placed)
        last = before.get(name)
        reclaimed_at = explain.parse_time(last.last_reclaim_time) if last else None
        offers.append(
            spread.Offer(
                name=name,
                capacity_type=pool.capacity_type,
                price_per_gpu_hour=pool.price_per_gpu_hour,
                gpus_per_replica=gpus,
                unit=spread.unit(
                    pool,
                    cold_start_seconds,
                    inputs.observed_hazards.get(name, 0.0),
                    speeds.get(name),
                ),
                room=where.replicas,
                reserved=reserved,
                current=current,
                ready=0 if deployment is None else deployment.ready_replicas,
                doomed=min(doomed.get(name, 0), current),
                replaced=last.reclaiming if last else 0,
                returnable=reclaimed_at is None
                or inputs.now_seconds - reclaimed_at >= inputs.return_delay_seconds,
            )
        )
    return offers


def _prune(inputs: Inputs, spread_: spread.Spread, offers: Sequence[spread.Offer]) -> list[str]:
    """Deployments no offered pool accounts for go once the offered pools' replicas serve (a
    ModelService of before the spread keeps serving until its per-pool Deployments are ready)."""
    if not inputs.orphans:
        return []
    ready = sum(o.unit * min(o.ready, spread_.replicas[o.name]) for o in offers)
    target = sum(o.unit * spread_.replicas[o.name] for o in offers)
    if ready + spread.EPSILON >= target:
        return sorted(inputs.orphans)
    return []


def _status(
    inputs: Inputs,
    spec: modelservice.ModelServiceSpec,
    offers: Sequence[spread.Offer],
    spread_: spread.Spread,
    replicas: int,
) -> modelservice.ModelServiceStatus:
    gpus = spec.engine.gpus_per_replica
    now, generation = inputs.now, inputs.generation
    serving_ = {
        pool: serving(state, [one for one in inputs.lost if one.pool == pool])
        for pool, state in inputs.deployments.items()
    }
    states = [*serving_.values(), *inputs.orphans.values()]
    degraded = _problems(inputs, spec, offers, gpus)
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
            spread_,
            {name: why for name, why in inputs.pool_shortages.items() if name in spec.pools},
            now=now,
            generation=generation,
        ),
        _lost_condition(inputs.lost, now=now, generation=generation),
        _progressing(states, serving_, spread_.replicas, now=now, generation=generation),
    ]
    merged = explain.set_conditions(inputs.status.conditions, conditions)
    merged = explain.with_rollups(merged, now=now, generation=generation)
    entries = _pool_entries(inputs, offers, spread_, serving_)
    used = [o for o in offers if spread_.replicas[o.name]]
    main = max(used, key=lambda o: spread_.replicas[o.name]) if used else offers[0]
    return inputs.status.model_copy(
        update={
            "observed_generation": generation,
            "replicas": sum(state.replicas for state in states),
            "desired_replicas": replicas,
            "ready_replicas": sum(state.ready_replicas for state in states),
            "selector": render.selector_string(inputs.name),
            "pool": main.name,
            "pools": entries,
            "placement": " ".join(f"{e.pool}={e.replicas}" for e in entries if e.replicas)
            or "none",
            "gpus_per_replica": gpus,
            "price_per_gpu_hour": planning_price(offers, spread_),
            "dollars_per_hour": cost.sum_dollars_per_hour(e.dollars_per_hour for e in entries),
            "conditions": merged,
        }
    )


def planning_price(offers: Sequence[spread.Offer], spread_: spread.Spread) -> float:
    """The $/GPU-hour of a reference replica the autoscaler plans with: the dearest pool that
    holds replicas or takes the next one, over its unit, so a Hard $/hour cap computed from it
    holds wherever the replicas land."""
    used = [o for o in offers if spread_.replicas[o.name]]
    next_one = [o for o in offers if spread_.replicas[o.name] < o.room][:1]
    candidates = used + next_one or list(offers)
    return max(o.price_per_gpu_hour / o.unit for o in candidates)


def _pool_entries(
    inputs: Inputs,
    offers: Sequence[spread.Offer],
    spread_: spread.Spread,
    serving_: Mapping[str, DeploymentState],
) -> list[modelservice.PoolReplicas]:
    """``serving_``: each pool's Deployment without its lost replicas (`serving`)."""
    before = {entry.pool: entry for entry in inputs.status.pools}
    entries = []
    for offer in offers:
        state = serving_.get(offer.name) or DeploymentState()
        last = before.get(offer.name)
        reclaimed = last.last_reclaim_time if last else None
        if spread_.lost.get(offer.name):
            reclaimed = inputs.now or reclaimed
        entries.append(
            modelservice.PoolReplicas(
                pool=offer.name,
                capacity_type=offer.capacity_type.value,
                replicas=spread_.replicas[offer.name],
                ready_replicas=state.ready_replicas,
                reclaiming=offer.doomed,
                dollars_per_hour=cost.dollars_per_hour(
                    _replicas_paid(inputs, offer.name, state),
                    offer.gpus_per_replica,
                    offer.price_per_gpu_hour,
                ),
                effective_dollars_per_hour=offer.effective(),
                last_reclaim_time=reclaimed,
            )
        )
    return entries


def _lost_in(lost: Sequence[LostReplica], pool: str) -> int:
    return sum(1 for one in lost if one.pool == pool)


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


def _replicas_paid(inputs: Inputs, pool: str, deployment: DeploymentState) -> int:
    """Replicas on GPUs. The pods are listed before the Deployment is read, so a pod bound and
    ready in between shows in the Deployment's ready count only: a ready replica holds its GPUs."""
    if inputs.replicas_holding_gpus is None:
        return deployment.replicas
    return max(inputs.replicas_holding_gpus.get(pool, 0), deployment.ready_replicas)


def _capacity_condition(
    status: modelservice.ModelServiceStatus,
    where: spread.Spread,
    shortages: Mapping[str, str],
    *,
    now: str,
    generation: int,
) -> common.Condition:
    """CapacityLimited: the replicas asked for do not fit in all the acceptable pools together,
    or the autoscaler wanted more than they can give and ordered only what fits (no pod waits;
    its decision says what is missing). Reason PoolShort when an acceptable pool's node
    autoscaler is failing (the message says which and why), else InsufficientGPUs."""
    decision = status.autoscaler.last_decision if status.autoscaler else None
    autoscaler_bound = decision is not None and decision.bound == policy_types.Bound.CAPACITY.value
    limited = where.capacity_limited or autoscaler_bound
    message = where.message
    if autoscaler_bound and not where.capacity_limited and decision is not None:
        message = f"autoscaler: {decision.message}"
    short = bool(shortages) and limited
    if short:
        message = "; ".join(
            [message, *(f"GPUPool {n} is short: {w}" for n, w in shortages.items())]
        )
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
    states: Sequence[DeploymentState],
    by_pool: Mapping[str, DeploymentState],
    wanted: Mapping[str, int],
    *,
    now: str,
    generation: int,
) -> common.Condition:
    """Rolled out when every pool's Deployment has exactly its replicas updated and ready, and
    no other Deployment of the service is left."""
    replicas = sum(wanted.values())
    ready = sum(state.ready_replicas for state in states)
    done = len(states) == len(by_pool) and all(
        _rolled_out(by_pool.get(pool) or DeploymentState(), count) for pool, count in wanted.items()
    )
    if done:
        reason = explain.SCALED_TO_ZERO if replicas == 0 else explain.ROLLED_OUT
        message = f"{ready} of {replicas} replicas ready"
        return explain.condition(
            explain.PROGRESSING, False, reason, message, now=now, generation=generation
        )
    message = f"{ready} of {replicas} replicas ready"
    return explain.condition(
        explain.PROGRESSING,
        True,
        explain.REPLICAS_STARTING,
        message,
        now=now,
        generation=generation,
    )


def _rolled_out(deployment: DeploymentState, replicas: int) -> bool:
    if replicas == 0 and deployment == DeploymentState():
        return True
    return (
        deployment.observed_generation >= deployment.generation
        and deployment.updated_replicas >= replicas
        and deployment.ready_replicas >= replicas
        and deployment.replicas == replicas
    )


def _problems(
    inputs: Inputs,
    spec: modelservice.ModelServiceSpec,
    offers: Sequence[spread.Offer],
    gpus: int,
) -> tuple[str, str] | None:
    """A user's mistake that still lets the workload be rendered: (reason, message) or None."""
    missing = secret_not_found(inputs.pod_waiting)
    if missing is not None:
        return explain.SECRET_NOT_FOUND, (
            f"{missing}: create it in namespace {inputs.namespace} or fix "
            "spec.engine.hfTokenSecretRef / spec.engine.env"
        )
    unknown = [name for name in spec.pools if name not in inputs.pools]
    if unknown:
        return explain.UNKNOWN_POOL, (
            f"spec.pools names GPUPools that do not exist: {', '.join(unknown)} (the others "
            "are used): create them or remove them from the list"
        )
    offered = {offer.name for offer in offers}
    too_small = [
        name
        for name in spec.pools
        if name in inputs.pools and inputs.pools[name].gpus_per_node >= gpus and name not in offered
    ]
    if too_small:
        return explain.POOL_TOO_SMALL, _too_small(spec, too_small, inputs.pools) + (
            " (the others are used)"
        )
    target = spec.cost_target
    cap = target.max_dollars_per_hour
    cheapest = min(offers, key=lambda o: o.price_per_gpu_hour / o.unit)
    price = cheapest.price_per_gpu_hour / cheapest.unit
    if cap is not None and target.enforcement is policy_types.Enforcement.HARD:
        floor = cost.dollars_per_hour(spec.scaling.min_replicas, gpus, price)
        if floor > cap:
            return explain.COST_CAP_BELOW_MINIMUM, (
                f"scaling.minReplicas {spec.scaling.min_replicas} x {gpus} GPUs x "
                f"${price:.2f} = {cost.format_dollars_per_hour(floor)} exceeds "
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
    return dataclasses.replace(planned, status=status, events=_events(inputs.status, status))


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
    """An Event per condition whose status or reason changed, and one on first placement (pool
    changes after it are moves, with Events of their own)."""
    events = []
    if after.pool is not None and before.pool is None:
        events.append(Event("Normal", explain.PLACED, f"placed: {after.placement}"))
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
