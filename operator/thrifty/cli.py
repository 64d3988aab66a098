"""The ``thrifty`` command: one argparse subcommand per job, each a thin shell around pure code.

``thrifty simulate`` replays a trace through one or more policies on the fleet simulator. This
module does the I/O the pure simulator must not: it finds and reads trace files, writes the JSON
report and the PNG plot, and prints the table and progress. Other subcommands register themselves
in `_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

import thrifty
from thrifty.api import gpupool, modelservice
from thrifty.policy import builtin
from thrifty.policy.static import StaticPolicy
from thrifty.policy.types import Enforcement, ScalingPolicy
from thrifty.sim import profiles, report, scenario, traces
from thrifty.sim.clairvoyant import ClairvoyantPolicy, HindsightPolicy, opening_replicas
from thrifty.sim.fleet import Router
from thrifty.sim.observe import Metrics
from thrifty.sim.pools import SimPool, interruptions
from thrifty.sim.profiles import EngineProfile
from thrifty.sim.runner import RunResult, ScrapeNoise, SimulationConfig, simulate
from thrifty.tracefiles import (
    NAMED_TRACES,
    SYNTHETIC_SHAPES,
    TraceFileError,
    TraceOptions,
    load_profile,
    load_trace,
)

EXIT_USAGE = 2


class CommandError(Exception):
    """A user error: printed without a traceback, exit code 2."""


# -- policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyContext:
    trace: traces.Trace
    profile: EngineProfile
    cold_start_seconds: float
    slo_ttft_seconds: float
    decision_interval_seconds: float


TRACE_POLICIES = {"clairvoyant": ClairvoyantPolicy, "hindsight": HindsightPolicy}
"""Policies the simulator builds from the trace itself: they read arrivals, not metrics."""


def _from_trace(kind: str, context: PolicyContext, **params: Any) -> ScalingPolicy:
    settings: dict[str, Any] = {
        "cold_start_seconds": context.cold_start_seconds,
        "ttft_target_seconds": context.slo_ttft_seconds,
        "decision_interval_seconds": context.decision_interval_seconds,
        **params,
    }
    return TRACE_POLICIES[kind](context.trace, context.profile, **settings)


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_policy_option(option: str) -> tuple[str, dict[str, Any]]:
    """``hpa,target_per_replica=2`` -> ("hpa", {"target_per_replica": 2})."""
    name, *pairs = option.split(",")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise CommandError(f"policy parameter {pair!r} in {option!r} is not key=value")
        params[key.strip()] = _parse_value(value.strip())
    if pairs and "name" not in params:
        params["name"] = option
    return name.strip(), params


def build_policy(option: str, context: PolicyContext) -> ScalingPolicy:
    """A policy by built-in name or ``module:ClassName``, with optional ``,key=value`` params."""
    name, params = parse_policy_option(option)
    try:
        if name in TRACE_POLICIES:
            return _from_trace(name, context, **params)
        if name in builtin.BUILTIN_POLICIES:
            return builtin.BUILTIN_POLICIES[name](**params)
    except TypeError as error:
        raise CommandError(f"bad parameters for policy {name}: {error}") from None
    module_name, _, class_name = name.partition(":")
    if not class_name:
        known = ", ".join([*builtin.BUILTIN_POLICIES, *TRACE_POLICIES])
        raise CommandError(f"unknown policy {name!r}: use one of {known} or module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import policy module {module_name}: {error}") from None
    factory = getattr(module, class_name, None)
    if factory is None:
        raise CommandError(f"module {module_name} has no {class_name}")
    try:
        policy = factory(**params)
    except TypeError as error:
        raise CommandError(f"bad parameters for policy {name}: {error}") from None
    if not callable(getattr(policy, "decide", None)) or not isinstance(
        getattr(policy, "name", None), str
    ):
        raise CommandError(f"{name} needs a str name and a decide(observation, state) method")
    return policy  # type: ignore[no-any-return]


# -- simulate ----------------------------------------------------------------------------------


SIMULATE_EXAMPLE = """\
example:
  thrifty simulate --trace azure-code --policy thrifty --policy hpa,target_per_replica=2 \\
      --profile llama-8b-1xh100 --out out/simulate
  Prints a table of GPU-hours, $ and SLO attainment per policy and writes out/simulate/report.json
  (and report.png with the plot extra: pip install 'thrifty[plot]').
