"""A flood of broken and unplaceable ModelServices: does a healthy one still get served?

    .venv/bin/python bench/flood.py                      # 1,000 broken + 1 healthy, 24 changes
    .venv/bin/python bench/flood.py --broken 200 --changes 20 --soak-minutes 0
    THRIFTY_E2E_KUBECONFIG=... .venv/bin/python bench/flood.py   # on a running cluster

On the local cluster of the e2e harness (real kube-apiserver with its default /24 Service range,
scheduler, controller-manager, KWOK GPU nodes: 16 H100 on demand, 8 H100 spot, 4 L4), the operator
runs as a process with the production resync periods and leader election on. Present at once, in
ten namespaces, `--broken` ModelServices of four kinds:

- a pool that does not exist (Degraded, UnknownPool);
- 8 GPUs per replica on the L4 pool, whose nodes have 4 (Degraded/CapacityLimited);
- one replica each on the 16-GPU H100 on-demand pool: 16 fit, the rest must wait as
  CapacityLimited (no Pending pod);
- `replicas: 0` on the L4 pool: placed, but once the Service range (254 ClusterIPs) is full their
  Service apply fails with 500 on every try (the flood's failing reconciles).

Then one healthy ModelService (1 replica on the spot pool) gets `--changes` spec changes
(`engine.maxNumSeqs`), one at a time, and each is timed from the patch's return to its value in
the Deployment's pod template (polled every 20 ms). Meanwhile the bench polls the leader Lease every
0.5 s (renewals, their largest gap, holder changes), the operator's RSS and its log, and at the end
lists thrifty's Pending pods that the scheduler refused for want of GPUs. `--soak-minutes` keeps the
flood failing afterwards and samples RSS every 10 s (memory bounded by objects, not by failures).

Prints a JSON report; pass/fail against the targets: p99 <= 2 s, no Pending pod for want of GPUs,
no missed renewal (no renewal gap over the renew deadline, no change of holder), RSS growth over the
soak under 5 %, and at the end SIGTERM ends the operator within the chart's 30 s grace period with
the Lease released.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "e2e"))

from harness import Cluster, Session, connect_existing, start_local  # noqa: E402
from harness.cluster import wait_until  # noqa: E402
from operator_process import OperatorProcess, start_operator  # noqa: E402

NAMESPACES = 10
LEASE_NAMESPACE = "default"
LEASE_NAME = "thrifty-operator"
RENEW_DEADLINE_SECONDS = 10.0
P99_TARGET_SECONDS = 2.0
RSS_GROWTH_LIMIT = 0.05
GRACE_SECONDS = 30.0
"""The chart's terminationGracePeriodSeconds for the operator pod."""

POOLS = """
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata: {name: flood-h100}
spec:
  accelerator: NVIDIA-H100-80GB-HBM3
  gpuMemoryGib: 80
  gpusPerNode: 8
  nodeSelector: {thrifty.dev/pool: h100-on-demand}
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
  pricePerGpuHour: 2.49
---
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata: {name: flood-spot}
spec:
  accelerator: NVIDIA-H100-80GB-HBM3
  gpuMemoryGib: 80
  gpusPerNode: 8
  capacityType: Spot
  nodeSelector: {thrifty.dev/pool: h100-spot}
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
  pricePerGpuHour: 1.2
---
apiVersion: thrifty.dev/v1alpha1
kind: GPUPool
metadata: {name: flood-l4}
spec:
  accelerator: NVIDIA-L4
  gpuMemoryGib: 24
  gpusPerNode: 4
  nodeSelector: {thrifty.dev/pool: l4-on-demand}
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
  pricePerGpuHour: 0.8
"""


def model_service(name: str, pool: str, *, replicas: int, tp: int = 1, seqs: int = 64) -> str:
    return f"""
apiVersion: thrifty.dev/v1alpha1
kind: ModelService
metadata: {{name: {name}}}
spec:
  model: {{uri: "hf://meta-llama/Llama-3.1-8B-Instruct"}}
  engine: {{tensorParallelSize: {tp}, maxNumSeqs: {seqs}}}
  pools: [{pool}]
  replicas: {replicas}
  scaling: {{minReplicas: 0, maxReplicas: 4, mode: Manual}}
"""


