"""The fleet mirror on the local cluster: KWOK pods -> engines -> Prometheus -> the adapter.

A Deployment's pods land on the fake GPU nodes and run nothing; the fleet mirror (a real process,
watching the real API server) must give each Running pod an engine on its pod IP's loopback twin,
register it with the real Prometheus under the label contract (`namespace`, `pod`, `modelservice`),
and drain an engine whose pod goes away. Requests go through thrifty-gateway, which finds the
engines from the EndpointSlices of a Service selecting the pods, as in a cluster (the operator does
not run: the ModelService object only names the model for the gateway). The operator's Prometheus
adapter must then read signals that reflect the load.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import fleet_process
import gateway_process
from harness import Cluster
from harness.cluster import wait_until
from harness.session import LOOPBACK_POD_NETWORK
from test_autoscale import crds
from thrifty.adapters.prometheus import PrometheusSignals
from thrifty.api import modelservice
from thrifty.reconciler import render
from thrifty_runtime.loadgen import ClosedLoop

__all__ = ["crds"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.timeout(900)

MODEL_SERVICE = "llama-8b"
SPEC_BODY: dict[str, Any] = {
    "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
    # A small batch so that a handful of clients builds a queue on the simulated H100.
    "engine": {"maxNumSeqs": 4, "shutdownTimeoutSeconds": 30},
    "pools": ["h100-on-demand"],
}
SPEC = modelservice.ModelServiceSpec.model_validate(SPEC_BODY)


def _deployment(namespace: str, replicas: int, engine: str = "sim") -> str:
    """The engine Deployment as the operator renders it, reduced to what KWOK needs."""
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llama-8b-engine", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"thrifty.dev/model-service": MODEL_SERVICE}},
            "template": {
                "metadata": {
                    "labels": {"thrifty.dev/model-service": MODEL_SERVICE},
                    "annotations": {"thrifty.dev/engine": engine},
                },
                "spec": {
                    "terminationGracePeriodSeconds": render.termination_grace_seconds(SPEC),
                    "nodeSelector": {"thrifty.dev/pool": "h100-on-demand"},
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "engine",
                            "image": "vllm/vllm-openai:v0.19.0",
                            "args": render.engine_args(MODEL_SERVICE, SPEC),
                            "ports": [
                                {
                                    "name": "http",
                                    "containerPort": render.ENGINE_PORT,
                                    "protocol": "TCP",
                                }
                            ],
                            "resources": {
                                "limits": {"nvidia.com/gpu": "1"},
                                "requests": {"nvidia.com/gpu": "1"},
                            },
                            "lifecycle": {"preStop": render.pre_stop(SPEC)},
                        }
                    ],
                },
            },
        },
    }
    return yaml.safe_dump(manifest)


def _served_objects(namespace: str) -> str:
    """The ModelService (for the gateway: it serves `model` = its name) and its Service as
    render.service renders it: its EndpointSlices list the ready pods' addresses."""
    model_service = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": MODEL_SERVICE, "namespace": namespace},
        "spec": SPEC_BODY,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": render.engine_name(MODEL_SERVICE),
            "namespace": namespace,
            "labels": render.labels(MODEL_SERVICE),
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": render.selector_labels(MODEL_SERVICE),
            "ports": [{"name": "http", "port": render.ENGINE_PORT, "targetPort": "http"}],
        },
    }
    return yaml.safe_dump_all([model_service, service])


