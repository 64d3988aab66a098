"""Traffic for the simulator: parsers of the public trace formats and synthetic load shapes.

Per-request traces (Azure, Mooncake) give arrival times and token counts; rate series (ServeGen)
give only a request rate per window, so arrivals are drawn from a seeded Poisson process and token
lengths from a per-request trace. Parsers take the text lines and a source name, not a path, so
this module stays pure; the command line reads the files. A malformed line fails with the source,
the line number and what was expected, because a silent skip would bias every result.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

AZURE_ATTRIBUTION = (
    "Azure LLM inference trace 2023 (Azure/AzurePublicDataset, CC-BY 4.0); "
    "Patel et al., Splitwise, ISCA 2024"
)
MOONCAKE_ATTRIBUTION = (
    "Mooncake synthetic trace (kvcache-ai/Mooncake, Apache-2.0); Qin et al., Mooncake, FAST 2025"
)
SERVEGEN_ATTRIBUTION = (
    "ServeGen aggregate rate, derived from alibaba/ServeGen (Apache-2.0); "
    "Xiang et al., ServeGen, arXiv 2505.09999"
)
SYNTHETIC_ATTRIBUTION = "synthetic load shape (thrifty)"


class TraceFormatError(ValueError):
    """A trace line that does not match its format."""

    def __init__(self, source: str, line: int, expected: str, got: str) -> None:
        self.source = source
        self.line = line
        super().__init__(f"{source}:{line}: expected {expected}, got {got[:120]!r}")


@dataclass(frozen=True)
class Request:
    arrival_seconds: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival, the first at or after 0."""

    name: str
    requests: tuple[Request, ...]
    duration_seconds: float
    attribution: str

    @property
    def mean_requests_per_second(self) -> float:
        return len(self.requests) / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def sliced(self, start_seconds: float, duration_seconds: float) -> Trace:
        """The requests of ``[start, start + duration)``, shifted to start at 0."""
        end = start_seconds + duration_seconds
        kept = tuple(
            replace(r, arrival_seconds=r.arrival_seconds - start_seconds)
            for r in self.requests
            if start_seconds <= r.arrival_seconds < end
        )
        span = min(duration_seconds, max(0.0, self.duration_seconds - start_seconds))
        return replace(self, requests=kept, duration_seconds=span)

    def time_scaled(self, speedup: float) -> Trace:
        """Replays ``speedup`` times faster: rates multiply, the shape stays."""
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        kept = tuple(replace(r, arrival_seconds=r.arrival_seconds / speedup) for r in self.requests)
        return replace(
            self,
            name=f"{self.name}x{speedup:g}",
            requests=kept,
            duration_seconds=self.duration_seconds / speedup,
        )


