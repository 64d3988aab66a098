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


def curve(pools_bench: ModuleType, strategy: str, *points: tuple[float, float]) -> list[object]:
    """A strategy's swept runs as (attainment, dollars)."""
    return [
        pools_bench.bench.Point(strategy, m, replace(_TEMPLATE, slo_attainment=a, cost_dollars=c))
        for m, (a, c) in zip(pools_bench.TARGET_MULTIPLES, points, strict=False)
    ]


def test_the_sweep_compares_at_thriftys_own_attainment_along_each_curve(
    pools_bench: ModuleType,
) -> None:
    thrifty = replace(_TEMPLATE, slo_attainment=0.96, cost_dollars=3.0)
    curves = {
        "on-demand": curve(pools_bench, "on-demand", (0.99, 12.0), (0.95, 8.0), (0.90, 6.0)),
        "skyserve": curve(pools_bench, "skyserve", (0.98, 4.0), (0.94, 2.0)),
    }
    # on-demand at 96 %: a quarter of the way from 95 % ($8) to 99 % ($12) is $9; skyserve
    # halfway from 94 % ($2) to 98 % ($4) is $3, which thrifty ties.
    cell, cheaper, at_most = pools_bench.equal_cell(curves, thrifty)
    assert cell == "+67 %, $3.00 ≤ sky $3.00 (96.0 %)"
    assert cheaper is True and at_most is True
    dearer = replace(thrifty, cost_dollars=5.5)
    cell, cheaper, at_most = pools_bench.equal_cell(curves, dearer)
    assert (cheaper, at_most) == (False, False)
    above = replace(thrifty, slo_attainment=0.995)
    cell, cheaper, at_most = pools_bench.equal_cell(curves, above)
    assert cell == "on-demand never, sky never (99.5 %)"
    assert (cheaper, at_most) == (None, None)
    below = replace(thrifty, slo_attainment=0.85, cost_dollars=2.5)
    cell, cheaper, at_most = pools_bench.equal_cell(curves, below)
    assert cell == "+58 %^, $2.50 > sky $2.00^ (85.0 %)"  # bounded by $6 and $2 from above
    by_seed = {0: {"t": {"thrifty": (thrifty, 0)}}, 1: {"t": {"thrifty": (above, 0)}}}
    lines = pools_bench.equal_table(by_seed, {0: {"t": curves}, 1: {"t": curves}})
    assert lines[2] == (
        "| t | +67 %, $3.00 ≤ sky $3.00 (96.0 %) | on-demand never, sky never (99.5 %) |"
    )
    assert lines[-4].endswith(": 1 of 1 runs (on-demand never reaches thrifty's in 1);")
    assert lines[-3].endswith(": 1 of 1 (it never reaches thrifty's in 1).")
