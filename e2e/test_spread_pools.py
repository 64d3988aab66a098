"""A ModelService spread over reserved, spot, L4 and on-demand H100 pools on the local cluster.

Reserved GPUs fill first, then the cheapest $/token; a full pool spills at once without
CapacityLimited; the spot node tainted for reclaim -> its replicas are replaced on the next pools
at once (from the node's watch event, not the 30 s resync) while they keep serving; the node
deleted -> they go, no pod waits Pending; the node back -> the replicas return to spot one at a
time, the new one ready before the old one drains. The loss is reported once: neither the removal
of the lost pods nor the node's return reads as the pool losing replicas again.

The pools are this test's own GPUPools over the shared KWOK nodes (a hostname selector carves a
"reserved" pool out of an on-demand node), so other tests' pools are left as they are; the spot
node is re-created at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from harness import Cluster
from harness.cluster import wait_until
from harness.session import apply_fake_nodes
from operator_process import StartOperator, operator_process
from test_reconcile import (
    _event_reasons,
    apply,
    condition,
    crds_and_pools,
    engine_pods,
    get,
    wait_for_h100_on_demand,
)

__all__ = ["crds_and_pools", "operator_process"]  # fixtures, re-exported for pytest

SPOT_NODE = "kwok-h100-spot-0"
KWOK = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
SPOT = {"key": "thrifty.dev/capacity-type", "operator": "Exists", "effect": "NoSchedule"}
RESYNC_SECONDS = 30.0
"""The production resync period, so that the resync does not do the node event's work."""
REPLACED_WITHIN_SECONDS = 5.0
"""From the node's event (measured: about 1 s). Without it the taint changes nothing the
operator watches until the 30 s resync; a deleted node's pods going trigger a pass about 10 s
later."""


def gpu_pool(name: str, selector: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": name},
        "spec": {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": selector,
            "tolerations": [KWOK],
            **spec,
        },
    }


POOLS = [
    # $2.50 paid anyway for 2 GPUs: free up to the reservation.
    gpu_pool(
        "sp-reserved",
        {"kubernetes.io/hostname": "kwok-h100-od-1"},
        pricePerGpuHour=2.5,
        capacityType="Reserved",
        maxGpus=2,
        reservedGpus=2,
    ),
    # $1.00 per reference replica.
    gpu_pool(
        "sp-spot",
        {"thrifty.dev/pool": "h100-spot"},
        tolerations=[KWOK, SPOT],
        pricePerGpuHour=1.0,
        capacityType="Spot",
        # AWS's notice, no shorter than the 120 s cold start: no exposure, so the reclaim this
        # test observes leaves a spot replica counting 1 and the placements below stay whole.
        interruptionNoticeSeconds=120,
        maxGpus=3,
    ),
    # $0.80 / 0.3 = $2.67 per reference replica.
    gpu_pool(
        "sp-l4",
        {"thrifty.dev/pool": "l4-on-demand"},
        accelerator="NVIDIA-L4",
        gpuMemoryGib=24,
        gpusPerNode=4,
        pricePerGpuHour=0.8,
        relativeThroughput=0.3,
        maxGpus=4,
    ),
    # $4.00 per reference replica: the last resort.
    gpu_pool(
        "sp-on-demand",
        {"kubernetes.io/hostname": "kwok-h100-od-0"},
        pricePerGpuHour=4.0,
        maxGpus=4,
    ),
]


@pytest.fixture
def spread_pools(cluster: Cluster, crds_and_pools: None) -> Iterator[None]:
    apply(cluster, None, *POOLS)
    try:
        yield
    finally:
        for pool in POOLS:
            cluster.kubectl("delete", "gpupool", pool["metadata"]["name"], "--wait=false")
        apply_fake_nodes(cluster)  # the spot node, if the test deleted it


def placement(cluster: Cluster, namespace: str) -> dict[str, int]:
    status = get(cluster, "modelservice", "spread", namespace).get("status") or {}
    return {p["pool"]: p["replicas"] for p in status.get("pools", []) if p["replicas"]}