"""


def add_fleet_options(parser: argparse.ArgumentParser) -> None:
    """How the simulated fleet is observed and reached: `thrifty simulate`'s options, which the
    benchmark (bench/run.py) takes too."""
    parser.add_argument(
        "--noise",
        action="store_true",
        help="scrapes as a real cluster gives them: jitter, missed scrapes, and vLLM's "
        "step-level waiting gauge (seeded by --seed)",
    )
    parser.add_argument(
        "--metrics",
        choices=[metrics.value for metrics in Metrics],
        default=Metrics.VLLM.value,
        help="the series the engines export: vllm (all the policy reads) or basic (gauges, "
        "counters and the TTFT histogram; no queue-time, prefill-time or token histograms)",
    )
    parser.add_argument(
        "--router",
        choices=[router.value for router in Router],
        default=Router.LEAST_LOADED.value,
        help="how requests pick a ready replica: least-loaded, power-of-two (thrifty-gateway), "
        "round-robin or random (a plain Service's kube-proxy); draws seeded by --seed",
    )


def _add_simulate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a trace through policies on the fleet simulator",
        description="Replay a trace through one or more scaling policies and compare them.",
        epilog=SIMULATE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--trace",
        default="azure-code",
        help=f"a file, or one of {', '.join([*NAMED_TRACES, *SYNTHETIC_SHAPES])}",
    )
    parser.add_argument(
        "--policy",
        action="append",
        dest="policies",
        help="thrifty, hpa, kpa, static, clairvoyant, hindsight or module:ClassName, optionally "
        "with parameters: hpa,target_per_replica=2 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        default="llama-8b-1xh100",
        help="engine profile: 8b, 70b or a profile YAML file (docs/simulator.md); with -f it "
        "must have the ModelService's GPUs per replica, whose maxNumSeqs and maxModelLen it takes",
    )
    parser.add_argument("--price-per-gpu-hour", type=float, default=2.5)
    parser.add_argument(
        "--slo-ttft",
        "--slo-ttft-p95",
        dest="slo_ttft",
        type=float,
        default=2.0,
        help="TTFT target, seconds",
    )
    parser.add_argument(
        "--slo-percentile",
        choices=sorted(modelservice.PERCENTILES),
        default="p95",
        help="share of requests that must meet the TTFT target",
    )
    add_fleet_options(parser)
    parser.add_argument(
        "--duration", type=float, help="seconds of traffic to replay (after the speedup)"
    )
    parser.add_argument(
        "--start",
        type=float,
        default=0.0,
        help="offset into the trace, in trace seconds before the speedup (ServeGen: into its "
        "14 days)",
    )
    parser.add_argument("--speedup", type=float, help="replay faster (ServeGen default: 24)")
    parser.add_argument("--target-rps", type=float, help="mean rate for ServeGen and shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=32)
    parser.add_argument(
        "--initial-replicas",
        type=int,
        help="warm replicas at t=0 for every policy but static (warm at its own count); "
        "default: what the trace's first cold start needs, as the benchmark opens",
    )
    parser.add_argument("--queue-target", type=float, default=8.0, help="waiting per replica")
    parser.add_argument(
        "--cold-start", type=float, help="seconds (default: the profile's, 120 s for 8B, 300 s 70B)"
    )
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        dest="files",
        type=Path,
        default=[],
        help="a ModelService YAML (and optionally GPUPool YAML) to simulate instead of the "
        "scaling and cost options: thrifty simulate -f modelservice.yaml -f gpupool.yaml; with "
        "several GPUPools named in its spec.pools, replicas spread over them as the operator "
        "spreads them",
    )
    parser.add_argument(
        "--reclaims-per-hour",
        type=float,
        default=0.0,
        help="spot interruptions per hour and Spot pool (seeded by --seed; 30-120 s notice, "
        "10-30 min outage); default none",
    )
    parser.add_argument("--pool-gpus", type=int, help="GPUs the pool can give (default: no limit)")
    parser.add_argument("--max-dollars-per-hour", type=float)
    parser.add_argument("--max-dollars-per-million-tokens", type=float)
    parser.add_argument("--enforcement", choices=[e.value for e in Enforcement], default="Hard")
    parser.add_argument("--out", type=Path, default=Path("out/simulate"))
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=_simulate)


def _load_objects(
    paths: Sequence[Path],
) -> tuple[modelservice.ModelService | None, dict[str, gpupool.GPUPool]]:
    """The ModelService and the GPUPools (by name) in the given YAML files (several documents
    each allowed)."""
    service: modelservice.ModelService | None = None
    pools: dict[str, gpupool.GPUPool] = {}
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as error:
            raise CommandError(f"cannot read {path}: {error}") from None
        for document in documents:
            kind = document.get("kind") if isinstance(document, dict) else None
            if kind not in ("ModelService", "GPUPool"):
                raise CommandError(f"{path}: expected a ModelService or GPUPool, found {kind}")
            try:
                if kind == "ModelService":
                    service = modelservice.ModelService.model_validate(document)
                else:
                    name = str((document.get("metadata") or {}).get("name") or f"pool-{len(pools)}")
                    pools[name] = gpupool.GPUPool.model_validate(document)
            except pydantic.ValidationError as error:
                raise CommandError(f"{path}: invalid {kind}: {error}") from None
    return service, pools


def _sim_pools(
    ms: modelservice.ModelService, pools: dict[str, gpupool.GPUPool], pool_gpus: int | None
) -> tuple[SimPool, ...]:
    """Several GPUPools: the ones the ModelService lists, in its order (--pool-gpus caps each)."""
    missing = [name for name in ms.spec.pools if name not in pools]
    if missing:
        raise CommandError(
            f"spec.pools names GPUPools no -f file holds: {', '.join(missing)} "
            f"(given: {', '.join(pools)})"
        )
    return tuple(
        SimPool(
            name,
            pools[name].spec,
            pool_gpus if pools[name].spec.max_gpus is None else pools[name].spec.max_gpus,
        )
        for name in ms.spec.pools
    )


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The run's settings: from a user's ModelService (and GPUPool) with -f, else the options."""
    ms, pools = _load_objects(args.files)
    try:
        profile = load_profile(args.profile)
        if ms is not None:
            profile = profiles.for_engine(profile, ms.spec.engine)
    except profiles.ProfileError as error:
        raise CommandError(str(error)) from None
    pool = next(iter(pools.values())) if len(pools) == 1 else None
    price = pool.spec.price_per_gpu_hour if pool is not None else args.price_per_gpu_hour
    if ms is None:
        ms = scenario.model_service(
            profile,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            queue_target_per_replica=args.queue_target,
            ttft_target_seconds=args.slo_ttft,
            ttft_percentile=args.slo_percentile,
            max_dollars_per_hour=args.max_dollars_per_hour,
            max_dollars_per_million_tokens=args.max_dollars_per_million_tokens,
            enforcement=Enforcement(args.enforcement),
            cold_start_seconds=args.cold_start,
        )
    target = ms.spec.latency_target.seconds
    cold_start = args.cold_start or ms.spec.scaling.cold_start_seconds or profile.cold_start_seconds
    several = _sim_pools(ms, pools, args.pool_gpus) if len(pools) > 1 else ()
    return SimulationConfig(
        profile=profile,
        model_service=ms,
        price_per_gpu_hour=price,
        pool_name=ms.spec.pools[0],
        pool_gpus=args.pool_gpus,
        cold_start_seconds=float(cold_start),
        initial_replicas=max(args.initial_replicas or 1, ms.spec.scaling.min_replicas),
        slo_ttft_seconds=target if target is not None else args.slo_ttft,
        pools=several,
        noise=ScrapeNoise(seed=args.seed) if args.noise else None,
        metrics=Metrics(args.metrics),
        router=Router(args.router),
        router_seed=args.seed,
        pool=pool,
    )


