"""A ModelService takes no ClusterIP, and an object the cluster will not take is reported.

Every ModelService used to get a ClusterIP Service, applied first: with the Service range full
(254 addresses on this cluster) the Deployment was never created and no condition said why. Now
the Service is headless and applied last, and a failed apply becomes `Degraded` and an Event
naming the object and the API server's message. A ResourceQuota of zero Services stands in for
any refusal the operator cannot prevent (a full range, an admission webhook).
"""

from __future__ import annotations

import json
from typing import Any

from harness import Cluster
from harness.cluster import wait_until
from operator_process import StartOperator, operator_process
from test_reconcile import apply, crds_and_pools, get, wait_condition, wait_for_h100_on_demand
from thrifty.reconciler.render import deployment_name

__all__ = ["crds_and_pools", "operator_process"]  # fixtures, re-exported for pytest

WAIT_SECONDS = 60.0


def model_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "engine": {"tensorParallelSize": 1},
            "resources": {"cpu": "1", "memory": "4Gi"},
            "pools": ["h100-on-demand"],
            "replicas": 1,
            "scaling": {"minReplicas": 1, "maxReplicas": 2, "mode": "Manual"},
        },
    }


def events(cluster: Cluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},reason={reason}",
    )
    items: list[dict[str, Any]] = listing["items"]
    return items


def test_a_service_the_cluster_refuses_is_reported_and_the_model_still_runs(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 2)
    cluster.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "no-services", "namespace": namespace},
                "spec": {"hard": {"services": "0"}},
            }
        )
    )
    operator_process(namespaces=[namespace])
    apply(cluster, namespace, model_service("quota"))

    body = wait_condition(cluster, "quota", namespace, "Degraded", "True")
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ApplyError", degraded
    assert "Service quota-engine" in degraded["message"], degraded
    assert "exceeded quota" in degraded["message"], degraded
    # Not Stalled: a quota can be raised without touching the ModelService.
    assert not any(c["type"] == "Stalled" for c in body["status"]["conditions"])
    warned = wait_until(
        lambda: events(cluster, namespace, "quota", "ApplyError") or None,
        timeout_seconds=WAIT_SECONDS,
        what="an ApplyError Event on ModelService quota",
    )
    assert "Service quota-engine" in warned[0]["message"]
    # The workload runs all the same, and its status is reported.
    deployment = get(cluster, "deployment", deployment_name("quota", "h100-on-demand"), namespace)
    assert deployment["spec"]["replicas"] == 1
    wait_until(
        lambda: (
            True
            if (get(cluster, "modelservice", "quota", namespace).get("status") or {}).get(
                "readyReplicas"
            )
            == 1
            else None
        ),
        timeout_seconds=WAIT_SECONDS,
        what="ModelService quota reporting its ready replica",
    )

    # Once the quota allows it, the next resync applies the Service: headless, no ClusterIP.
    cluster.kubectl("delete", "resourcequota", "no-services", "-n", namespace)
    wait_condition(cluster, "quota", namespace, "Ready", "True")
    service = get(cluster, "service", "quota-engine", namespace)
    assert service["spec"]["clusterIP"] == "None", service["spec"]
    slices = cluster.kubectl_json(
        "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=quota-engine"
    )["items"]
    assert slices, "a headless Service with a selector still gets EndpointSlices (the gateway's)"


def test_a_service_created_with_a_cluster_ip_by_an_earlier_version_is_kept(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    """A ClusterIP cannot change to None: the operator keeps the address instead of failing."""
    wait_for_h100_on_demand(cluster, 1)
    earlier = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "upgraded-engine", "namespace": namespace},
        "spec": {
            "type": "ClusterIP",
            "selector": {"thrifty.dev/model-service": "upgraded"},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
        },
    }
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=thrifty", "-f", "-", input=json.dumps(earlier)
    )
    address = get(cluster, "service", "upgraded-engine", namespace)["spec"]["clusterIP"]
    assert address not in ("", "None")
    operator_process(namespaces=[namespace])
    apply(cluster, namespace, model_service("upgraded"))
    wait_condition(cluster, "upgraded", namespace, "Ready", "True")
    service = get(cluster, "service", "upgraded-engine", namespace)
    assert service["spec"]["clusterIP"] == address
    assert service["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "thrifty"
