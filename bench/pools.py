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
- ``thrifty``: `placement: Cheapest` over the same two pools, spot over-provisioned by what a
  reclaim is expected to take within the exposure between the notice and a replacement's cold
  start (`GPUPoolSpec.planned_units`), at the larger of the pool's published `interruptionRate`
  and the hazard observed so far; reclaimed replicas replaced at once on the taint, and the
  return to spot one replica at a time after the return delay.

Each run's SLO attainment is compared with the SLO (`bench/run.py`: met when at least the
declared percentile of requests get their first token within the TTFT target), and thrifty's
cost is compared with the strategies that reach the same attainment: the bar is on-demand's
attainment, or the SLO's percentile when on-demand meets it (`summary`). With ``--sweep`` each
strategy also runs at several targets (`TARGET_MULTIPLES`), and on-demand's and the
SkyServe-style cost are interpolated along those curves at thrifty's own attainment
(`equal_table`), as `bench/run.py` compares the scaling baselines.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import run as bench  # bench/run.py: the shared cases and settings
from thrifty import cli
from thrifty.api import gpupool, modelservice
from thrifty.api.modelservice import PERCENTILES
from thrifty.policy import types
from thrifty.sim.pools import SimPool, interruptions
from thrifty.sim.profiles import profile_by_name
from thrifty.sim.runner import RunResult, simulate

STRATEGIES = ("on-demand", "spot", "skyserve", "thrifty")
SAVINGS_TARGET = 0.40
"""thrifty across pools at least 40 % cheaper than thrifty on on-demand only (issue 11)."""
TARGET_MULTIPLES = (0.5, 1.0, 2.0, 4.0)
"""``--sweep``: each strategy run with the policy's TTFT target at these multiples of the SLO's,
every run measured against the SLO: its cost/attainment curve, as `bench/run.py` sweeps each
baseline's knob."""


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
            ready_units=None
            if counts.ready_units is None
            else max(counts.ready_units - self.extra, 0.0),
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


def meets(result: RunResult, percentile: float) -> bool:
    """The SLO as `bench/run.py` defines it: at least ``percentile`` of requests within TTFT."""
    return result.slo_attainment + 1e-9 >= percentile


def bar(results: dict[str, RunResult], percentile: float) -> float:
    """The attainment strategies are compared at: on-demand's, capped at the SLO's percentile
    (a strategy that meets the SLO is at the same attainment as an on-demand run above it)."""
    return min(results["on-demand"].slo_attainment, percentile)


def summary(name: str, results: dict[str, RunResult], percentile: float) -> str:
    """One trace at the same SLO attainment: which strategies reach the bar, and thrifty's cost
    against on-demand and against the SkyServe-style fallback."""
    level = bar(results, percentile)
    reaching = [s for s in STRATEGIES if meets(results[s], level)]
    thrifty = results["thrifty"].cost_dollars
    on_demand = results["on-demand"].cost_dollars
    skyserve = results["skyserve"]
    versus = f"{100 * (1 - thrifty / on_demand):.1f} %"
    if meets(skyserve, level):
        against = f"${thrifty:.2f} vs ${skyserve.cost_dollars:.2f}"
    else:
        against = f"skyserve below the bar ({100 * skyserve.slo_attainment:.1f} %)"
    at_bar = "yes" if "thrifty" in reaching else "no"
    costs = ", ".join(f"{s} ${results[s].cost_dollars:.2f}" for s in reaching)
    return f"| {name} | {100 * level:.1f} % | {costs} | {at_bar} | {versus} | {against} |"


def run_strategy(
    args: argparse.Namespace, case: bench.Case, strategy: str, multiple: float = 1.0
) -> tuple[RunResult, int]:
    """One strategy's run, its policy aiming at ``multiple`` x the SLO's TTFT target."""
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
    ms = bench._model_service(args, case, ttft_target_seconds=multiple * args.slo_ttft)
    spec = ms.spec.model_copy(update={"pools": [p.name for p in pools], "placement": placement})
    ms = ms.model_copy(update={"spec": spec})
    reclaims = interruptions(pools, case.trace.duration_seconds, args.reclaims_per_hour, args.seed)
    config = replace(
        bench._config(args, case, ms),
        pools=pools,
        reclaims=reclaims,
        return_delay_seconds=args.return_delay,
        learn_reclaims=strategy == "thrifty",
        slo_ttft_seconds=args.slo_ttft,
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
    extra.add_argument(
        "--seeds", type=int, default=1, help="also summarise this many seeds from --seed on"
    )
    extra.add_argument(
        "--sweep",
        action="store_true",
        help="also compare at thrifty's own attainment along each strategy's swept curve",
    )
    extra.add_argument("--out", type=Path)
    mine = extra.parse_args(argv)
    return argparse.Namespace(**{**vars(parser), **vars(mine)})


def seeded(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "seed": seed})


def seed_cases(args: argparse.Namespace, seed: int) -> dict[str, bench.Case]:
    """Every selected trace as one seed gives it (ServeGen's arrivals are drawn by the seed)."""
    return {
        name: bench.make_case(seeded(args, seed), name, profile_by_name(profile_name))
        for name, profile_name in bench.MATRIX
        if name in args.traces
    }


