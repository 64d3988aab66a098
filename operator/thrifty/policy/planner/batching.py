"""A replica's capacity from how its running sequences slow down, learned short of saturation.

Under continuous batching every running sequence gets one token per engine step, and a step takes
longer the more a replica serves: more sequences decode in it, and prompts share it. In the model
the simulator runs (and vLLM roughly follows), a step takes ``ITL0 + k c`` plus the prompt tokens
it carries at the prefill speed. With Little's law (``c = lambda o / y``) this gives, exactly,

    y = a (1 - x / X)

where ``y`` is the tokens/s one running sequence gets (generated tokens/s over the average
running batch), ``x`` the tokens/s a replica serves (prompt + generated), ``a = 1 / ITL0`` the
speed of a lone sequence and ``X`` the throughput at which the batch would grow without bound:
the processor-sharing law, ``1 - utilisation = y / a``. A line fitted through (x, y) samples at
different loads therefore says where a replica saturates without ever saturating one; the same
samples at one load say nothing, and the fit says so through its standard error.

A replica reaches its limit before ``X`` when the batch fills first: ``--max-num-seqs`` or the KV
cache. The running batch grows as ``c = kappa x / (a - b x)`` (``b = a / X``, ``kappa`` from the
newest sample), so the limit is the load at which it reaches the smaller of the two.

The estimate comes with its standard error. The policy orders replicas only for what even the
estimate plus 1.64 standard errors cannot carry (`plan`), so a fit through noisy or nearby
samples orders none, and what replicas were seen to serve still sizes the rest.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from thrifty.policy.planner.state import Series

MIN_SAMPLES = 8
"""Fewer samples than this are no line: two minutes at a 15-s cadence."""

FLAT = 1e-9
"""A slowdown across the samples smaller than this share of the speed is rounding, not load."""

CONFIDENCE_Z = 1.64
"""One-sided 95 %: the most the samples allow, not their best guess."""


@dataclass(frozen=True)
class Line:
    """``y = a - b x`` through the samples, with the standard error of its zero crossing."""

    a: float
    b: float
    crossing_error: float
    """Standard error of ``X = a / b`` (delta method)."""

    @property
    def crossing(self) -> float:
        return self.a / self.b


def fit(samples: Series) -> Line | None:
    """Least squares through (served tokens/s, tokens/s per running sequence), oldest first;
    None unless the samples slope down by more than their noise explains (one load, or noise),
    so no saturation point follows from them.

    Consecutive samples are rates over overlapping windows, so their errors are correlated and
    least squares alone would claim several times the certainty the samples hold. The variances
    are widened by the residuals' lag-1 autocorrelation ``rho``, ``(1 + rho) / (1 - rho)``
    (an AR(1) error's effective sample size)."""
    n = len(samples)
    if n < MIN_SAMPLES:
        return None
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in samples)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in samples)
    if sxx <= 0.0 or sxy >= 0.0:
        return None
    b = -sxy / sxx
    a = mean_y + b * mean_x
    spread = max(x for x, _ in samples) - min(x for x, _ in samples)
    if a <= 0.0 or b * spread <= FLAT * mean_y:
        return None
    residuals = [y - (a - b * x) for x, y in samples]
    variance = _correlated(residuals) * sum(r * r for r in residuals) / (n - 2)
    var_b = variance / sxx
    if b <= CONFIDENCE_Z * math.sqrt(var_b):
        return None
    var_a = variance * (1.0 / n + mean_x**2 / sxx)
    cov_ab = variance * mean_x / sxx
    crossing = a / b
    relative = var_a / a**2 + var_b / b**2 - 2.0 * cov_ab / (a * b)
    return Line(a, b, crossing * math.sqrt(max(relative, 0.0)))


MAX_CORRELATION = 0.95
"""Caps the widening at 39x the variance: beyond it the samples are one measurement repeated."""


def _correlated(residuals: list[float]) -> float:
    """How many times the independent-error variance correlated residuals carry."""
    total = sum(r * r for r in residuals)
    if total <= 0.0:
        return 1.0
    lagged = sum(later * earlier for earlier, later in itertools.pairwise(residuals))
    rho = min(max(lagged / total, 0.0), MAX_CORRELATION)
    return (1.0 + rho) / (1.0 - rho)


@dataclass(frozen=True)
class Batch:
    """The newest sample: what one replica serves and runs now."""

    served: float
    """Prompt + generated tokens/s per replica."""
    running: float
    """Average running sequences per replica."""
    speed: float
    """Generated tokens/s per running sequence."""
    kv_cache_usage: float
    """0..1."""


@dataclass(frozen=True)
class Estimate:
    """A replica's limit as the samples give it."""

    tokens_per_second: float
    """Prompt + generated tokens/s one replica serves at its limit."""
    relative_error: float
    """Standard error over the estimate."""

    def upper(self) -> float:
        """The most the samples allow (one-sided 95 %)."""
        return self.tokens_per_second * (1.0 + CONFIDENCE_Z * self.relative_error)


def capacity(line: Line, now: Batch, batch_limit: float, full_kv: float) -> Estimate | None:
    """Tokens/s one replica serves when its batch is full (or at ``X``, whichever comes first);
    None without a running batch to scale from."""
    if now.served <= 0.0 or now.running <= 0.0:
        return None
    limit = batch_limit
    if now.kv_cache_usage > 0.0:
        limit = min(limit, now.running * full_kv / now.kv_cache_usage)
    kappa = now.running * now.speed / now.served
    full = limit * line.a / (kappa + limit * line.b)
    return Estimate(min(full, line.crossing), line.crossing_error / line.crossing)
