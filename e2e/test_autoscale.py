"""The control loop in the cluster: Prometheus -> policy -> scale subresource, with the operator
running as a process, simulated vLLM engines behind the fleet mirror, and load from the replayer
through thrifty-gateway.

Each scenario runs its own Prometheus (so one can be stopped), its own fleet mirror, gateway and
operator with a short decision interval, in a fresh namespace, and asserts on what a user sees:
`spec.replicas`, pods, conditions, Events and the operator's /metrics. Requests reach the engines
as in a cluster: the gateway routes on `model` to the ready addresses of the ModelService's
EndpointSlices, where the mirror serves each pod's engine (on the loopback twin of its pod IP), and
the held-requests gauge the operator scales from zero on is the gateway's, scraped by Prometheus.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import fleet_process
import gateway_process
from harness import Cluster, chaos
from harness import prometheus as prometheus_process
from harness.cluster import wait_until
from harness.ports import free_port
from harness.session import LOOPBACK_POD_NETWORK
from operator_process import OperatorProcess, StartOperator, operator_process

__all__ = ["operator_process"]  # the fixture, re-exported for pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

FAST_ELECTION_ENV = {
    "THRIFTY_LEASE_DURATION_SECONDS": "6",
    "THRIFTY_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "THRIFTY_LEASE_RETRY_PERIOD_SECONDS": "1",
}


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    for crd in ("modelservices", "gpupools", "costbudgets"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.thrifty.dev", "--timeout=60s"
        )


def pool_manifest(name: str, *, max_gpus: int | None = None, price: float = 2.5) -> str:
    quota = f"\n  maxGpus: {max_gpus}" if max_gpus is not None else ""
    return f"""
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata:
  name: {name}
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
  pricePerGpuHour: {price}{quota}
"""


def model_service_manifest(name: str, pool: str, **scaling: Any) -> str:
    settings = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "queueDepthTargetPerReplica": 4,
        "scaleDownDelaySeconds": 10,
        "mode": "Auto",
        **scaling,
    }
    lines = "\n".join(f"    {key}: {value}" for key, value in settings.items())
    return f"""
apiVersion: thrifty.dev/v1alpha1
kind: ModelService
metadata:
  name: {name}
spec:
  model:
    uri: hf://meta-llama/Llama-3.1-8B-Instruct
  servedModelName: {name}
  pools: [{pool}]
  scaling:
{lines}
"""


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition, or None if absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def eventually(probe: Callable[[], T | None], seconds: float, what: str) -> T:
    return wait_until(probe, timeout_seconds=seconds, what=what, interval_seconds=1.0)


@dataclass
class Stack:
    """One scenario's world: a private Prometheus, the fleet mirror, the gateway and the
    operator."""

    cluster: Cluster
    namespace: str
    workdir: Path
    prometheus: prometheus_process.PrometheusProcess
    mirror: subprocess.Popen[bytes]
    gateway: gateway_process.GatewayProcess
    operator: OperatorProcess
    start_operator: Callable[[], OperatorProcess]
    loads: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_ports: dict[int, int] = field(default_factory=dict)
    """The /metrics port of each operator process started, by pid."""

    def decisions(self, name: str) -> float:
        """Decisions the current operator made for the ModelService (its decision counter)."""
        text = scrape(self.metrics_ports[self.operator.process.pid])
        total = 0.0
        for line in text.splitlines():
            if line.startswith("thrifty_autoscaler_decisions_total{") and (
                f'namespace="{self.namespace}"' in line and f'modelservice="{name}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def after_decisions(self, name: str, count: int) -> None:
        """Waits until the operator has decided `count` more times for the ModelService."""
        target = self.decisions(name) + count
        eventually(
            lambda: True if self.decisions(name) >= target else None,
            30 + 10 * count,
            f"{count} more decisions",
        )

    def load(
        self, model_service: str, *, speedup: float = 5, seconds: float = 60, start: float = 180
    ) -> None:
        """Replays the Azure code trace from `start` (trace seconds; 180: its first burst), sped
        up, against the ModelService through the gateway, in the background. Its served model
        name is its name (model_service_manifest); the load starts once the gateway lists it."""
        self.gateway.wait_serving(model_service)
        log = (self.workdir / f"load-{len(self.loads)}.log").open("wb")
        argv = [
            sys.executable,
            "-m",
            "thrifty_runtime.loadgen",
            "--gateway",
            self.gateway.url,
            "--model",
            model_service,
            "--trace",
            "azure-code",
            "--speedup",
            str(speedup),
            "--start",
            str(start),
            "--max-seconds",
            str(seconds),
            "--max-requests",
            "100000",
        ]
        self.loads.append(subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=log))

    def stop_load(self) -> None:
        for load in self.loads:
            if load.poll() is None:
                load.terminate()
                load.wait(timeout=30)

    def get(self, name: str) -> dict[str, Any]:
        return self.cluster.kubectl_json("get", "ms", name, "-n", self.namespace)

    def replicas(self, name: str) -> int:
        return int(self.get(name)["spec"].get("replicas", -1))

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for found in (self.get(name).get("status") or {}).get("conditions", []):
            if found["type"] == type_:
                return dict(found)
        return {}

    def events(self, reason: str) -> list[dict[str, Any]]:
        listed = self.cluster.kubectl_json("get", "events", "-n", self.namespace)
        return [e for e in listed.get("items", []) if e.get("reason") == reason]

    def pods(self, phase: str) -> list[str]:
        listed = self.cluster.kubectl_json(
            "get", "pods", "-n", self.namespace, "--field-selector", f"status.phase={phase}"
        )
        return [p["metadata"]["name"] for p in listed.get("items", [])]

    def held(self, model_service: str) -> float | None:
        """The gateway's held-requests gauge for the ModelService."""
        return self.gateway.held(self.namespace, model_service)

    def stop(self) -> None:
        self.stop_load()
        gateway_process.stop(self.gateway)
        if self.mirror.poll() is None:
            fleet_process.stop(self.mirror)
        stop_prometheus(self.prometheus)


