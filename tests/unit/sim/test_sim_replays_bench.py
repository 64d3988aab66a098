"""bench/replays.py: each replay is the slice or the speed it names, of the real arrivals."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import bench_modules
import pytest

from thrifty import tracefiles
from thrifty.sim.clairvoyant import opening_replicas
from thrifty.sim.traces import Trace


@pytest.fixture(scope="module")
def replays() -> ModuleType:
    return bench_modules.load("replays")


def _replayed(replays: ModuleType, label: str) -> tuple[Any, Trace]:
    """The replay's case (bench/run.py's `Case`) and the whole trace it comes from."""
    replay = next(r for r in replays.REPLAYS if r.label == label)
    args = replays.bench.parse_args([])
    found = replays.case(args, "azure-code", replay, "llama-8b-1xh100")
    whole = tracefiles.load_trace("azure-code", tracefiles.TraceOptions())
    return found, whole


def test_a_replay_from_half_way_holds_the_second_half_of_the_arrivals(
    replays: ModuleType,
) -> None:
    found, whole = _replayed(replays, "from half-way")
    half = whole.duration_seconds / 2
    later = [r for r in whole.requests if r.arrival_seconds >= half]
    assert len(found.trace.requests) == pytest.approx(len(later), abs=1)
    assert found.trace.requests[0].arrival_seconds < 60.0  # re-based to its own start


def test_a_faster_replay_keeps_every_arrival_in_less_time(replays: ModuleType) -> None:
    found, whole = _replayed(replays, "1.5x speed")
    assert len(found.trace.requests) == len(whole.requests)
    assert found.trace.duration_seconds == pytest.approx(whole.duration_seconds / 1.5, rel=0.01)


def test_a_slower_replay_is_cut_at_an_hour(replays: ModuleType) -> None:
    found, whole = _replayed(replays, "0.7x speed")
    assert found.trace.duration_seconds == pytest.approx(replays.MAX_SECONDS)
    assert 0 < len(found.trace.requests) < len(whole.requests)


def test_the_opening_fleet_is_what_the_replay_itself_first_needs(replays: ModuleType) -> None:
    found, whole = _replayed(replays, "from a quarter in")
    cold = found.cold_start_seconds
    slo = replays.bench.parse_args([]).slo_ttft

    def opening(trace: Trace) -> int:
        return opening_replicas(trace, found.profile, cold, slo)

    assert found.initial_replicas == opening(found.trace) > opening(whole)
