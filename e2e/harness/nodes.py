"""Fake GPU nodes a test adds, loses and removes: node loss without touching the shared nodes.

A test's own nodes (KWOK-managed like e2e/nodes/, with pod CIDRs in the cluster's range so the
fleet mirror and the gateway reach their pods) can be deleted or made NotReady while other tests
keep the shared ones. KWOK manages only nodes annotated `kwok.x-k8s.io/node=fake` (see
harness.kwok): `make_not_ready` removes the annotation, so KWOK stops reporting for the node, and
reports `Ready=False` as a kubelet that lost its runtime would. Its pods keep their own status
(`Ready=True`): the node lifecycle controller marks pods NotReady only when it is the one that
finds a node silent (after --node-monitor-grace-period), and a node's own NotReady only taints it
(`node.kubernetes.io/not-ready:NoExecute`), after which pods are evicted when their toleration ends.
A node's periodic KWOK heartbeat (600-1,210 s after it was created) could still fire once: use
fresh nodes for a test that must stay under that.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from harness.cluster import Cluster
from harness.kwok import MANAGED_ANNOTATION

GPUS_PER_NODE = 8
READY_TIMEOUT_SECONDS = 60


def _free_cidrs(cluster: Cluster, count: int) -> list[str]:
    """/24s in the second octet the session's nodes use (10.<n>.<m>.0/24), not yet taken."""
    listed = cluster.kubectl_json("get", "nodes")["items"]
    taken = {node["spec"].get("podCIDR") for node in listed if node["spec"].get("podCIDR")}
    octet = int(ipaddress.ip_network(sorted(c for c in taken if c)[0]).network_address.packed[1])
    free = [f"10.{octet}.{third}.0/24" for third in range(255, 0, -1)]
    return [cidr for cidr in free if cidr not in taken][:count]


def add_gpu_nodes(cluster: Cluster, names: Sequence[str], labels: Mapping[str, str]) -> None:
    """H100 x 8 nodes managed by KWOK, with `labels` (e.g. a test pool's selector); Ready."""
    cidrs = _free_cidrs(cluster, len(names))
    items: list[dict[str, Any]] = []
    for name, cidr in zip(names, cidrs, strict=True):
        gpus = str(GPUS_PER_NODE)
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        MANAGED_ANNOTATION: "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                        **labels,
                    },
                },
                "spec": {
                    "podCIDR": cidr,
                    "podCIDRs": [cidr],
                    "taints": [
                        {"key": MANAGED_ANNOTATION, "value": "fake", "effect": "NoSchedule"}
                    ],
                },
                "status": {
                    "capacity": {
                        "cpu": "192",
                        "memory": "2048Gi",
                        "pods": "110",
                        "nvidia.com/gpu": gpus,
                    },
                    "allocatable": {
                        "cpu": "191",
                        "memory": "2000Gi",
                        "pods": "110",
                        "nvidia.com/gpu": gpus,
                    },
                },
            }
        )
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        f"--timeout={READY_TIMEOUT_SECONDS}s",
        *(f"node/{name}" for name in names),
        timeout=READY_TIMEOUT_SECONDS + 30,
    )


def make_not_ready(cluster: Cluster, name: str, message: str = "node lost (e2e)") -> None:
    """The node stops being managed by KWOK and reports Ready=False, as a failing kubelet does."""
    cluster.kubectl("annotate", "node", name, f"{MANAGED_ANNOTATION}-")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "KubeletNotReady",
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    cluster.kubectl(
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps({"status": {"conditions": [ready]}}),
    )


def delete_nodes(cluster: Cluster, names: Sequence[str]) -> None:
    """Remove a test's nodes (those still there); their pods go with the pod garbage collector."""
    if names:
        cluster.kubectl("delete", "node", "--ignore-not-found", "--wait=false", *names)
