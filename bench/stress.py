"""thrifty on random cases: traffic, engine, target, percentile, router and scrapes drawn at random.

Run from the repository root: ``.venv/bin/python bench/stress.py`` (``--out bench/stress.md``
writes the page). The other pages vary one thing at a time around the shared traces; here every
case draws all of them, as a check on traffic, model sizes and settings the project does not have
would (one case per seed, the same on every run):
- traffic: an hour of Poisson arrivals around a base rate whose level steps (x0.3 to x2.5 of the
  base) every 5-15 minutes, with bursts of 2-6x for 10-60 s (1 % of 10-s windows start one);
  the prompt and output lengths of a shared trace (Azure conversation or code, or Mooncake's
  long prompts);
- the engine: the 8B or 70B profile with its prefill speed x0.5, x1 or x2, its lone-sequence
  decode step x0.7, x1 or x1.5, and a cold start of 60, 120, 300 or 600 s;
- the promise: a TTFT target of 0.5-4 s (1-8 s on Mooncake's lengths) at p90, p95 or p99;
- the router (any of `thrifty simulate --router`) and, on half the cases, noisy scrapes.
Each case runs thrifty from the opening fleet its first cold start needs, and fixed fleets of
1, 2, ... warm replicas until one reaches both thrifty's attainment and the declared percentile.
thrifty is set against the static curve at its own attainment (interpolated, as bench/run.py
compares baselines): a fleet sized once for the hour's peaks is what autoscaling must beat. The
summary's last line says where thrifty's late first tokens come from on the cases it misses, by
the fleet's state when they arrived (`thrifty.sim.misses`).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import run as bench  # bench/run.py: the shared cases and settings
import shapes
from thrifty import tracefiles
from thrifty.api.modelservice import PERCENTILES
from thrifty.sim import traces
from thrifty.sim.clairvoyant import opening_replicas
from thrifty.sim.fleet import Router
from thrifty.sim.misses import LateFirstTokens

DURATION_SECONDS = 3600.0
WINDOW_SECONDS = 10.0
MAX_STATIC = 32
MIXES = ("azure-conv", "azure-code", "mooncake")
PROFILES = ("llama-8b-1xh100", "llama-70b-4xh100")
LEVELS = (0.3, 0.6, 1.0, 1.5, 2.5)
"""Multiples of the base rate a level steps to."""


@dataclass(frozen=True)
class Draw:
    """What one seed draws: everything a case is but its arrivals."""

    seed: int
    mix: str
    profile: str
    prefill: float
    itl: float
    cold_start: float
    target: float
    percentile: str
    router: str
    noise: bool

    def label(self) -> str:
        scrapes = ", noisy" if self.noise else ""
        return (
            f"{self.seed} | {self.mix} | {self.profile} prefill x{self.prefill:g}, step "
            f"x{self.itl:g}, cold {self.cold_start:.0f} s | {self.target:g} s at "
            f"{self.percentile} | {self.router}{scrapes}"
        )


def draw(seed: int) -> Draw:
    rng = random.Random(seed)
    mix = rng.choice(MIXES)
    return Draw(
        seed=seed,
        mix=mix,
        profile=rng.choice(PROFILES),
        prefill=rng.choice((0.5, 1.0, 2.0)),
        itl=rng.choice((0.7, 1.0, 1.5)),
        cold_start=rng.choice((60.0, 120.0, 300.0, 600.0)),
        target=rng.choice((0.5, 1.0, 2.0, 4.0)) * (2.0 if mix == "mooncake" else 1.0),
        percentile=rng.choice(("p90", "p95", "p99")),
        router=rng.choice([router.value for router in Router]),
        noise=rng.random() < 0.5,
    )


def rates(rng: random.Random, base: float) -> traces.RateSeries:
    """Requests/s per 10-s window: a level that steps every 5-15 minutes, and short bursts."""
    series: list[float | None] = []
    level, step_at, burst_until, burst = base, rng.uniform(300, 900), -1.0, 1.0
    for index in range(int(DURATION_SECONDS // WINDOW_SECONDS)):
        now = index * WINDOW_SECONDS
        if now >= step_at:
            level, step_at = base * rng.choice(LEVELS), now + rng.uniform(300, 900)
        if now > burst_until and rng.random() < 0.01:
            burst_until, burst = now + rng.uniform(10, 60), rng.uniform(2, 6)
        series.append(level * (burst if now <= burst_until else 1.0))
    return traces.RateSeries("random", WINDOW_SECONDS, tuple(series), traces.SYNTHETIC_ATTRIBUTION)


def case(found: Draw) -> tuple[argparse.Namespace, bench.Case]:
    rng = random.Random(f"traffic {found.seed}")
    # Base rates a replica or a few carry: long prompts and the 70B's 4 GPUs take fewer.
    base = rng.uniform(0.5, 12.0)
    base *= (0.3 if found.mix == "mooncake" else 1.0) * (0.3 if "70b" in found.profile else 1.0)
    argv = ["--seed", str(found.seed), "--slo-ttft", str(found.target)]
    argv += ["--slo-percentile", found.percentile, "--router", found.router]
    argv += ["--max-replicas", str(MAX_STATIC), *(["--noise"] if found.noise else [])]
    args = bench.parse_args(argv)
    loaded = tracefiles.load_profile(found.profile)
    profile = replace(
        loaded,
        prefill_tokens_per_second=loaded.prefill_tokens_per_second * found.prefill,
        itl0_seconds=loaded.itl0_seconds * found.itl,
        cold_start_seconds=found.cold_start,
    )
    lengths = tracefiles.load_trace(found.mix, tracefiles.TraceOptions(seed=found.seed))
    trace = traces.synthesize(
        rates(rng, base), lengths, seed=found.seed, name=f"random {found.seed}"
    )
    opening = opening_replicas(trace, profile, found.cold_start, found.target)
    return args, bench.Case(trace, profile, found.cold_start, opening)


@dataclass(frozen=True)
class Row:
    draw: Draw
    thrifty: shapes.Run
    statics: tuple[tuple[int, shapes.Run], ...]

    @property
    def declared(self) -> float:
        return PERCENTILES[self.draw.percentile]

    @property
    def static(self) -> tuple[int, shapes.Run] | None:
        """The fewest fixed replicas that meet the declared percentile (None: none up to
        MAX_STATIC)."""
        return next(((n, r) for n, r in self.statics if r.attainment >= self.declared), None)

    @property
    def at_equal(self) -> bench.AtEqualSlo:
        curve = bench.frontier_of((run.gpu_hours, run.attainment) for _, run in self.statics)
        return bench.cost_on(curve, self.thrifty.attainment, "GPU-h")


def one(seed: int) -> Row:
    found = draw(seed)
    args, built = case(found)
    thrifty = shapes.simulated(args, built, "thrifty")
    wanted = max(thrifty.attainment, PERCENTILES[found.percentile])
    statics: list[tuple[int, shapes.Run]] = []
    for count in range(1, MAX_STATIC + 1):
        fixed = shapes.simulated_static(args, built, count)
        statics.append((count, fixed))
        if fixed.attainment >= wanted:
            break
    return Row(found, thrifty, tuple(statics))


def _cell(row: Row) -> str:
    met = row.thrifty.attainment >= row.declared
    ours = f"{shapes.cell(row.thrifty)}{'' if met else ' **miss**'}"
    static = shapes.static_cell(row.static, MAX_STATIC)
    at = row.at_equal
    if at.cost is None:
        return f"{ours} | {static} | never reaches it |"
    bound = "at most " if at.upper_bound else ""
    return f"{ours} | {static} | {bound}{at.cost:.2f}: {row.thrifty.gpu_hours / at.cost:.2f}x |"


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| seed | lengths | engine | target | router | thrifty GPU-h (attainment) | "
        "fewest static replicas meeting the target | static at thrifty's attainment: "
        "thrifty / it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {row.draw.label()} | {_cell(row)}" for row in rows]
    return lines


def summary(rows: Sequence[Row]) -> list[str]:
    feasible = [row for row in rows if row.static is not None]
    met = [row for row in feasible if row.thrifty.attainment >= row.declared]
    cheaper_static = [
        row
        for row in feasible
        if row.thrifty.attainment < row.declared
        and row.static is not None
        and row.static[1].gpu_hours <= row.thrifty.gpu_hours
    ]
    ratios = [
        row.thrifty.gpu_hours / row.at_equal.cost
        for row in rows
        if row.at_equal.cost and not row.at_equal.upper_bound
    ]
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
    missed = [row for row in feasible if row.thrifty.attainment < row.declared]
    late = sum((row.thrifty.late for row in missed), LateFirstTokens())
    return [
        f"- thrifty meets the declared percentile on {len(met)} of the {len(feasible)} cases a "
        f"static fleet of at most {MAX_STATIC} meets it on (and on "
        f"{sum(1 for r in rows if r.static is None and r.thrifty.attainment >= r.declared)} of "
        f"the {len(rows) - len(feasible)} where none does).",
        f"- It misses where a static fleet that costs no more meets it on {len(cheaper_static)}: "
        f"seeds {', '.join(str(row.draw.seed) for row in cheaper_static) or 'none'}.",
        f"- Against the static curve at thrifty's own attainment ({len(ratios)} cases it crosses "
        f"it): {mean:.2f}x (geometric mean), above 1.25x on "
        f"{sum(1 for ratio in ratios if ratio > 1.25)}, under 1 on "
        f"{sum(1 for ratio in ratios if ratio < 1.0)}.",
        f"- Its first tokens over the target on the {len(missed)} cases it misses where a static "
        f"fleet meets, by the fleet when they arrived (`thrifty.sim.misses`): {late.describe()}.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=48)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.cases)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, seeds))
    elapsed = time.perf_counter() - started
    command = " ".join(["bench/stress.py", *(argv if argv is not None else sys.argv[1:])])
    shapes.publish(
        "# thrifty on random cases",
        f"`.venv/bin/python {command}` ({elapsed:.0f} s on this 2-core machine; the table, then "
        "any text below it added by hand). One hour per case; the script's docstring says what "
        "each seed draws. Attainment is the share of first tokens within the case's own target.",
        [*table(rows), "", *summary(rows)],
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
