"""One reconcile pass against the watch caches: it reads nothing from the API server and writes
only what would change something."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from thrifty.adapters import kube as kube_adapter
from thrifty.control import handlers
from thrifty.reconciler import placement, render

LOG = logging.getLogger("test")
POOL: dict[str, Any] = {
    "metadata": {"name": "h100"},
    "spec": {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"thrifty.dev/pool": "h100"},
        "pricePerGpuHour": 2.5,
    },
}
BODY: dict[str, Any] = {
    "apiVersion": "thrifty.dev/v1alpha1",
    "kind": "ModelService",
    "metadata": {"namespace": "ns", "name": "llama", "uid": "u1", "generation": 1},
    "spec": {
        "model": {"uri": "hf://a/b"},
        "pools": ["h100"],
        "replicas": 1,
        "scaling": {"maxReplicas": 4},
    },
}


def deployment(generation: int) -> dict[str, Any]:
    """The cached per-pool Deployment of BODY."""
    return {
        "metadata": {
            "name": render.deployment_name("llama", "h100"),
            "generation": generation,
            "labels": {placement.POOL_LABEL: "h100"},
        },
        "status": {},
    }


class FakeKube:
    """Records writes; its only read is the existence check before a Deployment is applied,
    counted, so a pass that reads anything else from the API fails loudly."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.generation = 1
        self.existing: set[str] = {"u1"}
        self.existence_checks = 0

    def model_service_exists(self, namespace: str, name: str, uid: str) -> bool:
        self.existence_checks += 1
        return uid in self.existing

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.applied.append(str(manifest["kind"]))
        out = dict(manifest)
        out["metadata"] = {**manifest["metadata"], "generation": self.generation}
        return out

    def patch_status(self, *args: Any, **kwargs: Any) -> None:
        pass

    def event(self, *args: Any) -> None:
        pass