def stop_prometheus(process: prometheus_process.PrometheusProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, os.WNOHANG)
        time.sleep(0.2)


OPERATOR_ENV = {
    "THRIFTY_DECISION_INTERVAL_SECONDS": "3",
    "THRIFTY_COLD_START_SECONDS": "10",
    "THRIFTY_METRICS_STALENESS_SECONDS": "20",
    "THRIFTY_LEADER_ELECTION": "false",
    "THRIFTY_METRICS_PORT": "0",
    "THRIFTY_SCALE_DOWN_STEP_SECONDS": "5",
}


@pytest.fixture
def stack(
    cluster: Cluster,
    crds: None,
    namespace: str,
    operator_process: StartOperator,
    tmp_path: Path,
) -> Iterator[Stack]:
    prom = prometheus_process.start(tmp_path, free_port())
    mirror = fleet_process.start_fleet_mirror(
        cluster.kubeconfig,
        namespace,
        prom.sd_dir / "fleet.json",
        tmp_path / "fleet.json",
        tmp_path / "mirror.log",
        extra_args=["--loopback-pod-network", LOOPBACK_POD_NETWORK],
    )
    try:
        gateway = gateway_process.start(
            cluster.kubeconfig, namespace, tmp_path / "gateway.log", sd_dir=prom.sd_dir
        )
    except BaseException:  # nothing of the Stack's yet: stop what was started
        fleet_process.stop(mirror)
        stop_prometheus(prom)
        raise
    env = {**OPERATOR_ENV, "THRIFTY_PROMETHEUS_URL": prom.url}
    ports: dict[int, int] = {}

    def start() -> OperatorProcess:
        port = free_port()
        started = operator_process(
            namespaces=[namespace], env={**env, "THRIFTY_METRICS_PORT": str(port)}
        )
        ports[started.process.pid] = port
        return started

    try:
        operator = start()
    except BaseException:
        gateway_process.stop(gateway)
        fleet_process.stop(mirror)
        stop_prometheus(prom)
        raise
    world = Stack(
        cluster=cluster,
        namespace=namespace,
        workdir=tmp_path,
        prometheus=prom,
        mirror=mirror,
        gateway=gateway,
        operator=operator,
        start_operator=start,
        metrics_ports=ports,
    )
    try:
        yield world
    finally:
        world.stop()


