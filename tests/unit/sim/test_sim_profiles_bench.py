"""bench/profiles.py: its search for the cheapest static fleet, and its what-if profiles."""

from __future__ import annotations

from types import ModuleType

import bench_modules
import pytest

from thrifty.sim.profiles import LLAMA_8B_1xH100, LLAMA_70B_4xH100


@pytest.fixture(scope="module")
def profiles() -> ModuleType:
    return bench_modules.load("profiles")


@pytest.mark.parametrize(("first", "found"), [(1, 1), (2, 2), (10, 10), (33, 33), (64, 64)])
def test_the_search_finds_the_fewest_replicas_that_meet_the_slo(
    profiles: ModuleType, first: int, found: int
) -> None:
    tried: list[int] = []

    def run(count: int) -> object:
        tried.append(count)
        return profiles.shapes.Run(float(count), 0.99 if count >= first else 0.5)

    result = profiles.fewest(run, 64)
    assert result is not None and result[0] == found
    assert len(tried) == len(set(tried)) <= 13  # doubling then bisecting, no count run twice


def test_the_search_says_none_when_no_count_meets_it(profiles: ModuleType) -> None:
    assert profiles.fewest(lambda count: profiles.shapes.Run(float(count), 0.9), 64) is None


def test_the_what_if_replicas_span_the_shipped_ones(profiles: ModuleType) -> None:
    """Slower than the 8B on an H100 at both ends (prefill and a full batch's decode), and a
    405B-class replica slower than the 70B with a longer cold start."""
    small, mid, big = (profiles.PROFILES[n] for n in ("small-l4", "mid-a100", "big-8xh100"))
    shipped = LLAMA_8B_1xH100
    for slower in (small, mid):
        assert slower.prefill_tokens_per_second < shipped.prefill_tokens_per_second
        assert (
            slower.saturated_output_tokens_per_second()
            < shipped.saturated_output_tokens_per_second()
        )
    assert small.saturated_output_tokens_per_second() < mid.saturated_output_tokens_per_second()
    assert big.prefill_tokens_per_second < LLAMA_70B_4xH100.prefill_tokens_per_second
    assert big.cold_start_seconds > LLAMA_70B_4xH100.cold_start_seconds
