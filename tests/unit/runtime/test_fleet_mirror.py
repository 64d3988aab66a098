"""The fleet mirror's reading of pods, its Prometheus targets, and its least-loaded router."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from polling import until
from prometheus_client.parser import text_string_to_metric_families

from thrifty_runtime import podnet
from thrifty_runtime.engine_server import EngineServer, settings_from_args
from thrifty_runtime.fleet_mirror import (
    FleetMirror,
    MirrorSettings,
    file_sd_groups,
    pod_engine_spec,
)
from thrifty_runtime.router import HELD_METRIC, Backend, Router

pytestmark = pytest.mark.timeout(120)


def _pod(**overrides: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {
            "name": "llama-8b-engine-abc",
            "namespace": "team-a",
            "uid": "u1",
            "labels": {"thrifty.dev/model-service": "llama-8b"},
            "annotations": {},
        },
        "spec": {
            "containers": [
                {"name": "engine", "args": ["--model", "m", "--max-num-seqs", "4"]},
            ]
        },
        "status": {"phase": "Running"},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        pod[section][field] = value
    return pod


def test_a_running_model_service_pod_is_served_with_its_rendered_args() -> None:
    spec = pod_engine_spec(_pod())
    assert spec is not None
    assert (spec.namespace, spec.pod, spec.model_service) == (
        "team-a",
        "llama-8b-engine-abc",
        "llama-8b",
    )
    assert spec.args == ("--model", "m", "--max-num-seqs", "4")
    assert spec.serving and spec.engine == "sim" and spec.profile is None
    assert spec.pre_stop_seconds == 0.0


def test_an_engine_listens_on_its_pods_loopback_twin_at_the_containers_port() -> None:
    """KWOK pods with IPs in the loopback pod network: the EndpointSlice address leads to it."""

    async def scenario() -> None:
        network = podnet.parse_network("10.0.0.0/8")
        pod = _pod(status__podIP="10.83.0.7")
        pod["spec"]["containers"][0]["args"] += ["--port", str(_closed_port())]
        spec = pod_engine_spec(pod)
        assert spec is not None and spec.engine_host(network) == "127.83.0.7"
        settings = MirrorSettings(file_sd_path=Path("/nonexistent"), loopback_pod_network=network)
        engine = await FleetMirror(settings, core_api=None)._start_sim(spec)
        try:
            port = spec.args[spec.args.index("--port") + 1]
            assert engine.backend.url == f"http://127.83.0.7:{port}"
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{engine.backend.url}/health") as response,
            ):
                assert response.status == 200
        finally:
            assert engine.sim is not None
            await engine.sim.stop()
        assert spec.engine_host(None) is None
        outside = pod_engine_spec(_pod(status__podIP="192.0.2.5"))
        assert outside is not None and outside.engine_host(network) is None

    run(scenario)


def test_loopback_twins_keep_the_host_bits_and_only_exist_inside_the_network() -> None:
    network = podnet.parse_network("10.0.0.0/8")
    assert podnet.loopback_twin("10.122.3.200", network) == "127.122.3.200"
    assert podnet.loopback_twin("11.0.0.1", network) is None
    assert podnet.loopback_twin("not-an-ip", network) is None
    assert podnet.loopback_twin("10.0.0.9", podnet.parse_network("10.0.0.0/24")) == "127.0.0.9"
    with pytest.raises(ValueError, match="/8 or longer"):
        podnet.parse_network("10.0.0.0/7")


def test_the_pre_stop_sleep_is_read_from_the_container() -> None:
    pod = _pod()
    pod["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 10}}}
    spec = pod_engine_spec(pod)
    assert spec is not None and spec.pre_stop_seconds == 10.0


def test_pending_terminating_and_foreign_pods_are_not_served() -> None:
    assert not pod_engine_spec(_pod(status__phase="Pending")).serving  # type: ignore[union-attr]
    terminating = pod_engine_spec(_pod(metadata__deletionTimestamp="2026-01-01T00:00:00Z"))
    assert terminating is not None and not terminating.serving
    foreign = _pod()
    foreign["metadata"]["labels"] = {"app": "other"}
    assert pod_engine_spec(foreign) is None


def test_annotations_choose_the_engine_and_profile() -> None:
    pod = _pod()
    pod["metadata"]["annotations"] = {
        "thrifty.dev/engine": "vllm",
        "thrifty.dev/engine-profile": "70b",
    }
    spec = pod_engine_spec(pod)
    assert spec is not None and spec.engine == "vllm" and spec.profile == "70b"
    assert pod_engine_spec(_pod(), default_engine="vllm").engine == "vllm"  # type: ignore[union-attr]


def test_targets_carry_the_label_contract() -> None:
    spec = pod_engine_spec(_pod())
    assert spec is not None
    assert file_sd_groups([(spec, "127.0.0.1:1234")], job="fleet") == [
        {
            "targets": ["127.0.0.1:1234"],
            "labels": {
                "job": "fleet",
                "namespace": "team-a",
                "pod": "llama-8b-engine-abc",
                "modelservice": "llama-8b",
            },
        }
    ]


def test_the_router_is_a_target_labelled_by_job_only() -> None:
    groups = file_sd_groups([], job="fleet", router="127.0.0.1:8080")
    assert groups == [{"targets": ["127.0.0.1:8080"], "labels": {"job": "fleet-router"}}]


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def _engine() -> EngineServer:
    settings, _ = settings_from_args(
        ["--served-model-name", "m", "--port", "0", "--max-num-seqs", "8"]
    )
    server = EngineServer(settings, process_metrics=False)
    await server.start()
    return server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _post(session: aiohttp.ClientSession, url: str, **body: Any) -> tuple[int, str]:
    async with session.post(url, json={"prompt": [1, 2, 3], "max_tokens": 200, **body}) as r:
        return r.status, await r.text()


def test_router_spreads_requests_least_loaded_and_streams() -> None:
    async def scenario() -> None:
        engines = [await _engine(), await _engine()]
        router = Router()
        await router.start()
        backends = [Backend("ns", "ms", f"pod-{i}", e.url) for i, e in enumerate(engines)]
        for backend in backends:
            router.add(backend)
        url = f"{router.url}/ns/ms/v1/completions"
        try:
            async with aiohttp.ClientSession() as session:
                results = await asyncio.gather(*(_post(session, url) for _ in range(6)))
                assert [status for status, _ in results] == [200] * 6
                assert sorted(b.served for b in backends) == [3, 3]
                status, text = await _post(session, url, stream=True)
                assert status == 200 and text.rstrip().endswith("data: [DONE]")
                served_before = backends[0].served
                router.remove(backends[0])
                await asyncio.gather(*(_post(session, url) for _ in range(2)))
                assert backends[0].served == served_before  # removed: gets nothing new
                assert backends[0].served + backends[1].served == 9
                async with session.get(f"{router.url}/engines") as response:
                    listed = await response.json()
                assert [e["pod"] for e in listed] == ["pod-1"]
        finally:
            await router.stop()
            for engine in engines:
                await engine.stop()

    run(scenario)


def test_router_skips_unreachable_engines_and_refuses_without_any() -> None:
    async def scenario() -> None:
        engine = await _engine()
        router = Router(hold_timeout_seconds=0.2)
        await router.start()
        dead = Backend("ns", "ms", "dead", f"http://127.0.0.1:{_closed_port()}")
        live = Backend("ns", "ms", "live", engine.url)
        router.add(dead)
        router.add(live)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    assert (await _post(session, f"{router.url}/ns/ms/v1/completions"))[0] == 200
                status, text = await _post(session, f"{router.url}/ns/other/v1/completions")
                assert status == 503 and "ns/other" in text
            assert live.served == 3 and dead.served == 0
        finally:
            await router.stop()
            await engine.stop()

    run(scenario)


def test_router_retries_a_draining_engines_refusal_elsewhere() -> None:
    async def scenario() -> None:
        draining, live = await _engine(), await _engine()
        draining.draining = True  # as between SIGTERM and the end of its drain
        router = Router()
        await router.start()
        refusing = Backend("ns", "ms", "draining", draining.url)
        serving = Backend("ns", "ms", "live", live.url)
        router.add(refusing)
        router.add(serving)
        try:
            async with aiohttp.ClientSession() as session:
                url = f"{router.url}/ns/ms/v1/completions"
                results = await asyncio.gather(*(_post(session, url) for _ in range(4)))
            assert [status for status, _ in results] == [200] * 4
            assert serving.served == 4 and refusing.served == 0
        finally:
            await router.stop()
            await draining.stop()
            await live.stop()

    run(scenario)


async def _held_on_metrics(session: aiohttp.ClientSession, router: Router) -> dict[str, float]:
    """The held gauge's samples by (namespace, modelservice), as Prometheus would parse them."""
    async with session.get(f"{router.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.labels["namespace"], sample.labels["modelservice"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == HELD_METRIC
        for sample in family.samples
    }