def run_seed(
    args: argparse.Namespace, seed: int, cases: dict[str, bench.Case], log: Callable[[str], None]
) -> dict[str, dict[str, tuple[RunResult, int]]]:
    """Every strategy on every case with one seed of the reclaim process."""
    runs: dict[str, dict[str, tuple[RunResult, int]]] = {}
    for name, case in cases.items():
        runs[name] = {}
        for strategy in STRATEGIES:
            runs[name][strategy] = run_strategy(seeded(args, seed), case, strategy)
            log(_run_line(name, strategy, runs[name], args.slo_percentile))
    return runs


def _run_line(
    name: str, strategy: str, runs: dict[str, tuple[RunResult, int]], slo_percentile: str
) -> str:
    result, reclaims = runs[strategy]
    base = runs["on-demand"][0].cost_dollars
    saving = "" if not base else f"{100 * (1 - result.cost_dollars / base):+.1f} %"
    met = "yes" if meets(result, PERCENTILES[slo_percentile]) else "no"
    return (
        f"| {name} | {strategy} | {result.cost_dollars:.2f} | {result.gpu_hours:.2f} | "
        f"{100 * result.slo_attainment:.1f} % | {met} | {reclaims} | "
        f"{result.lost_requests} | {saving} |"
    )


def _at_most(a: RunResult, b: RunResult) -> bool:
    """``a`` costs at most ``b``, to the cent the tables print."""
    return round(a.cost_dollars, 2) <= round(b.cost_dollars, 2)


def seed_cell(results: dict[str, RunResult], percentile: float) -> str:
    """thrifty against on-demand, and against the SkyServe-style run when both reach the bar."""
    level = bar(results, percentile)
    thrifty = results["thrifty"]
    saving = 1 - thrifty.cost_dollars / results["on-demand"].cost_dollars
    cell = f"{100 * saving:+.0f} %"
    if not meets(thrifty, level):
        return f"{cell}, below the bar"
    skyserve = results["skyserve"]
    if meets(skyserve, level):
        cell += " ≤ sky" if _at_most(thrifty, skyserve) else " > sky"
    return cell


