"""bench/shapes.py: its load test against the engine model's closed form, and its verdicts."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace

import bench_modules
import pytest

from thrifty.sim.profiles import LLAMA_8B_1xH100


@pytest.fixture(scope="module")
def shapes() -> ModuleType:
    return bench_modules.load("shapes")


def test_the_load_test_measures_a_saturated_replica(shapes: ModuleType) -> None:
    """A full batch of 1,000-token prompts with 200-token answers: each request takes its prompt
    at the prefill speed and 200 decode slots of a full batch's step, so one replica serves
    1,200 tokens per (1000 / prefill + 200 x ITL(256) / 256) seconds."""
    profile = LLAMA_8B_1xH100
    batch = profile.max_num_seqs
    per_request = (
        1000 / profile.prefill_tokens_per_second + 200 * profile.itl_seconds(batch) / batch
    )
    measured = shapes.load_test(profile, [(1000, 200)])
    assert measured == pytest.approx(1200 / per_request, rel=0.1)


def test_a_run_is_judged_against_the_cheapest_static_fleet_that_meets_the_slo(
    shapes: ModuleType,
) -> None:
    static = (2, shapes.Run(2.0, 0.99))
    assert shapes.verdict(shapes.Run(3.0, 0.96), static) == "meets the SLO, 1.50x static"
    assert shapes.verdict(shapes.Run(1.0, 0.90), static) == "**misses** the SLO, 0.50x static"
    assert "every static count" in shapes.verdict(shapes.Run(1.0, 0.90), None)


def test_the_square_wave_is_high_then_low_each_period(shapes: ModuleType) -> None:
    series = shapes.square(1.0, 10.0, 60.0, 40.0)
    assert series.rates_rps == (10.0, 10.0, 1.0, 1.0, 10.0, 10.0)


def test_thrifty_is_set_against_the_hindsight_fleet_at_its_own_attainment(
    shapes: ModuleType,
) -> None:
    at, cell = shapes.bench.AtEqualSlo, shapes.bench.hindsight_cell
    run = shapes.Run(3.0, 0.97)
    assert cell(at(2.0, "interpolated"), 3.0) == "2.00: 1.50x"
    assert cell(at(2.0, "", upper_bound=True), 3.0) == "at most 2.00: 1.50x"
    assert cell(at(None, "", 0.9), 3.0) == "never reaches it (best 90.0 %)"
    rows = [
        SimpleNamespace(thrifty=run, static=None, hindsight=at(2.0, "")),
        SimpleNamespace(thrifty=shapes.Run(1.0, 0.97), static=None, hindsight=at(1.0, "")),
        SimpleNamespace(thrifty=shapes.Run(1.0, 0.5), static=None, hindsight=at(None, "")),
    ]
    [line] = shapes._against_hindsight(rows)
    # sqrt(1.5 x 1.0): the geometric mean over the two cases it reaches.
    assert "(2 cases where it reaches it): 1.22x" in line and "above 1.15x on 1." in line
