"""Placements made at the same moment never hand out the same GPUs (issue 13, part 4).

The replica pods a placement orders reach the watch caches only later; until then the claims
ledger is what tells the next placement those GPUs are taken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from thrifty.control import handlers
from thrifty.reconciler import placement

LOG = logging.getLogger("test")
POOL = {
    "metadata": {"name": "h100"},
    "spec": {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"thrifty.dev/pool": "h100"},
        "pricePerGpuHour": 2.5,
    },
}


def body(name: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": {"uri": "hf://a/b"},
            "pools": ["h100"],
            "engine": {"tensorParallelSize": 4},
            "replicas": 2,
            "scaling": {"maxReplicas": 4},
        },
    }


class RecordingKube:
    """Remembers the replicas each Deployment was given; everything else is a no-op."""

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}
        self.lock = threading.Lock()

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Deployment":
            with self.lock:
                self.replicas[manifest["metadata"]["name"]] = manifest["spec"]["replicas"]
        return {**manifest, "metadata": {**manifest["metadata"], "generation": 1}}

    def patch_status(self, *args: Any, **kwargs: Any) -> None:
        pass

    def event(self, *args: Any) -> None:
        pass

    def delete_deployment(self, namespace: str, name: str) -> None:
        pass

    def model_service_exists(self, namespace: str, name: str, uid: str) -> bool:
        return True


class StaleView:
    """Caches that have not seen any pod yet: 2 nodes of 8 GPUs, all free as far as they know."""

    def all_nodes(self) -> list[placement.NodeInfo]:
        return [placement.NodeInfo(f"n{i}", {"thrifty.dev/pool": "h100"}, 8) for i in range(2)]

    def all_gpu_pods(self) -> list[placement.PodInfo]:
        return []

    def pool_bodies(self) -> list[dict[str, Any]]:
        return [POOL]

    def replica_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return []

    def owned_deployments(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        return []

    def model_services_in(self, namespace: str) -> list[dict[str, Any]]:
        return []

    def node_readiness(self) -> dict[str, bool]:
        return {f"n{i}": True for i in range(2)}


def test_many_services_placed_at_once_never_oversubscribe_a_pool() -> None:
    """Eight services of 2 x 4 GPUs compete for 16 GPUs, placed from eight threads at once on
    caches that show no pod: at most 4 replicas are handed out, whatever the interleaving."""
    kube, view, ledger = RecordingKube(), StaleView(), handlers.ClaimLedger()
    names = [f"svc-{i}" for i in range(8)]
    threads = [
        threading.Thread(
            target=handlers.reconcile_model_service,
            args=(kube, body(name), LOG, view, {}, ledger),
        )
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(kube.replicas) == len(names)
    assert sum(kube.replicas.values()) == 4, kube.replicas  # 16 GPUs / 4 per replica
    claimed = sum(gpus for by_pool in ledger.claims.values() for gpus in by_pool.values())
    assert claimed == 16


def test_a_service_placed_again_keeps_its_own_claim() -> None:
    """Its own claim is not counted against it: a second pass gives the same replicas."""
    kube, view, ledger = RecordingKube(), StaleView(), handlers.ClaimLedger()
    for _ in range(3):
        handlers.reconcile_model_service(kube, body("a"), LOG, view, {}, ledger)  # type: ignore[arg-type]
    assert list(kube.replicas.values()) == [2]
