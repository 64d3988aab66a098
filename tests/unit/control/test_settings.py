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