@dataclass
class Mirror:
    process: subprocess.Popen[bytes]
    state_path: Path
    log_path: Path

    def state(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def engines(self) -> list[dict[str, Any]]:
        return list(self.state().get("engines", []))


@pytest.fixture
def mirror(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Mirror]:
    if cluster.scrape_sd_dir is None:
        pytest.fail("the fleet mirror needs Prometheus's file_sd directory", pytrace=False)
    state_path = tmp_path / "mirror-state.json"
    log_path = tmp_path / "mirror.log"
    process = fleet_process.start_fleet_mirror(
        cluster.kubeconfig,
        namespace,
        cluster.scrape_sd_dir / f"fleet-{namespace}.json",
        state_path,
        log_path,
        extra_args=[
            "--vllm-work-dir", str(tmp_path / "vllm"),
            "--loopback-pod-network", LOOPBACK_POD_NETWORK,
        ],
    )  # fmt: skip
    started = Mirror(process, state_path, log_path)
    try:
        wait_until(
            lambda: "engines" in started.state() or None,
            timeout_seconds=60,
            what="the mirror's first state",
        )
        yield started
    finally:
        # Real engines drain for their --shutdown-timeout (30 s) before the mirror exits.
        fleet_process.stop(process, timeout_seconds=60)
        if process.returncode not in (0, -15):
            print(log_path.read_text(errors="replace")[-4000:])


@pytest.fixture
def gateway(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> Iterator[gateway_process.GatewayProcess]:
    """thrifty-gateway for the namespace, serving the ModelService once it is applied."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_served_objects(namespace))
    started = gateway_process.start(cluster.kubeconfig, namespace, tmp_path / "gateway.log")
    try:
        started.wait_serving(MODEL_SERVICE)
        yield started
    finally:
        gateway_process.stop(started)


def _pod_names(cluster: Cluster, namespace: str) -> set[str]:
    listing = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"thrifty.dev/model-service={MODEL_SERVICE}"
    )
    return {
        p["metadata"]["name"]
        for p in listing["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def _scraped_pods(source: PrometheusSignals, namespace: str) -> set[str]:
    result = source.query(f'up{{namespace="{namespace}",modelservice="{MODEL_SERVICE}"}} == 1')
    return {str(series["metric"]["pod"]) for series in result}


def test_pods_get_engines_that_prometheus_scrapes_and_the_adapter_reads(
    cluster: Cluster, namespace: str, mirror: Mirror, gateway: gateway_process.GatewayProcess
) -> None:
    cluster.apply(_deployment(namespace, replicas=2))
    pods = wait_until(
        lambda: names if len(names := _pod_names(cluster, namespace)) == 2 else None,
        timeout_seconds=120,
        what="2 Running pods on KWOK nodes",
    )
    wait_until(
        lambda: {e["pod"] for e in mirror.engines()} == pods or None,
        timeout_seconds=60,
        what="one engine per Running pod",
    )
    source = PrometheusSignals(cluster.prometheus_url)
    try:
        wait_until(
            lambda: _scraped_pods(source, namespace) == pods or None,
            timeout_seconds=60,
            what="Prometheus scraping both engines with the pod labels",
        )
        wait_until(
            lambda: _routed_pods(gateway) == pods or None,
            timeout_seconds=60,
            what="the gateway routing to both pods from their EndpointSlice",
        )
        url = gateway.completions_url
        with ClosedLoop([url], concurrency=16, max_tokens=400, model=MODEL_SERVICE) as load:

            def loaded() -> Any:
                reading = asyncio.run(source.read(namespace, MODEL_SERVICE))
                signals = reading.signals
                if signals is None or signals.requests_waiting <= 0:
                    return None
                if signals.generation_tokens_per_second <= 0 or signals.requests_per_second <= 0:
                    return None
                return signals

            signals = wait_until(
                loaded, timeout_seconds=120, what="signals that show the load", interval_seconds=2
            )
            # Scale down under load: the leaving pod's engine must finish what it holds.
            cluster.kubectl("scale", "deployment/llama-8b-engine", "-n", namespace, "--replicas=1")
            wait_until(
                lambda: len(mirror.engines()) == 1 or None,
                timeout_seconds=120,
                what="the removed pod's engine to drain and stop",
            )
            remaining = mirror.engines()[0]["pod"]
        report = load.report
    finally:
        source.close()
    assert signals.requests_running > 0
    assert signals.requests_waiting > 0  # 16 clients on 2 engines of --max-num-seqs 4
    assert signals.prompt_tokens_per_second > 0
    assert signals.requests_per_second > 0
    assert signals.ttft_p95_seconds is not None
    assert remaining in pods
    # Every request sent was answered in full: the drain cut nothing.
    assert report.ok > 0
    assert dict(report.errors) == {}
    assert set(report.statuses) == {200}
    assert report.short_completions == 0


def _routed_pods(gateway: gateway_process.GatewayProcess) -> set[str]:
    return {str(e["pod"]) for e in gateway.endpoints()}


def _served_by_pod(gateway: gateway_process.GatewayProcess) -> dict[str, int]:
    """Requests each ready endpoint answered, by pod, from the gateway's /debug/endpoints."""
    return {str(e["pod"]): int(e["served"]) for e in gateway.endpoints()}


def _scale(cluster: Cluster, namespace: str, replicas: int) -> None:
    cluster.kubectl(
        "scale", "deployment/llama-8b-engine", "-n", namespace, f"--replicas={replicas}"
    )


@pytest.mark.vllm
@pytest.mark.vllm_scale
@pytest.mark.timeout(1800)
def test_real_vllm_engines_scale_0_1_2_1_under_load_and_the_scale_down_drains(
    cluster: Cluster, namespace: str, mirror: Mirror, gateway: gateway_process.GatewayProcess
) -> None:
    """Real vLLM behind the mirror (pods annotated `thrifty.dev/engine: vllm`)."""
    cluster.apply(_deployment(namespace, replicas=0, engine="vllm"))
    _scale(cluster, namespace, 1)
    wait_until(
        lambda: len(mirror.engines()) == 1 or None,
        timeout_seconds=1200,  # includes the cached vLLM install and tiny model build
        what="a real vLLM engine for the first pod",
        interval_seconds=2,
    )
    url = gateway.completions_url
    source = PrometheusSignals(cluster.prometheus_url)
    try:
        # Modest load: on two shared cores a loaded first engine slows the second one's start.
        with ClosedLoop([url], concurrency=4, max_tokens=128, model=MODEL_SERVICE) as load:
            _scale(cluster, namespace, 2)
            wait_until(
                lambda: len(mirror.engines()) == 2 or None,
                timeout_seconds=900,  # 5 min seen on a busy 2-core machine (load average 6-7)
                what="a second real vLLM engine",
                interval_seconds=2,
            )
            wait_until(
                lambda: (
                    s if len(s := _served_by_pod(gateway)) == 2 and min(s.values()) > 0 else None
                ),
                timeout_seconds=120,
                what="both engines serving requests",
            )
            reading = wait_until(
                lambda: (
                    r
                    if (r := asyncio.run(source.read(namespace, MODEL_SERVICE))).signals
                    and r.signals.requests_per_second > 0
                    else None
                ),
                timeout_seconds=180,
                what="signals from both real engines",
                interval_seconds=2,
            )
            _scale(cluster, namespace, 1)
            wait_until(
                lambda: len(mirror.engines()) == 1 or None,
                timeout_seconds=300,
                what="the removed pod's vLLM to drain and exit",
                interval_seconds=2,
            )
        report = load.report
    finally:
        source.close()
    assert reading.signals is not None and reading.signals.generation_tokens_per_second > 0
    assert report.ok > 0
    assert dict(report.errors) == {}
    assert set(report.statuses) == {200}
    assert report.short_completions == 0  # no request was cut or aborted by the scale-down
