"""Prometheus as the policy sees it: periodic scrapes, rate windows and histogram quantiles.

A policy tuned on exact, instantaneous simulator state would meet in production metrics that are
up to a scrape interval old, averaged over a minute and quantised into histogram buckets. So the
simulator scrapes its fleet the way Prometheus scrapes vLLM and answers the same queries the
operator's Prometheus adapter asks:

- ``sum(rate(vllm:prompt_tokens_total[1m]))`` and the generation / request counterparts, and
  the tokens per finished request from the per-request token histograms' sums over their count,
- ``histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[2m])))``,
- the gauges ``vllm:num_requests_waiting``, ``vllm:num_requests_running`` (summed) and
  ``vllm:kv_cache_usage_perc`` (averaged) from the newest scrape,
- ``avg_over_time`` of the waiting gauge over the rate window, and the TTFT and queue-time
  histograms' buckets (``sum by (le) (increase(...[2m]))``) from which a policy reads any
  percentile; the queue time, as vLLM's, is observed when a request finishes.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from thrifty.api import throughput
from thrifty.policy.types import Signals

TTFT_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's ``vllm:time_to_first_token_seconds`` buckets (reference/vllm.md)."""

REQUEST_LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's buckets of every request-latency histogram: ``vllm:request_queue_time_seconds``
(reference/vllm.md), the prefill, decode, inference and end-to-end times too."""


class Histogram:
    """A cumulative Prometheus histogram: counts per upper bound, the last bucket is +Inf."""

    def __init__(self, bounds: Sequence[float] = TTFT_BUCKETS_SECONDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += 1

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.counts)


def histogram_quantile(
    quantile: float, bounds: Sequence[float], bucket_counts: Sequence[float]
) -> float | None:
    """Prometheus' ``histogram_quantile`` over non-cumulative bucket counts (+Inf last).

    Linear interpolation inside the bucket holding the rank; the first bucket starts at 0; a rank
    in the +Inf bucket returns the highest finite bound. None without observations.
    """
    total = sum(bucket_counts)
    if total <= 0:
        return None
    rank = quantile * total
    seen = 0.0
    for index, count in enumerate(bucket_counts):
        if seen + count >= rank and count > 0:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _ratio(numerator: float, denominator: float) -> float | None:
    """PromQL's ``a / b`` of two rates: no result when nothing was counted."""
    return numerator / denominator if denominator > 0.0 else None


@dataclass(frozen=True)
class Scrape:
    """One scrape of the whole fleet, counters summed over every replica that ever served."""

    time: float
    requests_waiting: float
    requests_running: float
    kv_cache_usage: float
    serving_replicas: int
    prompt_tokens_total: float
    generation_tokens_total: float
    requests_total: float
    ttft_buckets: tuple[int, ...]
    finished_tokens_total: float = 0.0
    """Prompt + generated tokens of the finished requests (the token histograms' sums)."""
    queue_buckets: tuple[int, ...] = ()
    """The finished requests' queue times, in `REQUEST_LATENCY_BUCKETS_SECONDS` (+Inf last)."""
    prefill_buckets: tuple[int, ...] = ()
    """The finished requests' prefill times (scheduled to first token), in the same buckets."""
    pool_prefill: tuple[tuple[str, float, float, int], ...] = ()
    """Per pool: (pool, prefill seconds, prompt tokens, requests) summed over every request that
    finished there (the histograms' ``_sum`` and ``_count`` by the label ``pool``)."""


class Metrics(StrEnum):
    """Which of vLLM's series the engines export."""

    VLLM = "vllm"
    """All the queries above read: what vLLM exports."""
    BASIC = "basic"
    """The gauges, the token and request counters and the TTFT histogram only: no queue-time,
    prefill-time or token-length histograms, as from an engine or exporter that has none. The
    policy then infers the queue and the prefill from TTFT and the tokens per request from the
    rates (`thrifty.policy.planner.estimate`)."""