def test_two_operators_only_the_lease_holder_acts_and_a_successor_takes_over(
    cluster: Cluster, crds: None, namespace: str, operator_process: StartOperator
) -> None:
    pool = f"pool-{namespace}"[:60]
    cluster.apply(pool_manifest(pool))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=model_service_manifest("ms", pool))
    ports = [free_port(), free_port()]
    operators: list[OperatorProcess] = [
        operator_process(
            namespaces=[namespace],
            env={
                **FAST_ELECTION_ENV,
                "THRIFTY_DECISION_INTERVAL_SECONDS": "1",
                "THRIFTY_METRICS_PORT": str(port),
                "THRIFTY_LEASE_NAMESPACE": namespace,
                "THRIFTY_PROMETHEUS_URL": cluster.prometheus_url,
            },
        )
        for port in ports
    ]

    def decisions(port: int) -> float:
        text = scrape(port)
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("thrifty_autoscaler_decisions_total{")
        )

    def leaders() -> list[int] | None:
        flags = [metric_value(scrape(port), "thrifty_leader") for port in ports]
        leading = [i for i, flag in enumerate(flags) if flag == 1.0]
        return leading if len(leading) == 1 else None

    def writes(port: int) -> float:
        text = scrape(port)
        return sum(
            metric_value(text, "thrifty_kube_api_requests_total", verb=verb) or 0.0
            for verb in ("patch", "create", "replace", "delete")
        )

    leader = eventually(leaders, 60, "exactly one leader")[0]
    follower = 1 - leader
    eventually(lambda: decisions(ports[leader]) >= 3 or None, 60, "the leader deciding")
    # A spec change: both processes see its watch event; only the leader may write for it.
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=model_service_manifest("ms", pool, maxReplicas=5)
    )
    eventually(lambda: writes(ports[leader]) > 0 or None, 60, "the leader's writes")
    for _ in range(5):
        assert decisions(ports[follower]) == 0.0, "the follower decided"
        assert writes(ports[follower]) == 0.0, "the follower wrote to the API server"
        assert leaders() == [leader]
        time.sleep(1)
    lease = cluster.kubectl_json("get", "lease", "thrifty-operator", "-n", namespace)
    assert lease["spec"]["holderIdentity"]

    # The leader dies without releasing its Lease: the follower acts after the Lease expires.
    operators[leader].process.kill()
    operators[leader].process.wait()
    eventually(
        lambda: metric_value(scrape(ports[follower]), "thrifty_leader") == 1.0 or None,
        60,
        "the follower taking over",
    )
    eventually(lambda: decisions(ports[follower]) >= 2 or None, 60, "the successor deciding")
    after = cluster.kubectl_json("get", "lease", "thrifty-operator", "-n", namespace)
    assert after["spec"]["holderIdentity"] != lease["spec"]["holderIdentity"]
    assert after["spec"]["leaseTransitions"] >= 1
    owned = cluster.kubectl_json(
        "get", "deployments,services,pdb", "-n", namespace, "-l", "thrifty.dev/model-service=ms"
    )["items"]
    assert sorted(i["kind"] for i in owned) == ["Deployment", "PodDisruptionBudget", "Service"]


def test_load_ramps_replicas_rise_and_queue_drains_then_fall_to_zero(stack: Stack) -> None:
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest(
        "chat", pool, minReplicas=0, maxReplicas=4, scaleToZeroIdleSeconds=10
    )
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    eventually(
        lambda: stack.condition("chat", "MetricsAvailable").get("status") == "True" or None,
        90,
        "metrics of the first replica",
    )
    stack.load("chat", speedup=5, seconds=40)
    eventually(
        lambda: stack.replicas("chat") if stack.replicas("chat") >= 2 else None,
        45,
        "replicas rising under load",
    )
    assert stack.events("ScaleUp") or stack.events("ScaleFromZero")
    # More replicas serve the backlog: the queue comes down to the target while load goes on.
    eventually(
        lambda: (stack.get("chat")["status"].get("queueDepth", 99) <= 4) or None,
        60,
        "the queue draining",
    )
    scale_up = (stack.events("ScaleUp") or stack.events("ScaleFromZero"))[0]["message"]
    assert "$" in scale_up and "/h" in scale_up, f"the decision states its cost: {scale_up}"
    for load in stack.loads:
        load.wait(timeout=120)
    eventually(lambda: stack.replicas("chat") == 0 or None, 120, "scale to zero when idle")
    assert stack.events("ScaleToZero")
    assert stack.condition("chat", "MetricsAvailable")  # the condition is kept up to date


