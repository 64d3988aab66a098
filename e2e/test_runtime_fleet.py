"""The fleet mirror on the local cluster: KWOK pods -> engines -> Prometheus -> the adapter.

A Deployment's pods land on the fake GPU nodes and run nothing; the fleet mirror (a real process,
watching the real API server) must give each Running pod an engine, register it with the real
Prometheus under the label contract (`namespace`, `pod`, `modelservice`), route requests to the
engines, and drain an engine whose pod goes away. The operator's Prometheus adapter must then read
signals that reflect the load.
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
from harness import Cluster
from harness.cluster import wait_until
from thrifty.adapters.prometheus import PrometheusSignals
from thrifty.api import modelservice
from thrifty.reconciler import render
from thrifty_runtime.loadgen import ClosedLoop, completions_url

pytestmark = pytest.mark.timeout(900)

MODEL_SERVICE = "llama-8b"
SPEC = modelservice.ModelServiceSpec.model_validate(
    {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        # A small batch so that a handful of clients builds a queue on the simulated H100.
        "engine": {"maxNumSeqs": 4, "shutdownTimeoutSeconds": 30},
        "pools": ["h100-on-demand"],
    }
)


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
                    "nodeSelector": {"thrifty.dev/pool": "h100-on-demand"},
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "engine",
                            "image": "vllm/vllm-openai:v0.19.0",
                            "args": render.engine_args(MODEL_SERVICE, SPEC),
                            "resources": {
                                "limits": {"nvidia.com/gpu": "1"},
                                "requests": {"nvidia.com/gpu": "1"},
                            },
                            "lifecycle": {
                                "preStop": {"sleep": {"seconds": render.PRE_STOP_SLEEP_SECONDS}}
                            },
                        }
                    ],
                },
            },
        },
    }
    return yaml.safe_dump(manifest)


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
        extra_args=["--vllm-work-dir", str(tmp_path / "vllm")],
    )
    started = Mirror(process, state_path, log_path)
    try:
        wait_until(
            lambda: started.state().get("router_url"), timeout_seconds=60, what="mirror router"
        )
        yield started
    finally:
        # Real engines drain for their --shutdown-timeout (30 s) before the mirror exits.
        fleet_process.stop(process, timeout_seconds=60)
        if process.returncode not in (0, -15):
            print(log_path.read_text(errors="replace")[-4000:])


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
    cluster: Cluster, namespace: str, mirror: Mirror
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
        router = str(mirror.state()["router_url"])
        url = completions_url(router, namespace, MODEL_SERVICE)
        with ClosedLoop([url], concurrency=16, max_tokens=400) as load:

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


def _served_by_pod(router: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(f"{router}/engines", timeout=10) as response:
        return {str(e["pod"]): int(e["served"]) for e in json.loads(response.read())}


def _scale(cluster: Cluster, namespace: str, replicas: int) -> None:
    cluster.kubectl(
        "scale", "deployment/llama-8b-engine", "-n", namespace, f"--replicas={replicas}"
    )


@pytest.mark.vllm
@pytest.mark.vllm_scale
@pytest.mark.timeout(1800)
def test_real_vllm_engines_scale_0_1_2_1_under_load_and_the_scale_down_drains(
    cluster: Cluster, namespace: str, mirror: Mirror
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
    router = str(mirror.state()["router_url"])
    url = completions_url(router, namespace, MODEL_SERVICE)
    source = PrometheusSignals(cluster.prometheus_url)
    try:
        # Modest load: on two shared cores a loaded first engine slows the second one's start.
        with ClosedLoop([url], concurrency=4, max_tokens=128) as load:
            _scale(cluster, namespace, 2)
            wait_until(
                lambda: len(mirror.engines()) == 2 or None,
                timeout_seconds=900,  # 5 min seen on a busy 2-core machine (load average 6-7)
                what="a second real vLLM engine",
                interval_seconds=2,
            )
            wait_until(
                lambda: (
                    s if len(s := _served_by_pod(router)) == 2 and min(s.values()) > 0 else None
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
