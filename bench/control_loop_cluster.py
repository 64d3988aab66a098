"""The control loop measured on the local cluster (see control_loop.py for the command).

1. Reaction time: a ModelService at 1 replica, steady; a step of load (the first burst of the Azure
   code trace, 10x faster) starts at t0; t1 is when `spec.replicas` changes (the scale patch).
   Repeated after the replicas return to 1. Compared with one decision interval (the default 15 s)
   plus one scrape interval (the harness's Prometheus scrapes every 2 s).
2. CPU: 100 ModelServices in mode Auto (replicas 0: the cluster has 28 fake GPUs, not 100; every
   pass still reads the object, its pool and pods, the batched Prometheus queries and the HPAs, and
   runs the policy), the operator's process CPU time over a window after warm-up, as a share of one
   core. The pure decision path with full signals is measured by `control_loop.py core`.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "e2e"))

import gateway_process  # noqa: E402
from fleet_process import start_fleet_mirror, stop  # noqa: E402
from harness import Cluster, Session, connect_existing, start_local  # noqa: E402
from harness.cluster import wait_until  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.session import LOOPBACK_POD_NETWORK  # noqa: E402
from operator_process import start_operator  # noqa: E402

DECISION_INTERVAL_SECONDS = 15.0
SCRAPE_INTERVAL_SECONDS = 2.0
STEPS = 8
SERVICES = 1000
CPU_WINDOW_SECONDS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

POOL = """
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata:
  name: bench-h100
spec:
  accelerator: NVIDIA-H100-80GB-HBM3
  gpuMemoryGib: 80
  gpusPerNode: 8
  nodeSelector:
    thrifty.dev/pool: h100-on-demand
  tolerations:
    - key: kwok.x-k8s.io/node
      operator: Exists
      effect: NoSchedule
  pricePerGpuHour: 2.49
"""


def model_service(name: str, *, replicas: int | None, min_replicas: int) -> str:
    wanted = "" if replicas is None else f"  replicas: {replicas}\n"
    return f"""
apiVersion: thrifty.dev/v1alpha1
kind: ModelService
metadata:
  name: {name}
spec:
  model:
    uri: hf://meta-llama/Llama-3.1-8B-Instruct
  pools: [bench-h100]
{wanted}  scaling:
    minReplicas: {min_replicas}
    maxReplicas: 4
    queueDepthTargetPerReplica: 4
    scaleDownDelaySeconds: 5