def test_router_holds_requests_without_engines_and_releases_them_to_the_first_ready_one() -> None:
    async def scenario() -> None:
        router = Router(hold_timeout_seconds=30)
        await router.start()
        engine = await _engine()
        url = f"{router.url}/ns/ms/v1/completions"
        try:
            async with aiohttp.ClientSession() as session:
                waiting = [asyncio.create_task(_post(session, url)) for _ in range(3)]
                await until(lambda: router.held("ns", "ms") == 3)
                assert not any(task.done() for task in waiting)
                held = await _held_on_metrics(session, router)
                assert held == {("ns", "ms"): 3.0}
                backend = Backend("ns", "ms", "pod-0", engine.url)
                router.add(backend)  # the first replica became ready
                results = await asyncio.wait_for(asyncio.gather(*waiting), 30)
                assert [status for status, _ in results] == [200] * 3
                assert backend.served == 3
                assert router.held("ns", "ms") == 0
                held = await _held_on_metrics(session, router)
                assert held == {("ns", "ms"): 0.0}
        finally:
            await router.stop()
            await engine.stop()

    run(scenario)


def test_router_answers_503_when_no_engine_comes_within_the_hold_timeout() -> None:
    async def scenario() -> None:
        router = Router(hold_timeout_seconds=0.3)
        await router.start()
        try:
            async with aiohttp.ClientSession() as session:
                status, text = await _post(session, f"{router.url}/ns/ms/v1/completions")
            assert status == 503 and "ns/ms" in text
            assert router.held("ns", "ms") == 0
        finally:
            await router.stop()

    run(scenario)


def test_a_client_giving_up_is_no_longer_counted_as_held() -> None:
    async def scenario() -> None:
        router = Router(hold_timeout_seconds=30)
        await router.start()
        try:
            async with aiohttp.ClientSession() as session:
                waiting = asyncio.create_task(_post(session, f"{router.url}/ns/ms/v1/completions"))
                await until(lambda: router.held("ns", "ms") == 1)
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            await until(lambda: router.held("ns", "ms") == 0)
        finally:
            await router.stop()

    run(scenario)
