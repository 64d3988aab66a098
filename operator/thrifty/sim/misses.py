"""Where a run's late first tokens come from: the fleet as it was when each late request arrived.

A request whose first token came after the SLO (or never) is counted once, under the first of:

- **opening**: it arrived within the first cold start, when only the opening fleet could serve
  (nothing ordered at t=0 or later was up yet);
- **scaling up**: replicas were ordered and not serving yet (pending or starting): the fleet
  was a cold start behind the demand;
- **after a shrink**: fewer replicas were ready than at some moment of the last cold start (a
  scale-down or a lost node): a replica gone that could not have been back in time;
- **as planned**: the fleet was what the policy had chosen, all of it ready: it planned too few
  replicas, or the engine was slower than the policy's model of it.

Each calls for a different remedy (a larger opening fleet or `minReplicas`; spare replicas for a
rise not yet seen, or a shorter cold start; a longer scale-down delay; a tighter target), which
is why `thrifty simulate` prints the split. The state is read at arrival, from the samples taken
at each decision: a request that arrives as the new replicas come up, behind the backlog the
wait left, counts as planned.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Protocol


class FleetSample(Protocol):
    """The fleet at one decision (`thrifty.sim.runner.TimePoint` is one)."""

    @property
    def time(self) -> float: ...
    @property
    def ready(self) -> int: ...
    @property
    def starting(self) -> int: ...
    @property
    def pending(self) -> int: ...


@dataclass(frozen=True)
class LateFirstTokens:
    """Requests over the SLO, by the fleet's state when they arrived."""

    opening: int = 0
    scaling_up: int = 0
    after_shrink: int = 0
    as_planned: int = 0

    def __add__(self, other: LateFirstTokens) -> LateFirstTokens:
        return LateFirstTokens(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def total(self) -> int:
        return sum(astuple(self))

    def describe(self) -> str:
        """One line: the count and each cause's share, largest first."""
        if self.total == 0:
            return "none late"
        parts = (
            (self.scaling_up, "while replicas started"),
            (self.as_planned, "with the fleet as planned"),
            (self.after_shrink, "within a cold start of the fleet shrinking"),
            (self.opening, "in the opening cold start"),
        )
        shares = ", ".join(
            f"{100 * count / self.total:.0f} % {what}"
            for count, what in sorted(parts, key=lambda part: -part[0])
            if count
        )
        return f"{self.total:,} late: {shares}"


def classify(
    arrivals: Sequence[float],
    ttfts: Sequence[float],
    slo_seconds: float,
    series: Sequence[FleetSample],
    cold_start_seconds: float,
) -> LateFirstTokens:
    """Count the requests over ``slo_seconds`` (``ttfts`` in the order of ``arrivals``; inf:
    never served) by cause; ``series`` in time order, sampled after each decision."""
    times = [sample.time for sample in series]
    recent = _recent_most_ready(series, cold_start_seconds)
    causes: Counter[str] = Counter()
    for arrived, ttft in zip(arrivals, ttfts, strict=True):
        if ttft > slo_seconds:
            index = bisect.bisect_right(times, arrived) - 1
            causes[_cause(arrived, index, series, recent, cold_start_seconds)] += 1
    return LateFirstTokens(**causes)


def _cause(
    arrived: float,
    index: int,
    series: Sequence[FleetSample],
    recent: Sequence[int],
    cold_start_seconds: float,
) -> str:
    """The `LateFirstTokens` field a late request arriving after sample ``index`` counts in."""
    if arrived < cold_start_seconds or index < 0:
        return "opening"
    sample = series[index]
    if sample.starting + sample.pending > 0:
        return "scaling_up"
    if sample.ready < recent[index]:
        return "after_shrink"
    return "as_planned"


def _recent_most_ready(series: Sequence[FleetSample], window: float) -> list[int]:
    """For each sample, the most replicas ready at any sample of the ``window`` seconds up to it
    (a sliding maximum)."""
    most: list[int] = []
    kept: deque[int] = deque()  # indices whose ready counts fall from the front
    for index, sample in enumerate(series):
        while kept and series[kept[-1]].ready <= sample.ready:
            kept.pop()
        kept.append(index)
        while series[kept[0]].time < sample.time - window:
            kept.popleft()
        most.append(series[kept[0]].ready)
    return most
