"""thrifty on the shared traces replayed from other points and at other speeds.

Run from the repository root: ``.venv/bin/python bench/replays.py`` (``--out bench/replays.md``
writes the table). bench/results.md replays each shared trace once, from its start, at its own
speed, so a run's attainment can rest on where one burst falls against one scale-down. Here the
real arrivals of the Azure code and conversation traces and of Mooncake are replayed from a
quarter and from half-way in, and sped up 1.5x and slowed to 0.7x (every gap between arrivals
divided by the factor, at most an hour), on both shipped engine profiles, with
`bench/run.py`'s settings (TTFT SLO 2 s at p95, the profile's cold start, the opening fleet the
first cold start needs). Each case runs `bench/shapes.py`'s three ways: thrifty as it ships,
the fewest static replicas that meet the SLO (each warm from the start), and the clairvoyant
bound at planned utilisation 1.0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import profiles  # bench/profiles.py: the search for the cheapest static fleet
import run as bench  # bench/run.py: the shared cases and settings
import shapes  # bench/shapes.py: the runs, the verdicts and the page
from thrifty import tracefiles
from thrifty.sim.clairvoyant import opening_replicas
from thrifty.sim.profiles import profile_by_name


@dataclass(frozen=True)
class Replay:
    label: str
    start: float = 0.0
    """Where in the trace the replay starts, as a share of its length (before any speed-up):
    the traces differ in length (Mooncake's is 17 minutes)."""
    speedup: float | None = None


REPLAYS = (
    Replay("from a quarter in", start=0.25),
    Replay("from half-way", start=0.5),
    Replay("1.5x speed", speedup=1.5),
    Replay("0.7x speed", speedup=0.7),
)
TRACES = ("azure-code", "azure-conv", "mooncake")
PROFILES = ("llama-8b-1xh100", "llama-70b-4xh100")
MAX_STATIC = 16
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Row:
    trace: str
    replay: str
    profile: str
    minutes: float
    opening: int
    thrifty: shapes.Run
    static: tuple[int, shapes.Run] | None
    """The fewest fixed replicas that meet the SLO, or None when none up to MAX_STATIC does."""
    clairvoyant: shapes.Run
    hindsight: bench.AtEqualSlo
    """The hindsight fleet's GPU-hours at thrifty's attainment."""


def case(args: argparse.Namespace, trace: str, replay: Replay, profile_name: str) -> bench.Case:
    """As `bench.make_case`, on the replayed trace: the opening fleet is what its first cold
    start needs, the same for every policy."""
    whole = tracefiles.load_trace(trace, tracefiles.TraceOptions())
    options = tracefiles.TraceOptions(
        start_seconds=replay.start * whole.duration_seconds,
        speedup=replay.speedup,
        duration_seconds=MAX_SECONDS if replay.speedup else None,
    )
    replayed = tracefiles.load_trace(trace, options)
    profile = profile_by_name(profile_name)
    cold = profile.cold_start_seconds
    opening = opening_replicas(replayed, profile, cold, args.slo_ttft)
    return bench.Case(replayed, profile, cold, opening)


def one(job: tuple[str, Replay, str]) -> Row:
    trace, replay, profile_name = job
    args = bench.parse_args(["--max-replicas", str(MAX_STATIC)])
    found = case(args, trace, replay, profile_name)
    thrifty = shapes.simulated(args, found, "thrifty")
    return Row(
        trace,
        replay.label,
        profile_name,
        found.trace.duration_seconds / 60.0,
        found.initial_replicas,
        thrifty,
        profiles.fewest(lambda count: shapes.simulated_static(args, found, count), MAX_STATIC),
        shapes.simulated(args, found, "clairvoyant,utilization=1.0"),
        shapes.hindsight(args, found, thrifty),
    )


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| trace | replay | profile | minutes | opening replicas | thrifty GPU-h (SLO) | "
        f"cheapest static meeting the SLO | clairvoyant | {shapes.HINDSIGHT_HEADER} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.trace} | {row.replay} | {row.profile} | {row.minutes:.0f} | {row.opening} | "
            + shapes.outcome(row.thrifty, row.static, row.clairvoyant, MAX_STATIC, row.hindsight)
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", nargs="+", choices=TRACES, default=list(TRACES))
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    jobs = [
        (trace, replay, profile)
        for trace in args.traces
        for profile in args.profiles
        for replay in REPLAYS
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    elapsed = time.perf_counter() - started
    command = " ".join(["bench/replays.py", *(argv if argv is not None else sys.argv[1:])])
    attributions = sorted(
        {tracefiles.load_trace(t, tracefiles.TraceOptions()).attribution for t in args.traces}
    )
    shapes.publish(
        "# thrifty on the shared traces replayed from other points and at other speeds",
        f"`.venv/bin/python {command}` ({elapsed:.0f} s on this 2-core machine; the table, then "
        "any text below it added by hand). The script's docstring says what runs. Traffic: "
        f"{'; '.join(attributions)}.",
        [*table(rows), "", *shapes.summary(rows)],
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
