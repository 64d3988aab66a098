"""thrifty-gateway against direct engine access, side by side: added latency, throughput,
concurrent streams, metering accuracy and memory under a flood of held requests.

Everything runs on this machine, on 127.0.0.1, bounded in count and time. The gateway runs in its
own process pinned to one core (CPU 0); upstreams and clients run on the other. Results and the
command: bench/gateway.md.

    .venv/bin/python bench/gateway.py all            # or: latency | throughput | streams |
                                                     #     metering | flood

Upstreams: for latency, throughput and streams a minimal OpenAI-shaped server (`static`) whose
answer costs almost nothing, so what is measured is the gateway; for metering the project's vLLM
simulator (`thrifty_runtime.engine_server`) replaying a slice of the Azure conversation trace,
whose own vLLM counters are the reference. Throughput uses `wrk` (apt-get install wrk) when it is
on PATH: a Python client cannot load a Python server on the same two cores and measure it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
GATEWAY_CPU = 0
OTHER_CPU = 1
MODEL = "bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- processes ----------------------------------------------------------------------------------


def static_upstream(port: int, stream_chunks: int, chunk_interval: float) -> None:
    """An OpenAI-shaped server that answers at once (or streams `stream_chunks` events)."""
    answer = json.dumps(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": MODEL,
            "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=answer, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(stream_chunks):
            await response.write(b'data: {"choices": [{"index": 0, "text": " ok"}]}\n\n')
            await asyncio.sleep(chunk_interval)
        usage = {"prompt_tokens": 5, "completion_tokens": stream_chunks}
        await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


def gateway_process(port: int, upstream: str, hold_total: int) -> None:
    """The gateway with a fixed catalog: ModelService bench/bench, its endpoint `upstream`
    (empty: none, every request is held)."""
    from urllib.parse import urlsplit

    from thrifty_runtime.gateway.holding import HoldSettings
    from thrifty_runtime.gateway.server import Gateway, GatewaySettings

    async def serve() -> None:
        settings = GatewaySettings(
            port=port,
            allow_anonymous=True,
            max_concurrent_requests=40_000,
            hold=HoldSettings(total_cap=hold_total, per_service_cap=hold_total),
        )
        gateway = Gateway(settings)
        gateway.catalog.replace_model_services(
            [{"metadata": {"name": MODEL, "namespace": MODEL}, "spec": {}}]
        )
        if upstream:
            parts = urlsplit(upstream)
            gateway.catalog.replace_slices(
                [
                    {
                        "metadata": {
                            "name": "s",
                            "namespace": MODEL,
                            "labels": {"thrifty.dev/model-service": MODEL},
                        },
                        "ports": [{"name": "http", "port": parts.port}],
                        "endpoints": [{"addresses": [parts.hostname]}],
                    }
                ]
            )
        gateway.synced = True
        await gateway.start()
        gc.freeze()  # as thrifty-gateway's main does
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gateway.stop()

    asyncio.run(serve())


@contextlib.contextmanager
def spawn(cpu: int | None, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, __file__, "_child", "any" if cpu is None else str(cpu), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_listening(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- measurements -------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(urls: list[str], rate: float, seconds: float) -> dict[str, list[float]]:
    """Open loop at `rate` requests/s, alternating between `urls`: latencies in seconds."""
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 1}
    latencies: dict[str, list[float]] = {url: [] for url in urls}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> None:
            started = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
                if response.status == 200:
                    latencies[url].append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        count = int(rate * seconds)
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(urls[i % len(urls)])))
        await asyncio.gather(*tasks)
    return latencies


def latency(rate: float = 200.0, seconds: float = 30.0) -> dict[str, Any]:
    upstream_port, gateway_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    # Not pinned: on a shared machine a pinned process waits for its core while others use it.
    with (
        spawn(None, "static", str(upstream_port)),
        spawn(None, "gateway", str(gateway_port), upstream, "1000"),
    ):
        wait_listening(upstream_port)
        wait_listening(gateway_port)
        direct = f"{upstream}/v1/completions"
        through = f"http://127.0.0.1:{gateway_port}/v1/completions"
        asyncio.run(paced([direct, through], rate, 3.0))  # warm up connections
        found = asyncio.run(paced([direct, through], rate, seconds))
    result: dict[str, Any] = {"rate_per_second": rate, "seconds": seconds}
    for name, url in (("direct", direct), ("gateway", through)):
        values = found[url]
        result[name] = {
            "requests": len(values),
            "p50_ms": round(quantile(values, 0.5) * 1000, 3),
            "p99_ms": round(quantile(values, 0.99) * 1000, 3),
        }
    result["added_p50_ms"] = round(result["gateway"]["p50_ms"] - result["direct"]["p50_ms"], 3)
    result["added_p99_ms"] = round(result["gateway"]["p99_ms"] - result["direct"]["p99_ms"], 3)
    return result


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"model": "bench", "prompt": "hello", "max_tokens": 1}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_rate(url: str, seconds: int, connections: int, workdir: Path) -> float:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    command = ["taskset", "-c", str(OTHER_CPU), "wrk", "-t1", f"-c{connections}"]
    command += [f"-d{seconds}s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out.stdout)


def throughput(seconds: int = 15, connections: int = 64) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not on PATH (apt-get install wrk)"}
    upstream_port, gateway_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    with (
        tempfile.TemporaryDirectory() as workdir,
        spawn(OTHER_CPU, "static", str(upstream_port)),
        spawn(GATEWAY_CPU, "gateway", str(gateway_port), upstream, "1000") as gateway,
    ):
        wait_listening(upstream_port)
        wait_listening(gateway_port)
        direct = wrk_rate(f"{upstream}/v1/completions", seconds, connections, Path(workdir))
        before = cpu_seconds(gateway.pid)
        through = wrk_rate(
            f"http://127.0.0.1:{gateway_port}/v1/completions", seconds, connections, Path(workdir)
        )
        used = cpu_seconds(gateway.pid) - before
    return {
        "connections": connections,
        "seconds": seconds,
        "direct_requests_per_second": round(direct),
        "gateway_requests_per_second": round(through),
        "gateway_cpu_cores": round(used / seconds, 2),
        "gateway_requests_per_cpu_second": round(through * seconds / used),
    }


async def _streams(url: str, count: int) -> tuple[int, float]:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 100, "stream": True}
    done = 0
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal done
            async with session.post(url, json=body) as response:
                text = await response.read()
                if response.status == 200 and text.endswith(b"data: [DONE]\n\n"):
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    return done, time.perf_counter() - started


def streams(count: int = 1000, chunks: int = 100, interval: float = 0.1) -> dict[str, Any]:
    """`count` streams at once, each `chunks` events `interval` s apart (10 s)."""
    upstream_port, gateway_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    with (
        spawn(OTHER_CPU, "static", str(upstream_port), str(chunks), str(interval)),
        spawn(GATEWAY_CPU, "gateway", str(gateway_port), upstream, "1000") as gateway,
    ):
        wait_listening(upstream_port)
        wait_listening(gateway_port)
        direct_done, direct_wall = asyncio.run(_streams(f"{upstream}/v1/completions", count))
        before = cpu_seconds(gateway.pid)
        done, wall = asyncio.run(_streams(f"http://127.0.0.1:{gateway_port}/v1/completions", count))
        used = cpu_seconds(gateway.pid) - before
        rss = rss_mib(gateway.pid)
    return {
        "streams": count,
        "events_per_stream": chunks,
        "direct": {"completed": direct_done, "wall_seconds": round(direct_wall, 2)},
        "gateway": {
            "completed": done,
            "wall_seconds": round(wall, 2),
            "cpu_cores": round(used / wall, 2),
            "events_per_cpu_second": round(count * chunks / used),
            "rss_mib": round(rss, 1),
        },
    }


def metering(requests: int = 400) -> dict[str, Any]:
    """A slice of the Azure conversation trace through the gateway to the vLLM simulator, half
    streamed: tokens metered by the gateway vs the engine's own counters."""
    from prometheus_client.parser import text_string_to_metric_families

    from thrifty.tracefiles import TraceOptions, load_trace
    from thrifty_runtime import loadgen

    trace = load_trace("azure-conv", TraceOptions(start_seconds=0, speedup=4.0))
    planned = loadgen.plan(
        trace, loadgen.Limits(max_requests=requests, max_seconds=300, max_output_tokens=256)
    )
    engine_port, gateway_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    engine_args = ["--served-model-name", MODEL, "--max-num-seqs", "256", "--port"]
    with (
        spawn(OTHER_CPU, "engine", *engine_args, str(engine_port)),
        spawn(GATEWAY_CPU, "gateway", str(gateway_port), engine, "1000"),
    ):
        wait_listening(engine_port)
        wait_listening(gateway_port)
        gateway = f"http://127.0.0.1:{gateway_port}"

        async def replay() -> int:
            ok = 0
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def one(index: int, request: loadgen.PlannedRequest) -> None:
                    nonlocal ok
                    await asyncio.sleep(request.send_at_seconds)
                    body: dict[str, Any] = {
                        "model": MODEL,
                        "prompt": loadgen.prompt_ids(request.prompt_tokens, index),
                        "max_tokens": request.max_tokens,
                        "stream": index % 2 == 1,
                    }
                    async with session.post(f"{gateway}/v1/completions", json=body) as response:
                        await response.read()
                        ok += response.status == 200

                await asyncio.gather(*(one(i, r) for i, r in enumerate(planned)))
            return ok

        ok = asyncio.run(replay())

        def scrape(url: str) -> dict[str, float]:
            import urllib.request

            text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            values: dict[str, float] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    key = sample.name + (
                        f"/{sample.labels['kind']}" if "kind" in sample.labels else ""
                    )
                    values[key] = values.get(key, 0.0) + sample.value
            return values

        engine_counts = scrape(engine)
        gateway_counts = scrape(gateway)
    prompt_engine = engine_counts["vllm:prompt_tokens_total"]
    output_engine = engine_counts["vllm:generation_tokens_total"]
    prompt_gateway = gateway_counts["thrifty_gateway_tokens_total/prompt"]
    output_gateway = gateway_counts["thrifty_gateway_tokens_total/completion"]
    return {
        "requests": len(planned),
        "ok": ok,
        "prompt_tokens": {"engine": prompt_engine, "gateway": prompt_gateway},
        "completion_tokens": {"engine": output_engine, "gateway": output_gateway},
        "prompt_error_percent": round(100 * abs(prompt_gateway - prompt_engine) / prompt_engine, 4),
        "completion_error_percent": round(
            100 * abs(output_gateway - output_engine) / output_engine, 4
        ),
    }