"""


def in_flight(gateway: gateway_process.GatewayProcess) -> int:
    """Requests the gateway has in flight to the engines (its /debug/endpoints)."""
    return sum(int(endpoint["in_flight"]) for endpoint in gateway.endpoints())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def operator_env(prometheus_url: str) -> dict[str, str]:
    return {
        "THRIFTY_PROMETHEUS_URL": prometheus_url,
        "THRIFTY_DECISION_INTERVAL_SECONDS": str(DECISION_INTERVAL_SECONDS),
        "THRIFTY_COLD_START_SECONDS": "10",
        "THRIFTY_SCALE_DOWN_STEP_SECONDS": "5",
        "THRIFTY_LEADER_ELECTION": "false",
        "THRIFTY_METRICS_PORT": "0",
        # Production resync periods, so the CPU figure is not inflated by test settings.
        "THRIFTY_RESYNC_SECONDS": "30",
        "THRIFTY_POOL_RESYNC_SECONDS": "30",
        "THRIFTY_BUDGET_RESYNC_SECONDS": "30",
        "MALLOC_ARENA_MAX": "2",  # as the operator image sets it (Dockerfile)
    }


def reaction_times(cluster: Cluster, workdir: Path, steps: int) -> list[float]:
    namespace = "bench-latency"
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=model_service("chat", replicas=None, min_replicas=1),
    )
    assert cluster.scrape_sd_dir is not None
    mirror = start_fleet_mirror(
        cluster.kubeconfig,
        namespace,
        cluster.scrape_sd_dir / "bench-fleet.json",
        workdir / "fleet.json",
        workdir / "mirror.log",
        extra_args=["--loopback-pod-network", LOOPBACK_POD_NETWORK],
    )
    try:
        gateway = gateway_process.start(cluster.kubeconfig, namespace, workdir / "gateway.log")
    except BaseException:
        stop(mirror)
        raise
    operator = start_operator(
        cluster.kubeconfig,
        namespaces=[namespace],
        env=operator_env(cluster.prometheus_url),
        log_dir=workdir,
    )
    api = client.CustomObjectsApi()

    def service() -> dict[str, Any]:
        found = api.get_namespaced_custom_object(
            "thrifty.dev", "v1alpha1", namespace, "modelservices", "chat"
        )
        assert isinstance(found, dict), found
        return found

    def replicas() -> int:
        return int(service()["spec"].get("replicas", 1))

    def condition_true(kind: str) -> bool:
        found = service()
        conditions = (found.get("status") or {}).get("conditions", [])
        return any(c["type"] == kind and c["status"] == "True" for c in conditions)

    measured: list[float] = []
    try:
        gateway.wait_serving("chat")
        for step in range(steps):
            wait_until(
                lambda: (replicas() == 1 and condition_true("MetricsAvailable")) or None,
                timeout_seconds=300,
                what="steady at one replica",
                interval_seconds=1,
            )
            time.sleep(DECISION_INTERVAL_SECONDS * (step % 4) / 4)  # spread t0 over the interval
            load = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "thrifty_runtime.loadgen",
                    "--gateway",
                    gateway.url,
                    "--model",
                    "chat",
                    "--trace",
                    "azure-code",
                    "--speedup",
                    "10",
                    "--start",
                    "180",
                    "--max-seconds",
                    "25",
                    "--max-requests",
                    "100000",
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # t0: the first request in flight at the gateway (not the replayer's start-up).
            t0 = wait_until(
                lambda: time.monotonic() if in_flight(gateway) > 0 else None,
                timeout_seconds=60,
                what="the first request",
                interval_seconds=0.05,
            )
            while replicas() == 1 and time.monotonic() - t0 < 120:
                time.sleep(0.1)
            measured.append(time.monotonic() - t0)
            print(f"step {step}: scale patch after {measured[-1]:.1f} s", file=sys.stderr)
            load.wait(timeout=120)
    finally:
        operator.stop()
        gateway_process.stop(gateway)
        stop(mirror)
    return measured


NAMESPACES = 10
L4_POOL = """
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata:
  name: bench-l4
spec:
  accelerator: NVIDIA-L4
  gpuMemoryGib: 24
  gpusPerNode: 4
  nodeSelector:
    thrifty.dev/pool: l4
  tolerations:
    - key: kwok.x-k8s.io/node
      operator: Exists
      effect: NoSchedule
  pricePerGpuHour: 0.8
"""


def fleet_manifests(services: int) -> dict[str, str]:
    """`services` ModelServices over NAMESPACES namespaces, both pools, half of them in their
    namespace's Hard CostBudget; replicas 0 (the cluster has 28 fake GPUs, not 1,000), so every
    pass reads, decides and holds without pods."""
    by_namespace: dict[str, list[str]] = {}
    for i in range(services):
        namespace = f"bench-fleet-{i % NAMESPACES}"
        pool = "bench-h100" if i % 3 else "bench-l4"
        budget = "  costTarget: {budgetRef: {name: team}}\n" if i % 2 else ""
        body = model_service(f"ms-{i:04d}", replicas=0, min_replicas=0)
        body = body.replace("pools: [bench-h100]", f"pools: [{pool}]") + budget
        by_namespace.setdefault(namespace, []).append(body)
    team = "apiVersion: thrifty.dev/v1alpha1\nkind: CostBudget\nmetadata: {name: team}\n"
    team += "spec: {maxDollarsPerHour: 100, enforcement: Hard}\n"
    return {ns: "\n---\n".join([team, *bodies]) for ns, bodies in by_namespace.items()}


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def api_requests(metrics_url: str) -> dict[str, float]:
    """thrifty_kube_api_requests_total by verb, from the operator's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    # Only this family's lines: the whole exposition of 1,000 services is too big to parse per poll.
    wanted = "\n".join(
        line for line in text.splitlines() if line.startswith("thrifty_kube_api_requests")
    )
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(wanted):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["verb"]] = sample.value
    return counts


