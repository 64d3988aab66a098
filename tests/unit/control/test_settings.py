"""Operator settings from the environment."""

from __future__ import annotations

import pytest

from thrifty.control import settings
from thrifty.control.autoscaler import AutoscalerSettings


def test_defaults_serve_the_whole_cluster() -> None:
    loaded = settings.from_env({})
    assert loaded.namespaces == ()
    assert loaded.resync_seconds == 30.0


def test_namespaces_and_periods_from_the_environment() -> None:
    loaded = settings.from_env(
        {"THRIFTY_NAMESPACES": "team-a, team-b,", "THRIFTY_RESYNC_SECONDS": "2.5"}
    )
    assert loaded.namespaces == ("team-a", "team-b")
    assert loaded.resync_seconds == 2.5


def test_non_positive_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="THRIFTY_POOL_RESYNC_SECONDS"):
        settings.from_env({"THRIFTY_POOL_RESYNC_SECONDS": "0"})


def test_log_format_defaults_to_plain_and_accepts_json_in_any_case() -> None:
    assert settings.log_format_from_env({}) == "plain"
    assert settings.log_format_from_env({"THRIFTY_LOG_FORMAT": " JSON "}) == "json"


def test_an_unknown_log_format_is_refused_naming_the_choices() -> None:
    with pytest.raises(
        ValueError, match="THRIFTY_LOG_FORMAT must be one of plain, json, got 'xml'"
    ):
        settings.log_format_from_env({"THRIFTY_LOG_FORMAT": "xml"})


def test_the_held_requests_metric_defaults_to_the_routers_and_can_be_renamed_or_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AutoscalerSettings.from_env().held_requests_metric == "thrifty_router_requests_held"
    monkeypatch.setenv("THRIFTY_HELD_REQUESTS_METRIC", "gateway:queued_requests")
    assert AutoscalerSettings.from_env().held_requests_metric == "gateway:queued_requests"
    monkeypatch.setenv("THRIFTY_HELD_REQUESTS_METRIC", "")
    assert AutoscalerSettings.from_env().held_requests_metric == ""
    monkeypatch.setenv("THRIFTY_HELD_REQUESTS_METRIC", "queued{job='x'}")
    with pytest.raises(ValueError, match="THRIFTY_HELD_REQUESTS_METRIC must be a Prometheus"):
        AutoscalerSettings.from_env()
