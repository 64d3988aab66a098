"""`python -m thrifty.control` honours THRIFTY_LOG_FORMAT (the chart's `operator.logFormat`).

The real entry point runs without a cluster: its first records (kopf retrying the startup
handlers that cannot find a kubeconfig) are enough to see the format. Stopped as soon as a
line arrives.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def _run(log_format: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    env |= {
        "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"),
        "THRIFTY_LOG_FORMAT": log_format,
        "THRIFTY_METRICS_PORT": "0",
        "THRIFTY_LEADER_ELECTION": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "thrifty.control"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _first_line(log_format: str, tmp_path: Path) -> str:
    process = _run(log_format, tmp_path)
    watchdog = threading.Timer(60, process.kill)  # silence must fail the test, not hang it
    watchdog.start()
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        watchdog.cancel()
        process.kill()
        process.wait(timeout=30)
    assert line, "the operator wrote nothing"
    return line


def test_json_log_format_writes_one_json_object_per_line(tmp_path: Path) -> None:
    record = json.loads(_first_line("json", tmp_path))
    assert record["message"]
    assert record["severity"] in {"debug", "info", "warn", "error", "fatal"}
    assert "timestamp" in record


def test_plain_log_format_writes_time_level_and_logger(tmp_path: Path) -> None:
    line = _first_line("plain", tmp_path)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) \S+: ", line)


def test_an_unknown_log_format_stops_the_operator_with_a_usage_error(tmp_path: Path) -> None:
    process = _run("xml", tmp_path)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "THRIFTY_LOG_FORMAT must be one of plain, json, got 'xml'" in output