class Prometheus:
    """Keeps recent scrapes and answers the policy's queries from them."""

    def __init__(
        self,
        rate_window_seconds: float = 60.0,
        ttft_window_seconds: float = 120.0,
        ttft_quantile: float = 0.95,
        metrics: Metrics = Metrics.VLLM,
    ) -> None:
        self.rate_window_seconds = rate_window_seconds
        self.ttft_window_seconds = ttft_window_seconds
        self.ttft_quantile = ttft_quantile
        self.metrics = metrics
        self._scrapes: deque[Scrape] = deque()

    def record(self, scrape: Scrape) -> None:
        self._scrapes.append(scrape)
        window = max(self.rate_window_seconds, self.ttft_window_seconds)
        if scrape.pool_prefill:
            window = max(window, throughput.WINDOW_SECONDS)
        horizon = scrape.time - window - 1.0
        while len(self._scrapes) > 2 and self._scrapes[1].time <= horizon:
            self._scrapes.popleft()

    def signals(self, now: float) -> Signals | None:
        """What the adapter's queries return at ``now``; None until a rate has two samples."""
        newest = self._newest(now)
        if newest is None:
            return None
        oldest = self._oldest_within(now, self.rate_window_seconds)
        if oldest is None or oldest.time >= newest.time:
            return None
        span = newest.time - oldest.time
        signals = Signals(
            requests_waiting=newest.requests_waiting,
            requests_running=newest.requests_running,
            kv_cache_usage=newest.kv_cache_usage,
            prompt_tokens_per_second=(newest.prompt_tokens_total - oldest.prompt_tokens_total)
            / span,
            generation_tokens_per_second=(
                newest.generation_tokens_total - oldest.generation_tokens_total
            )
            / span,
            requests_per_second=(newest.requests_total - oldest.requests_total) / span,
            tokens_per_finished_request=_ratio(
                newest.finished_tokens_total - oldest.finished_tokens_total,
                newest.requests_total - oldest.requests_total,
            ),
            ttft_p95_seconds=self._ttft_quantile(now, newest),
            sample_age_seconds=now - newest.time,
            requests_waiting_mean=self._mean(now, lambda scrape: scrape.requests_waiting),
            requests_running_mean=self._mean(now, lambda scrape: scrape.requests_running),
            ttft_buckets=self._cumulative(
                now, newest, TTFT_BUCKETS_SECONDS, lambda scrape: scrape.ttft_buckets
            ),
            queue_time_buckets=self._cumulative(
                now, newest, REQUEST_LATENCY_BUCKETS_SECONDS, lambda scrape: scrape.queue_buckets
            ),
            prefill_time_buckets=self._cumulative(
                now, newest, REQUEST_LATENCY_BUCKETS_SECONDS, lambda scrape: scrape.prefill_buckets
            ),
        )
        if self.metrics is Metrics.BASIC:
            return replace(
                signals,
                tokens_per_finished_request=None,
                queue_time_buckets=(),
                prefill_time_buckets=(),
            )
        return signals

    def pool_prefill(self, now: float) -> tuple[throughput.PoolPrefill, ...]:
        """`build_pool_queries`' answers: per pool, ``increase`` of the sums over
        `throughput.WINDOW_SECONDS` (a pool first seen inside the window counts from zero).
        Empty without the prefill-time histogram, whose sums they are."""
        if self.metrics is Metrics.BASIC:
            return ()
        newest = self._newest(now)
        oldest = self._oldest_within(now, throughput.WINDOW_SECONDS)
        if newest is None or oldest is None or oldest.time >= newest.time:
            return ()
        start = {sums[0]: sums[1:] for sums in oldest.pool_prefill}
        found = []
        for pool, seconds, tokens, count in newest.pool_prefill:
            was = start.get(pool, (0.0, 0.0, 0))
            found.append(
                throughput.PoolPrefill(
                    pool=pool,
                    prefill_seconds=seconds - was[0],
                    prompt_tokens=tokens - was[1],
                    requests=float(count - was[2]),
                )
            )
        return tuple(found)

    def _mean(self, now: float, gauge: Callable[[Scrape], float]) -> float:
        """``avg_over_time(<gauge>[rate window])``."""
        window = [
            gauge(scrape)
            for scrape in self._scrapes
            if now - self.rate_window_seconds <= scrape.time <= now
        ]
        return sum(window) / len(window) if window else 0.0

    def _cumulative(
        self,
        now: float,
        newest: Scrape,
        bounds: Sequence[float],
        counts: Callable[[Scrape], tuple[int, ...]],
    ) -> tuple[tuple[float, float], ...]:
        """``sum by (le) (increase(<histogram>_bucket[ttft window]))``, cumulative, +Inf last."""
        oldest = self._oldest_within(now, self.ttft_window_seconds)
        start = counts(oldest) if oldest is not None else ()
        end = counts(newest)
        if not start or len(start) != len(end):
            return ()
        cumulative, total = [], 0.0
        for bound, a, b in zip((*bounds, math.inf), start, end, strict=True):
            total += b - a
            cumulative.append((bound, total))
        return tuple(cumulative)

    def _ttft_quantile(self, now: float, newest: Scrape) -> float | None:
        oldest = self._oldest_within(now, self.ttft_window_seconds)
        if oldest is None:
            return None
        deltas = [b - a for a, b in zip(oldest.ttft_buckets, newest.ttft_buckets, strict=True)]
        return histogram_quantile(self.ttft_quantile, TTFT_BUCKETS_SECONDS, deltas)

    def _newest(self, now: float) -> Scrape | None:
        for scrape in reversed(self._scrapes):
            if scrape.time <= now:
                return scrape
        return None

    def _oldest_within(self, now: float, window: float) -> Scrape | None:
        for scrape in self._scrapes:
            if now - window <= scrape.time <= now:
                return scrape
        return None
