"""Pool choice and pool status from nodes and pods."""

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


def choose(
    replicas: int, gpus: int, pods: list[placement.PodInfo], current: str | None = None
) -> placement.Placement:
    return placement.choose_pool(
        service=("ns", "me"),
        acceptable=["spot", "od"],
        pools=POOLS,
        nodes=NODES,
        pods=pods,
        gpus_per_replica=gpus,
        replicas=replicas,
        current_pool=current,
    )


def test_first_acceptable_pool_with_room_wins() -> None:
    assert choose(2, 4, []).pool == "spot"
    full_spot = [pod("other", "spot-0", 8)]
    chosen = choose(2, 4, full_spot)
    assert chosen.pool == "od" and not chosen.capacity_limited


def test_own_pods_do_not_count_against_the_service() -> None:
    mine = [pod("me", "spot-0", 4), pod("me", "spot-0", 4)]
    assert choose(2, 4, mine, current="spot").pool == "spot"


def test_sticky_while_the_current_pool_has_room() -> None:
    assert choose(1, 4, [], current="od").pool == "od"


def test_replicas_must_fit_on_single_nodes() -> None:
    # 6 free GPUs on each od node: 12 in total, but only one 8-GPU replica per node fits nowhere.
    pods = [pod("x", "od-0", 2), pod("x", "od-1", 2), pod("x", "spot-0", 8)]
    chosen = choose(1, 8, pods)
    assert chosen.capacity_limited
    assert "room for 0" in chosen.message


def test_capacity_limited_message_says_what_is_missing() -> None:
    chosen = choose(5, 8, [])
    assert chosen.capacity_limited and chosen.pool == "spot"
    assert "wants 5 replicas x 8 GPUs = 40 nvidia.com/gpu" in chosen.message
    assert "od: room for 2 (16 GPUs free on 2 nodes)" in chosen.message
    assert "spot: room for 1 (8 GPUs free on 1 nodes)" in chosen.message


def test_pending_pods_of_others_hold_their_pool() -> None:
    pending = [pod("other", None, 8, pool_name="spot")]
    assert choose(1, 8, pending).pool == "od"


def test_quota_caps_thrifty_usage() -> None:
    pools = {"od": pool("od", max_gpus=8)}
    chosen = placement.choose_pool(
        service=("ns", "me"),
        acceptable=["od"],
        pools=pools,
        nodes=NODES,
        pods=[pod("other", "od-0", 4)],
        gpus_per_replica=4,
        replicas=2,
        current_pool=None,
    )
    assert chosen.capacity_limited


def test_unknown_pools_and_oversized_replicas_are_problems() -> None:
    unknown = placement.choose_pool(
        service=("ns", "me"),
        acceptable=["nope"],
        pools=POOLS,
        nodes=NODES,
        pods=[],
        gpus_per_replica=1,
        replicas=1,
        current_pool=None,
    )
    assert unknown.pool is None and unknown.problem == "UnknownPool"
    assert "nope" in unknown.message
    too_big = choose(1, 16, [])
    assert too_big.pool is None and too_big.problem == "GPUsPerReplicaTooLarge"
    assert "16 GPUs on one node" in too_big.message


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
    replicas=st.integers(min_value=1, max_value=6),
)
def test_a_chosen_pool_without_limit_really_has_the_room(
    used: list[int], gpus: int, replicas: int
) -> None:
    pods = [pod("other", n.name, u) for n, u in zip(NODES, used, strict=True)]
    chosen = choose(replicas, gpus, pods)
    assert chosen.pool is not None
    if not chosen.capacity_limited:
        members = [n for n in NODES if n.labels["thrifty.dev/pool"] == chosen.pool]
        free = {n.name: 8 - u for n, u in zip(NODES, used, strict=True)}
        assert sum(free[n.name] // gpus for n in members) >= replicas
