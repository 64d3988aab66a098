"""Two GPU types whose speed the user declared wrong: thrifty's learned throughput against the
declared one, on every shared trace.

Run from the repository root: ``.venv/bin/python bench/learned.py`` (``--out bench/learned.md``
writes the table). Every run is thrifty's scaling policy with `bench/run.py`'s settings (trace,
engine profile, opening fleet, SLO) over two OnDemand pools with `placement: Cheapest`:

- ``h100``: H100s at ``--price-per-gpu-hour``, `relativeThroughput` 1 (the reference);
- ``l40s``: L40S-class GPUs (48 GiB: an 8B model or a 70B one on 4 fits) at ``--l40s-price``,
  whose replicas really serve ``--true-speed`` of an H100's (prefill and decode alike, in the
  simulator's engine model), declared in two wrong ways:

  - ``too-high``: declared ``--high``; on paper the L40S is the cheaper $/token, in truth the
    H100 is. The L40S pool holds ``--first-replicas`` replicas, so the service spills onto
    H100s and runs on both;
  - ``too-low``: declared ``--low``; on paper the H100 is cheaper, in truth the L40S is. The
    H100 pool holds ``--first-replicas`` replicas, so the service spills onto L40S.

Each scenario runs three ways: ``declared`` (the declared speed only, nothing learned),
``learned`` (thrifty as it ships: `thrifty.api.throughput` measures each pool's speed from its
replicas' prefill once both pools have served for 10 minutes) and ``truth`` (the declared speed
set to the true one: what a user who knew would get). thrifty's promise is the lowest cost that
keeps the SLO, so the comparison is cost at the SLO attainment reached.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import run as bench  # bench/run.py: the shared cases and settings
from thrifty import cli
from thrifty.api import gpupool, modelservice
from thrifty.api.modelservice import PERCENTILES
from thrifty.policy import types
from thrifty.sim.pools import SimPool
from thrifty.sim.profiles import profile_by_name
from thrifty.sim.runner import RunResult, simulate

VARIANTS = ("declared", "learned", "truth")
SCENARIOS = ("too-high", "too-low")


@dataclass(frozen=True)
class Scenario:
    name: str
    declared: float
    limited: str
    """The pool that is cheaper on paper: it holds `--first-replicas` replicas."""


def gpu_pool(
    name: str, accelerator: str, memory: int, price: float, declared: float
) -> gpupool.GPUPoolSpec:
    return gpupool.GPUPoolSpec(
        accelerator=accelerator,
        gpu_memory_gib=memory,
        gpus_per_node=8,
        node_selector={"thrifty.dev/pool": name},
        price_per_gpu_hour=price,
        capacity_type=gpupool.CapacityType.ON_DEMAND,
        relative_throughput=declared,
    )


def pools(
    args: argparse.Namespace, scenario: Scenario, variant: str, gpus_per_replica: int
) -> tuple[SimPool, ...]:
    declared = args.true_speed if variant == "truth" else scenario.declared
    limit = args.first_replicas * gpus_per_replica

    def quota(name: str) -> int | None:
        return limit if scenario.limited == name else None

    h100 = gpu_pool("h100", "NVIDIA-H100-80GB-HBM3", 80, args.price_per_gpu_hour, 1.0)
    l40s = gpu_pool("l40s", "NVIDIA-L40S", 48, args.l40s_price, declared)
    return (
        SimPool("h100", h100, gpus=quota("h100")),
        SimPool("l40s", l40s, gpus=quota("l40s"), speed=args.true_speed),
    )


def run_variant(
    args: argparse.Namespace, case: bench.Case, scenario: Scenario, variant: str
) -> RunResult:
    chosen = pools(args, scenario, variant, case.profile.gpus_per_replica)
    ms = bench._model_service(args, case)
    spec = ms.spec.model_copy(
        update={
            "pools": [p.name for p in chosen],
            "placement": modelservice.PlacementPolicy.CHEAPEST,
        }
    )
    config = replace(
        bench._config(args, case, ms.model_copy(update={"spec": spec})),
        pools=chosen,
        learn_throughput=variant == "learned",
    )
    policy: types.ScalingPolicy = cli.build_policy("thrifty", bench._context(args, case))
    return simulate(case.trace, policy, config)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = bench.parse_args([])
    extra = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [name for name, _ in bench.MATRIX]
    extra.add_argument("--traces", nargs="+", default=names, choices=names)
    extra.add_argument("--price-per-gpu-hour", type=float, default=2.5, help="H100 $/GPU-hour")
    extra.add_argument("--l40s-price", type=float, default=1.0, help="L40S $/GPU-hour")
    extra.add_argument("--true-speed", type=float, default=0.3, help="an L40S replica's worth")
    extra.add_argument("--high", type=float, default=0.5, help="declared speed, too high")
    extra.add_argument("--low", type=float, default=0.15, help="declared speed, too low")
    extra.add_argument("--first-replicas", type=int, default=2)
    extra.add_argument("--out", type=Path)
    mine = extra.parse_args(argv)
    return argparse.Namespace(**{**vars(parser), **vars(mine)})


def line(
    trace: str, scenario: str, variant: str, result: RunResult, base: RunResult, percentile: float
) -> str:
    met = "yes" if result.slo_attainment + 1e-9 >= percentile else "no"
    learned = result.learned_throughput.get("l40s")
    shown = "-" if learned is None else f"{learned:.2f}"
    versus = 100 * (result.cost_dollars / base.cost_dollars - 1) if base.cost_dollars else 0.0
    return (
        f"| {trace} | {scenario} | {variant} | {result.cost_dollars:.2f} | "
        f"{result.gpu_hours:.2f} | {100 * result.slo_attainment:.1f} % | {met} | {shown} | "
        f"{versus:+.1f} % |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    percentile = PERCENTILES[args.slo_percentile]
    scenarios = (
        Scenario("too-high", args.high, "l40s"),
        Scenario("too-low", args.low, "h100"),
    )
    lines = [
        "| trace | L40S declared | run | $ | GPU-h | SLO attainment | SLO met | L40S learned "
        "| $ vs declared |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name, profile_name in bench.MATRIX:
        if name not in args.traces:
            continue
        case = bench.make_case(args, name, profile_by_name(profile_name))
        for scenario in scenarios:
            runs = {v: run_variant(args, case, scenario, v) for v in VARIANTS}
            for variant, result in runs.items():
                row = line(name, scenario.name, variant, result, runs["declared"], percentile)
                lines.append(row)
                print(row, flush=True)
    print(f"[{time.perf_counter() - started:.0f} s]", file=sys.stderr)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
