"""The preStop drain hook, run as the pod runs it (its rendered command) against a /metrics page."""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from thrifty.api import modelservice
from thrifty.reconciler import render
from thrifty_runtime import fleet_mirror


def page(running: float, waiting: float) -> str:
    return (
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="m"}} {running}\n'
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}\n'
    )


IDLE, RUNNING, WAITING = page(0, 0), page(3, 0), page(0, 2)


@dataclass
class Engine:
    """A /metrics page whose text the test sets; counts the polls it answered."""

    url: str
    page: str = RUNNING
    polls: int = 0
    polled: threading.Condition = field(default_factory=threading.Condition)

    def wait_polls(self, count: int) -> None:
        with self.polled:
            assert self.polled.wait_for(lambda: self.polls >= count, timeout=30)


@pytest.fixture
def engine() -> Iterator[Engine]:
    state = Engine(url="")

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.page.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with state.polled:
                state.polls += 1
                state.polled.notify_all()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    state.url = f"http://127.0.0.1:{server.server_port}/metrics"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_command(budget_seconds: int, url: str = "http://127.0.0.1:8000/metrics") -> list[str]:
    """The rendered command, with no endpoint sleep, this budget and this engine."""
    spec = modelservice.ModelServiceSpec.model_validate(
        {
            "model": {"uri": "hf://org/m"},
            "engine": {"shutdownTimeoutSeconds": budget_seconds},
            "pools": ["p"],
        }
    )
    command: list[str] = render.pre_stop(spec)["exec"]["command"]
    assert command[4:] == [str(budget_seconds), "http://127.0.0.1:8000/metrics"]
    return [*command[:3], "0", command[4], url]


def run_hook(url: str, budget_seconds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(run_command(budget_seconds, url))


def mirror_spec(command: list[str], grace_seconds: float) -> fleet_mirror.PodEngineSpec:
    return fleet_mirror.PodEngineSpec(
        namespace="ns",
        pod="p-0",
        uid="u",
        model_service="m",
        args=(),
        engine="sim",
        profile=None,
        serving=False,
        pre_stop_command=tuple(command),
        grace_seconds=grace_seconds,
    )


def test_the_hook_waits_while_requests_run_and_returns_once_idle(engine: Engine) -> None:
    hook = run_hook(engine.url, budget_seconds=600)
    try:
        engine.wait_polls(3)
        assert hook.poll() is None  # still running requests: no SIGTERM yet
        engine.page = IDLE
        assert hook.wait(timeout=30) == 0
    finally:
        hook.kill()


def test_waiting_requests_keep_the_hook_until_its_budget_ends(engine: Engine) -> None:
    engine.page = WAITING
    hook = run_hook(engine.url, budget_seconds=2)
    try:
        assert hook.wait(timeout=30) == 0
        assert engine.polls >= 2  # it did wait, polling, for the whole budget
    finally:
        hook.kill()


def test_an_engine_that_does_not_answer_has_nothing_to_drain() -> None:
    hook = run_hook("http://127.0.0.1:9/metrics", budget_seconds=600)
    try:
        assert hook.wait(timeout=30) == 0
    finally:
        hook.kill()


def test_the_fleet_mirror_runs_the_hook_as_a_kubelet_would(engine: Engine) -> None:
    """On the local cluster the mirror is the kubelet: SIGTERM waits for the hook, which is
    pointed at the engine's address, and for no longer than the pod's grace period."""
    command = run_command(budget_seconds=600)
    address = engine.url.removesuffix("/metrics")

    async def scenario() -> bool:
        hook = asyncio.create_task(fleet_mirror._run_hook(mirror_spec(command, 600), address))
        await asyncio.to_thread(engine.wait_polls, 3)
        waited = not hook.done()
        engine.page = IDLE
        await asyncio.wait_for(hook, 30)
        # Busy for good: without the grace period's end this hook would wait 600 s.
        engine.page = RUNNING
        await asyncio.wait_for(fleet_mirror._run_hook(mirror_spec(command, 1), address), 30)
        return waited

    assert asyncio.run(scenario())
