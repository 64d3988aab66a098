"""thrifty-gateway (`thrifty_runtime.gateway`) as a process, for e2e tests and benchmarks.

The gateway runs with a kubeconfig, exactly as in a pod with its service account: it watches
ModelServices and the EndpointSlices the real EndpointSlice controller writes for their Services.
On the local cluster it is told the loopback pod network (harness.session.LOOPBACK_POD_NETWORK),
so it connects to the 127/8 twin of each slice address, where the fleet mirror started with the
same option serves the pod's engine (thrifty_runtime.podnet). Registered in a Prometheus's file_sd
directory, its held-requests gauge is what the operator reads to scale from zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fleet_process import stop as stop_process
from harness.cluster import wait_until
from harness.ports import free_port
from harness.session import LOOPBACK_POD_NETWORK

REPO_ROOT = Path(__file__).resolve().parent.parent
HELD_METRIC = "thrifty_router_requests_held"
"""The gateway's gauge of held requests (the name the operator reads by default)."""
JOB = "thrifty-gateway"
READY_TIMEOUT_SECONDS = 60.0


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    file_sd: Path | None = None

    @property
    def completions_url(self) -> str:
        return f"{self.url}/v1/completions"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def held(self, namespace: str, model_service: str) -> float | None:
        """The held gauge of one ModelService, or None while the gateway exports no series."""
        wanted = {"namespace": namespace, "modelservice": model_service}
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == HELD_METRIC and sample.labels == wanted:
                    return float(sample.value)
        return None

    def models(self) -> list[str]:
        return [str(m["id"]) for m in self.get("/v1/models")["data"]]

    def endpoints(self) -> list[dict[str, Any]]:
        """`/debug/endpoints`: each ready endpoint with its pod, in-flight and served counts."""
        listed: list[dict[str, Any]] = self.get("/debug/endpoints")
        return listed

    def wait_serving(self, model: str, timeout_seconds: float = 60) -> None:
        """Until `/v1/models` lists `model` (its ModelService seen by the watch)."""
        wait_until(
            lambda: model in self.models() or None,
            timeout_seconds=timeout_seconds,
            what=f"the gateway listing {model}",
            interval_seconds=0.5,
        )


def _ready(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200 or None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def start(
    kubeconfig: Path,
    namespace: str,
    log_path: Path,
    *,
    sd_dir: Path | None = None,
    hold_timeout_seconds: float = 150,
    extra_args: Sequence[str] = (),
) -> GatewayProcess:
    """Starts the gateway for `namespace` (anonymous access allowed, API-key Secrets read from
    the same namespace) and waits for `/readyz` (its watches synced). With `sd_dir`, it is a
    scrape target of the Prometheus watching that file_sd directory (file `gateway.json`, job
    `thrifty-gateway`, no other target label: its series carry their own `namespace`)."""
    port = free_port()
    command = [
        sys.executable, "-m", "thrifty_runtime.gateway",
        "--kubeconfig", str(kubeconfig),
        "--namespace", namespace,
        "--host", "127.0.0.1", "--port", str(port),
        "--loopback-pod-network", LOOPBACK_POD_NETWORK,
        "--hold-timeout", str(hold_timeout_seconds),
        "--allow-anonymous",
        "--api-key-namespace", namespace,
        *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        if sd_dir is not None:
            gateway.file_sd = sd_dir / "gateway.json"
            gateway.file_sd.write_text(
                json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": JOB}}])
            )

        def ready_or_exited() -> bool | None:
            return False if process.poll() is not None else _ready(gateway.url)

        if not wait_until(
            ready_or_exited,
            timeout_seconds=READY_TIMEOUT_SECONDS,
            what="the gateway's watches to sync (/readyz)",
            interval_seconds=0.5,
        ):
            raise RuntimeError(f"the gateway exited ({process.returncode}): see {log_path}")
    except BaseException:
        stop(gateway)
        raise
    return gateway


def stop(gateway: GatewayProcess) -> None:
    """SIGTERM (the gateway drains), then SIGKILL if it does not exit; its target goes too."""
    stop_process(gateway.process)
    if gateway.file_sd is not None:
        gateway.file_sd.unlink(missing_ok=True)
