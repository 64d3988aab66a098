"""Autoscaled GPUPools on the local cluster, with a node provisioner that behaves as Karpenter does
(`harness.provisioner`): scale from zero nodes and back, and a node autoscaler that fails.

The pools select nodes by a label no standing node has, so every node they use is one the
provisioner made for them.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness import Cluster
from harness import provisioner as provisioner_module
from harness.cluster import wait_until
from operator_process import StartOperator, operator_process
from test_autoscale import (
    Stack,
    completion,
    crds,
    eventually,
    model_service_manifest,
    stack,
)

__all__ = ["crds", "operator_process", "stack"]  # fixtures, re-exported for pytest

NODE_START_SECONDS = 5
NEVER_NODE_START_SECONDS = 6
POOL_RESYNC_SECONDS = 2  # operator_process.FAST_RESYNC_ENV


def autoscaled_pool(name: str, *, node_start: int, max_nodes: int = 2) -> str:
    return f"""
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata:
  name: {name}
spec:
  accelerator: NVIDIA-H100-80GB-HBM3
  gpuMemoryGib: 80
  gpusPerNode: 8
  nodeSelector:
    thrifty.dev/e2e-node-group: {name}
  tolerations:
    - key: kwok.x-k8s.io/node
      operator: Exists
      effect: NoSchedule
  pricePerGpuHour: 2.5
  provisioning:
    mode: Autoscaled
    maxNodes: {max_nodes}
    nodeStartSeconds: {node_start}
    backoffSeconds: 60
    karpenterNodePool: {name}
