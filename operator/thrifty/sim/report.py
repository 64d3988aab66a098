"""What a simulation run shows a person: the comparison table, the JSON report and the plot.

Kept apart from the runner so the numbers are computed once and rendered three ways; pure (the
plot comes back as PNG bytes), the command line writes the files. Every rendering carries the
trace attribution, as the traces' licences ask.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from typing import Any

from thrifty.policy.types import JSONValue
from thrifty.sim.runner import RunResult

_COLUMNS = (
    ("policy", "policy"),
    ("GPU-h", "gpu_hours"),
    ("cost $", "cost_dollars"),
    ("$/1M tok", "dollars_per_million_tokens"),
    ("TTFT p50 s", "ttft_p50_seconds"),
    ("TTFT p95 s", "ttft_p95_seconds"),
    ("TTFT p99 s", "ttft_p99_seconds"),
    ("SLO %", "slo_attainment"),
    ("over budget s", "seconds_over_budget"),
    ("scale events", "scale_events"),
)


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "inf"
        if key == "slo_attainment":
            return f"{100 * value:.1f}"
        if key in ("gpu_hours", "cost_dollars", "ttft_p50_seconds"):
            return f"{value:.2f}" if key != "ttft_p50_seconds" else f"{value:.3f}"
        if key == "dollars_per_million_tokens":
            return f"{value:.3f}"
        if key == "seconds_over_budget":
            return f"{value:.0f}"
        return f"{value:.2f}"
    return str(value)


def table(results: Sequence[RunResult], markdown: bool = False) -> str:
    """The comparison table, plain text (aligned) or Markdown."""
    header = [title for title, _ in _COLUMNS]
    rows = [[_cell(key, getattr(r, key)) for _, key in _COLUMNS] for r in results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _json_number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def result_json(result: RunResult, with_series: bool = True) -> dict[str, JSONValue]:
    """One run as JSON; infinite TTFTs (requests never served) become null."""
    out: dict[str, JSONValue] = {}
    for key, value in vars(result).items():
        if key in ("series", "ttft_seconds", "late"):
            continue
        out[key] = _json_number(value) if isinstance(value, float) else value
    out["late_first_tokens"] = {"total": result.late.total, **dataclasses.asdict(result.late)}
    out["ttft_unserved_requests"] = result.requests - result.served
    if with_series:
        out["series"] = {
            name: [_series_value(getattr(p, name)) for p in result.series]
            for name in (
                "time",
                "arrivals_per_second",
                "desired",
                "ready",
                "starting",
                "pending",
                "draining",
                "waiting",
                "running",
                "ttft_p95_seconds",
                "dollars_per_hour",
                "cost_dollars",
            )
        }
    return out


def _series_value(value: float | int | None) -> JSONValue:
    if isinstance(value, float):
        return _json_number(value)
    return value


def late_lines(results: Sequence[RunResult]) -> list[str]:
    """Per run, where its late first tokens come from (`thrifty.sim.misses`)."""
    if not results:
        return []
    slo = results[0].slo_ttft_seconds
    width = max(len(result.policy) for result in results)
    return [f"First tokens over {slo:g} s, by the fleet when they arrived:"] + [
        f"  {result.policy.ljust(width)}  {result.late.describe()}" for result in results
    ]


def report_json(
    results: Sequence[RunResult], settings: dict[str, JSONValue], command: str
) -> dict[str, JSONValue]:
    """The whole report: how it was made, the settings, every run."""
    attribution = results[0].attribution if results else ""
    return {
        "command": command,
        "settings": settings,
        "attribution": attribution,
        "results": [result_json(r) for r in results],
    }


def plot_png(results: Sequence[RunResult], title: str) -> bytes:
    """Traffic, replicas, queue and cumulative cost over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(4, 1, figsize=(10, 11), sharex=True)
    for index, result in enumerate(results):
        minutes = [p.time / 60.0 for p in result.series]
        if index == 0:
            axes[0].plot(minutes, [p.arrivals_per_second for p in result.series], color="grey")
        axes[1].step(minutes, [p.desired for p in result.series], where="post", label=result.policy)
        in_system = [p.waiting + p.running for p in result.series]
        axes[2].plot(minutes, in_system, label=result.policy)
        axes[3].plot(minutes, [p.cost_dollars for p in result.series], label=result.policy)
    labels = (
        "arrivals / s",
        "replicas (desired)",
        "requests waiting + running",
        "cumulative cost $",
    )
    for ax, label in zip(axes, labels, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("minutes")
    axes[0].set_title(title)
    attribution = results[0].attribution if results else ""
    figure.text(0.01, 0.005, f"Traffic: {attribution}", fontsize=7, wrap=True)
    figure.tight_layout(rect=(0.0, 0.03, 1.0, 1.0))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    return buffer.getvalue()


def settings_json(values: dict[str, Any]) -> dict[str, JSONValue]:
    """Settings as JSON-safe values (anything odd as its string)."""
    out: dict[str, JSONValue] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool | int | str):
            out[key] = value
        elif isinstance(value, float):
            out[key] = _json_number(value)
        elif isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out
