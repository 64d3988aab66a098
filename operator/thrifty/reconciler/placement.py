"""Where replicas go and what each GPUPool holds: pure functions of Nodes and Pods.

A pool is a label selector over nodes; its capacity is counted per node because a replica's GPUs
must all sit on one node (tensor parallelism talks over NVLink). Pool choice is sticky: a running
service stays on its pool while that pool can hold the desired replicas, because moving means a
rollout of every replica with a cold start each; otherwise the first acceptable pool that can hold
them all is chosen, and when none can, the message says how many replicas each pool has room for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from thrifty.api import gpupool
from thrifty.reconciler import pool_capacity

POOL_LABEL = "thrifty.dev/pool"
"""On thrifty's pods: the pool they were placed on, so pending pods count against their pool."""
MODEL_SERVICE_LABEL = "thrifty.dev/model-service"
"""On thrifty's pods: the ModelService they serve."""


@dataclass(frozen=True)
class NodeInfo:
    """What placement needs to know about a Node."""

    name: str
    labels: Mapping[str, str]
    allocatable_gpus: int
    schedulable: bool = True
    """Ready and not cordoned."""


@dataclass(frozen=True)
class PodInfo:
    """What placement needs to know about a Pod that is not finished."""

    namespace: str
    name: str
    node_name: str | None
    gpus: int
    labels: Mapping[str, str]

    @property
    def model_service(self) -> tuple[str, str] | None:
        owner = self.labels.get(MODEL_SERVICE_LABEL)
        return (self.namespace, owner) if owner else None


@dataclass(frozen=True)
class PoolRoom:
    """How many more replicas of one size a pool can take for one ModelService."""

    pool: str
    replicas: int
    free_gpus: int
    nodes: int


@dataclass(frozen=True)
class Placement:
    """The outcome of pool choice. ``pool`` None: nothing can be placed (see ``problem``)."""

    pool: str | None
    capacity_limited: bool
    message: str
    problem: str | None = None
    """A reason from thrifty.explain when the spec cannot be satisfied by any pool."""


def matches(node: NodeInfo, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(key) == value for key, value in selector.items())