"""


def pool_nodes(cluster: Cluster, pool: str) -> list[str]:
    listed = cluster.kubectl_json("get", "nodes", "-l", f"thrifty.dev/e2e-node-group={pool}")
    return [n["metadata"]["name"] for n in listed["items"]]


def condition_of(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for found in (body.get("status") or {}).get("conditions") or []:
        if found["type"] == type_:
            return dict(found)
    return {}


@pytest.fixture
def node_pool(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"auto-{namespace}"[-50:].strip("-")
    yield name
    cluster.kubectl("delete", "gpupool", name, "--wait=false", check=False)


def test_a_pool_with_no_nodes_scales_from_zero_to_two_and_back_and_its_nodes_go(
    stack: Stack, node_pool: str
) -> None:
    started = time.monotonic()
    cluster = stack.cluster
    cluster.apply(autoscaled_pool(node_pool, node_start=NODE_START_SECONDS))
    manifest = model_service_manifest(
        "chat", node_pool, minReplicas=0, maxReplicas=2, scaleToZeroIdleSeconds=10
    )
    manifest += "  engine:\n    tensorParallelSize: 8\n  replicas: 0\n"  # a node per replica
    with provisioner_module.running(
        cluster.kubeconfig, delay_seconds=NODE_START_SECONDS, empty_ttl_seconds=5
    ) as provisioner:
        cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
        eventually(
            lambda: (stack.get("chat").get("status") or {}).get("autoscaler") or None,
            60,
            "the first decision on the idle service",
        )
        assert pool_nodes(cluster, node_pool) == []
        stack.gateway.wait_serving("chat")
        url = stack.gateway.completions_url
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as clients:
            first = clients.submit(completion, url, "chat", 120)
            stack.load("chat", speedup=5, seconds=20)
            eventually(lambda: stack.replicas("chat") >= 2 or None, 90, "0 -> 2 replicas")
            assert first.result(timeout=120) == 200, "the request held at zero was served"
        eventually(
            lambda: len(pool_nodes(cluster, node_pool)) == 2 or None, 60, "two nodes appearing"
        )
        eventually(
            lambda: stack.get("chat")["status"].get("readyReplicas", 0) >= 2 or None,
            60,
            "two replicas ready on the new nodes",
        )
        assert completion(url, "chat", 60) == 200
        pool = cluster.kubectl_json("get", "gpupool", node_pool)
        assert condition_of(pool, "Ready")["reason"] == "Autoscaled"
        assert condition_of(stack.get("chat"), "CapacityLimited").get("status") != "True"
        scale_event = (stack.events("ScaleFromZero") or stack.events("ScaleUp"))[0]["message"]
        assert "cold start" in scale_event or "$" in scale_event
        stack.stop_load()  # traffic stops; the 60-s rate window still has to empty before zero
        eventually(lambda: stack.replicas("chat") == 0 or None, 120, "scale to zero when idle")
        eventually(
            lambda: pool_nodes(cluster, node_pool) == [] or None, 60, "the empty nodes removed"
        )
        assert len(provisioner.launched) == 2 and sorted(provisioner.deleted) == sorted(
            provisioner.launched
        )
    print(f"scale 0 -> 2 -> 0 with nodes took {time.monotonic() - started:.1f} s")


def _limited(cluster: Cluster, pool: str) -> dict[str, Any] | None:
    found = condition_of(cluster.kubectl_json("get", "gpupool", pool), "CapacityLimited")
    return found if found.get("status") == "True" else None


def _pending_since(cluster: Cluster, namespace: str) -> float:
    def created() -> float | None:
        pods = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
        return time.monotonic() if pods else None

    return wait_until(created, timeout_seconds=60, what="the engine pod", interval_seconds=0.5)


def test_a_node_autoscaler_that_never_delivers_makes_the_pool_capacity_limited_in_time(
    cluster: Cluster,
    crds: None,
    namespace: str,
    operator_process: StartOperator,
    node_pool: str,
) -> None:
    cluster.apply(autoscaled_pool(node_pool, node_start=NEVER_NODE_START_SECONDS))
    operator_process(namespaces=[namespace])
    manifest = model_service_manifest("chat", node_pool, minReplicas=1, maxReplicas=2)
    with provisioner_module.running(cluster.kubeconfig, mode="never"):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        since = _pending_since(cluster, namespace)
        deadline = NEVER_NODE_START_SECONDS + 15  # nodeStartSeconds + the margin (at least 15 s)
        limited = wait_until(
            lambda: _limited(cluster, node_pool),
            timeout_seconds=deadline + POOL_RESYNC_SECONDS + 10,
            what="GPUPool CapacityLimited=True",
            interval_seconds=0.5,
        )
        took = time.monotonic() - since
    assert limited["reason"] == "NodesNotDelivered", limited
    assert "waited" in limited["message"] and "nodeStartSeconds 6" in limited["message"]
    # The declared time plus one interval (and a few seconds of kubectl polling on a busy machine).
    assert took <= deadline + POOL_RESYNC_SECONDS + 5, took

    def service_limited() -> dict[str, Any] | None:
        found = condition_of(
            cluster.kubectl_json("get", "ms", "chat", "-n", namespace), "CapacityLimited"
        )
        return found if found.get("status") == "True" else None

    service = wait_until(service_limited, timeout_seconds=30, what="ModelService CapacityLimited")
    assert service["reason"] == "PoolShort" and "NodesNotDelivered" in service["message"], service
    events = cluster.kubectl_json(
        "get", "events", "-A", "--field-selector", "reason=NodesNotDelivered"
    )
    assert events["items"], "a Warning Event on the GPUPool"
    print(f"CapacityLimited {took:.1f} s after the pod appeared (deadline {deadline} s)")


def test_karpenter_insufficient_capacity_makes_the_pool_short_at_once(
    cluster: Cluster,
    crds: None,
    namespace: str,
    operator_process: StartOperator,
    node_pool: str,
) -> None:
    cluster.apply(autoscaled_pool(node_pool, node_start=300))  # the timeout is far away
    operator_process(namespaces=[namespace])
    manifest = model_service_manifest("chat", node_pool, minReplicas=1, maxReplicas=2)
    with provisioner_module.running(cluster.kubeconfig, mode="fail") as provisioner:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        since = _pending_since(cluster, namespace)
        limited = wait_until(
            lambda: _limited(cluster, node_pool),
            timeout_seconds=30,
            what="GPUPool CapacityLimited=True from Karpenter's Event",
            interval_seconds=0.5,
        )
        took = time.monotonic() - since
        assert provisioner.failures_posted >= 1
    assert limited["reason"] == "NodeLaunchFailed", limited
    assert "insufficient capacity" in limited["message"], limited
    assert took < 300
    print(f"NodeLaunchFailed {took:.1f} s after the pod appeared")