@dataclass(frozen=True)
class RateSeries:
    """A request rate per fixed window; ``None`` marks a masked window (a collection gap)."""

    name: str
    window_seconds: float
    rates_rps: tuple[float | None, ...]
    attribution: str

    @property
    def duration_seconds(self) -> float:
        return self.window_seconds * len(self.rates_rps)

    @property
    def masked_windows(self) -> int:
        return sum(1 for r in self.rates_rps if r is None)

    def mean_rps(self) -> float:
        known = [r for r in self.rates_rps if r is not None]
        return sum(known) / len(known) if known else 0.0

    def sliced(self, start_seconds: float, end_seconds: float) -> RateSeries:
        first = int(start_seconds // self.window_seconds)
        last = math.ceil(end_seconds / self.window_seconds)
        return replace(self, rates_rps=self.rates_rps[first:last])

    def compressed(self, speedup: float) -> RateSeries:
        """Plays the shape ``speedup`` times faster (windows shorten; rates are set by rescale)."""
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        return replace(self, window_seconds=self.window_seconds / speedup)

    def rescaled(self, target_mean_rps: float) -> RateSeries:
        """Multiplies every rate so the mean over unmasked windows is ``target_mean_rps``."""
        mean = self.mean_rps()
        if mean <= 0:
            raise ValueError(f"{self.name}: cannot rescale a series with no traffic")
        factor = target_mean_rps / mean
        rates = tuple(None if r is None else r * factor for r in self.rates_rps)
        return replace(self, rates_rps=rates)

    def filled(self) -> tuple[float, ...]:
        """Rates with masked windows interpolated linearly from their known neighbours."""
        rates = list(self.rates_rps)
        known = [i for i, r in enumerate(rates) if r is not None]
        if not known:
            return tuple(0.0 for _ in rates)
        out: list[float] = []
        for i, rate in enumerate(rates):
            if rate is not None:
                out.append(rate)
                continue
            before = max((k for k in known if k < i), default=None)
            after = min((k for k in known if k > i), default=None)
            out.append(_interpolate(rates, i, before, after))
        return tuple(out)


def _interpolate(rates: list[float | None], i: int, before: int | None, after: int | None) -> float:
    low = rates[before] if before is not None else None
    high = rates[after] if after is not None else None
    if low is None or before is None:
        return high or 0.0
    if high is None or after is None:
        return low
    return low + (high - low) * (i - before) / (after - before)


# -- parsers ---------------------------------------------------------------------------------------


def _csv_rows(lines: Iterable[str], source: str, header: str) -> Iterator[tuple[int, str]]:
    """The non-blank data lines with their line numbers, after checking the header line."""
    header_seen = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if not header_seen:
            if line.replace(" ", "") != header:
                raise TraceFormatError(source, number, f"header '{header}'", line)
            header_seen = True
            continue
        yield number, line


def parse_azure_csv(lines: Iterable[str], source: str, name: str = "azure") -> Trace:
    """Azure LLM inference trace: ``TIMESTAMP,ContextTokens,GeneratedTokens``."""
    rows: list[tuple[float, int, int]] = []
    for number, line in _csv_rows(lines, source, "TIMESTAMP,ContextTokens,GeneratedTokens"):
        rows.append(_azure_row(line, source, number))
    if not rows:
        raise TraceFormatError(source, 1, "at least one request row", "an empty file")
    return _trace_from_rows(name, rows, AZURE_ATTRIBUTION)


def _azure_row(line: str, source: str, number: int) -> tuple[float, int, int]:
    expected = "'YYYY-MM-DD HH:MM:SS.fff,<context tokens>,<generated tokens>'"
    parts = line.split(",")
    if len(parts) != 3:
        raise TraceFormatError(source, number, expected, line)
    try:
        seconds = _timestamp_seconds(parts[0].strip())
        prompt, output = int(parts[1]), int(parts[2])
    except ValueError:
        raise TraceFormatError(source, number, expected, line) from None
    if prompt < 0 or output < 0:
        raise TraceFormatError(source, number, "non-negative token counts", line)
    return seconds, prompt, output


def _timestamp_seconds(text: str) -> float:
    """Seconds since the epoch day of ``YYYY-MM-DD HH:MM:SS[.fraction]`` (7-digit fractions too)."""
    date, _, clock = text.partition(" ")
    year, month, day = (int(x) for x in date.split("-"))
    hours, minutes, seconds = clock.split(":")
    days = _days_from_civil(year, month, day)
    return days * 86_400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)