def test_prometheus_killed_replicas_held_and_decisions_again_after_restart(stack: Stack) -> None:
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest("chat", pool, minReplicas=1, maxReplicas=6)
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    stack.load("chat", speedup=5, seconds=90)
    eventually(lambda: stack.replicas("chat") >= 2 or None, 60, "scale-up under load")
    chaos.kill_prometheus(stack.prometheus)  # SIGKILL: no goodbye, as a crashed pod
    unavailable = eventually(
        lambda: (
            stack.condition("chat", "MetricsAvailable")
            if stack.condition("chat", "MetricsAvailable").get("status") == "False"
            else None
        ),
        30,
        "MetricsAvailable=False",
    )
    assert "unreachable" in unavailable["message"].lower()
    held = stack.replicas("chat")
    stack.stop_load()  # even with no load at all, nothing moves while thrifty is blind
    for _ in range(8):
        stack.after_decisions("chat", 1)
        assert stack.replicas("chat") == held
    decision = stack.get("chat")["status"]["autoscaler"]["lastDecision"]
    assert decision["reason"] == "MetricsUnavailable"
    # Back on the same port and data: thrifty decides on metrics again, by itself.
    stack.prometheus = chaos.restart_prometheus(stack.prometheus, stack.workdir)
    restarted = time.monotonic()

    def on_metrics() -> dict[str, Any] | None:
        decision = stack.get("chat")["status"]["autoscaler"]["lastDecision"]
        return decision if decision["reason"] != "MetricsUnavailable" else None

    # Rates need two scrapes after the restart: a few decisions may still hold.
    again = eventually(on_metrics, 60, "a decision on metrics after the restart")
    print(f"deciding on metrics again {time.monotonic() - restarted:.1f} s after the restart")
    assert stack.condition("chat", "MetricsAvailable").get("status") == "True"
    assert "$" in again["message"]


def test_budget_cap_reached_budget_limited_and_replicas_capped(stack: Stack) -> None:
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool, price=2.5))
    budget = """
apiVersion: thrifty.dev/v1alpha1
kind: CostBudget
metadata:
  name: team
spec:
  maxDollarsPerHour: 7.5
  enforcement: Hard
"""
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=budget)
    manifest = model_service_manifest("chat", pool, minReplicas=1, maxReplicas=6)
    manifest += "  costTarget:\n    budgetRef:\n      name: team\n"
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    stack.load("chat", speedup=8, seconds=70)
    limited = eventually(
        lambda: (
            stack.condition("chat", "BudgetLimited")
            if stack.condition("chat", "BudgetLimited").get("status") == "True"
            else None
        ),
        90,
        "BudgetLimited=True",
    )
    assert "$" in limited["message"]
    for _ in range(10):  # $7.50/h at $2.50 per GPU-hour: never more than 3 replicas
        assert stack.replicas("chat") <= 3
        stack.after_decisions("chat", 1)


def test_gpu_pool_exhausted_capacity_limited_without_pending_pods(stack: Stack) -> None:
    pool = f"l4-{stack.namespace}"[:60]
    l4 = f"""
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata:
  name: {pool}
spec:
  accelerator: NVIDIA-L4
  gpuMemoryGib: 24
  gpusPerNode: 4
  nodeSelector:
    thrifty.dev/pool: l4-on-demand
  tolerations:
    - key: kwok.x-k8s.io/node
      operator: Exists
      effect: NoSchedule
  pricePerGpuHour: 0.8
  maxGpus: 2
"""
    stack.cluster.apply(l4)
    manifest = model_service_manifest("chat", pool, minReplicas=1, maxReplicas=8)
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    stack.load("chat", speedup=8, seconds=80)
    limited = eventually(
        lambda: (
            stack.condition("chat", "CapacityLimited")
            if stack.condition("chat", "CapacityLimited").get("status") == "True"
            else None
        ),
        90,
        "CapacityLimited=True",
    )
    assert limited["message"]
    # No relativeThroughput declared: the L4 is sized at its datasheet prior, and says so.
    speed = eventually(
        lambda: (stack.cluster.kubectl_json("get", "gpupool", pool).get("status") or {}).get(
            "relativeThroughputSource"
        ),
        60,
        "the pool's speed in its status",
    )
    shown = stack.cluster.kubectl_json("get", "gpupool", pool)["status"]
    assert (speed, shown["relativeThroughput"]) == ("Accelerator", 0.1)
    for _ in range(10):  # the quota is 2 GPUs: thrifty orders no replica that cannot be placed
        assert stack.replicas("chat") <= 2
        assert len(stack.pods("Pending")) == 0
        stack.after_decisions("chat", 1)


def pod_uids(stack: Stack) -> set[str]:
    listed = stack.cluster.kubectl_json("get", "pods", "-n", stack.namespace)["items"]
    return {p["metadata"]["uid"] for p in listed if not p["metadata"].get("deletionTimestamp")}


