"""Late first tokens split by the fleet's state at arrival (`thrifty.sim.misses`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim_policies import ScheduledPolicy

from thrifty.sim import misses, scenario, traces
from thrifty.sim.profiles import LLAMA_8B_1xH100
from thrifty.sim.runner import SimulationConfig, simulate


@dataclass(frozen=True)
class Sample:
    time: float
    ready: int
    starting: int = 0
    pending: int = 0


# Decisions every 15 s, cold start 60 s: 2 ready; a scale-up ordered at 120 s serves at 180 s;
# 3 ready until a scale-down at 300 s leaves 2; from 360 s the 3 are more than a cold start back.
SERIES = [
    Sample(t, 2 if t < 120 or t >= 300 else 3 if t >= 180 else 2, starting=int(120 <= t < 180))
    for t in range(15, 480, 15)
]


def _classify(arrivals: list[float], ttfts: list[float]) -> misses.LateFirstTokens:
    return misses.classify(arrivals, ttfts, 2.0, SERIES, 60.0)


def test_each_late_request_counts_once_under_its_cause() -> None:
    late = _classify(
        [10.0, 59.0, 100.0, 130.0, 179.0, 200.0, 310.0, 359.0, 380.0, 400.0],
        [5.0, math.inf, 1.0, 3.0, 9.0, 2.5, 4.0, 4.0, math.inf, 2.0],
    )
    # 10 and 59: before the first cold start ends; 100 was on time; 130 and 179: the scale-up
    # of 120 s is starting; 200: 3 ready, as planned; 310 and 359: 2 ready where 3 were within
    # 60 s; 380: never served, the fleet of 375 s, whose 3 were more than 60 s back; 400 was on
    # time (at the SLO).
    assert late == misses.LateFirstTokens(opening=2, scaling_up=2, after_shrink=2, as_planned=2)
    assert late.total == 8


def test_an_arrival_reads_the_fleet_of_the_last_decision_before_it() -> None:
    # 119 s is before the scale-up of 120 s: the fleet of 105 s, as planned.
    assert _classify([119.0, 120.0], [3.0, 3.0]) == misses.LateFirstTokens(
        scaling_up=1, as_planned=1
    )


def test_pending_replicas_count_as_scaling_up() -> None:
    series = [Sample(60.0, 1), Sample(75.0, 1, pending=1)]
    late = misses.classify([80.0], [3.0], 2.0, series, 60.0)
    assert late == misses.LateFirstTokens(scaling_up=1)


def test_the_description_gives_shares_largest_first_and_skips_empty_causes() -> None:
    late = misses.LateFirstTokens(opening=1, scaling_up=6, as_planned=3)
    assert late.describe() == (
        "10 late: 60 % while replicas started, 30 % with the fleet as planned, "
        "10 % in the opening cold start"
    )
    assert misses.LateFirstTokens().describe() == "none late"
    assert late + late == misses.LateFirstTokens(opening=2, scaling_up=12, as_planned=6)


def test_a_run_counts_every_request_over_the_slo() -> None:
    requests = tuple(traces.Request(float(t), 3000, 50) for t in range(0, 600, 2))
    trace = traces.Trace("steady", requests, 600.0, "test")
    ms = scenario.model_service(LLAMA_8B_1xH100, min_replicas=1, max_replicas=4)
    config = SimulationConfig(
        profile=LLAMA_8B_1xH100, model_service=ms, cold_start_seconds=60.0, slo_ttft_seconds=0.3
    )
    result = simulate(trace, ScheduledPolicy([(0.0, 1), (200.0, 0), (215.0, 1)]), config)
    over = sum(1 for ttft in result.ttft_seconds if ttft > 0.3)
    assert result.late.total == over > 0
    assert result.late.after_shrink + result.late.scaling_up > 0
