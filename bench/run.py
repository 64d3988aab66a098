"""The benchmark: every policy on every shared trace, baselines swept, targets checked.

Run from the repository root: ``.venv/bin/python bench/run.py`` (or ``make bench``). It writes
``bench/results.md`` with the tables, the targets and the command that produced them.

A baseline is only as good as its knob, so each baseline runs at several settings of its main
knob (the target per replica; the replica count for static provisioning) to trace its
cost-versus-SLO curve, and thrifty is compared with that curve at thrifty's own SLO attainment:
the GPU-hours the baseline needs, by linear interpolation along its cost/attainment frontier, to
serve as many requests within the TTFT target. The clairvoyant bound is swept the same way (its
planned utilisation) so that "within 15 % of clairvoyant" is measured at equal attainment too.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thrifty import cli, tracefiles
from thrifty.api.modelservice import PERCENTILES, ModelService
from thrifty.policy.types import Enforcement
from thrifty.sim import report, scenario
from thrifty.sim.clairvoyant import opening_replicas
from thrifty.sim.fleet import Router
from thrifty.sim.observe import Metrics
from thrifty.sim.profiles import EngineProfile, profile_by_name
from thrifty.sim.runner import RunResult, ScrapeNoise, SimulationConfig, TimePoint, simulate
from thrifty.sim.traces import Trace

BENCH_DIR = Path(__file__).resolve().parent
# Real per-request traces at their real rates on the 8B profile; the ServeGen day (compressed into
# an hour) on the 70B profile, so one case has several multi-GPU replicas and a long cold start.
MATRIX = (
    ("azure-code", "llama-8b-1xh100"),
    ("azure-conv", "llama-8b-1xh100"),
    ("mooncake", "llama-8b-1xh100"),
    ("servegen-small", "llama-70b-4xh100"),
    ("servegen-mid", "llama-70b-4xh100"),
)
HPA_RATIO_TARGET = 0.70
"""thrifty's GPU-hours at most this share of the HPA + KEDA curve's at equal attainment."""
BEST_RATIO_TARGET = 1.10
"""...and at most this multiple of the best of the static, KPA and clairvoyant curves."""
NOISE_TARGET = 0.10
"""With real scrapes' noise on, GPU-hours within this share of the clean run's."""
LATENCY_SWEEP = (0.5, 1.0, 2.0, 4.0)
"""Multiples of the TTFT target thrifty is also run at: cost must fall as the target loosens."""
SPEED_TARGET_SECONDS = 10.0


@dataclass(frozen=True)
class Sweep:
    """A baseline and the knob values that trace its curve."""

    policy: str
    knob: str
    values: tuple[float, ...]


SWEEPS = (
    Sweep("hpa", "waiting per replica", (0.5, 1.0, 2.0, 4.0, 8.0)),
    Sweep("kpa", "concurrency per replica", (4.0, 8.0, 16.0, 32.0, 100.0)),
    Sweep("static", "replicas", (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)),
    Sweep("clairvoyant", "planned utilisation", (0.5, 0.7, 0.9, 1.0, 1.2)),
    Sweep("hindsight", "planned utilisation", (0.5, 0.7, 1.0, 1.2, 1.5)),
)
"""The hindsight fleet is no target: a reference for what perfect measurement without a forecast
costs (`thrifty.sim.clairvoyant`)."""


@dataclass(frozen=True)
class Point:
    policy: str
    knob: float | None
    result: RunResult


@dataclass(frozen=True)
class Case:
    """One trace on one engine profile, with the settings every policy shares."""

    trace: Trace
    profile: EngineProfile
    cold_start_seconds: float
    initial_replicas: int
    """Warm replicas at t=0: what the opening traffic needs, the same for every policy."""


@dataclass(frozen=True)
class TraceBench:
    case: Case
    thrifty: RunResult
    budget_run: RunResult
    budget_dollars_per_hour: float
    curves: dict[str, list[Point]]
    noisy: RunResult
    """thrifty with `ScrapeNoise` on."""
    latency: list[tuple[float, RunResult]]
    """(TTFT target in seconds, thrifty's run at it) for the latency sweep."""
    scale_down_delay_seconds: float

    @property
    def trace(self) -> Trace:
        return self.case.trace


DEFAULT_QUEUE_TARGET = 8.0
"""The spec's queue target per replica for every run but the swept baselines' (thrifty uses it
only while it knows no capacity)."""


def _model_service(
    args: argparse.Namespace,
    case: Case,
    queue_target: float = DEFAULT_QUEUE_TARGET,
    **overrides: Any,
) -> ModelService:
    """The ModelService every run of a case serves (the operator's translation reads it)."""
    settings: dict[str, Any] = {
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
        "queue_target_per_replica": queue_target,
        "ttft_target_seconds": args.slo_ttft,
        "ttft_percentile": args.slo_percentile,
        "cold_start_seconds": case.cold_start_seconds,
        **overrides,
    }
    return scenario.model_service(case.profile, **settings)


def _config(
    args: argparse.Namespace, case: Case, ms: ModelService, noisy: bool | None = None
) -> SimulationConfig:
    target = ms.spec.latency_target.seconds
    return SimulationConfig(
        profile=case.profile,
        model_service=ms,
        price_per_gpu_hour=args.price_per_gpu_hour,
        cold_start_seconds=case.cold_start_seconds,
        initial_replicas=max(case.initial_replicas, ms.spec.scaling.min_replicas),
        slo_ttft_seconds=target if target is not None else args.slo_ttft,
        noise=ScrapeNoise(seed=args.seed) if (args.noise if noisy is None else noisy) else None,
        metrics=Metrics(args.metrics),
        router=Router(args.router),
        router_seed=args.seed,
    )


def _context(args: argparse.Namespace, case: Case) -> cli.PolicyContext:
    return cli.PolicyContext(case.trace, case.profile, case.cold_start_seconds, args.slo_ttft, 15.0)


def _sweep_point(args: argparse.Namespace, case: Case, sweep: Sweep, value: float) -> Point:
    base = _model_service(args, case, queue_target=value)
    if sweep.policy == "static":
        replicas = int(value)
        fixed = _model_service(args, case, value, min_replicas=replicas, max_replicas=replicas)
        policy = cli.build_policy(f"static,replicas={replicas}", _context(args, case))
        config = replace(_config(args, case, fixed), initial_replicas=replicas)
    else:
        knob = "utilization" if sweep.policy in cli.TRACE_POLICIES else "target_per_replica"
        policy = cli.build_policy(f"{sweep.policy},{knob}={value:g}", _context(args, case))
        config = _config(args, case, base)
    return Point(sweep.policy, value, simulate(case.trace, policy, config))


def make_case(args: argparse.Namespace, name: str, profile: EngineProfile) -> Case:
    options = tracefiles.TraceOptions(target_rps=args.servegen_rps, seed=args.seed)
    trace = tracefiles.load_trace(name, options)
    cold_start = args.cold_start or profile.cold_start_seconds
    # Every policy starts from the fleet the first minutes need, so none pays for an unfair
    # cold open (Mooncake starts at full rate with 40k-token prompts).
    initial = opening_replicas(trace, profile, cold_start, args.slo_ttft)
    return Case(trace, profile, cold_start, initial)


def bench_trace(args: argparse.Namespace, case: Case, log: Callable[[str], None]) -> TraceBench:
    name = case.trace.name
    thrifty = simulate(
        case.trace,
        cli.build_policy("thrifty", _context(args, case)),
        _config(args, case, _model_service(args, case)),
    )
    log(f"{name}: thrifty {thrifty.gpu_hours:.2f} GPU-h, SLO {100 * thrifty.slo_attainment:.1f} %")
    curves: dict[str, list[Point]] = {}
    for sweep in SWEEPS:
        try:
            curves[sweep.policy] = [_sweep_point(args, case, sweep, v) for v in sweep.values]
        except cli.CommandError as error:
            log(f"{name}: {sweep.policy} skipped: {error}")
            continue
        log(f"{name}: {sweep.policy} swept over {len(sweep.values)} settings")
    # A Hard $/hour cap at half of thrifty's own peak spend: it must bind, and never be passed.
    peak = max(p.dollars_per_hour for p in thrifty.series)
    replica_cost = case.profile.gpus_per_replica * args.price_per_gpu_hour
    cap = max(replica_cost, round(peak / 2 / replica_cost) * replica_cost)
    capped = _model_service(args, case, max_dollars_per_hour=cap, enforcement=Enforcement.HARD)
    # The opening fleet must fit under the cap, or the run starts over budget before any decision.
    affordable = int(cap // replica_cost)
    budget_config = replace(
        _config(args, case, capped), initial_replicas=min(case.initial_replicas, affordable)
    )
    budget_run = simulate(
        case.trace, cli.build_policy("thrifty", _context(args, case)), budget_config
    )
    noisy = simulate(
        case.trace,
        cli.build_policy("thrifty", _context(args, case)),
        _config(args, case, _model_service(args, case), noisy=True),
    )
    log(f"{name}: thrifty with noisy scrapes {noisy.gpu_hours:.2f} GPU-h")
    latency = []
    for multiple in LATENCY_SWEEP:
        target = multiple * args.slo_ttft
        ms = _model_service(args, case, ttft_target_seconds=target)
        run = simulate(
            case.trace, cli.build_policy("thrifty", _context(args, case)), _config(args, case, ms)
        )
        latency.append((target, run))
    log(f"{name}: latency targets swept")
    delay = float(_model_service(args, case).spec.scaling.scale_down_delay_seconds)
    return TraceBench(case, thrifty, budget_run, cap, curves, noisy, latency, delay)


# -- comparison at equal SLO attainment --------------------------------------------------------


def gpu_hours(result: RunResult) -> float:
    return result.gpu_hours


def frontier(
    points: Sequence[Point], cost: Callable[[RunResult], float] = gpu_hours
) -> list[tuple[float, float]]:
    """(cost, attainment) points no other point beats on both, cheapest first."""
    return frontier_of((cost(p.result), p.result.slo_attainment) for p in points)


def frontier_of(pairs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """`frontier` of (cost, attainment) pairs."""
    ordered = sorted(pairs)
    best: list[tuple[float, float]] = []
    for spent, attainment in ordered:
        if not best or attainment > best[-1][1]:
            best.append((spent, attainment))
    return best


@dataclass(frozen=True)
class AtEqualSlo:
    cost: float | None
    """The baseline's cost at the attainment asked for: GPU-hours, or what the caller measures
    instead (`bench/pools.py`: dollars). None: it never reaches it."""
    note: str
    ceiling_attainment: float = 0.0
    """When it never reaches it: the best attainment of any of its settings..."""
    ceiling_cost: float = 0.0
    """...and the cost of its cheapest setting within a point of that best."""
    upper_bound: bool = False
    """Its cheapest setting is already above the attainment: the cost at it is at most this."""


def cost_at(
    points: Sequence[Point],
    attainment: float,
    cost: Callable[[RunResult], float] = gpu_hours,
    unit: str = "GPU-h",
) -> AtEqualSlo:
    """Interpolates the baseline's cost (GPU-hours unless ``cost`` says otherwise, in ``unit``)
    at ``attainment`` along its frontier."""
    return cost_on(frontier(points, cost), attainment, unit)


def cost_on(curve: Sequence[tuple[float, float]], attainment: float, unit: str) -> AtEqualSlo:
    """The cost at ``attainment`` along a `frontier_of` curve."""
    if not curve:
        return AtEqualSlo(None, "no runs")
    if attainment <= curve[0][1]:
        return AtEqualSlo(
            curve[0][0], "cheapest setting already reaches it (upper bound)", upper_bound=True
        )
    for (g0, a0), (g1, a1) in itertools.pairwise(curve):
        if a0 <= attainment <= a1:
            share = (attainment - a0) / (a1 - a0) if a1 > a0 else 0.0
            return AtEqualSlo(g0 + share * (g1 - g0), "interpolated")
    best = curve[-1][1]
    cheapest = min(g for g, a in curve if a >= best - 0.01)
    note = f"never reaches it (best {100 * best:.1f} % at {cheapest:.2f} {unit})"
    return AtEqualSlo(None, note, best, cheapest)


def nearest(points: Sequence[Point], attainment: float) -> Point | None:
    """The run whose attainment is closest to ``attainment`` (cheapest on a tie)."""
    if not points:
        return None
    return min(
        points, key=lambda p: (abs(p.result.slo_attainment - attainment), p.result.gpu_hours)
    )


# -- speed -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speed:
    wall_seconds: float
    cpu_seconds: float
    """CPU time of this process: what the run costs when other work shares the machine."""
    trace_seconds: float
    requests: int


def measure_speed(args: argparse.Namespace) -> Speed:
    """How long one hour of the Azure code trace through thrifty takes to simulate."""
    case = make_case(args, "azure-code", profile_by_name("llama-8b-1xh100"))
    policy = cli.build_policy("thrifty", _context(args, case))
    config = _config(args, case, _model_service(args, case))
    wall, cpu = time.perf_counter(), time.process_time()
    simulate(case.trace, policy, config)
    return Speed(
        time.perf_counter() - wall,
        time.process_time() - cpu,
        case.trace.duration_seconds,
        len(case.trace.requests),
    )


# -- report ------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _trace_section(bench: TraceBench) -> list[str]:
    trace = bench.trace
    case = bench.case
    lines = [
        f"### {trace.name} on {case.profile.name}",
        "",
        f"{len(trace.requests)} requests over {trace.duration_seconds / 60:.0f} min "
        f"({trace.mean_requests_per_second:.2f} req/s); cold start {case.cold_start_seconds:g} s; "
        f"every policy starts with {case.initial_replicas} warm replica(s) (static: its own "
        f"count). Traffic: {trace.attribution}.",
        "",
    ]
    rows = [bench.thrifty]
    knobs = ["default"]
    for policy, points in bench.curves.items():
        for point in points:
            rows.append(replace(point.result, policy=policy))
            knobs.append(f"{point.knob:g}")
    table = report.table(rows, markdown=True).splitlines()
    table[0] = table[0].replace("| policy |", "| policy | knob |")
    table[1] = "|---" + table[1]
    for index, knob in enumerate(knobs):
        row = table[index + 2]
        cut = row.index("|", 1)
        table[index + 2] = row[: cut + 1] + f" {knob} |" + row[cut + 1 :]
    lines += table
    budget = bench.budget_run
    lines += [
        "",
        f"thrifty's first tokens over {bench.thrifty.slo_ttft_seconds:g} s, by the fleet when "
        f"they arrived (`thrifty.sim.misses`): {bench.thrifty.late.describe()}.",
        "",
        f"Hard budget run: thrifty with `maxDollarsPerHour` = ${bench.budget_dollars_per_hour:.2f}"
        f" (half its unconstrained peak): {budget.seconds_over_budget:.0f} s over budget, "
        f"{budget.gpu_hours:.2f} GPU-h, SLO {_pct(budget.slo_attainment)}.",
        "",
    ]
    return lines


def cheapest_static(points: Sequence[Point], attainment: float) -> Point | None:
    """The fewest static replicas whose run reaches ``attainment``: what a team could simply buy."""
    reaching = [p for p in points if p.result.slo_attainment >= attainment]
    return min(reaching, key=lambda p: p.result.gpu_hours) if reaching else None


def flaps(series: Sequence[TimePoint], window_seconds: float) -> int:
    """Up-down-up within one scale-down delay: replicas ordered, removed and ordered again."""
    moves = [
        (point.time, 1 if point.desired > before.desired else -1)
        for before, point in itertools.pairwise(series)
        if point.desired != before.desired
    ]
    count = 0
    for (t0, a), (_, b), (t2, c) in zip(moves, moves[1:], moves[2:], strict=False):
        if (a, b, c) == (1, -1, 1) and t2 - t0 < window_seconds:
            count += 1
    return count


@dataclass(frozen=True)
class Verdict:
    trace: str
    thrifty_gpu_hours: float
    attainment: float
    declared: float
    hpa: AtEqualSlo
    best_name: str
    best: AtEqualSlo
    hindsight: AtEqualSlo
    static: Point | None
    noisy: RunResult
    budget_seconds_over: float
    thrifty_scale_events: int
    hpa_scale_events: int | None
    flaps: int
    latency: list[tuple[float, RunResult]]

    @property
    def hpa_ratio(self) -> float | None:
        """thrifty / HPA GPU-hours at equal SLO; against HPA's ceiling when it tops out."""
        hpa = self.hpa.cost if self.hpa.cost is not None else self.hpa.ceiling_cost
        return self.thrifty_gpu_hours / hpa if hpa > 0 else None

    @property
    def best_ratio(self) -> float | None:
        if self.best.cost is None or self.best.cost <= 0:
            return None
        return self.thrifty_gpu_hours / self.best.cost

    @property
    def noise_change(self) -> float:
        return self.noisy.gpu_hours / self.thrifty_gpu_hours - 1.0

    @property
    def latency_monotone(self) -> bool:
        """Looser targets never cost more, and each run's attainment is measured at its own."""
        costs = [run.gpu_hours for _, run in sorted(self.latency)]
        return all(b <= a * 1.02 for a, b in itertools.pairwise(costs))


def verdict(bench: TraceBench, declared: float) -> Verdict:
    attainment = bench.thrifty.slo_attainment
    hpa_points = bench.curves.get("hpa", [])
    hpa_near = nearest(hpa_points, attainment)
    others = {
        name: cost_at(bench.curves.get(name, []), attainment)
        for name in ("static", "kpa", "clairvoyant")
    }
    reached = {name: at for name, at in others.items() if at.cost is not None}
    best_name, best = min(
        reached.items() or others.items(),
        key=lambda item: item[1].cost if item[1].cost is not None else float("inf"),
    )
    return Verdict(
        trace=bench.trace.name,
        thrifty_gpu_hours=bench.thrifty.gpu_hours,
        attainment=attainment,
        declared=declared,
        hpa=cost_at(hpa_points, attainment),
        best_name=best_name,
        best=best,
        hindsight=cost_at(bench.curves.get("hindsight", []), attainment),
        static=cheapest_static(bench.curves.get("static", []), attainment),
        noisy=bench.noisy,
        budget_seconds_over=bench.budget_run.seconds_over_budget,
        thrifty_scale_events=bench.thrifty.scale_events,
        hpa_scale_events=hpa_near.result.scale_events if hpa_near else None,
        flaps=flaps(bench.thrifty.series, bench.scale_down_delay_seconds),
        latency=bench.latency,
    )


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _ratio_cell(ratio: float | None, target: float, ceiling: bool = False) -> str:
    if ratio is None:
        return "n/a"
    if ceiling and ratio > target:
        return f"{ratio:.2f} vs its ceiling: n/a (it cannot reach thrifty's attainment)"
    return f"{ratio:.2f} {_mark(ratio <= target)}" + (" (vs its ceiling)" if ceiling else "")


def summary_header() -> tuple[str, str]:
    """The targets table's header and rule (bench/routers.py prefixes a column)."""
    return (
        "| trace | thrifty GPU-h | SLO attainment (target >= declared) | cheapest static fleet at "
        "that attainment | best of static, KPA, clairvoyant at equal SLO | thrifty / best "
        f"(target <= {BEST_RATIO_TARGET:.2f}) | hindsight fleet at equal SLO (no target): "
        "thrifty / it | HPA+KEDA GPU-h at equal SLO | thrifty / HPA "
        f"(target <= {HPA_RATIO_TARGET:.2f}) | with noisy scrapes (target within "
        f"{NOISE_TARGET:.0%}) | s over Hard budget (target 0) | scale events thrifty / HPA "
        "(target fewer) | up-down-up within the delay (target 0) | cost falls as the target "
        "loosens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    )


def summary_rows(verdicts: Sequence[Verdict]) -> list[str]:
    """One row of the targets table per trace."""
    lines = []
    for v in verdicts:
        hpa = f"{v.hpa.cost:.2f}" if v.hpa.cost is not None else v.hpa.note
        best = (
            f"{v.best.cost:.2f} ({v.best_name})"
            if v.best.cost is not None
            else f"none reaches it ({v.best_name}: {v.best.note})"
        )
        static = (
            f"{v.static.knob:g} replicas, {v.static.result.gpu_hours:.2f} GPU-h "
            f"({_pct(v.static.result.slo_attainment)})"
            if v.static is not None and v.static.knob is not None
            else "none reaches it"
        )
        events_ok = (
            None
            if v.hpa_scale_events is None or v.hpa_scale_events == v.thrifty_scale_events == 0
            else v.thrifty_scale_events < v.hpa_scale_events
        )
        noise = (
            f"{v.noisy.gpu_hours:.2f} GPU-h, {_pct(v.noisy.slo_attainment)}: "
            f"{v.noise_change:+.1%} {_mark(abs(v.noise_change) <= NOISE_TARGET)}"
        )
        sweep = ", ".join(f"{target:g} s: {run.gpu_hours:.2f}" for target, run in sorted(v.latency))
        lines.append(
            f"| {v.trace} | {v.thrifty_gpu_hours:.2f} | {_pct(v.attainment)} "
            f"{_mark(v.attainment >= v.declared)} | {static} | {best} | "
            f"{_ratio_cell(v.best_ratio, BEST_RATIO_TARGET)} | "
            f"{hindsight_cell(v.hindsight, v.thrifty_gpu_hours)} | {hpa} | "
            f"{_ratio_cell(v.hpa_ratio, HPA_RATIO_TARGET, ceiling=v.hpa.cost is None)} | "
            f"{noise} | {v.budget_seconds_over:.0f} {_mark(v.budget_seconds_over == 0)} | "
            f"{v.thrifty_scale_events} / "
            f"{v.hpa_scale_events if v.hpa_scale_events is not None else '-'} "
            f"{_mark(events_ok)} | {v.flaps} {_mark(v.flaps == 0)} | {sweep} "
            f"{_mark(v.latency_monotone)} |"
        )
    return lines


def _summary(verdicts: Sequence[Verdict]) -> list[str]:
    return [*summary_header(), *summary_rows(verdicts)]


def hindsight_cell(at: AtEqualSlo, thrifty_gpu_hours: float) -> str:
    """The hindsight fleet at thrifty's attainment and thrifty / it, as a table shows them."""
    if at.cost is None:
        return f"never reaches it (best {100 * at.ceiling_attainment:.1f} %)"
    most = "at most " if at.upper_bound else ""  # its cheapest run is already above
    return f"{most}{at.cost:.2f}: {thrifty_gpu_hours / at.cost:.2f}x"


def write_results(
    path: Path,
    args: argparse.Namespace,
    command: str,
    benches: Sequence[TraceBench],
    speed: Speed,
    wall_seconds: float,
) -> None:
    declared = PERCENTILES[args.slo_percentile]
    verdicts = [verdict(b, declared) for b in benches]
    lines = [
        "# Benchmark: thrifty against HPA, KPA, static provisioning and the clairvoyant bound",
        "",
        "Reproduce from the repository root (traces read from `../shared/traces`):",
        "",
        "```sh",
        command,
        "```",
        "",
        f"${args.price_per_gpu_hour:.2f} per GPU-hour, TTFT target "
        f"{args.slo_ttft:g} s at {args.slo_percentile} (SLO attainment = share of requests with "
        "TTFT at or under it; kept when at least the declared percentile), "
        "cold start of the profile (120 s for 8B, 300 s for 70B), 15 s decisions, 10 s scrapes, "
        f"seed {args.seed}; "
        f"ServeGen: first day compressed into one hour at {args.servegen_rps:g} req/s mean. "
        f"Python {platform.python_version()}, {wall_seconds:.0f} s for the whole benchmark.",
        "",
        "## Targets",
        "",
        "Baselines are compared at thrifty's own SLO attainment, by interpolating GPU-hours along "
        "each baseline's cost/attainment frontier (see the per-trace tables for every point). "
        "Scale events are compared with the HPA run closest to thrifty's attainment.",
        "",
        *_summary(verdicts),
        "",
        f"Simulator speed: one hour of the Azure code trace ({speed.requests} requests, "
        f"{speed.trace_seconds / 60:.0f} min) through thrifty took {speed.wall_seconds:.2f} s "
        f"wall clock, {speed.cpu_seconds:.2f} s of CPU "
        f"({speed.trace_seconds / speed.wall_seconds:.0f}x real time; target < "
        f"{SPEED_TARGET_SECONDS:g} s: {_mark(speed.wall_seconds < SPEED_TARGET_SECONDS)}).",
        "",
        "## Per trace",
        "",
        "`knob`: the baseline's swept setting (HPA: target `vllm:num_requests_waiting` per "
        "replica; KPA: target concurrency per replica; static: replica count; clairvoyant and "
        "hindsight: planned utilisation). Times in seconds, cost in dollars. The hindsight fleet "
        "sizes as the clairvoyant bound does from the arrivals already seen, never later ones, "
        "and keeps the most the last four cold starts needed.",
        "",
    ]
    for bench in benches:
        lines += _trace_section(bench)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [name for name, _ in MATRIX]
    parser.add_argument("--traces", nargs="+", default=names, choices=names)
    parser.add_argument("--profile", help="one engine profile for every trace (default: per trace)")
    parser.add_argument("--price-per-gpu-hour", type=float, default=2.5)
    parser.add_argument("--slo-ttft", "--slo-ttft-p95", dest="slo_ttft", type=float, default=2.0)
    parser.add_argument("--slo-percentile", choices=sorted(PERCENTILES), default="p95")
    cli.add_fleet_options(parser)  # every run's; bench/routers.py compares the routers
    parser.add_argument("--cold-start", type=float, help="seconds (default: the profile's)")
    parser.add_argument(
        "--min-replicas",
        type=int,
        default=1,
        help="every run's minReplicas (the opening fleet is at least this many)",
    )
    parser.add_argument("--max-replicas", type=int, default=32)
    parser.add_argument("--servegen-rps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.md")
    parser.add_argument(
        "--quick",
        metavar="POLICY",
        help="only this policy (e.g. thrifty or thrifty,scale_down_margin=0.2) on each trace, "
        "same settings, one line per trace; no sweeps, results.md untouched (seconds, not minutes)",
    )
    return parser.parse_args(argv)


def quick(args: argparse.Namespace, case: Case) -> str:
    """One policy on one case with the benchmark's settings: the line to iterate on a policy."""
    policy = cli.build_policy(args.quick, _context(args, case))
    result = simulate(case.trace, policy, _config(args, case, _model_service(args, case)))
    return (
        f"{case.trace.name}: {result.gpu_hours:.2f} GPU-h, SLO {_pct(result.slo_attainment)}, "
        f"{result.scale_events} scale events, TTFT p95 {result.ttft_p95_seconds:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        elapsed = time.perf_counter() - started
        print(f"[bench {elapsed:5.0f} s] {message}", file=sys.stderr, flush=True)

    try:
        benches = []
        for name, profile_name in MATRIX:
            if name in args.traces:
                profile = profile_by_name(args.profile or profile_name)
                case = make_case(args, name, profile)
                if args.quick:
                    print(quick(args, case), flush=True)
                    continue
                benches.append(bench_trace(args, case, log))
        if args.quick:
            return 0
        speed = measure_speed(args)
    except cli.CommandError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    command = " ".join([".venv/bin/python bench/run.py", *map(shlex.quote, argv)])
    write_results(args.out, args, command, benches, speed, time.perf_counter() - started)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
