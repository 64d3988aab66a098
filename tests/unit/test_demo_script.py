"""`make demo`'s own logic, without a cluster: the traffic it reads from the gateway, the table it
refreshes in place, the plot's panels and the self-host against reference-price line."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from thrifty_runtime.gateway.server import Gateway, GatewaySettings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("thrifty_demo_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


demo = load_demo()

METRICS = """\
# HELP thrifty_gateway_requests_total Requests by how they ended.
# TYPE thrifty_gateway_requests_total counter
thrifty_gateway_requests_total{namespace="team-a",modelservice="llama-8b",outcome="ok"} 90.0
thrifty_gateway_requests_total{namespace="team-a",modelservice="llama-8b",outcome="held_timeout"} 10.0
# HELP thrifty_gateway_tokens_total Tokens metered per tenant.
# TYPE thrifty_gateway_tokens_total counter
thrifty_gateway_tokens_total{tenant="alpha",namespace="team-a",modelservice="llama-8b",kind="prompt"} 3000.0
thrifty_gateway_tokens_total{tenant="beta",namespace="team-a",modelservice="llama-8b",kind="prompt"} 1000.0
thrifty_gateway_tokens_total{tenant="alpha",namespace="team-a",modelservice="llama-8b",kind="completion"} 1000.0
# HELP thrifty_gateway_held_requests Held.
# TYPE thrifty_gateway_held_requests gauge
thrifty_gateway_held_requests{namespace="team-a",modelservice="llama-8b"} 3.0
"""  # noqa: E501


def test_the_gateways_counters_per_model_service() -> None:
    counters = demo.gateway_counters(METRICS)
    assert counters == {"llama-8b": demo.Counters(100.0, 4000.0, 1000.0)}


def test_the_counters_read_are_the_ones_the_gateway_exports() -> None:
    families = {family.name for family in Gateway(GatewaySettings()).registry.collect()}
    assert {"thrifty_gateway_requests", "thrifty_gateway_tokens"} <= families


def test_traffic_is_the_increase_between_two_readings() -> None:
    before = {"llama-8b": demo.Counters(100.0, 4000.0, 1000.0)}
    after = {"llama-8b": demo.Counters(150.0, 9000.0, 2000.0), "new": demo.Counters(10.0, 0, 0)}
    traffic = demo.traffic_between(before, after, 5.0)
    assert traffic["llama-8b"] == demo.Traffic(10.0, 1200.0)
    assert traffic["new"] == demo.Traffic(2.0, 0.0)  # first seen: counted from zero
    restarted = demo.traffic_between(after, {"llama-8b": demo.Counters(5.0, 50.0, 0.0)}, 5.0)
    assert restarted["llama-8b"] == demo.Traffic(1.0, 10.0)
    assert demo.traffic_between(before, after, 0.0) == {}


def test_on_a_terminal_the_table_is_redrawn_in_place() -> None:
    out = io.StringIO()
    screen = demo.Screen(out, in_place=True, width=12)
    screen.show("header line that is long\nrow")
    screen.show("header\nrow 2")
    text = out.getvalue()
    first, second = text.split("\x1b[2F\x1b[J")  # up two lines, erase: one header, not two
    assert first == "header line\nrow\n"  # cut to the width, so no line wraps
    assert second == "header\nrow 2\n"
    screen.release()
    screen.show("next table")
    assert out.getvalue().endswith("row 2\nnext table\n"), "a released table stays"


def test_elsewhere_the_tables_follow_each_other_plainly() -> None:
    out = io.StringIO()
    screen = demo.Screen.on(out)  # a StringIO is not a terminal
    assert not screen.in_place
    screen.show("header\nrow")
    screen.show("header\nrow 2")
    assert out.getvalue() == "header\nrow\n\nheader\nrow 2\n\n"
    assert "\x1b" not in out.getvalue()


def sample(at: float, **fields: Any) -> Any:
    base: dict[str, Any] = {
        "at_seconds": at,
        "name": "llama-8b",
        "desired": 1,
        "ready": 1,
        "queue": 0.0,
        "dollars_per_hour": 5.0,
        "dollars_per_million_tokens": 0.4,
        "reason": "Steady",
        "requests_per_second": 3.0,
        "tokens_per_second": 900.0,
        "reference_dollars_per_million_tokens": 0.12,
    }
    base.update(fields)
    return demo.Sample(**base)


def test_the_plot_draws_the_traffic_above_the_replicas() -> None:
    pytest.importorskip("matplotlib")
    figure = demo.draw([sample(0.0), sample(60.0, desired=3, requests_per_second=9.0)])
    panels = [ax for ax in figure.axes if ax.get_ylabel() in demo.PANELS]
    by_label = {ax.get_ylabel(): ax for ax in panels}
    traffic, replicas = by_label["requests/s"], by_label["replicas"]
    assert traffic.get_position().y0 > replicas.get_position().y0, "traffic is drawn above"
    assert list(traffic.lines[0].get_ydata()) == [3.0, 9.0]
    tokens = [ax for ax in figure.axes if ax.get_ylabel().startswith("tokens/s")]
    assert tokens and list(tokens[0].lines[0].get_ydata()) == [900.0, 900.0]
    per_token = [line.get_label() for line in by_label["$/1M tokens"].lines]
    assert "llama-8b reference price" in per_token


def item(reference: dict[str, float] | None) -> dict[str, Any]:
    cost_target = {} if reference is None else {"referenceDollarsPerMillionTokens": reference}
    return {"metadata": {"name": "llama-8b"}, "spec": {"costTarget": cost_target}}


def test_the_self_host_line_against_the_reference_price() -> None:
    # $5/h for one hour over 3M prompt + 1M completion tokens: $1.25/1M self-hosted; the
    # reference (0.10 x 3 + 0.20 x 1) / 4 = $0.125/1M: self-hosting cost ten times as much.
    samples = [sample(0.0), sample(3600.0, dollars_per_hour=0.0)]
    totals = {"llama-8b": demo.Counters(1000.0, 3_000_000.0, 1_000_000.0)}
    price = {"input": 0.10, "output": 0.20}
    (line,) = demo.reference_lines([item(price)], samples, totals)
    assert line.startswith("llama-8b: $1.2500/1M tokens self-hosted ($5.0000 over 4,000,000")
    assert "against $0.1250/1M at the reference price" in line
    assert "75% prompt tokens" in line
    assert line.endswith("self-host lost 900 %")
    cheap = demo.reference_lines([item({"input": 2.0, "output": 6.0})], samples, totals)
    assert cheap[0].endswith("self-host saved 58 %")  # $1.25 against $3.00


def test_no_line_without_a_reference_and_no_ratio_without_tokens() -> None:
    samples = [sample(0.0), sample(60.0)]
    assert demo.reference_lines([item(None)], samples, {}) == []
    (line,) = demo.reference_lines([item({"input": 0.1, "output": 0.2})], samples, {})
    assert "no tokens served" in line


def test_spend_is_each_rate_held_until_the_next_sample() -> None:
    samples = [sample(0.0, dollars_per_hour=6.0), sample(1800.0, dollars_per_hour=2.0)]
    assert demo.dollars_spent([*samples, sample(3600.0)]) == pytest.approx(3.0 + 1.0)
    assert demo.dollars_spent(samples[:1]) == 0.0
