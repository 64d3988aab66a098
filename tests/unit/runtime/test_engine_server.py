"""The simulated engine server behaves like vLLM: its API, its metrics, its drain on shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from polling import until

from thrifty.sim.observe import REQUEST_LATENCY_BUCKETS_SECONDS, TTFT_BUCKETS_SECONDS
from thrifty_runtime.engine_server import (
    EngineServer,
    ServerSettings,
    main,
    parse_model_len,
    settings_from_args,
)
from thrifty_runtime.exposition import scrape_shape
from thrifty_runtime.vllm_metrics import ITL_BUCKETS_SECONDS, one_two_five_buckets

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[3]


def _settings(max_num_seqs: int = 8, shutdown_timeout: float = 30.0) -> ServerSettings:
    settings, _ = settings_from_args(
        [
            "--served-model-name", "llama", "alias",
            "--profile", "8b",
            "--max-num-seqs", str(max_num_seqs),
            "--max-model-len", "4k",
            "--port", "0",
            "--shutdown-timeout", str(shutdown_timeout),
        ]
    )  # fmt: skip
    return settings


@asynccontextmanager
async def running(
    settings: ServerSettings,
) -> AsyncIterator[tuple[EngineServer, aiohttp.ClientSession]]:
    server = EngineServer(settings, process_metrics=False)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as session:
            yield server, session
    finally:
        await server.stop()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def _complete(
    session: aiohttp.ClientSession, max_tokens: int, **extra: Any
) -> tuple[int, Any]:
    body = {"model": "llama", "prompt": list(range(100)), "max_tokens": max_tokens, **extra}
    async with session.post("/v1/completions", json=body) as response:
        return response.status, await response.json()


async def _requests_in_engine(session: aiohttp.ClientSession, running: int, waiting: int) -> bool:
    text = await _scrape(session)
    return (
        _value(text, "vllm:num_requests_running") == running
        and _value(text, "vllm:num_requests_waiting") == waiting
    )


async def _scrape(session: aiohttp.ClientSession) -> str:
    async with session.get("/metrics") as response:
        assert response.status == 200
        return await response.text()


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + "{") or line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in scrape")


def test_model_len_forms() -> None:
    assert parse_model_len("32k", 1) == 32_000
    assert parse_model_len("4096", 1) == 4096
    assert parse_model_len("auto", 131_072) == 131_072
    assert parse_model_len("1M", 1) == 1_000_000


def test_vllm_flags_set_the_profile_and_gpu_flags_are_ignored() -> None:
    settings, ignored = settings_from_args(
        [
            "meta-llama/Llama-3.1-8B-Instruct",
            "--tensor-parallel-size", "1",
            "--gpu-memory-utilization", "0.92",
            "--max-num-seqs", "64",
            "--max-num-batched-tokens", "4096",
            "--max-model-len", "8k",
            "--shutdown-timeout", "30",
        ]
    )  # fmt: skip
    assert settings.served_model_names == ("meta-llama/Llama-3.1-8B-Instruct",)
    assert settings.profile.max_num_seqs == 64
    assert settings.profile.max_num_batched_tokens == 4096
    assert settings.profile.max_model_len == 8000
    assert settings.shutdown_timeout_seconds == 30.0
    assert "--tensor-parallel-size" in ignored and "--gpu-memory-utilization" in ignored


def test_a_profile_file_sets_the_engine_and_a_bad_one_stops_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = REPO / "examples" / "simulate" / "engine-profile-qwen3-32b-1xh100.yaml"
    settings, _ = settings_from_args(["--profile", str(example), "--max-num-seqs", "32"])
    assert settings.profile.name == "qwen3-32b-1xh100"
    assert settings.profile.max_num_seqs == 32, "vLLM's flags still apply"
    assert settings.served_model_names == ("Qwen/Qwen3-32B",)
    assert main(["--profile", str(tmp_path / "none.yaml")]) == 2
    assert "no profile file is at" in capsys.readouterr().err


def test_metrics_have_vllm_names_types_labels_and_buckets() -> None:
    async def scenario() -> None:
        async with running(_settings()) as (_, session):
            assert (await _complete(session, 20))[0] == 200
            shapes = scrape_shape(await _scrape(session))
        engine_labels = frozenset({"model_name", "engine"})
        expected_types = {
            "vllm:num_requests_waiting": "gauge",
            "vllm:num_requests_running": "gauge",
            "vllm:kv_cache_usage_perc": "gauge",
            "vllm:prompt_tokens": "counter",
            "vllm:generation_tokens": "counter",
            "vllm:num_preemptions": "counter",
            "vllm:time_to_first_token_seconds": "histogram",
            "vllm:inter_token_latency_seconds": "histogram",
            "vllm:request_queue_time_seconds": "histogram",
            "vllm:e2e_request_latency_seconds": "histogram",
        }
        for name, kind in expected_types.items():
            assert shapes[name].type == kind, name
            assert shapes[name].label_names == engine_labels, name
        assert "vllm:prompt_tokens_total" in shapes["vllm:prompt_tokens"].sample_names
        assert shapes["vllm:request_success"].label_names == engine_labels | {"finished_reason"}
        assert shapes["vllm:num_requests_waiting_by_reason"].label_names == engine_labels | {
            "reason"
        }
        assert shapes["vllm:time_to_first_token_seconds"].buckets == TTFT_BUCKETS_SECONDS
        assert shapes["vllm:inter_token_latency_seconds"].buckets == ITL_BUCKETS_SECONDS
        assert shapes["vllm:e2e_request_latency_seconds"].buckets == REQUEST_LATENCY_BUCKETS_SECONDS
        assert shapes["vllm:request_prompt_tokens"].buckets == one_two_five_buckets(4000)
        assert one_two_five_buckets(4000)[-1] == 2000.0
        assert "vllm:time_per_output_token_seconds" not in shapes  # removed in vLLM 0.15
        assert "vllm:gpu_cache_usage_perc" not in shapes  # removed in vLLM 0.12

    run(scenario)


def test_counters_and_histograms_follow_the_requests() -> None:
    async def scenario() -> None:
        async with running(_settings()) as (_, session):
            results = await asyncio.gather(*(_complete(session, 50) for _ in range(3)))
            assert all(status == 200 for status, _ in results)
            for _, body in results:
                assert body["usage"] == {
                    "prompt_tokens": 100,
                    "completion_tokens": 50,
                    "total_tokens": 150,
                }
            text = await _scrape(session)
        assert _value(text, "vllm:prompt_tokens_total") == 300
        assert _value(text, "vllm:generation_tokens_total") == 150
        labels = 'engine="0",finished_reason="length",model_name="llama"'
        assert f"vllm:request_success_total{{{labels}}} 3.0" in text
        assert _value(text, "vllm:time_to_first_token_seconds_count") == 3
        assert _value(text, "vllm:inter_token_latency_seconds_count") == 3 * 49
        assert _value(text, "vllm:num_requests_running") == 0

    run(scenario)


def test_a_full_batch_queues_the_rest() -> None:
    async def scenario() -> None:
        async with running(_settings(max_num_seqs=2)) as (_, session):
            tasks = [asyncio.create_task(_complete(session, 2000)) for _ in range(6)]
            await until(lambda: _requests_in_engine(session, running=2, waiting=4))
            text = await _scrape(session)
            assert 0 < _value(text, "vllm:kv_cache_usage_perc") <= 1
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    run(scenario)


def test_streaming_sends_every_token_as_server_sent_events() -> None:
    async def scenario() -> None:
        async with running(_settings()) as (_, session):
            for route, payload in (
                ("/v1/completions", {"prompt": "a b c"}),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
            ):
                body = {"model": "alias", "max_tokens": 120, "stream": True, **payload}
                body["stream_options"] = {"include_usage": True}
                async with session.post(route, json=body) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/event-stream")
                    raw = await response.text()
                events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
                assert events[-1] == "[DONE]"
                chunks = [json.loads(e) for e in events[:-1]]
                words = 0
                for chunk in chunks[:-1]:
                    choice = chunk["choices"][0]
                    text = choice.get("text") or choice.get("delta", {}).get("content") or ""
                    words += len(text.split())
                assert words == 120
                assert chunks[-2]["choices"][0]["finish_reason"] == "length"
                assert chunks[-1]["usage"]["completion_tokens"] == 120
                assert len(chunks) > 3  # tokens arrive over time, not in one piece

    run(scenario)


def test_models_health_and_errors() -> None:
    async def scenario() -> None:
        async with running(_settings()) as (_, session):
            async with session.get("/v1/models") as response:
                ids = [m["id"] for m in (await response.json())["data"]]
            assert ids == ["llama", "alias"]
            async with session.get("/health") as response:
                assert response.status == 200
            async with session.post("/v1/completions", json={"model": "x", "prompt": "a"}) as r:
                assert r.status == 404
            status, body = await _complete(session, 5000)  # 100 + 5000 > max-model-len 4000
            assert status == 400 and "4000" in body["error"]["message"]

    run(scenario)


def test_drain_finishes_in_flight_requests_and_rejects_new_ones() -> None:
    async def scenario() -> None:
        async with running(_settings(max_num_seqs=2)) as (server, session):
            in_flight = [asyncio.create_task(_complete(session, 300)) for _ in range(5)]
            await until(lambda: _requests_in_engine(session, running=2, waiting=3))
            shutdown = asyncio.create_task(server.shutdown())
            await until(lambda: server.draining)
            assert (await _complete(session, 5))[0] == 503
            async with session.get("/health") as response:
                assert response.status == 200
            results = await asyncio.gather(*in_flight)
            await shutdown
        assert [status for status, _ in results] == [200] * 5
        assert all(body["usage"]["completion_tokens"] == 300 for _, body in results)

    run(scenario)


def test_sigterm_drains_the_command_line_server() -> None:
    async def scenario() -> None:
        port = _free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "runtime")]),
        }
        process = subprocess.Popen(
            [
                sys.executable, "-m", "thrifty_runtime.engine_server",
                "--port", str(port), "--served-model-name", "llama", "--profile", "8b",
                "--max-num-seqs", "2", "--shutdown-timeout", "30",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
                await _wait_healthy(session)
                in_flight = [asyncio.create_task(_complete(session, 300)) for _ in range(4)]
                await until(lambda: _requests_in_engine(session, running=2, waiting=2))
                process.send_signal(signal.SIGTERM)
                results = await asyncio.gather(*in_flight)
            assert [status for status, _ in results] == [200] * 4
            assert await asyncio.to_thread(process.wait, 30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    run(scenario)


async def _wait_healthy(session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with session.get("/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("server never became healthy")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
