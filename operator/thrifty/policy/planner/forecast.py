"""Demand over the horizon a decision acts on: a replica ordered now serves a cold start later.

A least-squares line through the recent demand (tokens/s, a few cold starts back) gives the mean
level and the trend; the spread of the samples around it is the burstiness. The forecast for the
horizon is the level, plus the rising part of the trend from the window's middle to the horizon,
plus z times the spread,
with z the normal quantile of the target percentile: bursty traffic gets headroom for its bursts,
steady traffic almost none, and a p99 target more than a p50 one.

The trend is also read from the arrivals (the prompt tokens, prefilled within seconds of a
request's arrival), and the smaller of the two rises is projected. Generated tokens lag the
requests they answer by the requests' duration, so the served total climbs while a batch fills
with requests that have already arrived; prompt tokens climb in a burst of long prompts that
is no lasting rise. A rise of the traffic shows in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from thrifty.policy.planner.state import Series

MIN_WINDOW_SECONDS = 120.0
MAX_WINDOW_SECONDS = 600.0


@dataclass(frozen=True)
class Forecast:
    level: float
    """Mean demand over the window, tokens/s."""
    trend: float
    """tokens/s per second; only its rising part is projected."""
    spread: float
    """Standard deviation of the demand around the line: the burstiness."""
    horizon_seconds: float
    """From the window's middle, where ``level`` stands, to when a replica ordered now serves."""
    z: float

    def planned(self, headroom: float = 0.0) -> float:
        """Demand to plan for: level, rising trend over the horizon (at most doubling), and
        z x (1 + headroom) spreads for the bursts.

        A falling trend is not projected: replicas are removed by the scale-down delay, and a
        fall that bursty traffic shows is as often the gap before the next burst."""
        rise = min(max(self.trend, 0.0) * self.horizon_seconds, self.level)
        return max(self.level + rise + self.z * (1.0 + headroom) * self.spread, 0.0)


def window_seconds(cold_start_seconds: float) -> float:
    """How far back the line is fitted: two cold starts, within 2 and 10 minutes. The line is
    projected from the window's middle to a cold start ahead: about as far as the data it was
    fitted on, no further."""
    return min(max(2.0 * cold_start_seconds, MIN_WINDOW_SECONDS), MAX_WINDOW_SECONDS)


def z_for(quantile: float) -> float:
    """The normal quantile of the target percentile (0 for a median target)."""
    return max(NormalDist().inv_cdf(min(max(quantile, 0.5), 0.999)), 0.0)


def forecast(
    history: Series, now: float, horizon_seconds: float, quantile: float, arrivals: Series = ()
) -> Forecast:
    """The forecast from ``history`` (time, tokens/s), its newest sample taken at ``now``;
    ``arrivals`` (time, prompt tokens/s) over the same window, if known, can only lower the
    trend."""
    z = z_for(quantile)
    if not history:
        return Forecast(0.0, 0.0, 0.0, horizon_seconds, z)
    if len(history) < 3:
        return Forecast(history[-1][1], 0.0, 0.0, horizon_seconds, z)
    line = _line(history, now)
    trend = line.trend
    led = _line(arrivals, now) if len(arrivals) >= 3 else None
    if led is not None and led.level > 0.0:
        trend = min(trend, led.trend * line.level / led.level)
    return Forecast(line.level, trend, line.spread, horizon_seconds - line.middle, z)


@dataclass(frozen=True)
class _Fit:
    level: float
    trend: float
    """The slope beyond what its standard error explains (0 within it)."""
    spread: float
    middle: float
    """The window's middle, seconds from now (<= 0)."""


def _line(history: Series, now: float) -> _Fit:
    times = [at - now for at, _ in history]
    values = [value for _, value in history]
    mean_t = sum(times) / len(times)
    mean_v = sum(values) / len(values)
    var_t = sum((t - mean_t) ** 2 for t in times)
    slope = 0.0
    if var_t > 0.0:
        slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / var_t
    residuals = [v - (mean_v + slope * (t - mean_t)) for t, v in zip(times, values, strict=True)]
    spread = math.sqrt(sum(r * r for r in residuals) / (len(residuals) - 2))
    # Only the part of the slope its standard error cannot explain: bursts tilt a line through
    # a few minutes of samples one way or the other, a ramp tilts it beyond the noise.
    error = spread / math.sqrt(var_t) if var_t > 0.0 else math.inf
    trend = math.copysign(max(abs(slope) - z_for(0.95) * error, 0.0), slope)
    return _Fit(mean_v, trend, spread, mean_t)
