"""bench/run.py's targets behind each router: the policy must not lean on how requests are spread.

bench/results.md routes every request to the least-loaded ready replica. A cluster may put a plain
Service in front of vLLM instead, whose kube-proxy spreads connections round-robin (IPVS) or at
random (iptables), blind to what each engine holds, or thrifty-gateway, which takes the less
loaded of two replicas drawn at random. Here every run of bench/run.py (thrifty, the swept
baselines, the noisy, budget and latency-target runs) is repeated behind each router with the
same settings and seed, and its targets row is shown per router: the baselines run behind the
same router, so the comparison stays at equal attainment.

Run from the repository root: ``.venv/bin/python bench/routers.py --out bench/routers.md``; any
other option is bench/run.py's (``--traces``, ``--seed``, ...).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import run as bench  # bench/run.py: the cases, the runs and the targets row
from thrifty.api.modelservice import PERCENTILES
from thrifty.sim.fleet import Router
from thrifty.sim.profiles import profile_by_name


def _verdict(job: tuple[Sequence[str], str, str]) -> bench.Verdict:
    argv, trace, router = job
    args = bench.parse_args([*argv, "--router", router])
    profile = profile_by_name(args.profile or dict(bench.MATRIX)[trace])
    case = bench.make_case(args, trace, profile)
    result = bench.bench_trace(args, case, lambda message: None)
    return bench.verdict(result, PERCENTILES[args.slo_percentile])


def _rows(router: str, verdicts: Sequence[bench.Verdict]) -> list[str]:
    return [f"| {router} {line}" for line in bench.summary_rows(verdicts)]


def _kept(router: str, verdicts: Sequence[bench.Verdict]) -> str:
    kept = [v.trace for v in verdicts if v.attainment >= v.declared]
    monotone = sum(v.latency_monotone for v in verdicts)
    return (
        f"- {router}: the SLO kept on {len(kept)} of {len(verdicts)} traces"
        f"{' (' + ', '.join(kept) + ')' if kept else ''}; cost falls as the target loosens on "
        f"{monotone} of {len(verdicts)}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the page here (default: print it)")
    parser.add_argument("--workers", type=int, default=2)
    args, passed = parser.parse_known_args(argv)
    settings = bench.parse_args(passed)
    started = time.perf_counter()
    traces = [name for name, _ in bench.MATRIX if name in settings.traces]
    jobs = [(passed, trace, router.value) for router in Router for trace in traces]
    with ProcessPoolExecutor(args.workers) as pool:
        verdicts = list(pool.map(_verdict, jobs))
    header, rule = bench.summary_header()
    lines = [
        "# The benchmark's targets behind each router",
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        "```sh",
        " ".join([".venv/bin/python bench/routers.py", *map(shlex.quote, argv)]),
        "```",
        "",
        f"Settings, baselines and targets as in bench/results.md (TTFT {settings.slo_ttft:g} s "
        f"at {settings.slo_percentile}, seed {settings.seed}), which has every run's table; "
        f"{len(jobs)} benchmarks of a trace in {time.perf_counter() - started:.0f} s with "
        f"{args.workers} workers.",
        "",
        f"| router {header}",
        f"|---{rule}",
    ]
    per_router = {
        router.value: verdicts[index * len(traces) : (index + 1) * len(traces)]
        for index, router in enumerate(Router)
    }
    for router, rows in per_router.items():
        lines += _rows(router, rows)
    lines += ["", *(_kept(router, rows) for router, rows in per_router.items())]
    page = "\n".join(lines) + "\n"
    if args.out is None:
        print(page, end="")
    else:
        args.out.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
