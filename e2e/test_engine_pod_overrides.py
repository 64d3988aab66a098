"""spec.podTemplate against a real control plane: what it adds reaches the engine pods, and what
thrifty manages (the GPU count, the port) is refused at admission naming the field."""

from __future__ import annotations

import json
import time
from typing import Any

from harness import Cluster
from harness.cluster import wait_until
from operator_process import StartOperator, operator_process
from test_reconcile import apply, crds_and_pools, engine_pods, wait_condition

__all__ = ["crds_and_pools", "operator_process"]  # fixtures, re-exported for pytest

API = "thrifty.dev/v1alpha1"
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {
                            "key": "nvidia.com/gpu.product",
                            "operator": "In",
                            "values": ["NVIDIA-H100-80GB-HBM3"],
                        }
                    ]
                }
            ]
        }
    }
}


def model_service(name: str, pod_template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "hf://Qwen/Qwen3-0.6B"},
            "pools": ["h100-on-demand"],
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podTemplate": pod_template,
        },
    }


def test_pod_template_reaches_the_pods_and_managed_fields_are_refused(
    cluster: Cluster, namespace: str, operator_process: StartOperator, crds_and_pools: None
) -> None:
    started = time.monotonic()
    operator_process(namespaces=[namespace])
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "weights"}}
    template = {
        "metadata": {
            "labels": {"team": "search"},
            "annotations": {"iam.example.com/role": "weights-reader"},
        },
        "spec": {"serviceAccountName": "weights", "affinity": AFFINITY},
    }
    apply(cluster, namespace, account, model_service("tuned", template))

    def pod() -> dict[str, Any] | None:
        pods = engine_pods(cluster, "tuned", namespace)
        return pods[0] if pods else None

    found = wait_until(pod, timeout_seconds=90, what="an engine pod of ModelService tuned")
    assert found["metadata"]["labels"]["team"] == "search"
    assert found["metadata"]["labels"]["thrifty.dev/model-service"] == "tuned"
    annotations = found["metadata"]["annotations"]
    assert annotations["iam.example.com/role"] == "weights-reader"
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert found["spec"]["serviceAccountName"] == "weights"
    assert found["spec"]["affinity"] == AFFINITY
    assert found["spec"]["nodeSelector"] == {"thrifty.dev/pool": "h100-on-demand"}

    refused: dict[str, dict[str, Any]] = {
        "spec.podTemplate.spec.containers": {
            "spec": {
                "containers": [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]
            }
        },
        "spec.podTemplate.spec.resources": {
            "spec": {"resources": {"limits": {"nvidia.com/gpu": "8"}}}
        },
        "spec.podTemplate.spec.ports": {"spec": {"ports": [{"containerPort": 9000}]}},
    }
    for i, (field, bad) in enumerate(refused.items()):
        result = cluster.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(model_service(f"refused-{i}", bad)),
            check=False,
        )
        assert result.returncode != 0, f"accepted: {bad}"
        assert field in result.stderr, result.stderr
        assert "cannot be set" in result.stderr, result.stderr
    # What CEL cannot judge (affinity is passed through as written) is the API server's to refuse
    # when the Deployment is applied: Degraded, naming the field.
    empty_terms: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
        }
    }
    apply(cluster, namespace, model_service("odd", {"spec": {"affinity": empty_terms}}))
    degraded = wait_condition(cluster, "odd", namespace, "Degraded")
    message = next(c for c in degraded["status"]["conditions"] if c["type"] == "Degraded")
    assert "affinity" in message["message"], message
    print(f"podTemplate e2e took {time.monotonic() - started:.1f} s")