class FakeView:
    def __init__(self) -> None:
        self.deployment_body: dict[str, Any] | None = None

    def all_nodes(self) -> list[placement.NodeInfo]:
        return [placement.NodeInfo("n0", {"thrifty.dev/pool": "h100"}, 8)]

    def all_gpu_pods(self) -> list[placement.PodInfo]:
        return []

    def pool_bodies(self) -> list[dict[str, Any]]:
        return [POOL]

    def replica_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return []

    def owned_deployments(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        return [] if self.deployment_body is None else [self.deployment_body]

    def model_services_in(self, namespace: str) -> list[dict[str, Any]]:
        return [BODY]

    def node_readiness(self) -> dict[str, bool]:
        return {"n0": True}


def test_an_unchanged_model_service_is_applied_once_then_never_again() -> None:
    kube, view = FakeKube(), FakeView()
    applied: handlers.Applied = {}
    handlers.reconcile_model_service(kube, BODY, LOG, view, applied)  # type: ignore[arg-type]
    assert "Deployment" in kube.applied
    writes = len(kube.applied)
    view.deployment_body = deployment(1)
    checks = kube.existence_checks
    for _ in range(5):
        handlers.reconcile_model_service(kube, BODY, LOG, view, applied)  # type: ignore[arg-type]
    assert len(kube.applied) == writes, "a settled ModelService costs no apply"
    assert kube.existence_checks == checks, "nor any read"


def test_a_deleted_model_service_gets_no_deployment() -> None:
    """The watch event is older than the delete: the pass asks the API server before the
    Deployment (the only workload that starts pods) and applies nothing more."""
    kube, view = FakeKube(), FakeView()
    kube.existing = set()
    outcome = handlers.reconcile_model_service(kube, BODY, LOG, view, {})  # type: ignore[arg-type]
    assert outcome == handlers.GONE
    assert "Deployment" not in kube.applied


def test_a_changed_spec_an_edited_or_a_deleted_deployment_is_applied_again() -> None:
    kube, view = FakeKube(), FakeView()
    applied: handlers.Applied = {}
    handlers.reconcile_model_service(kube, BODY, LOG, view, applied)  # type: ignore[arg-type]
    view.deployment_body = deployment(1)
    writes = len(kube.applied)
    scaled = {**BODY, "spec": {**BODY["spec"], "replicas": 2}}
    handlers.reconcile_model_service(kube, scaled, LOG, view, applied)  # type: ignore[arg-type]
    assert len(kube.applied) == 2 * writes, "a new replica count is applied"
    view.deployment_body = deployment(7)  # someone edited it
    handlers.reconcile_model_service(kube, scaled, LOG, view, applied)  # type: ignore[arg-type]
    assert len(kube.applied) == 3 * writes
    view.deployment_body = None  # someone deleted it
    handlers.reconcile_model_service(kube, scaled, LOG, view, applied)  # type: ignore[arg-type]
    assert len(kube.applied) == 4 * writes


class RefusingKube(FakeKube):
    """The API server refuses the Service (422), as it did for "<name>-engine" with a dot."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, Any] = {}

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Service":
            raise kube_adapter.Invalid('422: Service "x" is invalid: metadata.name: Invalid')
        return super().apply(manifest)

    def patch_status(self, plural: str, name: str, status: Any, **kwargs: Any) -> None:
        self.status = dict(status)


def test_a_refused_workload_degrades_instead_of_raising() -> None:
    kube, view = RefusingKube(), FakeView()
    handlers.reconcile_model_service(kube, BODY, LOG, view, {})  # type: ignore[arg-type]
    degraded = [c for c in kube.status["conditions"] if c["type"] == "Degraded"]
    assert degraded[0]["status"] == "True" and degraded[0]["reason"] == "ApplyFailed"
    assert "metadata.name: Invalid" in degraded[0]["message"]


class QuotaKube(RefusingKube):
    """A ResourceQuota of 0 Services in the namespace: the Service is forbidden (403)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, str]] = []
        self.quota = True

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if self.quota and manifest["kind"] == "Service":
            raise kube_adapter.KubeError(
                '403 Forbidden: services "llama-engine" is forbidden: exceeded quota: none'
            )
        return FakeKube.apply(self, manifest)

    def event(self, involved: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def test_a_service_the_cluster_refuses_is_reported_and_the_deployment_still_applied() -> None:
    kube, view = QuotaKube(), FakeView()
    applied: handlers.Applied = {}
    handlers.reconcile_model_service(kube, BODY, LOG, view, applied)  # type: ignore[arg-type]
    assert kube.applied == ["Deployment", "PodDisruptionBudget"]
    degraded = next(c for c in kube.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyError")
    assert "Service llama-engine" in degraded["message"] and "exceeded quota" in degraded["message"]
    assert ("Warning", "ApplyError", degraded["message"]) in kube.events
    # Not recorded as applied: the next pass tries again, and heals once the quota allows it.
    kube.quota = False
    view.deployment_body = deployment(1)
    body = {**BODY, "status": kube.status}
    handlers.reconcile_model_service(kube, body, LOG, view, applied)  # type: ignore[arg-type]
    assert kube.applied[-1] == "Service"
    degraded = next(c for c in kube.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")


def test_the_deployment_watch_asks_the_api_server_for_thriftys_deployments_only() -> None:
    import kopf
    from kopf._cogs.structs import references

    settings = kopf.OperatorSettings()
    handlers.watch_only_thrifty_deployments(settings)
    deployments = references.Resource("apps", "v1", "deployments", namespaced=True)
    pods = references.Resource("", "v1", "pods", namespaced=True)
    selectors = settings.watching.label_selectors
    assert list(selectors.collect(deployments)) == ["thrifty.dev/model-service"]
    assert list(selectors.collect(pods)) == [], "a pool's free GPUs count every pod"


def test_a_pod_bound_to_a_deleted_node_is_not_billed() -> None:
    """Two replicas bound to nodes: one to a node that is there, one to a node deleted under it
    (its pod lingers until the pod garbage collector runs). Only the first holds a GPU anyone
    pays for."""

    class Patches(FakeKube):
        def __init__(self) -> None:
            super().__init__()
            self.status: dict[str, Any] = {}

        def patch_status(self, plural: str, name: str, patch: dict[str, Any], **_: Any) -> None:
            self.status.update(patch)

    def pod(name: str, node: str) -> dict[str, Any]:
        labels = {placement.POOL_LABEL: "h100", placement.MODEL_SERVICE_LABEL: "llama"}
        return {
            "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": {"nodeName": node},
            "status": {"phase": "Running"},
        }

    class Bound(FakeView):
        def replica_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
            return [pod("a", "n0"), pod("b", "gone")]

    kube = Patches()
    body = {**BODY, "spec": {**BODY["spec"], "replicas": 2}}
    handlers.reconcile_model_service(kube, body, LOG, Bound(), {})  # type: ignore[arg-type]
    assert kube.status["dollarsPerHour"] == 2.5