def fleet_load(cluster: Cluster, workdir: Path, services: int) -> dict[str, float]:
    """The operator over `services` settled ModelServices: CPU share of one core, RSS, and the
    API requests its own code sends per decision interval."""
    for namespace, manifests in fleet_manifests(services).items():
        cluster.kubectl("create", "namespace", namespace, check=False)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifests, timeout=600)
    port = free_port()
    env = {**operator_env(cluster.prometheus_url), "THRIFTY_METRICS_PORT": str(port)}
    operator = start_operator(cluster.kubeconfig, namespaces=[], env=env, log_dir=workdir)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        # Warm-up: the first pass applies every object's Deployment, Service and PDB and writes
        # every status; settled is when a whole resync period adds no write.
        settled = wait_until(
            lambda: _settled(metrics_url),
            timeout_seconds=1800,
            what="a resync period without writes",
            interval_seconds=1,
        )
        print(f"settled after warm-up: {settled}", file=sys.stderr)
        before, began = cpu_seconds(operator.process.pid), time.monotonic()
        requests_before = api_requests(metrics_url)
        time.sleep(CPU_WINDOW_SECONDS)
        elapsed = time.monotonic() - began
        used = cpu_seconds(operator.process.pid) - before
        requests_after = api_requests(metrics_url)
        passes = elapsed / DECISION_INTERVAL_SECONDS
        sent = {v: requests_after.get(v, 0) - requests_before.get(v, 0) for v in requests_after}
        return {
            "services": services,
            "cpu_share_of_one_core": round(used / elapsed, 4),
            "rss_megabytes": round(rss_megabytes(operator.process.pid), 1),
            "api_requests_per_pass": round(sum(sent.values()) / passes, 2),
            "writes_in_window": sum(v for k, v in sent.items() if k in ("patch", "create")),
            "window_seconds": round(elapsed),
        }
    finally:
        operator.stop()


_last_writes: list[float] = []


def _settled(metrics_url: str) -> bool | None:
    """True once a resync period (30 s) passed with no write; polled every second."""
    try:
        counts = api_requests(metrics_url)
    except OSError:
        return None
    writes = counts.get("patch", 0) + counts.get("create", 0)
    _last_writes.append(writes)
    window = _last_writes[-31:]
    return True if len(window) == 31 and window[0] == window[-1] and writes > 0 else None


def run_cluster(*, measure_cpu: bool = True, steps: int = STEPS, services: int = SERVICES) -> int:
    # SIGTERM as KeyboardInterrupt, so the cluster and every process are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    existing = os.environ.get("THRIFTY_E2E_KUBECONFIG")
    session: Session = connect_existing(Path(existing)) if existing else start_local()
    workdir = REPO_ROOT / "out" / "bench-control-loop"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cluster = session.cluster
        config.load_kube_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cluster.apply(POOL)
        cluster.apply(L4_POOL)
        fleet: dict[str, float] = {}
        if measure_cpu:
            fleet = fleet_load(cluster, workdir, services)
            print(f"operator over the fleet: {json.dumps(fleet)}", file=sys.stderr)
        times = reaction_times(cluster, workdir, steps)
    finally:
        session.stop()
    p95 = sorted(times)[max(0, round(0.95 * len(times)) - 1)]
    budget = DECISION_INTERVAL_SECONDS + SCRAPE_INTERVAL_SECONDS
    print(
        json.dumps(
            {
                "reaction_seconds": [round(t, 1) for t in times],
                "reaction_p50_seconds": round(statistics.median(times), 1),
                "reaction_p95_seconds": round(p95, 1),
                "target_seconds": budget,
                "fleet": fleet,
            },
            indent=2,
        )
    )
    return 0
