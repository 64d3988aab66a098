"""The fleet mirror's reading of pods, its engines' addresses and its Prometheus targets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from thrifty_runtime import fleet_mirror, podnet
from thrifty_runtime.fleet_mirror import (
    FleetMirror,
    MirrorSettings,
    file_sd_groups,
    hook_command,
    pod_engine_spec,
)

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
            assert engine.url == f"http://127.83.0.7:{port}"
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{engine.url}/health") as response,
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


def test_a_pre_stop_command_and_the_grace_period_are_read_and_run_beside_the_engine() -> None:
    pod = _pod()
    command = ["python3", "-c", "...", "10", "30", "http://127.0.0.1:8000/metrics"]
    pod["spec"]["containers"][0]["lifecycle"] = {"preStop": {"exec": {"command": command}}}
    pod["spec"]["terminationGracePeriodSeconds"] = 55
    spec = pod_engine_spec(pod)
    assert spec is not None and spec.pre_stop_command == tuple(command)
    assert spec.pre_stop_seconds == 0.0 and spec.grace_seconds == 55.0
    # The pod's own loopback is, beside the mirror, the engine's address.
    ran = hook_command(command, "http://127.122.0.3:8000")
    assert ran == [*command[:5], "http://127.122.0.3:8000/metrics"]
    assert hook_command(["http://localhost:8000/x"], "http://127.0.0.1:4242/") == [
        "http://127.0.0.1:4242/x"
    ]


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


def test_a_profile_annotation_names_a_built_in_profile_never_a_file() -> None:
    """A pod is a cluster object: its annotation must not have the mirror read local files."""
    example = Path(__file__).resolve().parents[3] / "examples"
    pod = _pod()
    pod["metadata"]["annotations"] = {
        "thrifty.dev/engine-profile": str(
            example / "simulate" / "engine-profile-qwen3-32b-1xh100.yaml"
        )
    }
    spec = pod_engine_spec(pod)
    assert spec is not None
    settings = MirrorSettings(file_sd_path=Path("/nonexistent"))

    async def scenario() -> None:
        await FleetMirror(settings, core_api=None)._start_sim(spec)

    with pytest.raises(KeyError, match="unknown engine profile"):
        run(scenario)


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


def test_targets_carry_the_pool_a_pod_is_placed_in() -> None:
    placed = _pod()
    placed["metadata"]["labels"]["thrifty.dev/pool"] = "h100-spot"
    spec = pod_engine_spec(placed)
    assert spec is not None and spec.pool == "h100-spot"
    [group] = file_sd_groups([(spec, "127.0.0.1:1234")])
    assert group["labels"]["pool"] == "h100-spot"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_deleted_node_kills_its_engines_at_once_and_for_good(tmp_path: Path) -> None:
    """A node is deleted under two pods' engines: the one on it dies with its request in flight
    (cut, not drained) and its port refuses; the pod object, still listed until the pod garbage
    collector removes it, never gets an engine again. The engine on the other node serves on."""

    async def scenario() -> None:
        settings = MirrorSettings(file_sd_path=tmp_path / "sd.json")
        mirror = FleetMirror(settings, core_api=None)
        doomed = _pod(spec__nodeName="spot-0")
        other = _pod(spec__nodeName="h100-0")
        other["metadata"] = {**other["metadata"], "name": "other", "uid": "u2"}
        for pod in (doomed, other):
            await mirror._on_event("ADDED", pod)
        await mirror.started()
        urls = {e.spec.pod: e.url for e in mirror._engines.values()}
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "prompt": "hello", "max_tokens": 2000}
            in_flight = asyncio.create_task(
                session.post(f"{urls['llama-8b-engine-abc']}/v1/completions", json=body)
            )
            engine = next(e for e in mirror._engines.values() if e.spec.node == "spot-0")
            assert engine.sim is not None and engine.sim.driver is not None
            driver = engine.sim.driver
            await _until(lambda: driver.in_flight > 0)  # the engine holds the request
            assert driver.in_flight == 1
            await mirror._on_node_event("DELETED", {"metadata": {"name": "spot-0"}})
            with pytest.raises(aiohttp.ClientError):
                response = await in_flight
                await response.read()
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{urls['llama-8b-engine-abc']}/health")
            await mirror._on_event("MODIFIED", doomed)  # still Running on paper
            assert not mirror._starting
            assert [e.spec.pod for e in mirror._engines.values()] == ["other"]
            async with session.get(f"{urls['other']}/health") as response:
                assert response.status == 200
        await mirror._kill(next(iter(mirror._engines)))

    run(scenario)


def test_a_node_missing_from_a_relist_was_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        mirror = FleetMirror(MirrorSettings(file_sd_path=tmp_path / "sd.json"), core_api=None)
        await mirror._on_event("ADDED", _pod(spec__nodeName="spot-0"))
        await mirror.started()
        await mirror._sync_nodes([{"metadata": {"name": "h100-0"}}])
        assert mirror._engines == {}
        await mirror._on_event("MODIFIED", _pod(spec__nodeName="spot-0"))
        assert not mirror._starting, "a pod bound to a lost machine runs nowhere"

    run(scenario)


def test_a_full_event_queue_holds_the_watch_back_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events beyond the queue's bound wait in the watch thread until the mirror takes one; a
    mirror that stops releases a waiting thread."""
    monkeypatch.setattr(fleet_mirror, "EVENT_QUEUE_SIZE", 2)

    async def scenario() -> None:
        mirror = FleetMirror(MirrorSettings(file_sd_path=tmp_path / "sd.json"), core_api=None)
        loop = asyncio.get_running_loop()
        events = [("ADDED", {"n": n}) for n in range(4)]

        def send() -> None:
            for event in events[:3]:
                mirror._put(loop, event)

        sent = threading.Thread(target=send)
        sent.start()
        await _until(lambda: mirror._queue.full())
        assert sent.is_alive(), "the third event waits for room"
        taken = [await mirror._queue.get()]
        await asyncio.to_thread(sent.join, 10.0)
        assert not sent.is_alive()
        taken += [mirror._queue.get_nowait(), mirror._queue.get_nowait()]
        assert taken == events[:3]

        for event in events[:2]:
            mirror._queue.put_nowait(event)
        blocked = threading.Thread(target=mirror._put, args=(loop, events[3]))
        blocked.start()
        mirror._stop.set()
        await asyncio.to_thread(blocked.join, 10.0)
        assert not blocked.is_alive(), "stopping releases the watch thread"
        assert mirror._queue.qsize() == 2

    run(scenario)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):  # at most 5 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")
