"""Percentiles and shares from Prometheus histograms, read as finely as vLLM's buckets allow.

Prometheus' ``histogram_quantile`` takes the observations in a bucket as spread evenly over it.
vLLM's TTFT histogram has one bucket from 1 to 2.5 s and the next up to 5 s, so a target inside
one is read on that assumption. In a latency tail the first tokens thin out across a wide bucket,
and an even spread puts too many of them past the target: read that way, the share within a 2 s
target ran up to 4.5 points under the share counted request by request, within 1.5 s up to 6.3
(bench/buckets.md), and the feedback bought replicas for misses that never happened.

vLLM also measures the two parts of a TTFT, the wait to be scheduled and scheduled to first token
(its queue and prefill times), in buckets of 0.2 to 0.5 s up to 2.5 s. Their sum, the two taken as
independent, says how the first tokens spread inside the TTFT bucket the target falls in; the TTFT
histogram's own counts at the bucket's edges stay as measured, so the shape moves the share only
between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

Buckets = tuple[tuple[float, float], ...]
"""Cumulative: (upper bound in seconds, observations at or under it), ascending, inf last."""

Shape = Callable[[float], float]
"""A cumulative distribution, seconds -> share of observations at or under them."""

_SPREAD_POINTS = 4
"""Points a bucket of waits is spread over (at its quarters' midpoints) when composing."""


def quantile(buckets: Buckets, q: float) -> float | None:
    """Prometheus' ``histogram_quantile`` on cumulative buckets (upper bound, count), inf last."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0.0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count <= below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def share_within(buckets: Buckets, seconds: float, shape: Shape | None = None) -> float | None:
    """Share of observations at or under ``seconds``: exact at a bucket's bound, inside a bucket
    interpolated along ``shape`` (evenly, as Prometheus does, without one)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0.0:
        return None
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if seconds <= bound:
            if math.isinf(bound) or bound <= lower:
                return below / total
            return (below + (count - below) * _into(lower, bound, seconds, shape)) / total
        lower, below = bound, count
    return 1.0


def _into(lower: float, upper: float, seconds: float, shape: Shape | None) -> float:
    """How far into the bucket (lower, upper] ``seconds`` is, as a share of its observations."""
    even = (seconds - lower) / (upper - lower)
    if shape is None:
        return even
    start, end = shape(lower), shape(upper)
    if end - start <= 1e-9:
        return even  # the shape puts nothing in this bucket: it cannot say how it spreads
    return min(max((shape(seconds) - start) / (end - start), 0.0), 1.0)


def composed(queue: Buckets, prefill: Buckets, minimum: float) -> Shape | None:
    """The distribution of queue + prefill time, the two taken as independent; None unless both
    histograms hold at least ``minimum`` observations."""
    fewest = min(queue[-1][1], prefill[-1][1]) if queue and prefill else 0.0
    if fewest <= 0.0 or fewest < minimum:
        return None
    waits = tuple(_spread(queue))

    def share(seconds: float) -> float:
        return sum(
            weight * (share_within(prefill, seconds - wait) or 0.0)
            for wait, weight in waits
            if wait <= seconds
        )

    return share


def _spread(buckets: Buckets) -> Iterator[tuple[float, float]]:
    """(value, share) points standing for the histogram: each bucket's observations spread
    evenly over it, the last (unbounded) one at its lower bound."""
    total = buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        share = (count - below) / total
        if share > 0.0 and math.isinf(bound):
            yield lower, share
        elif share > 0.0:
            for point in range(_SPREAD_POINTS):
                offset = (point + 0.5) / _SPREAD_POINTS
                yield lower + (bound - lower) * offset, share / _SPREAD_POINTS
        lower, below = bound, count