def seeds_table(
    by_seed: dict[int, dict[str, dict[str, tuple[RunResult, int]]]], percentile: float
) -> list[str]:
    """thrifty vs on-demand per trace and seed, then how often each target holds."""
    seeds = sorted(by_seed)
    traces = list(by_seed[seeds[0]])
    lines = [
        "| trace | " + " | ".join(f"seed {s} (reclaims)" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    cheaper = at_bar = beat = compared = 0
    for name in traces:
        cells = []
        for seed in seeds:
            runs = by_seed[seed][name]
            results = {strategy: run for strategy, (run, _) in runs.items()}
            cells.append(f"{seed_cell(results, percentile)} ({runs['thrifty'][1]})")
            level = bar(results, percentile)
            thrifty, skyserve = results["thrifty"], results["skyserve"]
            cheaper += (
                thrifty.cost_dollars <= (1 - SAVINGS_TARGET) * results["on-demand"].cost_dollars
            )
            at_bar += meets(thrifty, level)
            if meets(thrifty, level) and meets(skyserve, level):
                compared += 1
                beat += _at_most(thrifty, skyserve)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    runs_count = len(traces) * len(seeds)
    lines += [
        "",
        f"- at least {100 * SAVINGS_TARGET:.0f} % cheaper than on-demand: {cheaper} of "
        f"{runs_count} runs;",
        f"- at the bar (on-demand's attainment, capped at the SLO): {at_bar} of {runs_count};",
        f"- at most the SkyServe-style cost where both reach the bar: {beat} of {compared}.",
    ]
    return lines


Curves = dict[str, dict[str, list[bench.Point]]]
"""trace -> strategy -> its runs at each of `TARGET_MULTIPLES`."""


def sweep_seed(
    args: argparse.Namespace,
    seed: int,
    cases: dict[str, bench.Case],
    runs: dict[str, dict[str, tuple[RunResult, int]]],
) -> Curves:
    """Each strategy's curve on each case (``runs`` holds its runs at the multiple 1)."""
    curves: Curves = {}
    for name, case in cases.items():
        curves[name] = {
            strategy: [
                bench.Point(
                    strategy,
                    multiple,
                    runs[name][strategy][0]
                    if multiple == 1.0
                    else run_strategy(seeded(args, seed), case, strategy, multiple)[0],
                )
                for multiple in TARGET_MULTIPLES
            ]
            for strategy in STRATEGIES
        }
    return curves


def dollars(result: RunResult) -> float:
    return result.cost_dollars


def equal_cell(
    curves: dict[str, list[bench.Point]], thrifty: RunResult
) -> tuple[str, bool | None, bool | None]:
    """thrifty's default run against the on-demand and SkyServe-style curves at its own
    attainment: the cell, whether it saves the target share against on-demand, and whether it
    costs at most the SkyServe-style fallback (each None where that curve never reaches it)."""
    level = thrifty.slo_attainment
    on_demand = bench.cost_at(curves["on-demand"], level, dollars, "$")
    skyserve = bench.cost_at(curves["skyserve"], level, dollars, "$")
    spent = thrifty.cost_dollars
    cheaper = at_most = None
    if on_demand.cost is None:
        cell = "on-demand never"
    else:
        cheaper = spent <= (1 - SAVINGS_TARGET) * on_demand.cost
        cell = f"{100 * (1 - spent / on_demand.cost):+.0f} %{_bounded(on_demand)}"
    if skyserve.cost is None:
        cell += ", sky never"
    else:
        at_most = round(spent, 2) <= round(skyserve.cost, 2)
        relation = "≤" if at_most else ">"
        cell += f", ${spent:.2f} {relation} sky ${skyserve.cost:.2f}{_bounded(skyserve)}"
    return f"{cell} ({100 * level:.1f} %)", cheaper, at_most


def _bounded(at: bench.AtEqualSlo) -> str:
    """A mark for a cost the curve only bounds: its cheapest run is already above the level."""
    return "^" if at.upper_bound else ""


def equal_table(
    by_seed: dict[int, dict[str, dict[str, tuple[RunResult, int]]]], curves: dict[int, Curves]
) -> list[str]:
    """Per trace and seed, thrifty against on-demand and SkyServe-style at thrifty's own
    attainment, interpolated along their curves, then how often each target holds."""
    seeds = sorted(curves)
    traces = list(curves[seeds[0]])
    lines = [
        "| trace | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    verdicts: list[tuple[bool | None, bool | None]] = []
    for name in traces:
        cells = []
        for seed in seeds:
            cell, cheaper, at_most = equal_cell(
                curves[seed][name], by_seed[seed][name]["thrifty"][0]
            )
            cells.append(cell)
            verdicts.append((cheaper, at_most))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    compared = [c for c, _ in verdicts if c is not None]
    against = [a for _, a in verdicts if a is not None]
    lines += [
        "",
        f"- at least {100 * SAVINGS_TARGET:.0f} % cheaper than on-demand at the same attainment: "
        f"{sum(compared)} of {len(compared)} runs (on-demand never reaches thrifty's in "
        f"{len(verdicts) - len(compared)});",
        f"- at most the SkyServe-style cost at the same attainment: {sum(against)} of "
        f"{len(against)} (it never reaches thrifty's in {len(verdicts) - len(against)}).",
        "",
        "^: that strategy's cheapest run (the loosest target) is already above thrifty's "
        "attainment, so its cost there bounds the cost at thrifty's from above.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    percentile = PERCENTILES[args.slo_percentile]
    header = (
        "| trace | strategy | $ | GPU-h | SLO attainment | SLO met | reclaims | lost requests "
        "| vs on-demand |\n|---|---|---|---|---|---|---|---|---|"
    )
    print(header, flush=True)
    cases = {seed: seed_cases(args, seed) for seed in range(args.seed, args.seed + args.seeds)}
    runs = run_seed(args, args.seed, cases[args.seed], lambda line: print(line, flush=True))
    lines = [header]
    for name, per_trace in runs.items():
        lines += [
            _run_line(name, strategy, per_trace, args.slo_percentile) for strategy in STRATEGIES
        ]
    summaries = [
        summary(name, {s: run for s, (run, _) in per_trace.items()}, percentile)
        for name, per_trace in runs.items()
    ]
    same = [
        "",
        f"At the same SLO attainment (SLO: {args.slo_percentile} of requests within "
        f"{args.slo_ttft:g} s TTFT; bar: on-demand's attainment, capped at "
        f"{100 * percentile:g} %):",
        "",
        "| trace | bar | strategies at the bar | thrifty at the bar | thrifty vs on-demand "
        "| thrifty vs skyserve |",
        "|---|---|---|---|---|---|",
        *summaries,
    ]
    by_seed = {args.seed: runs}
    for seed in range(args.seed + 1, args.seed + args.seeds):
        by_seed[seed] = run_seed(args, seed, cases[seed], lambda _: None)
    if args.seeds > 1:
        same += [
            "",
            f"thrifty against on-demand over seeds {args.seed}-{args.seed + args.seeds - 1} of "
            'the reclaim process ("≤ sky": at most the SkyServe-style cost, both at the bar):',
            "",
            *seeds_table(by_seed, percentile),
        ]
    if args.sweep:
        curves = {seed: sweep_seed(args, seed, cases[seed], by_seed[seed]) for seed in by_seed}
        multiples = ", ".join(f"{m:g}" for m in TARGET_MULTIPLES)
        same += [
            "",
            "At thrifty's own attainment, each other strategy's cost interpolated along its "
            f"curve (its policy aiming at {multiples} x the SLO's TTFT target, every run measured "
            "against the SLO; thrifty's attainment in brackets):",
            "",
            *equal_table(by_seed, curves),
        ]
    lines += same
    print("\n".join(same), flush=True)
    elapsed = time.perf_counter() - started
    print(f"[{elapsed:.0f} s]", file=sys.stderr)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
