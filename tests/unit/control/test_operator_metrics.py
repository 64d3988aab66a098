"""The operator's /metrics: every label set exists at zero before anything happens."""

from __future__ import annotations

import math
import socket
import urllib.request

import pytest
from prometheus_client import generate_latest

from thrifty.adapters.operator_metrics import OperatorMetrics
from thrifty.control import settings
from thrifty.policy.types import Bound, Reason


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_forgetting_a_modelservice_drops_every_series_it_had() -> None:
    metrics = OperatorMetrics()
    metrics.init_modelservice("team", "chat")
    metrics.count_decision("team", "chat", Reason.SCALE_UP, Bound.BUDGET)
    metrics.forget_modelservice("team", "chat")
    text = generate_latest(metrics.registry).decode()
    assert 'modelservice="chat"' not in text, "forgetting drops every series it created"


def test_a_new_modelservice_has_a_zero_decision_series_per_reason() -> None:
    metrics = OperatorMetrics()
    metrics.init_modelservice("team", "chat")
    for reason in Reason:
        value = sample(
            metrics,
            "thrifty_autoscaler_decisions_total",
            namespace="team",
            modelservice="chat",
            reason=reason.value,
            bound=Bound.NONE.value,
        )
        assert value == 0.0
    cost = sample(
        metrics,
        "thrifty_modelservice_cost_dollars_per_million_tokens",
        namespace="team",
        modelservice="chat",
    )
    assert cost is not None and math.isnan(cost)
    reference = sample(
        metrics,
        "thrifty_modelservice_reference_dollars_per_million_tokens",
        namespace="team",
        modelservice="chat",
    )
    assert reference is not None and math.isnan(reference)


def test_decisions_and_gauges_follow_what_the_loop_reports() -> None:
    metrics = OperatorMetrics()
    metrics.init_modelservice("team", "chat")
    metrics.count_decision("team", "chat", Reason.SCALE_UP, Bound.BUDGET)
    metrics.observe_modelservice(
        "team",
        "chat",
        desired_replicas=3,
        ready_replicas=2,
        dollars_per_hour=7.5,
        dollars_per_million_tokens=0.42,
        reference_dollars_per_million_tokens=0.125,
    )
    labels = {"namespace": "team", "modelservice": "chat"}
    assert (
        sample(
            metrics,
            "thrifty_autoscaler_decisions_total",
            **labels,
            reason="ScaleUp",
            bound="Budget",
        )
        == 1.0
    )
    assert sample(metrics, "thrifty_modelservice_desired_replicas", **labels) == 3
    assert sample(metrics, "thrifty_modelservice_current_replicas", **labels) == 2
    assert sample(metrics, "thrifty_modelservice_cost_dollars_per_hour", **labels) == 7.5
    assert sample(metrics, "thrifty_modelservice_cost_dollars_per_million_tokens", **labels) == 0.42
    reference = "thrifty_modelservice_reference_dollars_per_million_tokens"
    assert sample(metrics, reference, **labels) == 0.125
    metrics.observe_modelservice(
        "team",
        "chat",
        desired_replicas=3,
        ready_replicas=2,
        dollars_per_hour=7.5,
        dollars_per_million_tokens=None,
        reference_dollars_per_million_tokens=None,
    )
    unknown = sample(metrics, reference, **labels)
    assert unknown is not None and math.isnan(unknown), "no reference: NaN, not the last value"


def test_query_errors_and_reconcile_latency_exist_from_the_start() -> None:
    metrics = OperatorMetrics()
    text = generate_latest(metrics.registry).decode()
    for kind in ("Unreachable", "QueryFailed", "NoData", "Stale"):
        assert f'thrifty_prometheus_query_errors_total{{error="{kind}"}} 0.0' in text
    assert 'thrifty_reconcile_duration_seconds_count{kind="ModelService"} 0.0' in text


def test_a_deleted_modelservice_leaves_no_series() -> None:
    metrics = OperatorMetrics()
    metrics.init_modelservice("team", "chat")
    metrics.forget_modelservice("team", "chat")
    text = generate_latest(metrics.registry).decode()
    assert 'modelservice="chat"' not in text


def test_metrics_address_is_a_setting() -> None:
    assert settings.from_env({}).metrics_address == "0.0.0.0"
    assert settings.from_env({"THRIFTY_METRICS_ADDRESS": "::"}).metrics_address == "::"
    with pytest.raises(settings.SettingsError, match="THRIFTY_METRICS_ADDRESS must be an IP"):
        settings.from_env({"THRIFTY_METRICS_ADDRESS": "localhost"})
    # 127.0.0.2 is loopback too, but a server bound there is not on 127.0.0.1: the address is used.
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = int(probe.getsockname()[1])
    OperatorMetrics().serve(
        port, settings.from_env({"THRIFTY_METRICS_ADDRESS": "127.0.0.2"}).metrics_address
    )
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5) as response:
        assert b"thrifty_leader" in response.read()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
