"""Trace files: the shared public traces by name, a user's file, or a synthetic shape, as requests;
and engine profiles, built in by name or a user's file.

The simulator, the benchmark and the load generator all replay traffic from here, so a trace name
means the same requests everywhere. This is the I/O the pure simulator (`thrifty.sim`) must not do:
it finds and reads the files; parsing and synthesis are `thrifty.sim.traces` and
`thrifty.sim.profiles`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from thrifty.sim import profiles, traces

NAMED_TRACES = {
    "azure-code": "azure2023/AzureLLMInferenceTrace_code.csv",
    "azure-conv": "azure2023/AzureLLMInferenceTrace_conv.csv",
    "mooncake": "mooncake/synthetic_trace.jsonl",
    "servegen-small": "servegen/language_m-small_aggregate_rate.csv",
    "servegen-mid": "servegen/language_m-mid_aggregate_rate.csv",
}
SYNTHETIC_SHAPES = ("ramp", "spike", "diurnal")


class TraceFileError(Exception):
    """A trace that cannot be had (missing, unreadable, empty slice): a user error."""


def traces_dir() -> Path:
    """``../shared/traces`` next to the repository, or ``$THRIFTY_TRACES_DIR``."""
    override = os.environ.get("THRIFTY_TRACES_DIR")
    if override:
        return Path(override)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "traces"


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TraceFileError(f"trace file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TraceFileError(f"cannot read trace {path}: {error}") from None


def load_profile(source: str) -> profiles.EngineProfile:
    """A built-in engine profile by name or alias, else the profile file at ``source``."""
    path = Path(source)
    try:
        return profiles.profile_by_name(source)
    except KeyError as unknown:
        if not path.exists():
            raise profiles.ProfileError(
                f"{unknown.args[0]}; and no profile file is at {path}"
            ) from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise profiles.ProfileError(f"cannot read engine profile {path}: {error}") from None
    return profiles.parse_profile(text, str(path))


@dataclass(frozen=True)
class TraceOptions:
    """How to turn a trace source into the requests of one run: `start_seconds` is a point in
    the trace (before the speedup), `duration_seconds` how long the replay lasts (after it)."""

    start_seconds: float = 0.0
    duration_seconds: float | None = None
    speedup: float | None = None
    target_rps: float | None = None
    seed: int = 0


def load_trace(source: str, options: TraceOptions) -> traces.Trace:
    """A named trace, a synthetic shape or a file path, sliced, sped up and synthesised."""
    if source in SYNTHETIC_SHAPES:
        return _synthetic(source, options)
    path = traces_dir() / NAMED_TRACES[source] if source in NAMED_TRACES else Path(source)
    lines = _read_lines(path)
    name = source if source in NAMED_TRACES else path.stem
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("{"):
        trace = traces.parse_mooncake_jsonl(lines, str(path), name)
    elif first.replace(" ", "").startswith("window_start_s"):
        return _from_rates(traces.parse_servegen_rates(lines, str(path), name), options)
    else:
        trace = traces.parse_azure_csv(lines, str(path), name)
    speedup = options.speedup or 1.0
    if options.start_seconds or options.duration_seconds:
        # As for ServeGen: the start is a point in the trace, the duration is replayed seconds.
        span = (options.duration_seconds or math.inf) * speedup
        trace = trace.sliced(options.start_seconds, span)
    if options.speedup:
        trace = trace.time_scaled(options.speedup)
    if not trace.requests:
        raise TraceFileError(f"{path}: no requests in the chosen slice")
    return trace


def _lengths() -> traces.Trace:
    path = traces_dir() / NAMED_TRACES["azure-conv"]
    return traces.parse_azure_csv(_read_lines(path), str(path), "azure-conv")


def _from_rates(series: traces.RateSeries, options: TraceOptions) -> traces.Trace:
    """ServeGen: a slice of the 14 days (one day by default), compressed into one hour."""
    day = 86_400.0
    start = options.start_seconds
    speedup = options.speedup or 24.0
    duration = options.duration_seconds or min(3600.0, (series.duration_seconds - start) / speedup)
    sliced = series.sliced(start, start + duration * speedup).compressed(speedup)
    try:
        rescaled = sliced.rescaled(options.target_rps or 10.0)
    except ValueError as error:
        raise TraceFileError(f"{error} (slice from {start:g} s)") from None
    name = f"{series.name}[{start / day:.3g}d+{duration * speedup / 3600:.3g}h/{speedup:g}]"
    trace = traces.synthesize(rescaled, _lengths(), options.seed, name)
    # Windows are 10 min long: cut what a partial window added past the duration asked for.
    return trace.sliced(0.0, duration)


def _synthetic(shape: str, options: TraceOptions) -> traces.Trace:
    duration = options.duration_seconds or 3600.0
    mean = options.target_rps or 10.0
    if shape == "ramp":
        series = traces.ramp(0.2 * mean, 1.8 * mean, duration)
    elif shape == "spike":
        series = traces.spike(0.6 * mean, 3.0 * mean, duration, duration / 2, duration / 10)
    else:
        series = traces.diurnal(mean, 0.6, duration, period_seconds=duration)
    return traces.synthesize(series, _lengths(), options.seed, shape)
