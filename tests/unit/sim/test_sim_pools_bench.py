"""bench/pools.py compares strategies at the same SLO attainment: on-demand's, capped at the
SLO's percentile; a strategy below that bar is not compared on cost."""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType

import bench_modules
import pytest

from thrifty.sim.runner import RunResult


@pytest.fixture(scope="module")
def pools_bench() -> ModuleType:
    return bench_modules.load("pools")


_TEMPLATE = RunResult(
    policy="thrifty", trace="t", attribution="a", profile="p", requests=1000, served=1000,
    duration_seconds=3600.0, gpu_hours=1.0, cost_dollars=2.5, tokens=1e6,
    dollars_per_million_tokens=2.5, ttft_p50_seconds=0.1, ttft_p95_seconds=0.5,
    ttft_p99_seconds=1.0, slo_ttft_seconds=2.0, slo_attainment=1.0, seconds_over_budget=0.0,
    scale_events=3, max_replicas=2, truncated_requests=0, series=(),
)  # fmt: skip


def runs(**attainment_and_cost: tuple[float, float]) -> dict[str, RunResult]:
    return {
        name.replace("_", "-"): replace(_TEMPLATE, slo_attainment=a, cost_dollars=c)
        for name, (a, c) in attainment_and_cost.items()
    }


def test_the_bar_is_on_demands_attainment_capped_at_the_percentile(
    pools_bench: ModuleType,
) -> None:
    met = runs(
        on_demand=(1.0, 30.0), spot=(0.949, 15.0), skyserve=(0.96, 16.0), thrifty=(0.95, 14.0)
    )
    assert pools_bench.bar(met, 0.95) == 0.95
    row = pools_bench.summary("t", met, 0.95)
    assert "on-demand $30.00, skyserve $16.00, thrifty $14.00 | yes | 53.3 % |" in row
    assert row.endswith("| $14.00 vs $16.00 |")
    missed = runs(
        on_demand=(0.909, 4.1), spot=(0.909, 1.64), skyserve=(0.905, 1.51), thrifty=(0.909, 1.64)
    )
    assert pools_bench.bar(missed, 0.95) == 0.909
    row = pools_bench.summary("t", missed, 0.95)
    assert "skyserve" not in row.split("|")[3]
    assert row.endswith("| skyserve below the bar (90.5 %) |")
    assert pools_bench.meets(met["thrifty"], 0.95) and not pools_bench.meets(met["spot"], 0.95)


def test_seeds_are_summarised_per_trace_and_counted_against_each_target(
    pools_bench: ModuleType,
) -> None:
    good = runs(
        on_demand=(1.0, 30.0), spot=(0.949, 15.0), skyserve=(0.96, 16.0), thrifty=(0.95, 14.0)
    )
    costly = runs(
        on_demand=(1.0, 30.0), spot=(0.5, 11.0), skyserve=(0.96, 60.0), thrifty=(0.95, 55.0)
    )
    short = runs(
        on_demand=(1.0, 30.0), spot=(0.5, 11.0), skyserve=(0.90, 60.0), thrifty=(0.92, 40.0)
    )

    def seed(results: dict[str, RunResult]) -> dict[str, dict[str, tuple[RunResult, int]]]:
        return {"t": {name: (run, 2) for name, run in results.items()}}

    lines = pools_bench.seeds_table({0: seed(good), 1: seed(costly), 2: seed(short)}, 0.95)
    assert lines[2] == "| t | +53 % ≤ sky (2) | -83 % ≤ sky (2) | -33 %, below the bar (2) |"
    assert "- at least 40 % cheaper than on-demand: 1 of 3 runs;" in lines
    assert "- at the bar (on-demand's attainment, capped at the SLO): 2 of 3;" in lines
    assert "- at most the SkyServe-style cost where both reach the bar: 2 of 2." in lines


def test_a_tie_to_the_cent_is_at_most_the_skyserve_cost(pools_bench: ModuleType) -> None:
    tie = runs(
        on_demand=(0.91, 3.82), spot=(0.91, 1.53), skyserve=(0.91, 1.5300), thrifty=(0.91, 1.5304)
    )
    assert pools_bench.seed_cell(tie, 0.95) == "+60 % ≤ sky"
