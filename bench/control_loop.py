"""Benchmarks of thrifty's control loop: reaction to a load step, CPU for 100 ModelServices.

    .venv/bin/python bench/control_loop.py core     # CPU of the pure decision path, 100 services
    .venv/bin/python bench/control_loop.py cluster  # local cluster: operator CPU for 100 services,
                                                    # and load step -> scale patch

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
from thrifty.autoscaler import observe  # noqa: E402
from thrifty.autoscaler import status as autoscaling  # noqa: E402
from thrifty.policy import types  # noqa: E402
from thrifty.policy.thrifty_policy import ThriftyPolicy  # noqa: E402

SERVICES = 100
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
    """CPU seconds of one pass over 100 services: observation, policy, status, change check."""
    rng = random.Random(7)
    policy = ThriftyPolicy()
    services = [_service(i) for i in range(SERVICES)]
    statuses = [modelservice.ModelServiceStatus() for _ in services]
    states: list[types.PolicyState] = [{} for _ in services]
    pods = [observe.PodView(ready=True, scheduled=True)] * 2
    settings = observe.ObserveSettings()
    per_pass: list[float] = []
    for tick in range(ticks):
        began = time.process_time()
        for i, ms in enumerate(services):
            signals = _signals(rng)
            obs = observe.observation(
                ms,
                now_seconds=1_700_000_000 + tick * INTERVAL_SECONDS,
                pods=pods,
                pool_name="h100",
                pool=POOL,
                signals=signals,
                settings=settings,
            )
            decision = policy.decide(obs, states[i])
            states[i] = decision.state
            result = autoscaling.PassResult(
                decision=decision,
                signals=signals,
                metrics_reason="read",
                authority=autoscaling.Authority(types.ScalingMode.AUTO),
                scaled=decision.replicas != obs.replicas.desired,
                dollars_per_hour=9.96,
                now=explain.now_rfc3339(),
            )
            after = autoscaling.next_status(statuses[i], result)
            if autoscaling.status_changed(statuses[i], after):
                autoscaling.status_patch(after)
            statuses[i] = after
        per_pass.append(time.process_time() - began)
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