def _days_from_civil(year: int, month: int, day: int) -> int:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError("bad date")
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def parse_mooncake_jsonl(lines: Iterable[str], source: str, name: str = "mooncake") -> Trace:
    """Mooncake trace: JSON lines with ``timestamp`` (ms), ``input_length``, ``output_length``."""
    expected = "a JSON object with integer timestamp (ms), input_length, output_length"
    rows: list[tuple[float, int, int]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
            values = (record["timestamp"], record["input_length"], record["output_length"])
        except (ValueError, KeyError, TypeError):
            raise TraceFormatError(source, number, expected, line) from None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise TraceFormatError(source, number, expected, line)
        if min(values) < 0:
            raise TraceFormatError(source, number, "non-negative numbers", line)
        rows.append((values[0] / 1000.0, int(values[1]), int(values[2])))
    if not rows:
        raise TraceFormatError(source, 1, "at least one request line", "an empty file")
    return _trace_from_rows(name, rows, MOONCAKE_ATTRIBUTION)


def parse_servegen_rates(lines: Iterable[str], source: str, name: str = "servegen") -> RateSeries:
    """ServeGen aggregate rate: ``window_start_s,aggregate_rate_rps`` in equal windows.

    All-zero windows are collection gaps in these series, not idle time: they come back masked.
    """
    starts: list[float] = []
    rates: list[float | None] = []
    for number, line in _csv_rows(lines, source, "window_start_s,aggregate_rate_rps"):
        start, rate = _servegen_row(line, source, number)
        if starts and start <= starts[-1]:
            raise TraceFormatError(source, number, f"a window start after {starts[-1]:g}", line)
        starts.append(start)
        rates.append(None if rate == 0.0 else rate)
    if len(starts) < 2:
        raise TraceFormatError(source, 1, "at least two windows", f"{len(starts)} windows")
    window = starts[1] - starts[0]
    for index in range(1, len(starts)):
        if not math.isclose(starts[index] - starts[index - 1], window):
            raise TraceFormatError(
                source, index + 2, f"windows {window:g} s apart", f"start {starts[index]:g}"
            )
    return RateSeries(name, window, tuple(rates), SERVEGEN_ATTRIBUTION)


def _servegen_row(line: str, source: str, number: int) -> tuple[float, float]:
    expected = "'<window start seconds>,<rate requests/s>'"
    parts = line.split(",")
    if len(parts) != 2:
        raise TraceFormatError(source, number, expected, line)
    try:
        start, rate = float(parts[0]), float(parts[1])
    except ValueError:
        raise TraceFormatError(source, number, expected, line) from None
    if rate < 0 or not math.isfinite(rate) or not math.isfinite(start):
        raise TraceFormatError(source, number, "a finite non-negative rate", line)
    return start, rate


def _trace_from_rows(name: str, rows: list[tuple[float, int, int]], attribution: str) -> Trace:
    rows.sort(key=lambda row: row[0])
    origin = rows[0][0]
    requests = tuple(Request(t - origin, max(1, p), max(1, o)) for t, p, o in rows)
    duration = requests[-1].arrival_seconds + 1.0
    return Trace(name, requests, duration, attribution)


# -- synthesis -------------------------------------------------------------------------------------


def synthesize(
    series: RateSeries,
    lengths_from: Trace,
    seed: int,
    name: str | None = None,
) -> Trace:
    """Draws Poisson arrivals at each window's rate, token lengths sampled from ``lengths_from``.

    Masked windows take rates interpolated from their neighbours, so a collection gap is neither
    idle time nor a cliff.
    """
    rng = random.Random(seed)
    pool = [(r.prompt_tokens, r.output_tokens) for r in lengths_from.requests]
    if not pool:
        raise ValueError(f"{lengths_from.name}: no requests to draw token lengths from")
    requests: list[Request] = []
    for index, rate in enumerate(series.filled()):
        start = index * series.window_seconds
        end = start + series.window_seconds
        if rate <= 0:
            continue
        t = start + rng.expovariate(rate)
        while t < end:
            prompt, output = pool[rng.randrange(len(pool))]
            requests.append(Request(t, prompt, output))
            t += rng.expovariate(rate)
    attribution = f"{series.attribution}; token lengths: {lengths_from.attribution}"
    return Trace(name or series.name, tuple(requests), series.duration_seconds, attribution)


def ramp(
    from_rps: float, to_rps: float, duration_seconds: float, window_seconds: float = 10.0
) -> RateSeries:
    """A rate rising (or falling) linearly over the duration."""
    windows = max(1, int(duration_seconds // window_seconds))
    rates = tuple(from_rps + (to_rps - from_rps) * (i + 0.5) / windows for i in range(windows))
    return RateSeries("ramp", window_seconds, rates, SYNTHETIC_ATTRIBUTION)


def spike(
    base_rps: float,
    peak_rps: float,
    duration_seconds: float,
    spike_start_seconds: float,
    spike_seconds: float,
    window_seconds: float = 10.0,
) -> RateSeries:
    """A flat rate with one burst at ``peak_rps``."""
    windows = max(1, int(duration_seconds // window_seconds))
    spike_end = spike_start_seconds + spike_seconds
    rates = tuple(
        peak_rps if spike_start_seconds <= i * window_seconds < spike_end else base_rps
        for i in range(windows)
    )
    return RateSeries("spike", window_seconds, rates, SYNTHETIC_ATTRIBUTION)


def diurnal(
    mean_rps: float,
    amplitude: float,
    duration_seconds: float,
    period_seconds: float = 86_400.0,
    window_seconds: float = 60.0,
) -> RateSeries:
    """A sine around ``mean_rps``, relative ``amplitude`` (0.5: from 0.5x to 1.5x), low first."""
    windows = max(1, int(duration_seconds // window_seconds))
    rates = tuple(
        mean_rps
        * (1.0 - amplitude * math.cos(2 * math.pi * (i + 0.5) * window_seconds / period_seconds))
        for i in range(windows)
    )
    return RateSeries("diurnal", window_seconds, rates, SYNTHETIC_ATTRIBUTION)