def broken_manifests(count: int) -> dict[str, str]:
    by_namespace: dict[str, list[str]] = {}
    for i in range(count):
        kind = i % 4
        name = f"broken-{i:04d}"
        if kind == 0:
            body = model_service(name, "no-such-pool", replicas=1)
        elif kind == 1:
            body = model_service(name, "flood-l4", replicas=1, tp=8)
        elif kind == 2:
            body = model_service(name, "flood-h100", replicas=1)
        else:
            body = model_service(name, "flood-l4", replicas=0)
        by_namespace.setdefault(f"flood-{i % NAMESPACES}", []).append(body)
    return {ns: "\n---\n".join(bodies) for ns, bodies in by_namespace.items()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LeaseWatch(threading.Thread):
    """Polls the Lease every 0.5 s: renewals seen, their largest gap, holders."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.api = client.CoordinationV1Api()
        self.stopped = threading.Event()
        self.renewals: list[datetime] = []
        self.holders: list[str] = []

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                lease = self.api.read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
            except Exception:
                continue
            spec = lease.spec
            if spec is None:
                continue
            holder = spec.holder_identity or ""
            if holder and (not self.holders or self.holders[-1] != holder):
                self.holders.append(holder)
            renewed = spec.renew_time
            if renewed is not None and (not self.renewals or self.renewals[-1] != renewed):
                self.renewals.append(renewed)

    def largest_gap_seconds(self) -> float:
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(self.renewals)]
        return max(gaps, default=float("nan"))


def deployment_seqs(apps: client.AppsV1Api, namespace: str) -> int | None:
    found = apps.list_namespaced_deployment(namespace)
    for deployment in found.items:
        pod = deployment.spec.template.spec if deployment.spec else None
        for container in pod.containers if pod else []:
            args = list(container.args or [])
            for i, arg in enumerate(args):
                if arg == "--max-num-seqs" and i + 1 < len(args):
                    return int(args[i + 1])
                if arg.startswith("--max-num-seqs="):
                    return int(arg.split("=", 1)[1])
    return None


def change_latencies(cluster: Cluster, namespace: str, changes: int) -> list[float]:
    apps = client.AppsV1Api()
    custom = client.CustomObjectsApi()
    wait_until(
        lambda: deployment_seqs(apps, namespace) == 64 or None,
        timeout_seconds=600,
        what="the healthy ModelService's Deployment",
        interval_seconds=0.5,
    )
    measured = []
    for step in range(changes):
        value = 65 + step
        body = {"spec": {"engine": {"maxNumSeqs": value}}}
        custom.patch_namespaced_custom_object(
            "thrifty.dev", "v1alpha1", namespace, "modelservices", "healthy", body
        )
        started = time.monotonic()
        while deployment_seqs(apps, namespace) != value:
            if time.monotonic() - started > 120:
                raise TimeoutError(f"change {step} not applied in 120 s")
            time.sleep(0.02)
        measured.append(time.monotonic() - started)
        print(f"change {step}: applied after {measured[-1]:.2f} s", file=sys.stderr)
        time.sleep(1.0 + (step % 5) * 0.7)  # spread the changes over the resync cycle
    return measured


def pending_for_gpus(cluster: Cluster) -> list[str]:
    """thrifty's pods that are Pending with a FailedScheduling event naming GPUs."""
    pods = cluster.kubectl_json("get", "pods", "-A", "-l", "app.kubernetes.io/managed-by=thrifty")[
        "items"
    ]
    pending = {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in pods
        if p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName")
    }
    events = cluster.kubectl_json(
        "get", "events", "-A", "--field-selector", "reason=FailedScheduling"
    )["items"]
    starved = set()
    for event in events:
        ref = event.get("involvedObject") or {}
        key = (ref.get("namespace"), ref.get("name"))
        if key in pending and "nvidia.com/gpu" in event.get("message", ""):
            starved.add(f"{key[0]}/{key[1]}")
    return sorted(starved)


def run(broken: int, changes: int, soak_minutes: float) -> dict[str, Any]:
    existing = os.environ.get("THRIFTY_E2E_KUBECONFIG")
    session: Session = connect_existing(Path(existing)) if existing else start_local()
    workdir = REPO_ROOT / "out" / "bench-flood"
    workdir.mkdir(parents=True, exist_ok=True)
    operator: OperatorProcess | None = None
    lease = None
    try:
        cluster = session.cluster
        config.load_kube_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cluster.apply(POOLS)
        cluster.kubectl("create", "namespace", "flood-healthy", check=False)
        cluster.kubectl(
            "apply",
            "-n",
            "flood-healthy",
            "-f",
            "-",
            input=model_service("healthy", "flood-spot", replicas=1),
        )
        for namespace, manifests in broken_manifests(broken).items():
            cluster.kubectl("create", "namespace", namespace, check=False)
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifests, timeout=900)
        env = {
            "THRIFTY_PROMETHEUS_URL": cluster.prometheus_url,
            "THRIFTY_RESYNC_SECONDS": "30",
            "THRIFTY_POOL_RESYNC_SECONDS": "30",
            "THRIFTY_BUDGET_RESYNC_SECONDS": "30",
            "THRIFTY_RETRY_SECONDS": "10",
            "THRIFTY_LEADER_ELECTION": "true",
            "THRIFTY_LEASE_NAMESPACE": LEASE_NAMESPACE,
            "THRIFTY_METRICS_PORT": "0",
            "MALLOC_ARENA_MAX": "2",
        }
        lease = LeaseWatch()
        lease.start()
        started = time.monotonic()
        operator = start_operator(cluster.kubeconfig, env=env, log_dir=workdir)
        pid = operator.process.pid
        total = broken + 1
        wait_until(
            lambda: f"resync pass: {total} objects" in operator.logs() or None,
            timeout_seconds=900,
            what="a resync pass over the whole flood",
            interval_seconds=1,
        )
        warm = time.monotonic() - started
        rss_after_warmup = rss_megabytes(pid)
        latencies = change_latencies(cluster, "flood-healthy", changes)
        samples: list[tuple[float, float]] = []
        soak_start, cpu_start = time.monotonic(), cpu_seconds(pid)
        soak_end = soak_start + soak_minutes * 60
        while time.monotonic() < soak_end:
            samples.append((round(time.monotonic() - started), rss_megabytes(pid)))
            time.sleep(10)
        soak_cpu = (cpu_seconds(pid) - cpu_start) / max(time.monotonic() - soak_start, 1e-9)
        starved = pending_for_gpus(cluster)
        lease.stopped.set()
        lost_leading = operator.logs().count("stopped leading")  # before SIGTERM's release
        # SIGTERM with the flood still present: the chart gives the pod 30 s.
        signalled = time.monotonic()
        operator.process.terminate()
        operator.process.wait(timeout=120)
        sigterm_seconds = time.monotonic() - signalled
        final = client.CoordinationV1Api().read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
        released = not (final.spec and final.spec.holder_identity)
        logs = operator.logs()
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
        soak_growth = (samples[-1][1] - samples[0][1]) / samples[0][1] if len(samples) > 1 else 0.0
        gap = lease.largest_gap_seconds()
        report = {
            "broken": broken,
            "warm_up_seconds": round(warm, 1),
            "change_seconds": [round(t, 2) for t in latencies],
            "change_p50_seconds": round(statistics.median(latencies), 2),
            "change_p99_seconds": round(p99, 2),
            "change_max_seconds": round(max(latencies), 2),
            "pending_for_gpus": starved,
            "lease_renewals_seen": len(lease.renewals),
            "lease_largest_renewal_gap_seconds": round(gap, 1),
            "lease_holders": len(lease.holders),
            "lost_leading_in_log": lost_leading,
            "released_in_log": "stopped leading" in logs,
            "failing_reconciles_logged": logs.count("next in"),
            "tracebacks_in_log": logs.count("Traceback"),
            "cpu_share_of_one_core_over_soak": round(soak_cpu, 3),
            "rss_after_warm_up_mb": round(rss_after_warmup, 1),
            "rss_samples_mb": [(t, round(m, 1)) for t, m in samples],
            "rss_growth_over_soak": round(soak_growth, 4),
            "rss_end_mb": round(samples[-1][1] if samples else rss_after_warmup, 1),
            "sigterm_exit_seconds": round(sigterm_seconds, 1),
            "lease_released_on_exit": released,
        }
        report["pass"] = bool(
            p99 <= P99_TARGET_SECONDS
            and not starved
            and gap < RENEW_DEADLINE_SECONDS
            and len(lease.holders) == 1
            and report["lost_leading_in_log"] == 0
            and soak_growth < RSS_GROWTH_LIMIT
            and sigterm_seconds < GRACE_SECONDS
            and released
        )
        return report
    finally:
        if lease is not None:
            lease.stopped.set()
        if operator is not None:
            operator.stop()
        session.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broken", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=24)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    args = parser.parse_args()
    # SIGTERM as KeyboardInterrupt, so the cluster and every process are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    report = run(args.broken, args.changes, args.soak_minutes)
    print(json.dumps(report, indent=2))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
