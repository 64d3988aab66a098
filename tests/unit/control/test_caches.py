"""What a pass reads from the watch caches (plain dicts stand in for kopf's indexes)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from test_reconcile_pass import POOL as POOL_WITHOUT_QUOTA

from thrifty.control.caches import Caches
from thrifty.reconciler import placement

POOL: dict[str, Any] = {
    **POOL_WITHOUT_QUOTA,
    "spec": {**POOL_WITHOUT_QUOTA["spec"], "maxGpus": 2},
    "status": {"gpusAllocatable": 2, "gpusUsed": 0, "gpusFree": 2},  # written before the pods
}


def caches(**indexes: dict[Any, list[Any]]) -> Caches:
    empty: dict[Any, list[Any]] = {}
    return Caches(
        model_services=indexes.get("model_services", empty),  # type: ignore[arg-type]
        gpu_pools={"h100": [POOL]},  # type: ignore[arg-type]
        cost_budgets=empty,  # type: ignore[arg-type]
        pods=indexes.get("pods", empty),  # type: ignore[arg-type]
        hpas=empty,  # type: ignore[arg-type]
        gpu_pods=indexes.get("gpu_pods", empty),  # type: ignore[arg-type]
        nodes={"n0": [placement.NodeInfo("n0", {"thrifty.dev/pool": "h100"}, 8)]},  # type: ignore[arg-type]
        deployments=empty,  # type: ignore[arg-type]
        node_ready=indexes.get("node_ready", {"n0": [True]}),  # type: ignore[arg-type]
    )


def test_a_pools_free_gpus_are_counted_from_the_cached_pods_not_its_stale_status() -> None:
    held = {
        ("ns", f"chat-{i}"): [placement.PodInfo("ns", f"chat-{i}", "n0", 1, {})] for i in range(2)
    }
    world = caches(gpu_pods=held).world(datetime(2026, 1, 1, tzinfo=UTC))
    status = world.pools["h100"].status
    assert status is not None and status.gpus_free == 0, "two bound pods hold the quota"


def test_a_model_service_being_deleted_is_not_planned() -> None:
    body = {
        "metadata": {"namespace": "ns", "name": "gone", "uid": "u", "deletionTimestamp": "x"},
        "spec": {"model": {"uri": "hf://a/b"}, "pools": ["h100"]},
    }
    world = caches(model_services={("ns", "gone"): [body]}).world(datetime.now(UTC))
    assert world.services == []


def test_a_cached_model_service_keeps_only_who_owns_replicas_of_its_managed_fields() -> None:
    from thrifty.control.caches import thrifty_model_services

    body = {
        "metadata": {
            "namespace": "ns",
            "name": "chat",
            "uid": "u",
            "resourceVersion": "7",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 5000},
            "managedFields": [
                {
                    "manager": "argocd",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:replicas": {}, "f:model": {}}},
                },
                {
                    "manager": "kubectl",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:pools": {}}},
                },
            ],
        },
        "spec": {"model": {"uri": "hf://a/b"}, "pools": ["h100"], "replicas": 1},
    }
    index: Any = thrifty_model_services  # kopf's IndexingFn type asks for every kwarg kopf passes
    entry = index(body=body, namespace="ns", name="chat")[("ns", "chat")]
    assert "annotations" not in entry["metadata"]
    assert [m["manager"] for m in entry["metadata"]["managedFields"]] == ["argocd"]
    assert entry["spec"] == body["spec"] and entry["metadata"]["resourceVersion"] == "7"


def _replica(name: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"thrifty.dev/pool": "h100"},
        },
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        },
    }


def test_replicas_on_a_deleted_or_not_ready_node_are_not_ready_to_the_policy() -> None:
    """The pods still say Ready (no kubelet is left to say otherwise): the policy must not count
    them, or it plans with capacity that is gone and orders nothing."""
    from thrifty.autoscaler import observe

    body = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"namespace": "ns", "name": "chat", "uid": "u"},
        "spec": {
            "model": {"uri": "hf://a/b"},
            "pools": ["h100"],
            "replicas": 4,
            "scaling": {"maxReplicas": 4},
        },
    }
    pods = [_replica("a", "n0"), _replica("b", "n0"), _replica("c", "dead"), _replica("d", "sick")]
    view = caches(
        model_services={("ns", "chat"): [body]},
        pods={("ns", "chat"): pods},
        node_ready={"n0": [True], "sick": [False]},
    )
    world = view.world(datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    counts = observe.replica_counts(4, world.services[0].pods)
    assert (counts.desired, counts.ready, counts.starting) == (4, 2, 0)
    assert view.services_on("sick") == [("ns", "chat")] and view.services_on("n1") == []


def test_a_lost_node_reconciles_the_model_services_on_it_at_once() -> None:
    """The Node event, not the next resync, reports the lost replica and orders its replacement."""
    import threading

    import kopf
    from test_reconcile_pass import BODY, FakeKube

    from thrifty.control import backoff, handlers

    node_event: Any = handlers.node_event  # kopf's handler type asks for every kwarg kopf passes

    class RecordingKube(FakeKube):
        def __init__(self) -> None:
            super().__init__()
            self.status: dict[str, Any] = {}
            self.replicas: list[int] = []

        def apply(self, manifest: Any) -> dict[str, Any]:
            if manifest["kind"] == "Deployment":
                self.replicas.append(manifest["spec"]["replicas"])
            return super().apply(manifest)

        def patch_status(self, plural: str, name: str, status: Any, **kwargs: Any) -> None:
            if plural == "gpupools":
                self.pool_status = dict(status)
            else:
                self.status = dict(status)

    body = {**BODY, "spec": {**BODY["spec"], "replicas": 2}}
    view = caches(
        model_services={("ns", "llama"): [body]},
        pods={("ns", "llama"): [_replica("a", "n0"), _replica("b", "n1")]},
        node_ready={"n0": [True]},  # n1 was just deleted
    )
    memo = kopf.Memo()
    memo.kube, memo.thrifty_caches, memo.thrifty_applied = RecordingKube(), view, {}
    memo.locks, memo.locks_guard = {}, threading.Lock()
    memo.thrifty_backoff = backoff.Backoff(10.0)
    gone = kopf.Body({"metadata": {"name": "n1", "labels": {"thrifty.dev/pool": "h100"}}})
    node_event(type="DELETED", body=gone, memo=memo, logger=logging.getLogger("t"))
    lost = next(c for c in memo.kube.status["conditions"] if c["type"] == "ReplicasLost")
    assert lost["status"] == "True" and "b on node n1 (deleted)" in lost["message"]
    assert memo.kube.replicas == [3], "one replacement ordered with the lost replica's event"
    # Its pool is refreshed in the same call, from the nodes left (n0), not at its next resync.
    (ready,) = [c for c in memo.kube.pool_status["conditions"] if c["type"] == "Ready"]
    assert ready["message"].startswith("1 nodes"), ready
    other = kopf.Body({"metadata": {"name": "n7"}, "status": {}})
    before = len(memo.kube.applied)
    node_event(type="DELETED", body=other, memo=memo, logger=logging.getLogger("t"))
    assert len(memo.kube.applied) == before, "a node without replicas reconciles nothing"
    # A follower acts on no node event: only the lease holder writes (two operators at once).
    memo.thrifty_leading = lambda: False
    memo.kube.status = {}
    node_event(type="DELETED", body=gone, memo=memo, logger=logging.getLogger("t"))
    assert len(memo.kube.applied) == before and memo.kube.status == {}


def test_the_reclaim_rate_a_pools_status_counted_reaches_the_autoscaler() -> None:
    counted = {
        **POOL,
        "spec": {**POOL["spec"], "capacityType": "Spot"},
        "status": {
            **POOL["status"],
            "nodes": 1,
            "servingNodes": 1,
            "reclaims": 1,
            "nodeHours": 0.25,
            "nodeHoursAt": "2026-01-01T00:00:00Z",
        },
    }
    view = caches()
    view.gpu_pools = {"h100": [counted]}  # type: ignore[assignment]
    world = view.world(datetime(2026, 1, 1, 0, 15, tzinfo=UTC))
    assert world.observed_hazards == {"h100": 2.0}  # 1 over 0.25 + 1 node x 0.25 h
