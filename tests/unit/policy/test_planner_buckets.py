"""Shares and percentiles from vLLM's histograms: a target inside a wide TTFT bucket is read along
the finer queue and prefill histograms, and only between the TTFT histogram's own counts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_builders import observation, signals

from thrifty.policy.planner import Tuning, buckets, estimate
from thrifty.policy.planner.state import State

INF = math.inf
TTFT = ((1.0, 80.0), (2.5, 100.0), (INF, 100.0))
"""80 first tokens within 1 s, the other 20 in vLLM's 1-2.5 s bucket."""
QUEUE = ((0.3, 100.0), (0.5, 100.0), (INF, 100.0))
"""Every request scheduled within 0.3 s: no queue to speak of."""
PREFILL = ((1.0, 80.0), (1.5, 98.0), (2.0, 100.0), (2.5, 100.0), (INF, 100.0))
"""The prefills past 1 s mostly end by 1.5 s: the TTFT bucket's first tokens sit at its start."""


def test_a_target_inside_a_wide_bucket_is_read_along_the_queue_and_prefill_times() -> None:
    evenly = buckets.share_within(TTFT, 2.0)
    assert evenly == pytest.approx(0.8 + 0.2 * (2.0 - 1.0) / 1.5)
    shape = buckets.composed(QUEUE, PREFILL, minimum=20.0)
    assert shape is not None
    shaped = buckets.share_within(TTFT, 2.0, shape)
    assert shaped is not None and shaped > 0.99


def test_the_ttft_histograms_own_counts_hold_at_its_bounds_whatever_the_shape() -> None:
    shape = buckets.composed(QUEUE, PREFILL, minimum=20.0)
    assert buckets.share_within(TTFT, 1.0, shape) == pytest.approx(0.8)
    assert buckets.share_within(TTFT, 2.5, shape) == pytest.approx(1.0)


def test_no_shape_from_too_few_requests_or_a_bucket_it_leaves_empty() -> None:
    assert buckets.composed(QUEUE, ((1.0, 5.0), (INF, 5.0)), minimum=20.0) is None
    assert buckets.composed((), PREFILL, minimum=20.0) is None
    # Prefills all under 0.3 s and no waits put nothing in 1-2.5 s: read evenly there.
    quick = ((0.3, 100.0), (INF, 100.0))
    shape = buckets.composed(QUEUE, quick, minimum=20.0)
    assert buckets.share_within(TTFT, 2.0, shape) == buckets.share_within(TTFT, 2.0)


def test_waits_under_0_3_s_shift_the_prefill_histogram_by_at_most_that() -> None:
    shape = buckets.composed(((0.3, 100.0), (INF, 100.0)), PREFILL, minimum=20.0)
    assert shape is not None
    assert shape(3.0) == pytest.approx(1.0)
    # Waits of 0-0.3 s put the share at 1.3 s between the prefills' at 1.0 s and at 1.3 s.
    assert (buckets.share_within(PREFILL, 1.0) or 0.0) < shape(1.3)
    assert shape(1.3) < (buckets.share_within(PREFILL, 1.3) or 0.0)


@given(
    counts=st.lists(st.integers(0, 50), min_size=3, max_size=3),
    queue=st.lists(st.integers(0, 50), min_size=3, max_size=3),
    prefill=st.lists(st.integers(0, 50), min_size=5, max_size=5),
    seconds=st.lists(st.floats(0.0, 6.0), min_size=2, max_size=2),
)
def test_a_shaped_share_is_monotone_and_stays_between_its_buckets_counts(
    counts: list[int], queue: list[int], prefill: list[int], seconds: list[float]
) -> None:
    ttft = _cumulative((1.0, 2.5, 5.0, INF), [*counts, 1])
    shape = buckets.composed(
        _cumulative((0.3, 0.8, 2.0, INF), [*queue, 1]),
        _cumulative((0.5, 1.0, 1.5, 2.0, 4.0, INF), [*prefill, 1]),
        minimum=1.0,
    )
    low, high = sorted(seconds)
    shares = [buckets.share_within(ttft, at, shape) or 0.0 for at in (low, high)]
    assert shares[0] <= shares[1] + 1e-12
    for at, share in zip((low, high), shares, strict=True):
        below = max((c for bound, c in ttft if bound < at), default=0.0) / ttft[-1][1]
        upto = min(c for bound, c in ttft if bound >= at) / ttft[-1][1]
        assert below - 1e-12 <= share <= upto + 1e-12


def test_the_reading_counts_the_share_within_along_the_parts_and_the_percentile_as_before() -> None:
    sig = signals(ttft_buckets=TTFT, queue_time_buckets=QUEUE, prefill_time_buckets=PREFILL)
    reading = estimate.read(sig, observation(sig=sig).spec, State(), Tuning())
    assert reading.within_target is not None and reading.within_target > 0.99
    assert reading.ttft == pytest.approx(buckets.quantile(TTFT, 0.95))


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> tuple[tuple[float, float], ...]:
    total, out = 0.0, []
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        out.append((bound, total))
    return tuple(out)
