"""The bench's comparison at equal SLO attainment (bench/run.py), on hand-made curves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import ModuleType

import bench_modules
import pytest

from thrifty.sim.misses import LateFirstTokens
from thrifty.sim.runner import RunResult


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_modules.load("run")


_TEMPLATE = RunResult(
    policy="x", trace="t", attribution="a", profile="p", requests=100, served=100,
    duration_seconds=3600.0, gpu_hours=1.0, cost_dollars=2.5, tokens=1e6,
    dollars_per_million_tokens=2.5, ttft_p50_seconds=0.1, ttft_p95_seconds=0.5,
    ttft_p99_seconds=1.0, slo_ttft_seconds=2.0, slo_attainment=0.9, seconds_over_budget=0.0,
    scale_events=3, max_replicas=2, truncated_requests=0, series=(),
)  # fmt: skip


def _points(bench: ModuleType, pairs: list[tuple[float, float]]) -> list[object]:
    return [
        bench.Point("hpa", float(i), replace(_TEMPLATE, gpu_hours=g, slo_attainment=a))
        for i, (g, a) in enumerate(pairs)
    ]


def test_frontier_drops_dominated_settings(bench: ModuleType) -> None:
    points = _points(bench, [(4.0, 0.95), (2.0, 0.80), (3.0, 0.79), (6.0, 0.99)])
    assert bench.frontier(points) == [(2.0, 0.80), (4.0, 0.95), (6.0, 0.99)]


def test_cost_interpolated_at_equal_attainment(bench: ModuleType) -> None:
    points = _points(bench, [(2.0, 0.80), (4.0, 0.90), (6.0, 0.99)])
    assert bench.cost_at(points, 0.85).cost == pytest.approx(3.0)
    assert bench.cost_at(points, 0.5).cost == 2.0  # cheapest already reaches it
    ceiling = bench.cost_at(points, 0.995)
    assert ceiling.cost is None and "never reaches" in ceiling.note
    assert ceiling.ceiling_attainment == 0.99 and ceiling.ceiling_cost == 6.0


def test_ceiling_takes_the_cheapest_setting_near_the_best(bench: ModuleType) -> None:
    points = _points(bench, [(2.7, 0.823), (7.5, 0.829)])
    ceiling = bench.cost_at(points, 0.99)
    assert ceiling.ceiling_cost == 2.7


def test_quick_runs_one_policy_per_trace_and_writes_nothing(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.md"
    argv = ["--quick", "static,replicas=1", "--traces", "azure-conv", "--out", str(out)]
    assert bench.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("azure-conv: ") and "GPU-h, SLO" in line and "scale events" in line
    assert not out.exists()


def test_min_replicas_sets_the_floor_and_the_opening_fleet(bench: ModuleType) -> None:
    args = bench.parse_args(["--traces", "azure-conv", "--min-replicas", "3"])
    case = bench.make_case(args, "azure-conv", bench.profile_by_name("llama-8b-1xh100"))
    ms = bench._model_service(args, case)
    assert ms.spec.scaling.min_replicas == 3
    assert bench._config(args, case, ms).initial_replicas == 3 > case.initial_replicas


def test_every_run_of_the_benchmark_goes_through_the_router_asked_for(bench: ModuleType) -> None:
    args = bench.parse_args(["--traces", "azure-conv", "--router", "round-robin", "--seed", "2"])
    case = bench.make_case(args, "azure-conv", bench.profile_by_name("llama-8b-1xh100"))
    config = bench._config(args, case, bench._model_service(args, case))
    assert (config.router.value, config.router_seed) == ("round-robin", 2)
    default = bench.parse_args(["--traces", "azure-conv"])
    assert bench._config(default, case, bench._model_service(default, case)).router.value == (
        "least-loaded"
    )


def test_each_trace_section_says_where_thriftys_late_first_tokens_come_from(
    bench: ModuleType,
) -> None:
    args = bench.parse_args(["--traces", "azure-conv"])
    case = bench.make_case(args, "azure-conv", bench.profile_by_name("llama-8b-1xh100"))
    late = LateFirstTokens(scaling_up=3, as_planned=1)
    thrifty = replace(_TEMPLATE, policy="thrifty", late=late)
    found = bench.TraceBench(case, thrifty, thrifty, 5.0, {}, thrifty, [], 300.0)
    section = bench._trace_section(found)
    assert (
        "thrifty's first tokens over 2 s, by the fleet when they arrived (`thrifty.sim.misses`): "
        "4 late: 75 % while replicas started, 25 % with the fleet as planned." in section
    )
