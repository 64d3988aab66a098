"""How the operator reaches a real cluster's Prometheus: settings from the environment, and what a
Prometheus-compatible server behind auth, a path prefix and a tenant header actually receives.

The server here is a tiny HTTP server in a thread that answers the query API like Prometheus (or
Thanos Query, Mimir) and records every request, so each test sees the headers that were sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from thrifty.adapters.prometheus import (
    PrometheusConnection,
    PrometheusCredentialsError,
    PrometheusSignals,
)

PREFIX = "THRIFTY_PROMETHEUS_"
REPO_ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_plain_http_on_localhost() -> None:
    connection = PrometheusConnection.from_env({})
    assert connection == PrometheusConnection()
    assert connection.base_url == "http://127.0.0.1:9090"
    assert connection.verify is True


def test_every_setting_is_read() -> None:
    connection = PrometheusConnection.from_env(
        {
            f"{PREFIX}URL": "https://mimir.monitoring:8080/",
            f"{PREFIX}PATH_PREFIX": "prometheus/",
            f"{PREFIX}BASIC_AUTH_USERNAME_FILE": "/etc/u",
            f"{PREFIX}BASIC_AUTH_PASSWORD_FILE": "/etc/p",
            f"{PREFIX}CA_FILE": "/etc/ca.crt",
            f"{PREFIX}CERT_FILE": "/etc/tls.crt",
            f"{PREFIX}KEY_FILE": "/etc/tls.key",
            f"{PREFIX}HEADERS": '{"X-Scope-OrgID": "team-a"}',
        }
    )
    assert connection.base_url == "https://mimir.monitoring:8080/prometheus"
    assert connection.verify == "/etc/ca.crt"
    assert connection.headers == (("X-Scope-OrgID", "team-a"),)
    assert (connection.cert_file, connection.key_file) == ("/etc/tls.crt", "/etc/tls.key")
    assert connection.basic_auth_username_file == "/etc/u"
    assert not connection.insecure_skip_verify


def test_skipping_verification_is_only_ever_explicit() -> None:
    env = {f"{PREFIX}URL": "https://prom:9090", f"{PREFIX}CA_FILE": "/etc/ca.crt"}
    assert PrometheusConnection.from_env(env).verify == "/etc/ca.crt"
    insecure = PrometheusConnection.from_env(env | {f"{PREFIX}INSECURE_SKIP_VERIFY": "true"})
    assert insecure.verify is False


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"URL": "prom:9090"}, "URL"),
        ({"URL": "ftp://prom"}, "URL"),
        ({"URL": "http://prom:9090/?x=1"}, "URL"),
        ({"PATH_PREFIX": "/a?b"}, "PATH_PREFIX"),
        ({"INSECURE_SKIP_VERIFY": "maybe"}, "INSECURE_SKIP_VERIFY"),
        ({"BASIC_AUTH_USERNAME_FILE": "/u"}, "BASIC_AUTH_PASSWORD_FILE"),
        ({"BASIC_AUTH_PASSWORD_FILE": "/p"}, "BASIC_AUTH_USERNAME_FILE"),
        (
            {"BEARER_TOKEN_FILE": "/t", "BASIC_AUTH_USERNAME_FILE": "/u"}
            | {"BASIC_AUTH_PASSWORD_FILE": "/p"},
            "BEARER_TOKEN_FILE",
        ),
        ({"CERT_FILE": "/c"}, "KEY_FILE"),
        ({"KEY_FILE": "/k"}, "CERT_FILE"),
        ({"HEADERS": "X-Scope-OrgID: a"}, "HEADERS"),
        ({"HEADERS": '["a"]'}, "HEADERS"),
        ({"HEADERS": '{"X-Tenant": 3}'}, "HEADERS"),
        ({"HEADERS": '{"bad name": "x"}'}, "HEADERS"),
        ({"HEADERS": '{"Authorization": "x"}', "BEARER_TOKEN_FILE": "/t"}, "HEADERS"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=f"{PREFIX}{named}"):
        PrometheusConnection.from_env({f"{PREFIX}{key}": value for key, value in env.items()})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (f"{PREFIX}INSECURE_SKIP_VERIFY", "sometimes", "must be true or false"),
        ("THRIFTY_METRICS_ADDRESS", "localhost", "must be an IP address"),
    ],
)
def test_the_entry_point_refuses_a_bad_setting_as_a_usage_error(
    name: str, value: str, message: str
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("THRIFTY_")}
    env[name] = value
    result = subprocess.run(
        [sys.executable, "-m", "thrifty.control"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{name} {message}" in result.stderr
    assert "Traceback" not in result.stderr


# --- against a server ---------------------------------------------------------------------------

EMPTY_VECTOR = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})


@dataclass
class FakePrometheus:
    """Answers `<prefix>/api/v1/query` when the Authorization header is `accept`, 401 otherwise."""

    url: str = ""
    path_prefix: str = ""
    accept: str | None = None
    status_when_refused: int = 401
    requests: list[dict[str, str]] = field(default_factory=list)

    def authorization(self) -> list[str]:
        return [r.get("Authorization", "") for r in self.requests]


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    state = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(dict(self.headers.items()) | {":path": self.path})
            if not self.path.startswith(f"{state.path_prefix}/api/v1/query?"):
                self._reply(404, b"404 page not found")
            elif state.accept is not None and self.headers.get("Authorization") != state.accept:
                self._reply(state.status_when_refused, b"Unauthorized\n")
            else:
                self._reply(200, EMPTY_VECTOR.encode())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _source(fake: FakePrometheus, **settings: str) -> PrometheusSignals:
    env = {f"{PREFIX}URL": fake.url} | {f"{PREFIX}{k}": v for k, v in settings.items()}
    return PrometheusSignals(PrometheusConnection.from_env(env), timeout_seconds=5)


def _read(source: PrometheusSignals) -> str:
    reading = asyncio.run(source.read("team-a", "llama-8b"))
    assert reading.signals is None  # nothing is scraped here; only the reason differs
    return reading.reason


def test_path_prefix_and_headers_reach_the_server(fake: FakePrometheus) -> None:
    fake.path_prefix = "/prometheus"
    source = _source(fake, PATH_PREFIX="/prometheus", HEADERS='{"X-Scope-OrgID": "team-a"}')
    try:
        assert "no vLLM series" in _read(source)
    finally:
        source.close()
    assert fake.requests
    for request in fake.requests:
        assert request[":path"].startswith("/prometheus/api/v1/query?")
        assert request["X-Scope-OrgID"] == "team-a"


def test_a_rotated_bearer_token_is_sent_from_the_next_query(
    fake: FakePrometheus, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    fake.accept = "Bearer first-token"
    source = _source(fake, BEARER_TOKEN_FILE=str(token))
    try:
        assert "no vLLM series" in _read(source)
        # The kubelet swaps a projected token's file atomically; so does this.
        rotated = tmp_path / "token.new"
        rotated.write_text("second-token-after-rotation")
        rotated.replace(token)
        fake.accept = "Bearer second-token-after-rotation"
        fake.requests.clear()
        assert "no vLLM series" in _read(source)
    finally:
        source.close()
    assert set(fake.authorization()) == {"Bearer second-token-after-rotation"}


def test_a_refused_credential_is_no_signals_with_the_status(
    fake: FakePrometheus, tmp_path: Path
) -> None:
    (tmp_path / "user").write_text("thrifty")
    (tmp_path / "password").write_text("wrong")
    fake.accept = "Basic " + base64.b64encode(b"thrifty:right").decode()
    source = _source(
        fake,
        BASIC_AUTH_USERNAME_FILE=str(tmp_path / "user"),
        BASIC_AUTH_PASSWORD_FILE=str(tmp_path / "password"),
    )
    try:
        reason = _read(source)
        assert "refused the credentials: HTTP 401 Unauthorized" in reason
        with pytest.raises(PrometheusCredentialsError):
            source.query("up")
        fake.status_when_refused = 403
        assert "HTTP 403 Forbidden" in _read(source)
        (tmp_path / "password").write_text("right")  # the Secret is fixed: no restart needed
        assert "no vLLM series" in _read(source)
    finally:
        source.close()
    assert fake.authorization()[0] == "Basic " + base64.b64encode(b"thrifty:wrong").decode()


def test_a_missing_token_file_is_a_reason_not_a_crash(fake: FakePrometheus, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    source = _source(fake, BEARER_TOKEN_FILE=str(missing))
    try:
        reason = _read(source)
    finally:
        source.close()
    assert f"cannot read the Prometheus bearer token file {missing}" in reason
    assert not fake.requests  # nothing was sent without the credential
