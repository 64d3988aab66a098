"""Benchmarks of thrifty's control loop: reaction to a load step, the operator over 1,000 services.

    .venv/bin/python bench/control_loop.py core     # CPU of the pure fleet plan, 1,000 services
    .venv/bin/python bench/control_loop.py cluster  # local cluster: the operator over 1,000
                                                    # settled services, and load step -> scale

`core` needs nothing but the package. `cluster` starts the local cluster of the e2e harness (or uses
THRIFTY_E2E_KUBECONFIG), the operator as a process, the fleet mirror and the load replayer, and
writes its figures to bench/control_loop.md together with the command.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

from thrifty import explain  # noqa: E402
from thrifty.api import gpupool, modelservice  # noqa: E402
from thrifty.autoscaler import observe, plan  # noqa: E402
from thrifty.autoscaler.world import ServiceKey, ServiceView, SignalsReading, World  # noqa: E402
from thrifty.policy import types  # noqa: E402
from thrifty.policy.planner import ThriftyPolicy  # noqa: E402

SERVICES = 1000
INTERVAL_SECONDS = 15.0


def _service(i: int) -> modelservice.ModelService:
    return modelservice.ModelService.model_validate(
        {
            "spec": {
                "model": {"uri": f"hf://org/model-{i}"},
                "pools": ["h100"],
                "replicas": 2,
                "scaling": {"minReplicas": 0, "maxReplicas": 16, "scaleDownDelaySeconds": 120},
                "latencyTarget": {"timeToFirstTokenP95Seconds": 1.0},
                "costTarget": {"maxDollarsPerHour": 30},
            }
        }
    )


POOL = gpupool.GPUPool.model_validate(
    {
        "spec": {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"thrifty.dev/pool": "h100"},
            "pricePerGpuHour": 2.49,
        },
        "status": {"gpusAllocatable": 64, "gpusUsed": 20, "gpusFree": 44},
    }
)


def _signals(rng: random.Random) -> types.Signals:
    load = rng.uniform(0, 2)
    return types.Signals(
        requests_waiting=max(0.0, rng.gauss(10 * load, 5)),
        requests_running=40 * load,
        kv_cache_usage=min(1.0, 0.4 * load),
        prompt_tokens_per_second=4000 * load,
        generation_tokens_per_second=900 * load,
        requests_per_second=3 * load,
        ttft_p95_seconds=0.3 + 0.5 * load,
        sample_age_seconds=rng.uniform(0, 15),
    )


def core(ticks: int) -> dict[str, float]:
    """CPU seconds of one fleet plan over 1,000 services with full signals: translation, policy,
    status and change check, as `thrifty.control.fleet` runs it."""
    rng = random.Random(7)
    chooser = plan.Fixed(ThriftyPolicy())
    pods = [observe.PodView(ready=True, scheduled=True)] * 2
    views = [
        ServiceView(ServiceKey("bench", f"ms-{i}"), f"uid-{i}", _service(i), "1", 1, pods)
        for i in range(SERVICES)
    ]
    states: dict[str, types.PolicyState] = {}
    per_pass: list[float] = []
    for tick in range(ticks):
        readings = {view.key: SignalsReading(_signals(rng), "read") for view in views}
        world = World(views, {"h100": POOL})
        now = 1_700_000_000 + tick * INTERVAL_SECONDS
        began = time.process_time()
        plans = plan.plan(
            world, readings, states, now, explain.now_rfc3339(), observe.ObserveSettings(), chooser
        )
        per_pass.append(time.process_time() - began)
        states = {one.decided.view.uid: one.decided.state for one in plans}
    mean = statistics.fmean(per_pass)
    return {
        "cpu_seconds_per_pass_mean": mean,
        "cpu_seconds_per_pass_p95": sorted(per_pass)[int(0.95 * (len(per_pass) - 1))],
        "core_fraction_at_15s": mean / INTERVAL_SECONDS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    core_parser = sub.add_parser("core", help="CPU of the pure decision path for 100 services")
    core_parser.add_argument("--ticks", type=int, default=40)
    cluster_parser = sub.add_parser("cluster", help="on the local cluster (see the docstring)")
    cluster_parser.add_argument("--skip-cpu", action="store_true", help="reaction time only")
    cluster_parser.add_argument("--steps", type=int, default=8, help="load steps to time")
    cluster_parser.add_argument(
        "--services", type=int, default=1000, help="settled ModelServices for the CPU figure"
    )
    args = parser.parse_args(argv)
    if args.command == "core":
        figures: dict[str, Any] = core(args.ticks)
        for key, value in figures.items():
            print(f"{key}: {value:.5f}")
        return 0
    from control_loop_cluster import run_cluster  # heavy imports (harness) only when needed

    os.environ.setdefault("THRIFTY_E2E_SERVICE_CIDR", "10.96.0.0/16")  # a ClusterIP each
    return run_cluster(measure_cpu=not args.skip_cpu, steps=args.steps, services=args.services)


if __name__ == "__main__":
    sys.exit(main())
