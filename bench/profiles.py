"""thrifty on engine profiles the project does not ship: other GPUs, model sizes and cold starts.

Run from the repository root: ``.venv/bin/python bench/profiles.py`` (``--out bench/profiles.md``
writes the table). The planner is tuned on nothing, but every figure in bench/results.md and
bench/shapes.md comes from the two shipped profiles (8B on one H100, 70B on four). Here the
shared traces run on four replicas of other sizes: three set by hand to span what a user may
bring, not calibrated against any benchmark, and one a user would write for their own model:

- ``small-l4``: a 3B-class model on one L4-class GPU: slow prefill (6,000 tok/s), a slow decode
  step (12 ms + 0.4 ms per sequence), a batch of 64 and a small KV cache; 90 s cold start;
- ``mid-a100``: a 7B-class model on one A100-class GPU: 12,000 prompt tok/s, 8 ms + 0.15 ms per
  sequence, a batch of 128; 150 s cold start;
- ``big-8xh100``: a 405B-class model on eight GPUs: 3,000 prompt tok/s, 50 ms + 0.5 ms per
  sequence, a batch of 256; 600 s cold start;
- ``qwen3-32b-1xh100``: the example profile file, Qwen3-32B in BF16 on one H100, derived from the
  model and the GPU and checked against a published burst throughput: 6,000 prompt tok/s, 20 ms
  + 0.4 ms per sequence, a KV cache of 36k tokens that bounds its batches before its 1,024
  sequences do; 150 s cold start.

Each case runs `bench/shapes.py`'s three ways (thrifty as it ships, the fewest static replicas
that meet the SLO, the clairvoyant bound at planned utilisation 1.0) with `bench/run.py`'s
settings (TTFT SLO 2 s at p95, the opening fleet the first cold start needs, up to 64 replicas).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import run as bench  # bench/run.py: the shared cases and settings
import shapes  # bench/shapes.py: the runs, the verdicts and the page
from thrifty.sim.profiles import EngineProfile
from thrifty.tracefiles import load_profile

_WHAT_IF = "set by hand for bench/profiles.py, not calibrated"
QWEN_32B = (
    Path(__file__).resolve().parents[1] / "examples/simulate/engine-profile-qwen3-32b-1xh100.yaml"
)
"""Worked out from the model's config and the GPU's data sheet, checked against a published
throughput (docs/simulator.md, "Your own engine")."""


def _profile(
    name: str,
    model: str,
    gpus: int,
    batch: int,
    kv_tokens: int,
    prefill: float,
    itl: tuple[float, float],
    cold_start: float,
) -> EngineProfile:
    return EngineProfile(
        name=name,
        model=model,
        gpus_per_replica=gpus,
        max_num_seqs=batch,
        max_num_batched_tokens=8192 if batch > 64 else 4096,
        kv_capacity_tokens=kv_tokens,
        max_model_len=131_072 if gpus > 1 else 32_768,
        prefill_tokens_per_second=prefill,
        itl0_seconds=itl[0],
        itl_slope_seconds=itl[1],
        cold_start_seconds=cold_start,
        source=_WHAT_IF,
    )


PROFILES: dict[str, EngineProfile] = {
    profile.name: profile
    for profile in (
        _profile("small-l4", "3B-class", 1, 64, 150_000, 6_000.0, (0.012, 0.0004), 90.0),
        _profile("mid-a100", "7B-class", 1, 128, 200_000, 12_000.0, (0.008, 0.00015), 150.0),
        _profile("big-8xh100", "405B-class", 8, 256, 300_000, 3_000.0, (0.05, 0.0005), 600.0),
        load_profile(str(QWEN_32B)),
    )
}
TRACES = ("azure-code", "azure-conv", "mooncake", "servegen-small", "servegen-mid")
MAX_STATIC = 64


@dataclass(frozen=True)
class Row:
    trace: str
    profile: str
    opening: int
    thrifty: shapes.Run
    static: tuple[int, shapes.Run] | None
    """The fewest fixed replicas that meet the SLO, or None when none up to MAX_STATIC does."""
    clairvoyant: shapes.Run
    hindsight: bench.AtEqualSlo
    """The hindsight fleet's GPU-hours at thrifty's attainment."""


def cheapest_static(args: argparse.Namespace, case: bench.Case) -> tuple[int, shapes.Run] | None:
    """The fewest fixed replicas that meet the SLO (None: none up to MAX_STATIC does)."""
    return fewest(lambda count: shapes.simulated_static(args, case, count), MAX_STATIC)


def fewest(run: Callable[[int], shapes.Run], most: int) -> tuple[int, shapes.Run] | None:
    """The fewest replicas up to ``most`` whose run meets the SLO: doubling, then bisecting
    (attainment grows with the count), so a fleet of dozens costs a handful of runs."""
    runs: dict[int, shapes.Run] = {}

    def meets(count: int) -> bool:
        if count not in runs:
            runs[count] = run(count)
        return runs[count].attainment >= 0.95

    low, high = 0, 1
    while not meets(high):
        if high >= most:
            return None
        low, high = high, min(2 * high, most)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if meets(middle) else (middle, high)
    return high, runs[high]


def one(job: tuple[str, str]) -> Row:
    trace, profile_name = job
    args = bench.parse_args(["--traces", trace, "--max-replicas", str(MAX_STATIC)])
    case = bench.make_case(args, trace, PROFILES[profile_name])
    thrifty = shapes.simulated(args, case, "thrifty")
    return Row(
        trace,
        profile_name,
        case.initial_replicas,
        thrifty,
        cheapest_static(args, case),
        shapes.simulated(args, case, "clairvoyant,utilization=1.0"),
        shapes.hindsight(args, case, thrifty),
    )


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| trace | profile | opening replicas | thrifty GPU-h (SLO) | cheapest static meeting "
        f"the SLO | clairvoyant | {shapes.HINDSIGHT_HEADER} |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.trace} | {row.profile} | {row.opening} | "
            + shapes.outcome(row.thrifty, row.static, row.clairvoyant, MAX_STATIC, row.hindsight)
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", nargs="+", choices=TRACES, default=list(TRACES))
    parser.add_argument("--profiles", nargs="+", choices=sorted(PROFILES), default=list(PROFILES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    jobs = [(trace, profile) for profile in args.profiles for trace in args.traces]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    elapsed = time.perf_counter() - started
    command = " ".join(["bench/profiles.py", *(argv if argv is not None else sys.argv[1:])])
    shapes.publish(
        "# thrifty on engine profiles the project does not ship",
        f"`.venv/bin/python {command}` ({elapsed:.0f} s on this 2-core machine; the table, then "
        "any text below it added by hand). The shared traces (bench/results.md) on four "
        "replicas of other sizes; the script's docstring gives their figures.",
        [*table(rows), "", *shapes.summary(rows)],
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
