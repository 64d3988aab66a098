"""Trace parsers, gap masking, synthesis and clear errors on malformed files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thrifty.sim import traces

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.5,110,27
"""
MOONCAKE = """{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1]}
{"timestamp": 1500, "input_length": 512, "output_length": 3, "hash_ids": [0]}
"""
SERVEGEN = """window_start_s,aggregate_rate_rps
0,10.0
600,0.000000
1200,0
1800,40.0
"""


def test_azure_csv() -> None:
    trace = traces.parse_azure_csv(AZURE.splitlines(), "code.csv")
    assert [r.prompt_tokens for r in trace.requests] == [4808, 3180, 110]
    assert trace.requests[0].arrival_seconds == 0.0
    assert trace.requests[1].arrival_seconds == pytest.approx(0.052)
    assert trace.requests[2].arrival_seconds == pytest.approx(1.52004)
    assert "CC-BY 4.0" in trace.attribution


def test_mooncake_jsonl_uses_milliseconds() -> None:
    trace = traces.parse_mooncake_jsonl(MOONCAKE.splitlines(), "m.jsonl")
    assert [(r.arrival_seconds, r.output_tokens) for r in trace.requests] == [(0.0, 52), (1.5, 3)]


def test_servegen_masks_all_zero_windows_and_interpolates_them() -> None:
    series = traces.parse_servegen_rates(SERVEGEN.splitlines(), "s.csv")
    assert series.window_seconds == 600.0
    assert series.rates_rps == (10.0, None, None, 40.0)
    assert series.masked_windows == 2
    assert series.mean_rps() == pytest.approx(25.0)
    assert series.filled() == pytest.approx((10.0, 20.0, 30.0, 40.0))


def test_rescale_compress_and_seeded_synthesis() -> None:
    series = traces.parse_servegen_rates(SERVEGEN.splitlines(), "s.csv")
    lengths = traces.parse_azure_csv(AZURE.splitlines(), "code.csv")
    fast = series.compressed(60.0).rescaled(5.0)
    assert fast.window_seconds == 10.0 and fast.mean_rps() == pytest.approx(5.0)
    one = traces.synthesize(fast, lengths, seed=7)
    two = traces.synthesize(fast, lengths, seed=7)
    other = traces.synthesize(fast, lengths, seed=8)
    assert one == two and one != other
    assert one.duration_seconds == 40.0
    # Interpolated gap windows carry traffic; the mean rate is about the target.
    per_window = [0] * 4
    for request in one.requests:
        per_window[int(request.arrival_seconds // 10)] += 1
    assert all(count > 0 for count in per_window)
    assert {(r.prompt_tokens, r.output_tokens) for r in one.requests} <= {
        (r.prompt_tokens, r.output_tokens) for r in lengths.requests
    }


def test_synthetic_shapes() -> None:
    ramp = traces.ramp(1.0, 9.0, 100.0)
    assert ramp.rates_rps[0] < ramp.rates_rps[-1]  # type: ignore[operator]
    assert ramp.mean_rps() == pytest.approx(5.0)
    spike = traces.spike(2.0, 20.0, 100.0, 50.0, 10.0)
    assert spike.rates_rps.count(20.0) == 1
    diurnal = traces.diurnal(10.0, 0.5, 86_400.0)
    assert diurnal.mean_rps() == pytest.approx(10.0, rel=0.01)
    assert min(r for r in diurnal.rates_rps if r) == pytest.approx(5.0, rel=0.01)


def test_slice_and_time_scale() -> None:
    trace = traces.parse_azure_csv(AZURE.splitlines(), "code.csv")
    assert len(trace.sliced(0.04, 10.0).requests) == 2
    assert trace.time_scaled(2.0).requests[2].arrival_seconds == pytest.approx(0.76002)


@pytest.mark.parametrize(
    ("parser", "text", "line", "expected"),
    [
        (traces.parse_azure_csv, "time,a,b\n", 1, "header"),
        (traces.parse_azure_csv, AZURE + "2023-11-16 18:17:06,12\n", 5, "context tokens"),
        (traces.parse_azure_csv, AZURE.replace(",8\n", ",eight\n"), 3, "generated tokens"),
        (traces.parse_mooncake_jsonl, MOONCAKE + '{"timestamp": 3}\n', 3, "input_length"),
        (traces.parse_mooncake_jsonl, "not json\n", 1, "JSON object"),
        (traces.parse_servegen_rates, SERVEGEN + "2400,-1\n", 6, "non-negative"),
        (traces.parse_servegen_rates, SERVEGEN + "3000,1\n", 6, "600 s apart"),
    ],
)
def test_malformed_lines_name_file_line_and_expectation(
    parser: object, text: str, line: int, expected: str
) -> None:
    with pytest.raises(traces.TraceFormatError) as caught:
        parser(text.splitlines(), "bad.trace")  # type: ignore[operator]
    assert caught.value.line == line
    assert str(caught.value).startswith(f"bad.trace:{line}: expected")
    assert expected in str(caught.value)


def _shared() -> Path:
    override = os.environ.get("THRIFTY_TRACES_DIR")
    return Path(override) if override else Path(__file__).parents[3].parent / "shared" / "traces"


@pytest.mark.skipif(not _shared().is_dir(), reason="shared traces not present")
def test_the_shared_traces_parse() -> None:
    root = _shared()
    code = root / "azure2023" / "AzureLLMInferenceTrace_code.csv"
    trace = traces.parse_azure_csv(code.read_text().splitlines(), str(code))
    assert len(trace.requests) == 8819 and 3000 < trace.duration_seconds < 3600
    mooncake = root / "mooncake" / "synthetic_trace.jsonl"
    assert len(traces.parse_mooncake_jsonl(mooncake.read_text().splitlines(), "m").requests) == 3993
    small = root / "servegen" / "language_m-small_aggregate_rate.csv"
    series = traces.parse_servegen_rates(small.read_text().splitlines(), str(small))
    assert len(series.rates_rps) == 2016 and series.masked_windows == 37