def wait_placement(
    cluster: Cluster, namespace: str, wanted: dict[str, int], what: str, seconds: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = get(cluster, "modelservice", "spread", namespace)
        status = body.get("status") or {}
        found = {p["pool"]: p["replicas"] for p in status.get("pools", []) if p["replicas"]}
        ready = {p["pool"]: p["readyReplicas"] for p in status.get("pools", []) if p["replicas"]}
        return body if found == wanted and ready == wanted else None

    return wait_until(probe, timeout_seconds=seconds, what=what, interval_seconds=0.5)


def _pool_gpus(cluster: Cluster, pool: str, namespace: str) -> int:
    """GPUs the ModelService `spread` holds in `pool`, as the operator's pool status says."""
    status = cluster.kubectl_json("get", "gpupool", pool).get("status") or {}
    return sum(
        int(u["gpus"])
        for u in status.get("usage", [])
        if u["namespace"] == namespace and u["name"] == "spread"
    )


def _pool_entry(body: dict[str, Any], pool: str) -> dict[str, Any]:
    entries = [p for p in (body.get("status") or {}).get("pools", []) if p["pool"] == pool]
    assert entries, f"no status.pools entry for {pool}"
    return dict(entries[0])


def reclaims_since(cluster: Cluster, namespace: str, moment: datetime) -> list[str]:
    """CapacityReclaimed Events about the ModelService `spread` last seen after ``moment``."""
    events = cluster.kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=spread,reason=CapacityReclaimed",
    )["items"]
    return [
        str(e.get("message"))
        for e in events
        if datetime.fromisoformat(str(e.get("lastTimestamp") or e["eventTime"])) > moment
    ]


def unscheduled(cluster: Cluster, namespace: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in engine_pods(cluster, namespace=namespace, name="spread")
        if not p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")
    ]


