"""Money across pools: on-demand only, spot only, SkyServe-style spot with on-demand fallback,
and thrifty's spread, on every shared trace, with a seeded spot-interruption process.

Run from the repository root: ``.venv/bin/python bench/pools.py`` (``--out bench/pools.md``
writes the table). Every run uses thrifty's scaling policy and the benchmark's settings
(`bench/run.py`: trace, engine profile, opening fleet, SLO); what differs is where replicas go:

- ``on-demand``: one OnDemand pool at the on-demand price;
- ``spot``: one Spot pool at ``--spot-fraction`` of it, reclaimed by the process below, nothing
  to fall back on;
- ``skyserve``: SpotHedge's shape (SkyServe, EuroSys'25): spot first, on-demand only while spot
  is short (`placement: Ordered`), and a fixed over-provisioning of ``--skyserve-extra`` spot
  replicas;
- ``thrifty``: `placement: Cheapest` over the same two pools, spot over-provisioned by the pool's
  `interruptionRate` (`GPUPoolSpec.replica_units`), reclaimed replicas replaced at once on the
  taint, and the return to spot one replica at a time after the return delay.

The spot pool is reclaimed by a Poisson process of ``--reclaims-per-hour`` (seeded), each with a
30-120 s notice and a 10-30 min outage (`thrifty.sim.pools`). The published monthly bands (AWS:
H100 10-20 % a month) would give no reclaim at all in a one-hour trace, so the process is
stressed on purpose; the pool's `interruptionRate` field stays at the published band.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import run as bench  # bench/run.py: the shared cases and settings
from thrifty import cli
from thrifty.api import gpupool, modelservice
from thrifty.policy import types
from thrifty.sim.pools import SimPool, interruptions
from thrifty.sim.profiles import profile_by_name
from thrifty.sim.runner import RunResult, simulate

STRATEGIES = ("on-demand", "spot", "skyserve", "thrifty")
SAVINGS_TARGET = 0.40
"""thrifty across pools at least 40 % cheaper than thrifty on on-demand only (issue 11)."""


@dataclass(frozen=True)
class Hedged:
    """SpotHedge's static over-provisioning: the policy's count plus ``extra`` replicas."""

    policy: types.ScalingPolicy
    extra: int
    name: str = "skyserve"

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        # The policy sizes its own count: the extra replicas it asked for last tick are not
        # part of what it wants now.
        counts = observation.replicas
        own = dataclasses.replace(
            counts,
            desired=max(counts.desired - self.extra, 0),
            ready=max(counts.ready - self.extra, 0),
        )
        decision = self.policy.decide(dataclasses.replace(observation, replicas=own), state)
        return dataclasses.replace(decision, replicas=decision.replicas + self.extra)


def pool(name: str, kind: gpupool.CapacityType, price: float, rate: float | None) -> SimPool:
    spec = gpupool.GPUPoolSpec(
        accelerator="NVIDIA-H100-80GB-HBM3",
        gpu_memory_gib=80,
        gpus_per_node=8,
        node_selector={"thrifty.dev/pool": name},
        price_per_gpu_hour=price,
        capacity_type=kind,
        interruption_rate=rate,
    )
    return SimPool(name, spec)


def run_strategy(
    args: argparse.Namespace, case: bench.Case, strategy: str
) -> tuple[RunResult, int]:
    on_demand = pool("on-demand", gpupool.CapacityType.ON_DEMAND, args.price_per_gpu_hour, None)
    spot_price = round(args.price_per_gpu_hour * args.spot_fraction, 4)
    rate = args.interruption_rate if strategy == "thrifty" else None
    spot = pool("spot", gpupool.CapacityType.SPOT, spot_price, rate)
    pools = {
        "on-demand": (on_demand,),
        "spot": (spot,),
        "skyserve": (spot, on_demand),
        "thrifty": (spot, on_demand),
    }[strategy]
    placement = (
        modelservice.PlacementPolicy.CHEAPEST
        if strategy == "thrifty"
        else modelservice.PlacementPolicy.ORDERED
    )
    ms = bench._model_service(args, case)
    spec = ms.spec.model_copy(update={"pools": [p.name for p in pools], "placement": placement})
    ms = ms.model_copy(update={"spec": spec})
    reclaims = interruptions(pools, case.trace.duration_seconds, args.reclaims_per_hour, args.seed)
    config = replace(
        bench._config(args, case, ms),
        pools=pools,
        reclaims=reclaims,
        return_delay_seconds=args.return_delay,
    )
    policy: types.ScalingPolicy = cli.build_policy("thrifty", bench._context(args, case))
    if strategy == "skyserve":
        policy = Hedged(policy, args.skyserve_extra)
    return simulate(case.trace, policy, config), len(reclaims)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = bench.parse_args([])
    extra = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [name for name, _ in bench.MATRIX]
    extra.add_argument("--traces", nargs="+", default=names, choices=names)
    extra.add_argument("--price-per-gpu-hour", type=float, default=2.5)
    extra.add_argument("--spot-fraction", type=float, default=0.4, help="spot / on-demand price")
    extra.add_argument("--reclaims-per-hour", type=float, default=1.0)
    extra.add_argument("--interruption-rate", type=float, default=0.15, help="thrifty's field")
    extra.add_argument("--skyserve-extra", type=int, default=1)
    extra.add_argument("--return-delay", type=float, default=600.0)
    extra.add_argument("--seed", type=int, default=0)
    extra.add_argument("--out", type=Path)
    mine = extra.parse_args(argv)
    return argparse.Namespace(**{**vars(parser), **vars(mine)})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    header = (
        "| trace | strategy | $ | GPU-h | SLO | reclaims | lost requests | vs on-demand |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    print(header, flush=True)
    for name, profile_name in bench.MATRIX:
        if name not in args.traces:
            continue
        case = bench.make_case(args, name, profile_by_name(profile_name))
        base: float | None = None
        for strategy in STRATEGIES:
            result, reclaims = run_strategy(args, case, strategy)
            base = result.cost_dollars if strategy == "on-demand" else base
            saving = "" if not base else f"{100 * (1 - result.cost_dollars / base):+.1f} %"
            line = (
                f"| {name} | {strategy} | {result.cost_dollars:.2f} | {result.gpu_hours:.2f} | "
                f"{100 * result.slo_attainment:.1f} % | {reclaims} | {result.lost_requests} | "
                f"{saving} |"
            )
            lines.append(line)
            print(line, flush=True)
    elapsed = time.perf_counter() - started
    print(f"[{elapsed:.0f} s]", file=sys.stderr)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