def pool_nodes(spec: gpupool.GPUPoolSpec, nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
    return [n for n in nodes if n.schedulable and matches(n, spec.node_selector)]


def _pods_in_pool(
    pool: str, node_names: set[str], pods: Iterable[PodInfo]
) -> tuple[list[PodInfo], list[PodInfo]]:
    """(pods bound to the pool's nodes, thrifty pods waiting to be scheduled into the pool)."""
    bound = [p for p in pods if p.node_name in node_names]
    pending = [p for p in pods if p.node_name is None and p.labels.get(POOL_LABEL) == pool]
    return bound, pending


def room(
    pool: str,
    spec: gpupool.GPUPoolSpec,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    gpus_per_replica: int,
    exclude: tuple[str, str] | None,
    short: bool = False,
) -> PoolRoom:
    """Replicas of ``gpus_per_replica`` that fit, not counting the pods of ``exclude``; with a
    node autoscaler (and not ``short``), on the nodes it may still add too (`pool_capacity`)."""
    members = pool_nodes(spec, nodes)
    others = [p for p in pods if p.model_service != exclude or exclude is None]
    bound, pending = _pods_in_pool(pool, {n.name for n in members}, others)
    used_by_node: dict[str, int] = {}
    for pod in bound:
        used_by_node[pod.node_name or ""] = used_by_node.get(pod.node_name or "", 0) + pod.gpus
    free_by_node = [max(n.allocatable_gpus - used_by_node.get(n.name, 0), 0) for n in members]
    pending_gpus = sum(p.gpus for p in pending)
    fit = sum(free // gpus_per_replica for free in free_by_node) - _ceil_div(
        pending_gpus, gpus_per_replica
    )
    free_gpus = max(sum(free_by_node) - pending_gpus, 0)
    fit += pool_capacity.new_node_replicas(spec, len(members), gpus_per_replica, short)
    free_gpus += pool_capacity.provisionable_gpus(spec, len(members), 0, short)
    if spec.max_gpus is not None:
        thrifty_gpus = sum(p.gpus for p in bound + pending if p.model_service is not None)
        quota_left = max(spec.max_gpus - thrifty_gpus, 0)
        fit = min(fit, quota_left // gpus_per_replica)
        free_gpus = min(free_gpus, quota_left)
    return PoolRoom(pool=pool, replicas=max(fit, 0), free_gpus=free_gpus, nodes=len(members))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def choose_pool(
    *,
    service: tuple[str, str],
    acceptable: Sequence[str],
    pools: Mapping[str, gpupool.GPUPoolSpec],
    nodes: Sequence[NodeInfo],
    pods: Sequence[PodInfo],
    gpus_per_replica: int,
    replicas: int,
    current_pool: str | None,
    short_pools: Mapping[str, str] | None = None,
) -> Placement:
    """The pool for ``replicas`` replicas of ``gpus_per_replica`` GPUs (see the module doc)."""
    known = [name for name in acceptable if name in pools]
    if not known:
        return Placement(
            None,
            False,
            f"none of the acceptable GPUPools exists: {', '.join(acceptable)}",
            problem="UnknownPool",
        )
    suitable = [name for name in known if pools[name].gpus_per_node >= gpus_per_replica]
    if not suitable:
        largest = max(pools[name].gpus_per_node for name in known)
        return Placement(
            None,
            False,
            f"a replica needs {gpus_per_replica} GPUs on one node, but the largest nodes of "
            f"GPUPools {', '.join(known)} have {largest}: lower tensorParallelSize x "
            "pipelineParallelSize or add a pool with bigger nodes",
            problem="GPUsPerReplicaTooLarge",
        )
    short = short_pools or {}
    rooms = {
        name: room(name, pools[name], nodes, pods, gpus_per_replica, service, name in short)
        for name in suitable
    }
    ordered = ([current_pool] if current_pool in rooms else []) + suitable
    for name in ordered:
        if rooms[name].replicas >= replicas:
            return Placement(name, False, _fits_message(name, replicas, gpus_per_replica))
    chosen = current_pool if current_pool in rooms else suitable[0]
    message = _short_message(replicas, gpus_per_replica, rooms, suitable)
    notes = [f"GPUPool {name} is short: {short[name]}" for name in suitable if name in short]
    return Placement(chosen, True, "; ".join([message, *notes]))


def _fits_message(pool: str, replicas: int, gpus_per_replica: int) -> str:
    return f"{replicas} x {gpus_per_replica} GPUs fit on GPUPool {pool}"


def _short_message(
    replicas: int, gpus_per_replica: int, rooms: Mapping[str, PoolRoom], order: Sequence[str]
) -> str:
    wanted = replicas * gpus_per_replica
    parts = [
        f"{name}: room for {rooms[name].replicas} "
        f"({rooms[name].free_gpus} GPUs free on {rooms[name].nodes} nodes)"
        for name in order
    ]
    return (
        f"wants {replicas} replicas x {gpus_per_replica} GPUs = {wanted} nvidia.com/gpu, "
        f"but no acceptable GPUPool has room for all: {'; '.join(parts)}"
    )


def pool_status(
    pool: str,
    spec: gpupool.GPUPoolSpec,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    short: bool = False,
) -> gpupool.GPUPoolStatus:
    """Nodes, allocatable, used, free and provisionable GPUs, and the GPUs each ModelService
    holds in the pool."""
    members = pool_nodes(spec, nodes)
    bound, pending = _pods_in_pool(pool, {n.name for n in members}, list(pods))
    allocatable = sum(n.allocatable_gpus for n in members)
    if spec.max_gpus is not None:
        allocatable = min(allocatable, spec.max_gpus)
    used = sum(p.gpus for p in bound)
    usage: dict[tuple[str, str], int] = {}
    for pod in bound + pending:
        owner = pod.model_service
        if owner is not None and pod.gpus > 0:
            usage[owner] = usage.get(owner, 0) + pod.gpus
    return gpupool.GPUPoolStatus(
        nodes=len(members),
        gpus_allocatable=allocatable,
        gpus_used=used,
        gpus_free=max(allocatable - used, 0),
        gpus_provisionable=pool_capacity.provisionable_gpus(
            spec, len(members), max(allocatable, sum(usage.values())), short
        ),
        usage=[
            gpupool.PoolUsage(namespace=ns, name=name, gpus=gpus)
            for (ns, name), gpus in sorted(usage.items())
        ],
    )
