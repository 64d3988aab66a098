"""thrifty on traffic shapes no shared trace has: steady, ramps, a spike, a day, on and off.

Run from the repository root: ``.venv/bin/python bench/shapes.py`` (``--out bench/shapes.md``
writes the table). The shared traces are five; a rule tuned to them will not show there. Here
Poisson arrivals follow synthetic rate shapes (`thrifty.sim.traces`: ramp, spike, diurnal, a
square wave), each with the prompt and output lengths of a shared trace (Azure conversation or
code), on both engine profiles (``--profiles``: others, by name or file), with `bench/run.py`'s
settings (TTFT SLO 2 s at p95, the profile's cold start, the opening fleet the first minutes
need; ``--opening N``: N ready replicas, as a service applied at ``minReplicas`` meets load
already there). Each case runs:

- ``thrifty``: as it ships, knowing nothing of a replica until it has served;
- ``static``: every fixed count from 1 up to the first that meets the SLO;
- ``clairvoyant``: the bound that knows every arrival (planned utilisation 1.0);
- ``hindsight``: the same count of the arrivals already seen (`bench/run.py`'s sweep of its
  planned utilisation), at thrifty's attainment: what perfect measurement without a forecast
  costs, so thrifty / it is what thrifty's own estimates cost.

Beside them: the case's mean demand and what one replica serves at the case's request mix when
kept saturated (`load_test`, as `vllm bench serve` at a high concurrency measures it), so a
reader sees how many replicas' worth of work the shape brings.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import run as bench  # bench/run.py: the shared cases and settings
from thrifty import cli, tracefiles
from thrifty.sim import traces
from thrifty.sim.clairvoyant import opening_replicas
from thrifty.sim.engine import Engine, EventKind
from thrifty.sim.misses import LateFirstTokens
from thrifty.sim.profiles import EngineProfile
from thrifty.sim.runner import RunResult, simulate

DURATION_SECONDS = 3600.0
SHAPES: dict[str, Callable[[], traces.RateSeries]] = {
    "steady 2/s": lambda: traces.ramp(2, 2, DURATION_SECONDS),
    "steady 12/s": lambda: traces.ramp(12, 12, DURATION_SECONDS),
    "ramp 1->15/s": lambda: traces.ramp(1, 15, DURATION_SECONDS),
    "ramp 15->1/s": lambda: traces.ramp(15, 1, DURATION_SECONDS),
    "spike 2->12/s, 3 min": lambda: traces.spike(2, 12, DURATION_SECONDS, 1200, 180),
    "day in an hour, 6/s +-80 %": lambda: traces.diurnal(6, 0.8, DURATION_SECONDS, 3600),
    "on/off 1<->10/s, 15 min": lambda: square(1, 10, DURATION_SECONDS, 900),
}
MIXES = ("azure-conv", "azure-code")
PROFILES = ("llama-8b-1xh100", "llama-70b-4xh100")
MAX_STATIC = 16
LOAD_TEST_SECONDS = 600.0


def square(low: float, high: float, duration: float, period: float) -> traces.RateSeries:
    """``high`` requests/s for the first half of each period, ``low`` for the second."""
    window = 10.0
    rates = tuple(
        high if (i * window) % period < period / 2 else low for i in range(int(duration // window))
    )
    return traces.RateSeries("square", window, rates, traces.SYNTHETIC_ATTRIBUTION)


def load_test(profile: EngineProfile, lengths: Sequence[tuple[int, int]]) -> float:
    """Prompt + generated tokens/s of one replica kept saturated with ``lengths``: twice its
    batch limit in flight, a new request for each one that finishes; measured over the second
    half of the run, once the batch has filled."""
    engine = Engine(profile)
    mix = itertools.cycle(
        (p, o)
        for p, o in lengths
        if p + o <= min(profile.max_model_len, profile.kv_capacity_tokens)
    )
    ids = itertools.count()

    def submit(now: float) -> None:
        prompt, output = next(mix)
        engine.submit(str(next(ids)), prompt, output, now)

    def run_until(until: float) -> float:
        """Tokens served by ``until``, each finished request replaced by a new one."""
        for event in engine.advance(until):
            if event.kind is EventKind.FINISHED:
                submit(until)
        return engine.prompt_tokens_total + engine.generation_tokens_total

    for _ in range(2 * profile.max_num_seqs):
        submit(0.0)
    half = LOAD_TEST_SECONDS / 2
    served_at_half: float | None = None
    now = served = 0.0
    while now < LOAD_TEST_SECONDS:
        upcoming = engine.next_event_time()
        now = LOAD_TEST_SECONDS if upcoming is None else min(upcoming, LOAD_TEST_SECONDS)
        if served_at_half is None and now >= half:
            served_at_half = run_until(half)
        served = run_until(now)
    return (served - (served_at_half or 0.0)) / half


@dataclass(frozen=True)
class Run:
    gpu_hours: float
    attainment: float
    late: LateFirstTokens = field(default_factory=LateFirstTokens)


@dataclass(frozen=True)
class Row:
    shape: str
    mix: str
    profile: str
    capacity: float
    demand: float
    """Mean prompt + generated tokens/s the case brings."""
    thrifty: Run
    static: tuple[int, Run] | None
    """The fewest fixed replicas that meet the SLO, or None when none up to MAX_STATIC does."""
    clairvoyant: Run
    hindsight: bench.AtEqualSlo
    """The hindsight fleet's GPU-hours at thrifty's attainment."""


def case(
    args: argparse.Namespace, shape: str, mix: str, profile_name: str, opening: int | None = None
) -> bench.Case:
    """As `bench.make_case` for a named trace: the opening fleet is ``opening`` ready replicas,
    else what the first cold start needs; the same for every policy."""
    profile = tracefiles.load_profile(profile_name)
    lengths = tracefiles.load_trace(mix, tracefiles.TraceOptions(seed=args.seed))
    trace = traces.synthesize(SHAPES[shape](), lengths, seed=args.seed, name=shape)
    cold = profile.cold_start_seconds
    if opening is None:
        opening = opening_replicas(trace, profile, cold, args.slo_ttft)
    return bench.Case(trace, profile, cold, opening)


def one(job: tuple[str, str, str, int, int | None]) -> Row:
    shape, mix, profile_name, seed, opening = job
    args = bench.parse_args(["--seed", str(seed)])
    found = case(args, shape, mix, profile_name, opening)
    requests = found.trace.requests
    capacity = load_test(found.profile, [(r.prompt_tokens, r.output_tokens) for r in requests])
    static = None
    for count in range(1, MAX_STATIC + 1):
        fixed = simulated_static(args, found, count)
        if fixed.attainment >= 0.95:
            static = (count, fixed)
            break
    thrifty = simulated(args, found, "thrifty")
    return Row(
        shape,
        mix,
        found.profile.name,
        capacity,
        sum(r.prompt_tokens + r.output_tokens for r in requests) / found.trace.duration_seconds,
        thrifty,
        static,
        simulated(args, found, "clairvoyant,utilization=1.0"),
        hindsight(args, found, thrifty),
    )


def simulated(args: argparse.Namespace, found: bench.Case, policy_name: str) -> Run:
    """``policy_name`` (as ``thrifty simulate --policy`` takes it) on the case."""
    result = _simulated(args, found, policy_name)
    return Run(result.gpu_hours, result.slo_attainment, result.late)


def _simulated(args: argparse.Namespace, found: bench.Case, policy_name: str) -> RunResult:
    ms = bench._model_service(args, found)
    policy = cli.build_policy(policy_name, bench._context(args, found))
    return simulate(found.trace, policy, bench._config(args, found, ms))


def hindsight(args: argparse.Namespace, found: bench.Case, thrifty: Run) -> bench.AtEqualSlo:
    """The hindsight fleet's cost at thrifty's attainment, along its swept curve."""
    [sweep] = [sweep for sweep in bench.SWEEPS if sweep.policy == "hindsight"]
    points = [
        bench.Point("hindsight", value, _simulated(args, found, f"hindsight,utilization={value:g}"))
        for value in sweep.values
    ]
    return bench.cost_at(points, thrifty.attainment)


def simulated_static(args: argparse.Namespace, found: bench.Case, count: int) -> Run:
    """``count`` fixed replicas on the case, all of them warm from the start."""
    fixed = bench._model_service(args, found, min_replicas=count, max_replicas=count)
    policy = cli.build_policy(f"static,replicas={count}", bench._context(args, found))
    config = replace(bench._config(args, found, fixed), initial_replicas=count)
    result = simulate(found.trace, policy, config)
    return Run(result.gpu_hours, result.slo_attainment)


def cell(run: Run) -> str:
    return f"{run.gpu_hours:.2f} ({100 * run.attainment:.1f} %)"


def static_cell(static: tuple[int, Run] | None, most: int) -> str:
    """The cheapest static fleet meeting the SLO, as a table shows it."""
    return f"none up to {most}" if static is None else f"{static[0]}: {cell(static[1])}"


def verdict(run: Run, static: tuple[int, Run] | None) -> str:
    """Whether the SLO is met (at least 95 % within 2 s), and the cost against the cheapest
    fixed fleet that meets it."""
    met = run.attainment >= 0.95
    if static is None:
        return "meets the SLO" if met else "misses the SLO (so does every static count)"
    ratio = run.gpu_hours / static[1].gpu_hours
    return f"{'meets' if met else '**misses**'} the SLO, {ratio:.2f}x static"


def outcome(
    thrifty: Run,
    static: tuple[int, Run] | None,
    clairvoyant: Run,
    most: int,
    hindsight: bench.AtEqualSlo | None = None,
) -> str:
    """The cells every table of these benches ends with: thrifty and its verdict, the cheapest
    static fleet that meets the SLO (searched up to ``most``), the clairvoyant bound, and the
    hindsight fleet where the table has it."""
    cells = f"{cell(thrifty)}: {verdict(thrifty, static)} | {static_cell(static, most)} | "
    cells += f"{cell(clairvoyant)} |"
    if hindsight is not None:
        cells += f" {bench.hindsight_cell(hindsight, thrifty.gpu_hours)} |"
    return cells


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| shape | lengths | profile | mean demand tok/s | one replica saturated tok/s | "
        "thrifty GPU-h (SLO) | cheapest static meeting the SLO | clairvoyant | "
        f"{HINDSIGHT_HEADER} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.shape} | {row.mix} | {row.profile} | {row.demand:,.0f} | "
            f"{row.capacity:,.0f} | "
            + outcome(row.thrifty, row.static, row.clairvoyant, MAX_STATIC, row.hindsight)
        )
    return lines


class Judged(Protocol):
    """A case as the summary reads it (bench/profiles.py's rows too)."""

    @property
    def thrifty(self) -> Run: ...

    @property
    def static(self) -> tuple[int, Run] | None: ...

    @property
    def hindsight(self) -> bench.AtEqualSlo: ...


HINDSIGHT_HEADER = "hindsight fleet at thrifty's SLO: thrifty / it"
OWN_LOSS = 1.15
"""thrifty / the hindsight fleet above which the summary names the case."""


def summary(rows: Sequence[Judged]) -> list[str]:
    feasible = [(row.thrifty, row.static[1]) for row in rows if row.static is not None]
    met = [(run, static) for run, static in feasible if run.attainment >= 0.95]
    ratios = [run.gpu_hours / static.gpu_hours for run, static in met]
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
    return [
        f"- thrifty meets the SLO on {len(met)} of the {len(feasible)} cases a static fleet "
        f"meets it on; where it does, at {mean:.2f}x the cheapest such static fleet's GPU-hours "
        "(geometric mean).",
        *_against_hindsight(rows),
    ]


def _against_hindsight(rows: Sequence[Judged]) -> list[str]:
    reached = [(row.thrifty, row.hindsight.cost) for row in rows if row.hindsight.cost]
    if not reached:
        return []
    ratios = [run.gpu_hours / cost for run, cost in reached]
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    above = sum(1 for ratio in ratios if ratio > OWN_LOSS)
    return [
        f"- Against the hindsight fleet at thrifty's attainment ({len(reached)} cases where it "
        f"reaches it): {mean:.2f}x (geometric mean), above {OWN_LOSS:.2f}x on {above}."
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument(
        "--profiles",
        nargs="+",
        default=list(PROFILES),
        help="built-in engine profiles or profile files (default: the shared results' two)",
    )
    parser.add_argument(
        "--opening",
        type=int,
        help="ready replicas every case opens with, as a service applied at minReplicas meets "
        "its load (default: what the first cold start needs)",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    jobs = [
        (shape, mix, profile, args.seed, args.opening)
        for shape in args.shapes
        for mix in MIXES
        for profile in args.profiles
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    elapsed = time.perf_counter() - started
    command = " ".join(["bench/shapes.py", *(argv if argv is not None else sys.argv[1:])])
    lengths = sorted(
        {tracefiles.load_trace(mix, tracefiles.TraceOptions()).attribution for mix in MIXES}
    )
    publish(
        "# thrifty on synthetic traffic shapes",
        f"`.venv/bin/python {command}` ({elapsed:.0f} s on this 2-core machine; the table, then "
        "any text below it added by hand). TTFT SLO 2 s at p95, Poisson arrivals at the shape's "
        f"rate (seed {args.seed}), one hour each; the script's docstring says what runs. "
        + ("" if args.opening is None else f"Every policy opens at {args.opening} ready. ")
        + f"Token lengths: {'; '.join(lengths)}.",
        [*table(rows), "", *summary(rows)],
        args.out,
    )
    return 0


def publish(title: str, intro: str, body: Sequence[str], out: Path | None) -> None:
    """Prints the page (title, how it was made, the tables) and writes it to ``out`` if given;
    text added by hand below the tables is appended after a run, not written here."""
    output = "\n".join([title, "", intro, "", *body]) + "\n"
    if out:
        out.write_text(output)
    print(output)


if __name__ == "__main__":
    sys.exit(main())
