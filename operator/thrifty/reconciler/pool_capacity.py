"""What a GPUPool can hold when a node autoscaler stands behind it, and when it is short (pure).

An `Existing` pool holds what its nodes hold. An `Autoscaled` pool (a Karpenter NodePool, a
cluster-autoscaler node group) holds what could exist: its Ready nodes as they are, plus empty
nodes up to `provisioning.maxNodes` (and the GPU quota). Pods for those nodes are created and wait
Pending; the autoscaler sees them and adds a node, which takes `nodeStartSeconds`.

A node autoscaler can fail: no capacity of that GPU in the zone, a quota, a broken node class. The
pool is then *short*: it counts only its existing nodes (so the policy stops ordering replicas that
would wait forever and the ModelService says `CapacityLimited` with the reason), for
`provisioning.backoffSeconds` after the last sign of failure. The signs, each with its reason:

- a pod of the pool Pending longer than `nodeStartSeconds` plus a margin (`NodesNotDelivered`):
  what any autoscaler's failure ends in, even a silent one;
- Karpenter: a NodeClaim whose `Launched` condition is not True with a reason (its cloud provider's
  create error), or an `InsufficientCapacityError` / `NodeClassNotReady` Event on a NodeClaim
  (Karpenter deletes such a NodeClaim at once, the Event remains) (`NodeLaunchFailed`);
- the cluster autoscaler: a `NotTriggerScaleUp` Event on one of the pool's Pending pods
  (`ScaleUpNotTriggered`).

The shell gathers them (`thrifty.adapters.node_autoscaler`) and keeps the verdict in the GPUPool's
`CapacityLimited` condition and `status.capacityLimitedUntil`, so the backoff survives restarts and
every reader (the reconciler, the autoscaling pass) sees the same pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from thrifty import explain
from thrifty.api import common, gpupool

MIN_MARGIN_SECONDS = 15.0
MARGIN_FRACTION = 0.25
"""A pod may wait nodeStartSeconds x 1.25 (at least + 15 s) before the pool counts as short: node
start times vary (image pulls, driver setup); a quarter covers the usual spread."""
KARPENTER_NODE_POOL_LABEL = "karpenter.sh/nodepool"


@dataclass(frozen=True)
class PendingPod:
    """A pod placed on the pool and waiting for a node."""

    namespace: str
    name: str
    pending_seconds: float


@dataclass(frozen=True)
class NodeFailure:
    """One sign that the node autoscaler will not deliver (see the module doc)."""

    reason: str
    """explain.NODE_LAUNCH_FAILED or explain.SCALE_UP_NOT_TRIGGERED."""
    message: str
    at_seconds: float
    """When it was seen last (epoch seconds)."""


@dataclass(frozen=True)
class Shortage:
    """The pool is short: only its existing nodes count until ``until_seconds`` (the last sign plus
    the backoff)."""

    reason: str
    message: str
    until_seconds: float


def autoscaled(spec: gpupool.GPUPoolSpec) -> bool:
    return spec.provisioning.mode is gpupool.ProvisioningMode.AUTOSCALED


def karpenter_node_pool(spec: gpupool.GPUPoolSpec) -> str | None:
    """The Karpenter NodePool behind the pool, named or read from its nodeSelector."""
    return spec.provisioning.karpenter_node_pool or spec.node_selector.get(
        KARPENTER_NODE_POOL_LABEL
    )


def margin_seconds(spec: gpupool.GPUPoolSpec) -> float:
    return max(MIN_MARGIN_SECONDS, MARGIN_FRACTION * spec.provisioning.node_start_seconds)


def deadline_seconds(spec: gpupool.GPUPoolSpec) -> float:
    """How long a pod may wait for a node before the pool is short."""
    return spec.provisioning.node_start_seconds + margin_seconds(spec)


def new_nodes(spec: gpupool.GPUPoolSpec, ready_nodes: int, short: bool) -> int:
    """Nodes the autoscaler may still add: up to maxNodes beyond the Ready ones (a node that is
    joining counts as one to come), none for an Existing or a short pool."""
    if not autoscaled(spec) or short:
        return 0
    return max((spec.provisioning.max_nodes or 0) - ready_nodes, 0)


def provisionable_gpus(
    spec: gpupool.GPUPoolSpec, ready_nodes: int, thrifty_gpus: int, short: bool
) -> int:
    """GPUs the autoscaler may still add, within the quota left after thrifty's pods."""
    gpus = new_nodes(spec, ready_nodes, short) * spec.gpus_per_node
    if spec.max_gpus is not None:
        gpus = min(gpus, max(spec.max_gpus - thrifty_gpus, 0))
    return gpus


