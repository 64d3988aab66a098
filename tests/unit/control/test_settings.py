"""Operator settings from the environment."""

from __future__ import annotations

import pytest

from thrifty.control import settings


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


def test_the_held_requests_metric_defaults_to_the_gateways_and_can_be_renamed_or_disabled() -> None:
    assert settings.from_env({}).held_requests_metric == "thrifty_router_requests_held"
    renamed = {"THRIFTY_HELD_REQUESTS_METRIC": "gateway:queued_requests"}
    assert settings.from_env(renamed).held_requests_metric == "gateway:queued_requests"
    assert settings.from_env({"THRIFTY_HELD_REQUESTS_METRIC": ""}).held_requests_metric == ""
    with pytest.raises(ValueError, match="THRIFTY_HELD_REQUESTS_METRIC must be a Prometheus"):
        settings.from_env({"THRIFTY_HELD_REQUESTS_METRIC": "queued{job='x'}"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("THRIFTY_DECISION_INTERVAL_SECONDS", "fast"),
        ("THRIFTY_COLD_START_SECONDS", "-5"),
        ("THRIFTY_METRICS_PORT", "http"),
        ("THRIFTY_LEADER_ELECTION", "maybe"),
        ("THRIFTY_SCALE_DOWN_STEP_SECONDS", "1e400"),
        ("THRIFTY_LEASE_RENEW_DEADLINE_SECONDS", "99"),
    ],
)
def test_every_bad_value_is_a_settings_error_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(settings.SettingsError, match=variable.removesuffix("_SECONDS")[:20]):
        settings.from_env({variable: value})


def test_the_entry_point_refuses_a_bad_setting_with_a_usage_error_not_a_traceback() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "THRIFTY_DECISION_INTERVAL_SECONDS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "thrifty.control"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "THRIFTY_DECISION_INTERVAL_SECONDS" in done.stderr
    assert "Traceback" not in done.stderr