def _progress_printer(policy: str, enabled: bool) -> Callable[[float], None] | None:
    if not enabled:
        return None

    shown = [-1]

    def show(fraction: float) -> None:
        step = int(fraction * 10)
        if step > shown[0]:
            shown[0] = step
            print(
                f"thrifty simulate: {policy}: {100 * fraction:3.0f} %", file=sys.stderr, flush=True
            )

    return show


def _simulate(args: argparse.Namespace) -> int:
    config = simulation_config(args)
    options = TraceOptions(args.start, args.duration, args.speedup, args.target_rps, args.seed)
    trace = load_trace(args.trace, options)
    if config.pools:
        reclaims = interruptions(
            config.pools, trace.duration_seconds, args.reclaims_per_hour, args.seed
        )
        config = dataclasses.replace(config, reclaims=reclaims)
    context = PolicyContext(
        trace, config.profile, config.cold_start_seconds, config.slo_ttft_seconds,
        config.decision_interval_seconds,
    )  # fmt: skip
    names = args.policies or ["thrifty", "hpa", "clairvoyant"]
    policies = [build_policy(name, context) for name in names]
    if args.initial_replicas is None:
        opening = opening_replicas(
            trace, config.profile, config.cold_start_seconds, config.slo_ttft_seconds
        )
        # config's count is minReplicas (at least one) when the option is not given.
        config = dataclasses.replace(config, initial_replicas=max(opening, config.initial_replicas))
    # A run of the shared one-hour traces takes seconds; progress only for the long ones.
    long_run = trace.duration_seconds > 4 * 3600 or len(trace.requests) > 50_000
    results: list[RunResult] = []
    for policy in policies:
        progress = _progress_printer(policy.name, long_run and not args.quiet)
        results.append(simulate(trace, policy, _opened(config, policy), progress))
    print(f"trace {trace.name}: {len(trace.requests)} requests over "
          f"{trace.duration_seconds / 60:.0f} min; profile {config.profile.name}; "
          f"SLO TTFT <= {config.slo_ttft_seconds:g} s; opening with "
          f"{config.initial_replicas} warm replica(s), static with its own count")  # fmt: skip
    print(report.table(results))
    print("\n".join(report.late_lines(results)))
    print(f"Traffic: {trace.attribution}")
    _write_outputs(args, trace, results, config.initial_replicas)
    return 0


