"""How truly the share of first tokens within a target is read from vLLM's histograms.

Run from the repository root: ``.venv/bin/python bench/buckets.py`` (``--out bench/buckets.md``
writes the page). A fixed fleet serves each shared trace on each engine profile (no policy
decides anything, so the reading changes no run); at every 15 s decision the share within the
target is read from the window's histograms two ways (`thrifty.policy.planner.buckets`):

- **even**: inside its bucket, evenly, as Prometheus' ``histogram_quantile`` does;
- **shaped**: inside its bucket along the queue and prefill times' finer histograms.

Each window's reading is weighted by its first tokens, and the mean is set against the share
counted request by request over the run. Targets 1.5 and 2 s fall in vLLM's 1-2.5 s bucket, 4 s
in its 2.5-5 s one. The summary keeps the runs whose counted share is 80-99.5 %, where a p95
promise is decided; the table lists those of them at 90 % or more.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import profiles  # bench/profiles.py: the engine profiles of other GPU classes
import run as bench  # bench/run.py: the shared cases and settings
import shapes  # bench/shapes.py: the page
from thrifty import cli, tracefiles
from thrifty.policy import types
from thrifty.policy.planner import Tuning, buckets
from thrifty.sim.profiles import profile_by_name
from thrifty.sim.runner import simulate

TRACES = ("azure-code", "azure-conv", "mooncake")
FLEETS: dict[str, tuple[int, ...]] = {
    "llama-8b-1xh100": (2, 4, 6),
    "llama-70b-4xh100": (2, 4, 6),
    "qwen3-32b-1xh100": (3, 6, 9),
    "small-l4": (4, 8, 12),
    "mid-a100": (2, 4),
}
TARGETS = (1.5, 2.0, 4.0)
MINIMUM = Tuning().min_ttft_samples
"""Requests each histogram needs for a shape, as the policy reads it."""
DECIDED = (0.80, 0.995)
"""Attainments at which a p95 promise is decided: the summary's runs."""


@dataclass(frozen=True)
class Row:
    trace: str
    profile: str
    replicas: int
    target: float
    counted: float
    even: float
    shaped: float


class Reader:
    """A fixed fleet that reads every window's share within ``target`` both ways."""

    name = "static"

    def __init__(self, policy: types.ScalingPolicy, target: float) -> None:
        self.policy, self.target = policy, target
        self.weight = self.even = self.shaped = 0.0

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        sig = observation.signals
        histogram = sig.ttft_buckets if sig is not None else ()
        even = buckets.share_within(histogram, self.target)
        if sig is not None and even is not None:
            shape = buckets.composed(sig.queue_time_buckets, sig.prefill_time_buckets, MINIMUM)
            count = histogram[-1][1]
            self.weight += count
            self.even += count * even
            self.shaped += count * (buckets.share_within(histogram, self.target, shape) or even)
        return self.policy.decide(observation, state)


def one(job: tuple[str, str, int, float]) -> Row:
    trace, profile_name, count, target = job
    args = bench.parse_args(["--traces", trace, "--slo-ttft", str(target)])
    profile = profiles.PROFILES.get(profile_name) or profile_by_name(profile_name)
    found = replace(bench.make_case(args, trace, profile), initial_replicas=count)
    fixed = bench._model_service(args, found, min_replicas=count, max_replicas=count)
    reader = Reader(
        cli.build_policy(f"static,replicas={count}", bench._context(args, found)), target
    )
    result = simulate(found.trace, reader, bench._config(args, found, fixed))
    weight = max(reader.weight, 1e-9)
    return Row(
        trace,
        profile_name,
        count,
        target,
        result.slo_attainment,
        reader.even / weight,
        reader.shaped / weight,
    )


def summary(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| target | runs decided | even: mean error | even: range | shaped: mean error | "
        "shaped: range |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        kept = [r for r in rows if r.target == target and DECIDED[0] <= r.counted <= DECIDED[1]]
        if not kept:
            continue
        cells = [f"| {target:g} s | {len(kept)} "]
        for read in ("even", "shaped"):
            errors = [100 * (getattr(r, read) - r.counted) for r in kept]
            mean = sum(abs(e) for e in errors) / len(errors)
            cells.append(f"| {mean:.1f} pts | {min(errors):+.1f} to {max(errors):+.1f} ")
        lines.append("".join(cells) + "|")
    return lines


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| target | trace | profile | replicas | counted | even | shaped |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if 0.90 <= r.counted <= DECIDED[1]:
            lines.append(
                f"| {r.target:g} s | {r.trace} | {r.profile} | {r.replicas} | "
                f"{100 * r.counted:.1f} % | {_read(r.even, r.counted)} | "
                f"{_read(r.shaped, r.counted)} |"
            )
    return lines


def _read(share: float, counted: float) -> str:
    return f"{100 * share:.1f} ({100 * (share - counted):+.1f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    jobs = [
        (trace, profile, count, target)
        for target in TARGETS
        for trace in TRACES
        for profile, counts in FLEETS.items()
        for count in counts
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    elapsed = time.perf_counter() - started
    command = " ".join(["bench/buckets.py", *(argv if argv is not None else sys.argv[1:])])
    attributions = sorted(
        {tracefiles.load_trace(t, tracefiles.TraceOptions()).attribution for t in TRACES}
    )
    shapes.publish(
        "# The share of first tokens within a target, as read from vLLM's histograms",
        f"`.venv/bin/python {command}` ({elapsed:.0f} s on this 2-core machine; the tables, then "
        "any text below them added by hand). The script's docstring says what runs: fixed "
        "fleets, each window's share read evenly inside its bucket and along the queue and "
        "prefill times, against the share counted request by request. Error in points of "
        f"attainment. Traffic: {'; '.join(attributions)}.",
        [*summary(rows), "", *table(rows)],
        args.out,
    )
    return 0 if all(math.isfinite(r.shaped) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