def test_operator_killed_mid_scale_restarts_and_converges_without_churn(stack: Stack) -> None:
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest(
        "chat", pool, minReplicas=1, maxReplicas=6, scaleDownDelaySeconds=60
    )
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    stack.load("chat", speedup=5, seconds=100)
    eventually(lambda: stack.events("ScaleUp") or None, 60, "the first scale-up")
    stack.operator.process.kill()  # no cleanup, no Lease release, mid-scale
    stack.operator.process.wait()
    pods_before = pod_uids(stack)
    assert pods_before, "replicas were running when the operator was killed"
    before = stack.get("chat")
    state = before["status"]["autoscaler"]["policyState"]
    assert state, "the policy state was persisted in status"
    restarted_at = time.time()
    stack.operator = stack.start_operator()
    seen = [stack.replicas("chat")]
    # The restarted process decides again (twelve decisions, not a fixed sleep) and gives nothing
    # back while the load lasts. That it decides exactly as if it had not restarted is proven,
    # tick by tick, by tests/unit/control/test_operator_equals_simulator.py (restart half-way).
    for _ in range(12):
        stack.after_decisions("chat", 1)
        seen.append(stack.replicas("chat"))
    # While the load lasts, the restarted operator never gives back replicas it just ordered.
    drops = [b for a, b in itertools.pairwise(seen) if b < a]
    assert not drops, seen
    assert len(stack.events("ScaleDown")) == 0
    gone = pods_before - pod_uids(stack)
    assert not gone, f"pods deleted after the restart: {gone}"
    owned = stack.cluster.kubectl_json(
        "get", "deployments,services,pdb", "-n", stack.namespace, "-l", "thrifty.dev/model-service"
    )["items"]
    assert sorted(i["kind"] for i in owned) == ["Deployment", "PodDisruptionBudget", "Service"]
    # It resumed from the checkpoint: on SIGTERM it writes the state it carries, whose demand
    # window (60 s) still holds what the killed process saw; a process that started afresh would
    # carry only what it saw itself.
    stack.operator.stop()
    carried = stack.get("chat")["status"]["autoscaler"]["policyState"]
    seen_before = [at for at, _ in carried.get("demand", []) if at < restarted_at]
    assert seen_before, carried


def completion(url: str, model: str, timeout_seconds: float) -> int:
    """One completion request to `url` (the gateway's /v1/completions); its HTTP status."""
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 8}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_traffic_at_zero_replicas_is_held_and_scales_the_service_from_zero(stack: Stack) -> None:
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest(
        "chat", pool, minReplicas=0, maxReplicas=2, scaleToZeroIdleSeconds=300
    )
    manifest += "  replicas: 0\n"  # at zero from the start: no engine, no vLLM series at all
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)

    def decided() -> dict[str, Any] | None:
        autoscaler = (stack.get("chat").get("status") or {}).get("autoscaler") or {}
        found: dict[str, Any] | None = autoscaler.get("lastDecision")
        return found

    eventually(decided, 60, "the operator deciding on the idle service")
    stack.after_decisions("chat", 2)  # nothing wakes a service at zero without traffic
    assert stack.replicas("chat") == 0
    assert stack.pods("Running") == []

    stack.gateway.wait_serving("chat")
    url = stack.gateway.completions_url
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool_of_clients:
        pending = [pool_of_clients.submit(completion, url, "chat", 150) for _ in range(3)]
        eventually(lambda: stack.replicas("chat") >= 1 or None, 90, "scale from zero")
        statuses = [future.result(timeout=150) for future in pending]
    assert statuses == [200, 200, 200]
    assert stack.events("ScaleFromZero")
    assert stack.held("chat") == 0.0


def test_a_settled_service_with_real_metrics_writes_no_status(stack: Stack) -> None:
    """Idle at minReplicas 1, read through the real Prometheus adapter: once settled, passes go
    by without a single write to the ModelService (its resourceVersion does not move)."""
    pool = f"pool-{stack.namespace}"[:60]
    stack.cluster.apply(pool_manifest(pool))
    manifest = model_service_manifest("idle", pool, minReplicas=1, maxReplicas=2)
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)
    eventually(
        lambda: stack.condition("idle", "MetricsAvailable").get("status") == "True" or None,
        90,
        "metrics of the idle replica",
    )
    version = stack.get("idle")["metadata"]["resourceVersion"]
    for _ in range(20):  # settling: first readings, the first rates, a learned nothing
        stack.after_decisions("idle", 1)
        now = stack.get("idle")["metadata"]["resourceVersion"]
        if now == version:
            break
        version = now
    stack.after_decisions("idle", 10)
    after = stack.get("idle")
    assert after["metadata"]["resourceVersion"] == version, after.get("status")