def flood(count: int = 20_000, hold_total: int = 10_000) -> dict[str, Any]:
    """`count` requests for a ModelService at zero: `hold_total` held, the rest refused at once
    (429); the gateway's RSS before and while they are held."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gateway_port = free_port()
    with spawn(GATEWAY_CPU, "gateway", str(gateway_port), "", str(hold_total)) as gateway:
        wait_listening(gateway_port)
        base = f"http://127.0.0.1:{gateway_port}"
        rss_before = rss_mib(gateway.pid)

        async def run() -> tuple[dict[int, int], float]:
            body = json.dumps({"model": MODEL, "prompt": "x" * 200, "max_tokens": 1}).encode()
            statuses: dict[int, int] = {}
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=None)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def one() -> None:
                    try:
                        async with session.post(f"{base}/v1/completions", data=body) as r:
                            await r.read()
                            statuses[r.status] = statuses.get(r.status, 0) + 1
                    except aiohttp.ClientError:
                        statuses[0] = statuses.get(0, 0) + 1

                tasks = []
                for i in range(count):
                    tasks.append(asyncio.ensure_future(one()))
                    if i % 500 == 499:
                        await asyncio.sleep(0.05)
                deadline = time.monotonic() + 120
                held = 0.0
                while time.monotonic() < deadline:
                    async with session.get(f"{base}/metrics") as response:
                        text = await response.text()
                    lines = [
                        ln for ln in text.splitlines()
                        if ln.startswith("thrifty_router_requests_held{")
                    ]  # fmt: skip
                    held = float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0
                    if held >= hold_total and statuses.get(429, 0) >= count - hold_total:
                        break
                    await asyncio.sleep(0.2)
                rss_held = rss_mib(gateway.pid)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            return statuses, rss_held

        statuses, rss_held = asyncio.run(run())
    return {
        "requests": count,
        "hold_total_cap": hold_total,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rss_mib_idle": round(rss_before, 1),
        "rss_mib_while_held": round(rss_held, 1),
        "rss_kib_per_held_request": round((rss_held - rss_before) * 1024 / hold_total, 2),
    }


def child(cpu: str, kind: str, args: list[str]) -> None:
    if cpu != "any":
        os.sched_setaffinity(0, {int(cpu)})
    if kind == "static":
        chunks = int(args[1]) if len(args) > 1 else 0
        interval = float(args[2]) if len(args) > 2 else 0.0
        static_upstream(int(args[0]), chunks, interval)
    elif kind == "gateway":
        gateway_process(int(args[0]), args[1], int(args[2]))
    elif kind == "engine":
        from thrifty_runtime.engine_server import main

        main(args)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what", choices=["all", "latency", "throughput", "streams", "metering", "flood"]
    )
    args = parser.parse_args()
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "latency": latency,
        "throughput": throughput,
        "streams": streams,
        "metering": metering,
        "flood": flood,
    }
    chosen = list(runs) if args.what == "all" else [args.what]
    for name in chosen:
        started = time.monotonic()
        result = runs[name]()
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps({name: result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
