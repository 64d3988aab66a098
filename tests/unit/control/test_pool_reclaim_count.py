"""The GPUPool status pass counts a Spot pool's reclaims, and the reconcile pass reads the rate
they say from the pools' status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from thrifty.api import gpupool
from thrifty.control import handlers
from thrifty.reconciler import placement

LOG = logging.getLogger("test")
NOW = 1_800_000_000.0
POOL: dict[str, Any] = {
    "metadata": {"name": "spot", "generation": 1},
    "spec": {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"p": "spot"},
        "pricePerGpuHour": 1.0,
        "capacityType": "Spot",
        "interruptionRate": 0.15,
    },
}


class FakeKube:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.patches = 0

    def patch_status(self, plural: str, name: str, patch: Mapping[str, Any], **_: Any) -> None:
        self.status.update(patch)
        self.patches += 1

    def event(self, *args: Any) -> None:
        pass


class View:
    """The cluster: ``nodes``, each holding one replica of a ModelService."""

    def __init__(self, nodes: list[placement.NodeInfo]) -> None:
        self.nodes = nodes

    def all_nodes(self) -> list[placement.NodeInfo]:
        return self.nodes

    def all_gpu_pods(self) -> list[placement.PodInfo]:
        labels = {placement.MODEL_SERVICE_LABEL: "llama", placement.POOL_LABEL: "spot"}
        return [
            placement.PodInfo("default", f"llama-{n.name}", n.name, 8, labels) for n in self.nodes
        ]


def refresh(kube: FakeKube, nodes: list[placement.NodeInfo], at: float) -> dict[str, Any]:
    body = {**POOL, "status": dict(kube.status)}
    handlers.refresh_gpu_pool(kube, body, LOG, View(nodes), now_seconds=at)  # type: ignore[arg-type]
    return {**POOL, "status": dict(kube.status)}


def test_a_reclaim_is_counted_in_status_and_read_back_as_a_rate() -> None:
    a, b = (placement.NodeInfo(n, {"p": "spot"}, 8) for n in "ab")
    kube = FakeKube()
    refresh(kube, [a, b], NOW)
    assert handlers._observed_hazards([{**POOL, "status": kube.status}], NOW + 60) == {}
    writes = kube.patches
    refresh(kube, [a, b], NOW + 600)  # nothing changed: no write of its own
    assert kube.patches == writes
    tainted = placement.NodeInfo("b", {"p": "spot"}, 8, reclaiming=True)
    body = refresh(kube, [a, tainted], NOW + 1800)
    status = gpupool.GPUPoolStatus.model_validate(kube.status)
    assert (status.reclaims, status.node_hours, status.reclaiming_nodes) == (1, 1.0, ["b"])
    assert handlers._observed_hazards([body], NOW + 1800) == {"spot": 1.0}