def new_node_replicas(
    spec: gpupool.GPUPoolSpec, ready_nodes: int, gpus_per_replica: int, short: bool
) -> int:
    """Replicas of ``gpus_per_replica`` the nodes still to come can hold (whole replicas per
    node: a replica's GPUs sit on one node)."""
    return new_nodes(spec, ready_nodes, short) * (spec.gpus_per_node // max(gpus_per_replica, 1))


def shortage(
    spec: gpupool.GPUPoolSpec,
    pending: Sequence[PendingPod],
    failures: Sequence[NodeFailure],
    previous: Shortage | None,
    now_seconds: float,
) -> Shortage | None:
    """Whether the pool is short now, and why (see the module doc). ``previous`` is the shortage
    in force (from status), so a backoff outlives the sign that started it."""
    if not autoscaled(spec):
        return None
    backoff = spec.provisioning.backoff_seconds
    recent = [f for f in failures if now_seconds - f.at_seconds <= backoff]
    late = [p for p in pending if p.pending_seconds > deadline_seconds(spec)]
    found: tuple[str, str] | None = None
    if recent:
        newest = max(recent, key=lambda f: f.at_seconds)
        found = (newest.reason, newest.message)
    elif late:
        oldest = max(late, key=lambda p: p.pending_seconds)
        found = (
            explain.NODES_NOT_DELIVERED,
            f"pod {oldest.namespace}/{oldest.name} has waited {oldest.pending_seconds:.0f} s for "
            f"a node, longer than nodeStartSeconds {spec.provisioning.node_start_seconds} + "
            f"{margin_seconds(spec):.0f} s: the node autoscaler is not delivering",
        )
    if found is not None:  # the backoff counts from the last sign: now
        return Shortage(found[0], found[1], now_seconds + backoff)
    if previous is not None and now_seconds < previous.until_seconds:
        return previous
    return None


_UNTIL = "; counting only the existing nodes until "


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def shortage_from_status(status: gpupool.GPUPoolStatus | None) -> Shortage | None:
    """The shortage a GPUPool's status holds (CapacityLimited True), or None."""
    if status is None:
        return None
    found = explain.find(status.conditions, explain.CAPACITY_LIMITED)
    if found is None or found.status is not common.ConditionStatus.TRUE:
        return None
    if status.capacity_limited_until is None:
        return None
    message = found.message.rpartition(_UNTIL)[0] or found.message
    return Shortage(found.reason, message, _epoch(status.capacity_limited_until))


def short_now(status: gpupool.GPUPoolStatus | None, now_seconds: float) -> Shortage | None:
    """The shortage in force at ``now_seconds`` per the pool's status (what readers act on)."""
    short = shortage_from_status(status)
    return short if short is not None and now_seconds < short.until_seconds else None


def until_text(short: Shortage | None) -> str | None:
    if short is None:
        return None
    return explain.now_rfc3339(datetime.fromtimestamp(short.until_seconds, UTC))


def condition(
    spec: gpupool.GPUPoolSpec, short: Shortage | None, *, now: str, generation: int
) -> common.Condition:
    """The GPUPool's CapacityLimited condition (its message states the backoff)."""
    if short is None:
        message = (
            f"up to {spec.provisioning.max_nodes} nodes from the node autoscaler"
            if autoscaled(spec)
            else "the existing nodes"
        )
        return explain.condition(
            explain.CAPACITY_LIMITED,
            False,
            explain.ENOUGH_CAPACITY,
            message,
            now=now,
            generation=generation,
        )
    return explain.condition(
        explain.CAPACITY_LIMITED,
        True,
        short.reason,
        f"{short.message}{_UNTIL}{until_text(short)}",
        now=now,
        generation=generation,
    )