def _opened(config: SimulationConfig, policy: ScalingPolicy) -> SimulationConfig:
    """A static fleet is warm at its own count from the first second, as it is provisioned."""
    if isinstance(policy, StaticPolicy):
        return dataclasses.replace(config, initial_replicas=policy.replicas)
    return config


def _write_outputs(
    args: argparse.Namespace, trace: traces.Trace, results: list[RunResult], opening: int
) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "thrifty " + " ".join(shlex.quote(a) for a in args.argv)
    hidden = ("handler", "out", "quiet", "argv")
    settings = report.settings_json(
        {k: v for k, v in vars(args).items() if k not in hidden} | {"initial_replicas": opening}
    )
    document = report.report_json(results, settings, command)
    (out / "report.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    if importlib.util.find_spec("matplotlib") is None:
        print(f"wrote {out / 'report.json'}")
        print(f"thrifty simulate: {PLOT_MISSING}", file=sys.stderr)
        return
    title = f"{trace.name} on {results[0].profile}" if results else trace.name
    (out / "report.png").write_bytes(report.plot_png(results, title))
    print(f"wrote {out / 'report.json'} and {out / 'report.png'}")


PLOT_MISSING = (
    "no report.png: matplotlib is not installed; the plot is an extra: pip install 'thrifty[plot]'"
)


# -- report ------------------------------------------------------------------------------------


REPORT_EXAMPLE = """\
example:
  thrifty report --prometheus-url http://127.0.0.1:9090 --start 2026-12-01 --end 2026-12-08 \\
      --format csv
  One line per day, tenant and ModelService: tokens, $ (realised) and $ at the reference price.
"""


def _add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="chargeback: $ per tenant per model per day, from Prometheus",
        description="Each tenant's share of each ModelService's cost (its $/hour integrated over "
        "the period, idle time included, shared by tokens metered at the gateway) and the same "
        "tokens at the ModelService's reference price. Money is exact to $0.000001.",
        epilog=REPORT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prometheus-url", default=os.environ.get("THRIFTY_PROMETHEUS_URL"))
    parser.add_argument("--start", required=True, help="ISO date or time (UTC if no zone)")
    parser.add_argument("--end", required=True, help="ISO date or time (UTC if no zone)")
    parser.add_argument("--period", choices=["day", "hour"], default="day")
    parser.add_argument("--format", choices=["csv", "json", "markdown"], default="markdown")
    parser.add_argument(
        "--resolution-seconds",
        type=int,
        default=60,
        help="step of the cost integral; at least Prometheus's scrape interval",
    )
    parser.set_defaults(handler=_report)


def _when(text: str) -> datetime.datetime:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError as error:
        raise CommandError(f"{text!r} is not an ISO date or time (e.g. 2026-12-01)") from error
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _report(args: argparse.Namespace) -> int:
    from thrifty import chargeback
    from thrifty.adapters import chargeback as chargeback_queries
    from thrifty.adapters.prometheus import MetricsError

    if not args.prometheus_url:
        raise CommandError("--prometheus-url (or THRIFTY_PROMETHEUS_URL) is required")
    start, end = _when(args.start), _when(args.end)
    if end <= start:
        raise CommandError("--end must be after --start")
    step = datetime.timedelta(days=1) if args.period == "day" else datetime.timedelta(hours=1)
    try:
        usage, costs = chargeback_queries.read(
            chargeback_queries.prometheus_query(args.prometheus_url),
            start,
            end,
            step,
            max(1, args.resolution_seconds),
        )
    except MetricsError as error:
        raise CommandError(str(error)) from error
    lines = chargeback.allocate(usage, costs)
    formats = {
        "csv": chargeback.to_csv,
        "json": chargeback.to_json,
        "markdown": chargeback.to_markdown,
    }
    sys.stdout.write(formats[args.format](lines))
    return 0


# -- entry point -------------------------------------------------------------------------------

_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_simulate,
    _add_report,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thrifty",
        description=(thrifty.__doc__ or "thrifty").splitlines()[0],
        epilog="example:\n  thrifty simulate --trace azure-code   (thrifty simulate --help: more)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"thrifty {thrifty.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        code: int = args.handler(args)
    except (CommandError, TraceFileError, traces.TraceFormatError) as error:
        print(f"thrifty {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
