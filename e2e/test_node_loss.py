"""A node under replicas is deleted, another goes NotReady, while traffic flows through the gateway.

Both leave pods that still say Ready: a deleted node's until the pod garbage collector runs, a
NotReady node's until the eviction its toleration allows. The operator must see the replicas lost
(`ReplicasLost` and a `NodeLost` Event within one interval), order replacements at once, stop
counting the lost ones ready; the gateway must stop sending them requests within seconds; and once
Kubernetes removes the lost pods, nothing is left over (the Deployment back at spec.replicas).

The test's own KWOK nodes (harness.nodes) carry the pool, so the shared nodes are not touched.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import Cluster
from harness import nodes as test_nodes
from harness.cluster import wait_until
from operator_process import operator_process
from test_autoscale import crds, pool_manifest
from test_gateway import GatewayStack, answer, gateway_stack

__all__ = ["crds", "gateway_stack", "operator_process"]  # fixtures, re-exported for pytest

INTERVAL_SECONDS = 10.0
"""One interval of the operator as the tests run it (resync 2 s, decisions 3 s), with room for a
loaded machine: the condition and the Event must come within it."""
GATEWAY_DROP_SECONDS = 5.0


@dataclass
class Load:
    """Sequential requests through the gateway until stopped; every status is kept."""

    url: str
    model: str
    statuses: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            status, _ = answer(self.url, self.model, 15)
            self.statuses.append(status)
            time.sleep(0.1)


@pytest.fixture
def load(gateway_stack: GatewayStack) -> Iterator[Load]:
    """Started by the test once the service is ready; stopped at teardown whatever happened."""
    running = Load(gateway_stack.gateway_url, "lost")
    yield running
    running.stop.set()


def model_service(pool: str) -> str:
    return json.dumps(
        {
            "apiVersion": "thrifty.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "lost"},
            "spec": {
                "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                "servedModelName": "lost",
                # A whole node per replica: one node lost is one replica lost.
                "engine": {"tensorParallelSize": 8},
                "pools": [pool],
                "replicas": 2,
                "scaling": {"minReplicas": 1, "maxReplicas": 4, "mode": "Manual"},
            },
        }
    )


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", kind, name, "-n", namespace)


def engine_deployment(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The one Deployment of ModelService `lost` (one per pool; it has one pool)."""
    (found,) = cluster.kubectl_json(
        "get", "deployments", "-n", namespace, "-l", "thrifty.dev/model-service=lost"
    )["items"]
    return dict(found)


def pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", "thrifty.dev/model-service=lost"
    )["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def condition(cluster: Cluster, namespace: str, type_: str) -> dict[str, Any] | None:
    body = get(cluster, "modelservice", "lost", namespace)
    found = [c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else None


def lost_reported(cluster: Cluster, namespace: str, pod: str) -> dict[str, Any] | None:
    found = condition(cluster, namespace, "ReplicasLost")
    return found if found and found["status"] == "True" and pod in found["message"] else None


def node_lost_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "reason=NodeLost"
    )["items"]
    return items


def routed_pods(stack: GatewayStack) -> set[str]:
    return {e["pod"] for e in stack.get("/debug/endpoints") if e["model_service"] == "lost"}


def lose(stack: GatewayStack, node: str, victim: str, how: str, timings: dict[str, float]) -> None:
    """Lose `node` (deleted or NotReady) and check what must follow within its bounds."""
    cluster, namespace = stack.cluster, stack.namespace
    events_before = len(node_lost_events(cluster, namespace))
    started = time.monotonic()
    if how == "deleted":
        test_nodes.delete_nodes(cluster, [node])
    else:
        test_nodes.make_not_ready(cluster, node)
    wait_until(
        lambda: victim not in routed_pods(stack) or None,
        timeout_seconds=GATEWAY_DROP_SECONDS,
        what=f"the gateway dropping {victim} ({node} {how})",
        interval_seconds=0.2,
    )
    timings[f"{how}: gateway dropped the endpoint"] = time.monotonic() - started
    reported = wait_until(
        lambda: lost_reported(cluster, namespace, victim),
        timeout_seconds=INTERVAL_SECONDS,
        what=f"ReplicasLost naming {victim} ({node} {how})",
        interval_seconds=0.5,
    )
    timings[f"{how}: ReplicasLost"] = time.monotonic() - started
    assert (
        f"on node {node} ({'deleted' if how == 'deleted' else 'NotReady'})" in reported["message"]
    )
    wait_until(
        lambda: len(node_lost_events(cluster, namespace)) > events_before or None,
        timeout_seconds=INTERVAL_SECONDS,
        what="a NodeLost Event",
        interval_seconds=0.5,
    )
    # The replacement is ordered at once: the Deployment gets one more replica than spec asks.
    deployment = engine_deployment(cluster, namespace)
    assert deployment["spec"]["replicas"] >= 3, deployment["spec"]["replicas"]
    # Never counted ready: the status read first, pods after (their readiness only grows).
    reported_ready = get(cluster, "modelservice", "lost", namespace)["status"]["readyReplicas"]
    live = [p for p in pods(cluster, namespace) if ready(p) and p["spec"].get("nodeName") != node]
    assert reported_ready <= len(live), (reported_ready, [p["metadata"]["name"] for p in live])
    wait_until(
        lambda: (
            True
            if sum(
                1
                for pod in pods(cluster, namespace)
                if ready(pod) and pod["spec"].get("nodeName") not in (node, None)
            )
            >= 2
            else None
        ),
        timeout_seconds=60,
        what=f"two ready replicas off {node}",
    )
    timings[f"{how}: replacement ready"] = time.monotonic() - started


def test_lost_nodes_are_reported_replaced_and_routed_around_under_load(
    gateway_stack: GatewayStack, load: Load, request: pytest.FixtureRequest
) -> None:
    stack = gateway_stack
    cluster, namespace = stack.cluster, stack.namespace
    suffix = secrets.token_hex(3)
    pool = f"lost-{suffix}"
    names = [f"lost-{suffix}-{i}" for i in range(4)]
    request.addfinalizer(lambda: test_nodes.delete_nodes(cluster, names))
    test_nodes.add_gpu_nodes(cluster, names[:3], {"thrifty.dev/pool": pool})
    cluster.apply(
        pool_manifest(pool).replace("thrifty.dev/pool: h100-on-demand", f"thrifty.dev/pool: {pool}")
    )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=model_service(pool))
    wait_until(
        lambda: (
            running
            if len(running := [p for p in pods(cluster, namespace) if ready(p)]) == 2
            else None
        ),
        timeout_seconds=90,
        what="two ready replicas",
    )
    wait_until(lambda: len(routed_pods(stack)) == 2 or None, timeout_seconds=30, what="routes")
    threading.Thread(target=load.run, daemon=True).start()
    wait_until(lambda: len(load.statuses) >= 5 or None, timeout_seconds=30, what="traffic")

    timings: dict[str, float] = {}
    first = next(p for p in pods(cluster, namespace) if ready(p))
    lose(stack, first["spec"]["nodeName"], first["metadata"]["name"], "deleted", timings)

    test_nodes.add_gpu_nodes(cluster, names[3:], {"thrifty.dev/pool": pool})
    second = next(
        p
        for p in pods(cluster, namespace)
        if ready(p)
        and p["spec"]["nodeName"] in names
        and p["spec"]["nodeName"] != first["spec"]["nodeName"]
    )
    lose(stack, second["spec"]["nodeName"], second["metadata"]["name"], "NotReady", timings)

    # Kubernetes removes the lost pods (eviction after the 30 s toleration; the pod garbage
    # collector): the surge ends, nothing is left over, the condition clears.
    started = time.monotonic()
    wait_until(
        lambda: (
            True
            if (condition(cluster, namespace, "ReplicasLost") or {}).get("status") == "False"
            else None
        ),
        timeout_seconds=120,
        what="ReplicasLost=False once the lost pods are gone",
    )
    timings["lost pods gone, condition cleared"] = time.monotonic() - started
    wait_until(
        lambda: engine_deployment(cluster, namespace)["spec"]["replicas"] == 2 or None,
        timeout_seconds=INTERVAL_SECONDS,
        what="the Deployment back at spec.replicas",
    )
    wait_until(
        lambda: len(pods(cluster, namespace)) == 2 or None,
        timeout_seconds=60,
        what="two pods, no leftover",
    )
    assert get(cluster, "modelservice", "lost", namespace)["status"]["readyReplicas"] == 2

    # The documented wrinkle, bounded: when a lost pod is removed, its ReplicaSet may create one
    # pod that thrifty's lower replica count deletes again; never more than one per lost replica.
    deleted = [
        e
        for e in cluster.kubectl_json("get", "events", "-n", namespace)["items"]
        if e["reason"] == "SuccessfulDelete" and e["involvedObject"]["kind"] == "ReplicaSet"
    ]
    surplus = sum(int(e.get("count") or 1) for e in deleted)
    print(f"pods the ReplicaSet deleted again: {surplus}")
    assert surplus <= 2, [e["message"] for e in deleted]

    load.stop.set()
    failed = [s for s in load.statuses if s != 200]
    print(f"node-loss timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
    print(f"requests: {len(load.statuses)}, not 200: {len(failed)}")
    assert len(load.statuses) >= 20 and not failed, failed