def test_spread_spill_reclaim_and_return(
    cluster: Cluster, namespace: str, operator_process: StartOperator, spread_pools: None
) -> None:
    wait_for_h100_on_demand(cluster, 16)
    operator = operator_process(
        namespaces=[namespace],
        env={"THRIFTY_RESYNC_SECONDS": str(RESYNC_SECONDS), "THRIFTY_RETURN_DELAY_SECONDS": "5"},
    )
    service = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "spread"},
        "spec": {
            "model": {"uri": "hf://Qwen/Qwen3-0.6B"},
            "pools": ["sp-on-demand", "sp-l4", "sp-spot", "sp-reserved"],
            "placement": "Cheapest",
            "replicas": 5,
            "scaling": {"maxReplicas": 8, "mode": "Manual"},
        },
    }
    apply(cluster, namespace, service)

    # Reserved first (free up to 2 GPUs), then the cheapest per reference replica: spot.
    body = wait_placement(cluster, namespace, {"sp-reserved": 2, "sp-spot": 3}, "5 placed")
    status = body["status"]
    assert status["placement"] == "sp-spot=3 sp-reserved=2"
    assert status["dollarsPerHour"] == pytest.approx(2 * 2.5 + 3 * 1.0)
    assert condition(body, "CapacityLimited")["status"] == "False"  # type: ignore[index]

    # Spot is full (quota 3): the sixth reference replica spills at once to the next cheapest,
    # L4, as 4 replicas of 0.3; never CapacityLimited on the way.
    cluster.kubectl("scale", "-n", namespace, "modelservice/spread", "--replicas=6")
    body = wait_placement(
        cluster, namespace, {"sp-reserved": 2, "sp-spot": 3, "sp-l4": 4}, "the spill to L4"
    )
    assert condition(body, "CapacityLimited")["status"] == "False"  # type: ignore[index]
    assert "Spilled" in _event_reasons(cluster, namespace, "spread")
    cluster.kubectl("scale", "-n", namespace, "modelservice/spread", "--replicas=5")
    wait_placement(cluster, namespace, {"sp-reserved": 2, "sp-spot": 3}, "L4 drained")
    # The operator's own view has the spot pods on the spot node (its pool status counts their
    # GPUs there): only then can a taint on that node mark them as doomed rather than unplaced.
    wait_until(
        lambda: _pool_gpus(cluster, "sp-spot", namespace) == 3 or None,
        timeout_seconds=60,
        what="the operator seeing the spot replicas on the spot node",
        interval_seconds=0.5,
    )

    # Reclaim notice: Karpenter taints the spot node. The replacements are ordered within one
    # interval, on L4 (1.2) then the on-demand H100 (2), counting 5.2 >= 5, while the spot
    # replicas keep serving until the node goes.
    tainted_at = time.monotonic()
    cluster.kubectl("taint", "node", SPOT_NODE, "karpenter.sh/disrupted=:NoSchedule")
    replaced = {"sp-reserved": 2, "sp-l4": 4, "sp-on-demand": 2}

    def ordered() -> dict[str, Any] | None:
        body = get(cluster, "modelservice", "spread", namespace)
        pools = (body.get("status") or {}).get("pools", [])
        asked = {p["pool"]: p["replicas"] for p in pools if p["replicas"]}
        return body if asked == {**replaced, "sp-spot": 3} else None

    first = wait_until(
        ordered, timeout_seconds=RESYNC_SECONDS, what="replacements", interval_seconds=0.2
    )
    stamped = _pool_entry(first, "sp-spot")["lastReclaimTime"]
    ordered_after = time.monotonic() - tainted_at
    print(f"replacements ordered {ordered_after:.1f} s after the spot node was tainted")
    assert ordered_after < REPLACED_WITHIN_SECONDS, "from the node's event"
    assert "CapacityReclaimed" in _event_reasons(cluster, namespace, "spread")
    body = wait_placement(cluster, namespace, {**replaced, "sp-spot": 3}, "replacements ready")
    assert _pool_entry(body, "sp-spot")["reclaiming"] == 3, "the doomed serve on, counted"
    # A later pass (a resync, a second or more after the notice's) loses nothing more: the
    # pool is stamped once, at the notice, so the return delay runs from it.
    ready_at = time.monotonic()
    passes = operator.logs().count("ModelService resync pass:")
    wait_until(
        lambda: (
            (
                time.monotonic() > ready_at + 1.5
                and operator.logs().count("ModelService resync pass:") > passes
            )
            or None
        ),
        timeout_seconds=RESYNC_SECONDS + 15,
        what="a resync pass during the notice",
    )
    spot = _pool_entry(get(cluster, "modelservice", "spread", namespace), "sp-spot")
    assert (spot["reclaiming"], spot["lastReclaimTime"]) == (3, stamped)

    # The node goes: its replicas are no longer asked for, and nothing waits Pending.
    deleted_at = datetime.now(UTC)
    cluster.kubectl("delete", "node", SPOT_NODE, "--wait=false")
    body = wait_placement(cluster, namespace, replaced, "the spot replicas gone")
    assert _pool_entry(body, "sp-spot")["reclaiming"] == 0
    assert _pool_entry(body, "sp-spot")["lastReclaimTime"] == stamped
    assert unscheduled(cluster, namespace) == []
    assert condition(body, "CapacityLimited")["status"] == "False"  # type: ignore[index]
    # Its pods are gone too before a spot node comes back, as on a cloud, where the new node is
    # another machine (KWOK would revive pods still bound to a node of the same name).
    wait_until(
        lambda: (
            not [
                p
                for p in engine_pods(cluster, namespace=namespace, name="spread")
                if p["spec"].get("nodeName") == SPOT_NODE
            ]
            or None
        ),
        timeout_seconds=120,
        what="the lost spot pods removed by the pod garbage collector",
    )

    # The spot node is back: the replicas return to spot one at a time. Every status seen on the
    # way asks for at most one spot replica more than the ready ones (never a second move before
    # the first one's replica is ready).
    apply_fake_nodes(cluster)
    seen: list[tuple[int, int]] = []

    def returned() -> bool | None:
        status = get(cluster, "modelservice", "spread", namespace).get("status") or {}
        spot = [p for p in status.get("pools", []) if p["pool"] == "sp-spot"]
        if spot:
            seen.append((spot[0]["replicas"], spot[0]["readyReplicas"]))
        return True if placement(cluster, namespace) == {"sp-reserved": 2, "sp-spot": 3} else None

    wait_until(returned, timeout_seconds=90, what="the return to spot", interval_seconds=0.2)
    assert all(asked - ready <= 1 for asked, ready in seen), seen
    assert {"Returning", "Returned"} <= _event_reasons(cluster, namespace, "spread")
    # One reclaim, reported when the notice came: neither the lost pods' removal (their
    # replacements then wait Pending for a node that is gone) nor the node's return is another.
    assert reclaims_since(cluster, namespace, deleted_at) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"capacityType": "Spot", "interruptionRate": 1.5}, "interruptionRate"),
        ({"capacityType": "OnDemand", "interruptionRate": 0.1}, "interruptionRate applies"),
        ({"capacityType": "Reserved", "maxGpus": 4, "reservedGpus": 8}, "reservedGpus must not"),
        ({"capacityType": "Spot", "reservedGpus": 2}, "reservedGpus applies"),
        ({"relativeThroughput": 0}, "relativeThroughput"),
    ],
)
def test_bad_pool_fields_are_refused_at_admission_naming_the_field(
    cluster: Cluster, crds_and_pools: None, changes: dict[str, Any], field: str
) -> None:
    body = gpu_pool("sp-bad", {"thrifty.dev/pool": "nowhere"}, pricePerGpuHour=1.0, **changes)
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode != 0
    assert field in refused.stderr, refused.stderr
