"""What each GPUPool holds and how many more replicas it can take: pure functions of Nodes and Pods.

A pool is a label selector over nodes; its capacity is counted per node because a replica's GPUs
must all sit on one node (tensor parallelism talks over NVLink). A node being reclaimed (a spot
interruption, a scale-down) no longer counts. `room` is what `thrifty.reconciler.spread` splits a
ModelService's replicas with; it counts every pod on the pool's nodes, thrifty's pods still
waiting for the pool, and what other placements claimed that no pod shows yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from thrifty.api import gpupool
from thrifty.reconciler import pool_capacity

POOL_LABEL = "thrifty.dev/pool"
"""On thrifty's pods: the pool they were placed on, so pending pods count against their pool."""
MODEL_SERVICE_LABEL = "thrifty.dev/model-service"
"""On thrifty's pods: the ModelService they serve."""

RECLAIM_TAINTS = frozenset(
    {
        "karpenter.sh/disrupted",  # Karpenter v1: the node is being disrupted (spot interruption)
        "karpenter.sh/disruption",  # Karpenter before v1 (value "disrupting")
        "ToBeDeletedByClusterAutoscaler",  # the cluster autoscaler is removing the node
        "node.kubernetes.io/out-of-service",  # the node is shut down (non-graceful shutdown)
        "cloud.google.com/impending-node-termination",  # GKE: spot/preemptible termination
    }
)
"""Taint keys that say a node is going away: its GPUs are gone for placement as of now."""
RECLAIM_TAINT_PREFIXES = ("aws-node-termination-handler/",)
"""aws-node-termination-handler taints a node before it drains it (spot-itn, rebalance, ...)."""


def reclaiming(taint_keys: Iterable[str]) -> bool:
    """Whether a node with these taints is being reclaimed (see RECLAIM_TAINTS)."""
    return any(
        key in RECLAIM_TAINTS or key.startswith(RECLAIM_TAINT_PREFIXES) for key in taint_keys
    )


@dataclass(frozen=True)
class NodeInfo:
    """What placement needs to know about a Node."""

    name: str
    labels: Mapping[str, str]
    allocatable_gpus: int
    schedulable: bool = True
    """Ready and not cordoned."""
    reclaiming: bool = False
    """Tainted by a node autoscaler or termination handler: going away (spot interruption)."""


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
    thrifty_gpus: int = 0
    """GPUs other ModelServices hold or claimed in the pool (a reservation's used part)."""


def matches(node: NodeInfo, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(key) == value for key, value in selector.items())


def pool_nodes(spec: gpupool.GPUPoolSpec, nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
    return [
        n for n in nodes if n.schedulable and not n.reclaiming and matches(n, spec.node_selector)
    ]


def _pods_in_pool(
    pool: str, node_names: set[str], pods: Iterable[PodInfo]
) -> tuple[list[PodInfo], list[PodInfo]]:
    """(pods bound to the pool's nodes, thrifty pods waiting to be scheduled into the pool)."""
    bound = [p for p in pods if p.node_name in node_names]
    pending = [p for p in pods if p.node_name is None and p.labels.get(POOL_LABEL) == pool]
    return bound, pending


Claims = Mapping[tuple[str, str], Mapping[str, int]]
"""GPUs each ModelService was given per pool by placements not yet seen as pods: a placement
counts them, so simultaneous placements never hand out the same GPUs."""


def unseen_claims(
    pool: str, claims: Claims, pods: Iterable[PodInfo], exclude: tuple[str, str] | None
) -> int:
    """GPUs other ModelServices claimed in ``pool`` beyond what their pods there already hold."""
    held: dict[tuple[str, str], int] = {}
    for pod in pods:
        owner = pod.model_service
        if owner is not None and pod.labels.get(POOL_LABEL) == pool:
            held[owner] = held.get(owner, 0) + pod.gpus
    return sum(
        max(by_pool.get(pool, 0) - held.get(owner, 0), 0)
        for owner, by_pool in claims.items()
        if owner != exclude
    )


def room(
    pool: str,
    spec: gpupool.GPUPoolSpec,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    gpus_per_replica: int,
    exclude: tuple[str, str] | None,
    claims: Claims | None = None,
    short: bool = False,
) -> PoolRoom:
    """Replicas of ``gpus_per_replica`` that fit, not counting the pods of ``exclude`` (nor its
    claims), and counting the GPUs other ModelServices claimed that no pod holds yet; with a
    node autoscaler (and not ``short``), on the nodes it may still add too (`pool_capacity`)."""
    members = pool_nodes(spec, nodes)
    pods = list(pods)
    others = [p for p in pods if p.model_service != exclude or exclude is None]
    bound, pending = _pods_in_pool(pool, {n.name for n in members}, others)
    used_by_node: dict[str, int] = {}
    for pod in bound:
        used_by_node[pod.node_name or ""] = used_by_node.get(pod.node_name or "", 0) + pod.gpus
    free_by_node = [max(n.allocatable_gpus - used_by_node.get(n.name, 0), 0) for n in members]
    pending_gpus = sum(p.gpus for p in pending)
    claimed_gpus = unseen_claims(pool, claims or {}, pods, exclude)
    pending_gpus += claimed_gpus
    fit = sum(free // gpus_per_replica for free in free_by_node) - _ceil_div(
        pending_gpus, gpus_per_replica
    )
    free_gpus = max(sum(free_by_node) - pending_gpus, 0)
    thrifty_gpus = claimed_gpus + sum(
        p.gpus for p in bound + pending if p.model_service is not None
    )
    fit += pool_capacity.new_node_replicas(spec, len(members), gpus_per_replica, short)
    free_gpus += pool_capacity.provisionable_gpus(spec, len(members), 0, short)
    if spec.max_gpus is not None:
        quota_left = max(spec.max_gpus - thrifty_gpus, 0)
        fit = min(fit, quota_left // gpus_per_replica)
        free_gpus = min(free_gpus, quota_left)
    return PoolRoom(
        pool=pool,
        replicas=max(fit, 0),
        free_gpus=free_gpus,
        nodes=len(members),
        thrifty_gpus=thrifty_gpus,
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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
        relative_throughput=spec.speed,
        relative_throughput_source=spec.speed_source,
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
