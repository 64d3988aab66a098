"""thrifty-gateway on the local cluster: real EndpointSlices, real scale from zero.

The gateway runs as a process with a kubeconfig, exactly as in a pod: it watches ModelServices
and the EndpointSlices the real EndpointSlice controller writes for the operator's Services. KWOK
gives pods IPs from their nodes' pod CIDRs (10.<n>.<m>.0/24, see harness.session.pod_cidrs); the
fleet mirror serves each pod's engine on its IP's loopback twin and the gateway connects to the
twin of each slice address (thrifty_runtime.podnet), so nothing leaves 127.0.0.0/8. Prometheus
scrapes the gateway's held-requests gauge, which is all the operator needs to scale from zero.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import fleet_process
import gateway_process
from harness import Cluster
from harness import prometheus as prometheus_process
from harness.ports import free_port
from harness.session import LOOPBACK_POD_NETWORK
from operator_process import OperatorProcess, StartOperator, operator_process
from test_autoscale import (
    OPERATOR_ENV,
    crds,
    eventually,
    metric_value,
    model_service_manifest,
    pool_manifest,
    stop_prometheus,
)

__all__ = ["crds", "operator_process"]  # fixtures, re-exported for pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class GatewayStack:
    cluster: Cluster
    namespace: str
    gateway: gateway_process.GatewayProcess
    operator: OperatorProcess
    prometheus_url: str

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    def promql(self, query: str) -> list[dict[str, Any]]:
        body = urllib.parse.urlencode({"query": query}).encode()
        request = urllib.request.Request(f"{self.prometheus_url}/api/v1/query", data=body)
        with urllib.request.urlopen(request, timeout=10) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
            return result

    def get(self, path: str) -> Any:
        return self.gateway.get(path)

    def metrics(self) -> str:
        return self.gateway.metrics()

    def held(self, model_service: str) -> float | None:
        return self.gateway.held(self.namespace, model_service)

    def replicas(self, name: str) -> int:
        found = self.cluster.kubectl_json("get", "ms", name, "-n", self.namespace)
        return int(found["spec"].get("replicas", -1))


@pytest.fixture
def gateway_stack(
    cluster: Cluster,
    crds: None,
    namespace: str,
    operator_process: StartOperator,
    tmp_path: Path,
) -> Iterator[GatewayStack]:
    prom = prometheus_process.start(tmp_path, free_port())
    mirror = fleet_process.start_fleet_mirror(
        cluster.kubeconfig,
        namespace,
        prom.sd_dir / "fleet.json",
        tmp_path / "fleet.json",
        tmp_path / "mirror.log",
        extra_args=["--loopback-pod-network", LOOPBACK_POD_NETWORK],
    )
    gateway: gateway_process.GatewayProcess | None = None
    operator_port = free_port()  # scraped: `thrifty report` integrates its cost series
    (prom.sd_dir / "operator.json").write_text(
        json.dumps(
            [{"targets": [f"127.0.0.1:{operator_port}"], "labels": {"job": "thrifty-operator"}}]
        )
    )
    env = {
        **OPERATOR_ENV,
        "THRIFTY_PROMETHEUS_URL": prom.url,
        "THRIFTY_METRICS_PORT": str(operator_port),
    }
    try:
        gateway = gateway_process.start(
            cluster.kubeconfig, namespace, tmp_path / "gateway.log", sd_dir=prom.sd_dir
        )
        operator = operator_process(namespaces=[namespace], env=env)
        yield GatewayStack(cluster, namespace, gateway, operator, prom.url)
    finally:
        if gateway is not None:
            gateway_process.stop(gateway)
        fleet_process.stop(mirror)
        stop_prometheus(prom)


def _served(url: str, api_key: str) -> bool | None:
    return completion(url, "chat", 30, api_key) == 200 or None


def completion(url: str, model: str, timeout_seconds: float, api_key: str | None = None) -> int:
    return answer(url, model, timeout_seconds, api_key)[0]


def answer(
    url: str, model: str, timeout_seconds: float, api_key: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 8}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"{}")


def test_scale_from_zero_through_the_gateway_on_real_endpoint_slices(
    gateway_stack: GatewayStack,
) -> None:
    stack = gateway_stack
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest(
        "chat", pool, minReplicas=0, maxReplicas=2, scaleToZeroIdleSeconds=300
    )
    manifest += "  replicas: 0\n"
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)

    def listed() -> list[str] | None:
        models = [m["id"] for m in stack.get("/v1/models")["data"]]
        return models or None

    assert eventually(listed, 60, "the gateway listing the ModelService") == ["chat"]
    assert stack.held("chat") == 0.0  # the series is there, at zero, before any traffic
    assert stack.replicas("chat") == 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as clients:
        pending = [clients.submit(completion, stack.gateway_url, "chat", 150) for _ in range(3)]
        eventually(lambda: stack.held("chat") == 3.0 or None, 30, "three requests held")
        eventually(lambda: stack.replicas("chat") >= 1 or None, 90, "scale from zero")
        statuses = [future.result(timeout=150) for future in pending]
    assert statuses == [200, 200, 200]
    assert stack.held("chat") == 0.0

    # The requests went to the pod's address as its EndpointSlice lists it (its loopback twin).
    slices = stack.cluster.kubectl_json(
        "get", "endpointslices", "-n", stack.namespace, "-l", "thrifty.dev/model-service=chat"
    )
    addresses = {
        address
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
        for address in endpoint["addresses"]
    }
    endpoints = stack.get("/debug/endpoints")
    assert sum(e["served"] for e in endpoints) == 3
    twins = {e["url"].removeprefix("http://").rsplit(":", 1)[0] for e in endpoints}
    assert twins == {"127." + a.split(".", 1)[1] for a in addresses}
    assert all(a.startswith("10.") for a in addresses)


def test_tenant_keys_limits_and_metering_through_the_gateway(gateway_stack: GatewayStack) -> None:
    stack = gateway_stack
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest("chat", pool, minReplicas=1, maxReplicas=1)
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    # One object, so that the gateway never sees the key without its limit.
    api_key = _tenant_key(stack, "gamma", {"thrifty.dev/requests-per-minute": "3"})

    def served() -> int | None:
        status = completion(stack.gateway_url, "chat", 30, api_key)
        return status if status == 200 else None

    eventually(served, 120, "the tenant's key accepted and a replica serving")
    started = time.monotonic()
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < 10:
        statuses.append(completion(stack.gateway_url, "chat", 30, api_key))
    elapsed = time.monotonic() - started
    # A bucket of 3 refilled at 3 per minute: the call above left at most 3 (the bucket is full
    # again after 20 s), and each 20 s the calls took refilled one more.
    assert statuses[-1] == 429, statuses
    assert 2 <= statuses.count(200) <= 3 + int(elapsed / 20.0), (statuses, elapsed)
    status, body = answer(stack.gateway_url, "chat", 30, "sk-not-a-key")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    text = stack.metrics()
    completion_tokens = metric_value(
        text, "thrifty_gateway_tokens_total", tenant="gamma", kind="completion"
    )
    assert completion_tokens == (1 + statuses.count(200)) * 8
    stack.cluster.kubectl("delete", "secret", "gamma-key", "-n", stack.namespace)
    eventually(
        lambda: completion(stack.gateway_url, "chat", 30, api_key) == 401 or None,
        30,
        "the revoked key refused",
    )


def _tenant_key(stack: GatewayStack, tenant: str, annotations: dict[str, str] | None = None) -> str:
    api_key = f"sk-e2e-{tenant}"
    metadata = {
        "name": f"{tenant}-key",
        "labels": {"thrifty.dev/tenant": tenant},
        "annotations": annotations or {},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "stringData": {"api-key": api_key},
    }
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=json.dumps(secret))
    return api_key


def test_a_tenant_report_adds_up_to_the_operators_cost_over_the_period(
    gateway_stack: GatewayStack,
) -> None:
    stack = gateway_stack
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool, price=2.5))
    manifest = model_service_manifest("chat", pool, minReplicas=1, maxReplicas=1)
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    keys = {tenant: _tenant_key(stack, tenant) for tenant in ("east", "west")}
    for key in keys.values():
        eventually(functools.partial(_served, stack.gateway_url, key), 120, "a tenant served")
    cost = f'thrifty_modelservice_cost_dollars_per_hour{{namespace="{stack.namespace}"}}'
    eventually(lambda: stack.promql(f"{cost} > 0") or None, 60, "the operator's cost scraped")

    period_seconds = 120
    start = float(int(time.time()) + 1)
    end = start + period_seconds
    sent = 0
    while time.time() < end and sent < 5000:  # east sends twice what west does
        for tenant in ("east", "east", "west"):
            assert completion(stack.gateway_url, "chat", 30, keys[tenant]) == 200
            sent += 1
    eventually(
        lambda: stack.promql(f"timestamp({cost}) > {end + 4}") or None, 30, "scrapes past the end"
    )
    iso = [time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t)) for t in (start, end)]
    report = subprocess.run(
        [
            sys.executable, "-m", "thrifty.cli", "report",
            "--prometheus-url", stack.prometheus_url,
            "--start", iso[0], "--end", iso[1],
            "--period", "hour", "--format", "json", "--resolution-seconds", "2",
        ],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    found = json.loads(report.stdout)
    lines = {line["tenant"]: line for line in found["lines"]}
    assert set(lines) == {"east", "west"}, found
    total = float(found["total_dollars"])
    # The operator's $/hour (1 replica x 1 GPU x $2.50) integrated over the period.
    expected = 2.5 * period_seconds / 3600
    assert abs(total - expected) / expected < 0.05, (total, expected)
    assert sum(float(line["dollars"]) for line in lines.values()) == pytest.approx(total)
    east, west = (float(lines[t]["dollars"]) for t in ("east", "west"))
    assert 1.6 < east / west < 2.4  # by their tokens: east sent twice what west did
