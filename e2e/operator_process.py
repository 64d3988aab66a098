"""Run the thrifty operator as a separate process against the e2e cluster, and stop it.

Reusable by every e2e test that needs the operator: either the ``operator_process`` fixture (a
factory; every process it started is stopped at teardown) or ``start_operator`` directly. The
process is the real entry point (``python -m thrifty.control``); it counts as started when kopf's
liveness endpoint answers, i.e. when its watches are up. Its log is kept in a file and shown when a
test fails, so an operator-side error explains a test-side timeout.

    def test_x(cluster, operator_process):
        op = operator_process(namespaces=["team-a"], env={"THRIFTY_RESYNC_SECONDS": "1"})
        ...
        op.stop()  # optional: e.g. to test a restart
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import Cluster
from harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]

FAST_RESYNC_ENV = {
    "THRIFTY_RESYNC_SECONDS": "2",
    "THRIFTY_POOL_RESYNC_SECONDS": "2",
    "THRIFTY_BUDGET_RESYNC_SECONDS": "2",
    "THRIFTY_RETRY_SECONDS": "2",
}
"""Short periods so tests see periodic effects quickly (production defaults are 30 s)."""


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    liveness_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def logs(self, tail_lines: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if tail_lines is not None:
            text = "\n".join(text.splitlines()[-tail_lines:])
        return text

    def stop(self, timeout_seconds: float = 30.0) -> int:
        """SIGTERM (kopf stops its handlers cleanly), SIGKILL if it does not exit in time."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_seconds)
        return self.process.returncode


def _live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_operator(
    kubeconfig: Path,
    *,
    namespaces: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    start_timeout_seconds: float = 90.0,
) -> OperatorProcess:
    """Start ``python -m thrifty.control`` and wait until its liveness endpoint answers."""
    port = free_port()
    liveness_url = f"http://127.0.0.1:{port}/healthz"
    full_env = {
        **os.environ,
        **FAST_RESYNC_ENV,
        "KUBECONFIG": str(kubeconfig),
        "THRIFTY_NAMESPACES": ",".join(namespaces),
        "THRIFTY_LIVENESS_ENDPOINT": liveness_url,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    directory = log_dir or Path(tempfile.mkdtemp(prefix="thrifty-operator-"))
    log_path = directory / f"operator-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "thrifty.control"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = OperatorProcess(process, log_path, liveness_url, dict(env or {}))
    deadline = time.monotonic() + start_timeout_seconds
    while not _live(liveness_url):
        if not started.running:
            raise RuntimeError(f"the operator exited at start:\n{started.logs(tail_lines=60)}")
        if time.monotonic() > deadline:
            started.stop()
            raise TimeoutError(f"the operator did not become live:\n{started.logs(tail_lines=60)}")
        time.sleep(0.3)
    return started


StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def operator_process(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StartOperator]:
    """A factory: ``operator_process(namespaces=[...], env={...})`` starts one operator process.

    Every process started is stopped at teardown; their logs are attached to the test's report.
    """
    started: list[OperatorProcess] = []

    def start(
        *, namespaces: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> OperatorProcess:
        process = start_operator(
            cluster.kubeconfig, namespaces=namespaces, env=env, log_dir=tmp_path
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        # Shown by pytest only for a failing test: the operator's side of the story.
        request.node.add_report_section(
            "teardown", f"operator log {process.log_path.name}", process.logs(tail_lines=200)
        )
