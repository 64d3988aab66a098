"""Pool room and pool status from nodes, pods and claims."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from thrifty.api import gpupool
from thrifty.reconciler import placement


def pool(name: str, gpus_per_node: int = 8, max_gpus: int | None = None) -> gpupool.GPUPoolSpec:
    return gpupool.GPUPoolSpec(
        accelerator="NVIDIA-H100-80GB-HBM3",
        gpu_memory_gib=80,
        gpus_per_node=gpus_per_node,
        node_selector={"thrifty.dev/pool": name},
        price_per_gpu_hour=2.5,
        max_gpus=max_gpus,
    )


def node(name: str, pool_name: str, gpus: int = 8, schedulable: bool = True) -> placement.NodeInfo:
    return placement.NodeInfo(name, {"thrifty.dev/pool": pool_name}, gpus, schedulable)


def pod(
    owner: str | None, node_name: str | None, gpus: int, pool_name: str | None = None
) -> placement.PodInfo:
    labels = {}
    if owner:
        labels[placement.MODEL_SERVICE_LABEL] = owner
    if pool_name:
        labels[placement.POOL_LABEL] = pool_name
    return placement.PodInfo("ns", f"{owner}-{node_name}", node_name, gpus, labels)


POOLS = {"od": pool("od"), "spot": pool("spot")}
NODES = [node("od-0", "od"), node("od-1", "od"), node("spot-0", "spot")]


def room(
    gpus: int,
    pods: list[placement.PodInfo],
    name: str = "od",
    nodes: list[placement.NodeInfo] | None = None,
    pools: dict[str, gpupool.GPUPoolSpec] | None = None,
    claims: placement.Claims | None = None,
) -> placement.PoolRoom:
    return placement.room(
        name,
        (pools or POOLS)[name],
        NODES if nodes is None else nodes,
        pods,
        gpus,
        exclude=("ns", "me"),
        claims=claims,
    )


def test_own_pods_do_not_count_against_the_service() -> None:
    mine = [pod("me", "spot-0", 4), pod("me", "spot-0", 4)]
    assert room(4, mine, "spot").replicas == 2
    assert room(4, [pod("other", "spot-0", 4)], "spot").replicas == 1


def test_replicas_must_fit_on_single_nodes() -> None:
    # 6 free GPUs on each od node: 12 in total, but an 8-GPU replica fits on neither.
    pods = [pod("x", "od-0", 2), pod("x", "od-1", 2)]
    where = room(8, pods)
    assert (where.replicas, where.free_gpus, where.nodes) == (0, 12, 2)


def test_pending_pods_of_others_hold_their_pool() -> None:
    assert room(8, [pod("other", None, 8, pool_name="spot")], "spot").replicas == 0


def test_quota_caps_thrifty_usage() -> None:
    pools = {"od": pool("od", max_gpus=8)}
    assert room(4, [pod("other", "od-0", 4)], pools=pools).replicas == 1


def test_a_reclaimed_node_no_longer_counts() -> None:
    """A node tainted by Karpenter, the cluster autoscaler or a termination handler is going
    away: its GPUs are gone for placement as of the taint, not when the node is deleted."""
    for key in [
        "karpenter.sh/disrupted",
        "ToBeDeletedByClusterAutoscaler",
        "node.kubernetes.io/out-of-service",
        "aws-node-termination-handler/spot-itn",
    ]:
        assert placement.reclaiming(["kwok.x-k8s.io/node", key])
    assert not placement.reclaiming(["kwok.x-k8s.io/node", "nvidia.com/gpu"])
    going = placement.NodeInfo("spot-0", {"thrifty.dev/pool": "spot"}, 8, True, reclaiming=True)
    assert room(1, [], "spot", nodes=[going]).replicas == 0


def test_claims_of_others_count_until_their_pods_show() -> None:
    """What another placement claimed holds the pool until its pods exist, and not twice after."""
    claims = {("ns", "other"): {"spot": 8}}
    assert room(4, [], "spot", claims=claims).replicas == 0
    shown = [pod("other", None, 4, pool_name="spot")]
    assert room(4, shown, "spot", claims=claims).replicas == 0  # 4 pending + 4 claimed, unseen
    placed = [pod("other", "spot-0", 4, "spot"), pod("other", "spot-0", 4, "spot")]
    assert room(4, placed, "spot", claims=claims).replicas == 0
    assert room(4, [], "spot", claims={("ns", "me"): {"spot": 8}}).replicas == 2  # own claim


def test_pool_status_counts_nodes_gpus_and_usage() -> None:
    pods = [pod("me", "od-0", 4), pod(None, "od-1", 2), pod("other", None, 8, pool_name="od")]
    nodes = [*NODES, node("od-2", "od", schedulable=False)]
    status = placement.pool_status("od", POOLS["od"], nodes, pods)
    assert (status.nodes, status.gpus_allocatable, status.gpus_used, status.gpus_free) == (
        2,
        16,
        6,
        10,
    )
    assert [(u.name, u.gpus) for u in status.usage] == [("me", 4), ("other", 8)]


@given(
    used=st.lists(st.integers(min_value=0, max_value=8), min_size=3, max_size=3),
    gpus=st.sampled_from([1, 2, 4, 8]),
)
def test_room_never_exceeds_the_free_gpus_of_single_nodes(used: list[int], gpus: int) -> None:
    pods = [pod("other", n.name, u) for n, u in zip(NODES, used, strict=True)]
    for name in POOLS:
        members = [n for n in NODES if n.labels["thrifty.dev/pool"] == name]
        free = {n.name: 8 - u for n, u in zip(NODES, used, strict=True)}
        assert room(gpus, pods, name).replicas == sum(free[n.name] // gpus for n in members)
