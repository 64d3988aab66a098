"""A node provisioner that behaves as Karpenter does, for the e2e tests of Autoscaled GPUPools.

Karpenter watches Pending pods, launches a node that fits them, and removes nodes that stay empty
(`consolidationPolicy: WhenEmpty`). This does the same on the local cluster, with KWOK nodes:

- a thrifty pod placed on an Autoscaled GPUPool (label `thrifty.dev/pool`) that is Pending with no
  node: after `delay_seconds` a KWOK GPU node appears with the pool's nodeSelector labels, a taint
  per toleration, `gpusPerNode` GPUs and Karpenter's `karpenter.sh/nodepool` and
  `karpenter.sh/capacity-type` labels, up to the pool's `maxNodes`;
- a node it made that holds no pod for `empty_ttl_seconds` is deleted;
- `mode="never"`: it launches nothing and says nothing (a silent failure); `mode="fail"`: it posts
  the Warning Event Karpenter posts when the cloud has no capacity (`InsufficientCapacityError` on
  a NodeClaim named `<nodepool>-<suffix>`, in namespace `default`) and launches nothing.

It runs as a thread of the test process and talks to the API server with the Kubernetes client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kubernetes import client, config

log = logging.getLogger(__name__)

PROVISIONED_LABEL = "thrifty.dev/e2e-provisioner"
NODE_POOL_LABEL = "karpenter.sh/nodepool"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
Mode = Literal["deliver", "never", "fail"]


@dataclass
class Provisioner:
    kubeconfig: Path
    delay_seconds: float = 5.0
    empty_ttl_seconds: float = 5.0
    mode: Mode = "deliver"
    period_seconds: float = 0.5
    launched: list[str] = field(default_factory=list)
    """Names of the nodes it created, in order."""
    deleted: list[str] = field(default_factory=list)
    failures_posted: int = 0
    _due: dict[str, list[float]] = field(default_factory=dict)
    _empty_since: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._thread = threading.Thread(target=self._run, name="e2e-provisioner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for name in self.launched:
            if name not in self.deleted:
                with contextlib.suppress(client.ApiException):
                    self._core.delete_node(name)

    def _run(self) -> None:
        while not self._stop.wait(self.period_seconds):
            try:
                self.tick(time.monotonic())
            except Exception:  # a test-side helper: log and keep going, the test times out
                log.exception("provisioner tick failed")

    # --- one pass ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        listed = self._custom.list_cluster_custom_object("thrifty.dev", "v1alpha1", "gpupools")
        assert isinstance(listed, dict), listed
        pools = {
            p["metadata"]["name"]: p
            for p in listed["items"]
            if (p["spec"].get("provisioning") or {}).get("mode") == "Autoscaled"
        }
        pods = self._core.list_pod_for_all_namespaces(label_selector="thrifty.dev/pool").items
        nodes = self._core.list_node().items
        for name, pool in pools.items():
            self._provision(name, pool, pods, nodes, now)
        self._remove_empty(pods, nodes, now)

    def _provision(
        self, name: str, pool: Mapping[str, Any], pods: list[Any], nodes: list[Any], now: float
    ) -> None:
        spec = pool["spec"]
        waiting = [
            p
            for p in pods
            if p.metadata.labels.get("thrifty.dev/pool") == name
            and not p.spec.node_name
            and p.status.phase == "Pending"
            and p.metadata.deletion_timestamp is None
        ]
        selector = spec["nodeSelector"]
        members = [n for n in nodes if _matches(n.metadata.labels or {}, selector)]
        due = self._due.setdefault(name, [])
        per_node = int(spec["gpusPerNode"])
        wanted_gpus = sum(_gpus(p) for p in waiting)
        # Nodes that are there but hold nothing yet take the waiting pods first (the scheduler
        # binds them within a second or two).
        idle = [n for n in members if not any(p.spec.node_name == n.metadata.name for p in pods)]
        missing = math.ceil(wanted_gpus / per_node) - len(idle) - len(due)
        room = int(spec["provisioning"]["maxNodes"]) - len(members) - len(due)
        node_pool = spec["provisioning"].get("karpenterNodePool") or selector.get(
            NODE_POOL_LABEL, name
        )
        for _ in range(max(min(missing, room), 0)):
            if self.mode == "fail":
                self._post_insufficient_capacity(node_pool)
            elif self.mode == "deliver":
                due.append(now + self.delay_seconds)
        for at in [at for at in due if at <= now]:
            due.remove(at)
            self._create_node(name, spec, node_pool, nodes)

    def _create_node(
        self, pool: str, spec: Mapping[str, Any], node_pool: str, nodes: list[Any]
    ) -> None:
        name = f"{node_pool}-{secrets.token_hex(3)}"
        gpus = str(spec["gpusPerNode"])
        labels = {
            **spec["nodeSelector"],
            NODE_POOL_LABEL: node_pool,
            CAPACITY_TYPE_LABEL: "spot" if spec.get("capacityType") == "Spot" else "on-demand",
            PROVISIONED_LABEL: pool,
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": spec["accelerator"],
            "nvidia.com/gpu.count": gpus,
        }
        taints = [
            {
                "key": t["key"],
                "value": t.get("value") or "",
                "effect": t.get("effect") or "NoSchedule",
            }
            for t in spec.get("tolerations") or []
            if t.get("key")
        ]
        cidr = _free_pod_cidr(nodes)
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": taints, "podCIDR": cidr, "podCIDRs": [cidr]},
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
        # The client takes a plain dict for any body (it serialises dicts as they are).
        created = self._core.create_node(body)  # type: ignore[arg-type]
        # The status of a created Node is ignored by the API server: set it as the kubelet would
        # (KWOK then keeps the node Ready).
        self._core.patch_node_status(name, {"status": body["status"]})
        self.launched.append(name)
        nodes.append(created)

    def _remove_empty(self, pods: list[Any], nodes: list[Any], now: float) -> None:
        busy = {p.spec.node_name for p in pods if p.spec.node_name}
        for node in nodes:
            name = node.metadata.name
            if PROVISIONED_LABEL not in (node.metadata.labels or {}):
                continue
            if name in busy:
                self._empty_since.pop(name, None)
                continue
            since = self._empty_since.setdefault(name, now)
            if now - since >= self.empty_ttl_seconds:
                with contextlib.suppress(client.ApiException):
                    self._core.delete_node(name)
                self.deleted.append(name)
                self._empty_since.pop(name, None)

    def _post_insufficient_capacity(self, node_pool: str) -> None:
        claim = f"{node_pool}-{secrets.token_hex(3)}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._core.create_namespaced_event(
            "default",
            {  # type: ignore[arg-type]
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{claim}.{secrets.token_hex(4)}", "namespace": "default"},
                "involvedObject": {
                    "apiVersion": "karpenter.sh/v1",
                    "kind": "NodeClaim",
                    "name": claim,
                },
                "reason": "InsufficientCapacityError",
                "message": f"NodeClaim {claim} event: creating instance, insufficient capacity, "
                "all requested instance types were unavailable during launch",
                "type": "Warning",
                "source": {"component": "karpenter"},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            },
        )
        self.failures_posted += 1


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _gpus(pod: Any) -> int:
    total = 0
    for container in pod.spec.containers:
        limits = (container.resources.limits if container.resources else None) or {}
        total += int(limits.get("nvidia.com/gpu", 0))
    return total


def _free_pod_cidr(nodes: list[Any]) -> str:
    """A /24 in the cluster's 10.<octet>.0.0/16 (see harness.session.pod_cidrs) no node uses."""
    taken = {n.spec.pod_cidr for n in nodes if n.spec and n.spec.pod_cidr}
    octet = next(
        (int(str(cidr).split(".")[1]) for cidr in sorted(taken)),
        2,
    )
    for index in range(255, 0, -1):  # from the top: the harness hands out from 0 upwards
        cidr = f"10.{octet}.{index}.0/24"
        if cidr not in taken:
            ipaddress.ip_network(cidr)
            return cidr
    raise RuntimeError("no free pod CIDR left")


@contextlib.contextmanager
def running(kubeconfig: Path, **options: Any) -> Iterator[Provisioner]:
    """A provisioner for the duration of a `with` block; its nodes are deleted at the end."""
    provisioner = Provisioner(kubeconfig, **options)
    provisioner.start()
    try:
        yield provisioner
    finally:
        provisioner.stop()
