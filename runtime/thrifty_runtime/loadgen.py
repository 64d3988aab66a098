"""Replays a trace (or a slice of one) against a model through thrifty-gateway.

The scaling loop must be proven under real traffic, not a constant rate: this sends the requests of
a public trace (Azure, Mooncake, ServeGen-derived; loaded by `thrifty.tracefiles.load_trace`, the
same loader the simulator uses) at their arrival times, optionally sped up, to
`<gateway>/v1/completions` with `model` set (the gateway routes on it). Each request carries its
trace's prompt as token ids (so both the simulator and real vLLM see exactly that many prompt
tokens) and asks for its trace's output length with `ignore_eos`. Runs are bounded by a request
count and a duration, and only ever talk to the gateway URL given (127.0.0.1 in every setup of
this project). As a tenant: `--api-key-env VAR` (the key is read from the environment).

    python -m thrifty_runtime.loadgen --gateway http://127.0.0.1:8080 --model llama-8b \\
        --trace azure-conv --start 600 --duration 300 --speedup 10 \\
        --max-requests 2000 --max-seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from thrifty.sim.traces import Trace

TOKEN_ID_FLOOR = 3
"""Token ids start above the tiny model's special tokens (pad, begin, end)."""
TOKEN_ID_SPAN = 2000
"""Ids stay below the tiny model's vocabulary (2048)."""


@dataclass(frozen=True)
class PlannedRequest:
    send_at_seconds: float
    prompt_tokens: int
    max_tokens: int


@dataclass(frozen=True)
class Limits:
    max_requests: int = 1000
    max_seconds: float = 120.0
    max_prompt_tokens: int = 2048
    max_output_tokens: int = 1024
    """Caps per request: a tiny real model or a short demo cannot take 30k-token prompts."""


def plan(trace: Trace, limits: Limits) -> list[PlannedRequest]:
    """The requests to send, in order: the trace's arrivals within the bounds, lengths capped."""
    planned: list[PlannedRequest] = []
    for request in trace.requests:
        if len(planned) >= limits.max_requests or request.arrival_seconds >= limits.max_seconds:
            break
        planned.append(
            PlannedRequest(
                send_at_seconds=request.arrival_seconds,
                prompt_tokens=max(1, min(request.prompt_tokens, limits.max_prompt_tokens)),
                max_tokens=max(1, min(request.output_tokens, limits.max_output_tokens)),
            )
        )
    return planned


def prompt_ids(count: int, seed: int) -> list[int]:
    return [TOKEN_ID_FLOOR + (seed * 7919 + i * 31) % TOKEN_ID_SPAN for i in range(count)]


@dataclass
class Report:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_seconds: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    short_completions: int = 0
    """200 answers with fewer tokens than asked: cut or aborted (vLLM's drain refusal)."""
    wall_seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_seconds)

        def quantile(q: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

        return {
            "sent": self.sent,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "latency_p50_seconds": quantile(0.5),
            "latency_p95_seconds": quantile(0.95),
            "completion_tokens": self.completion_tokens,
            "short_completions": self.short_completions,
            "wall_seconds": round(self.wall_seconds, 3),
        }


async def send_one(
    session: aiohttp.ClientSession,
    url: str,
    planned: PlannedRequest,
    seed: int,
    model: str | None,
    report: Report,
) -> None:
    """One completion; its status, tokens and latency (or its error) go into `report`."""
    body: dict[str, Any] = {
        "prompt": prompt_ids(planned.prompt_tokens, seed),
        "max_tokens": planned.max_tokens,
        "ignore_eos": True,
    }
    if model:
        body["model"] = model
    sent_at = time.monotonic()
    try:
        async with session.post(url, json=body) as response:
            data = await response.json(content_type=None)
            report.statuses[response.status] += 1
            if response.status == 200 and isinstance(data, dict):
                usage = data.get("usage") or {}
                report.completion_tokens += int(usage.get("completion_tokens", 0))
                report.latencies_seconds.append(time.monotonic() - sent_at)
                report.short_completions += int(
                    int(usage.get("completion_tokens", 0)) < planned.max_tokens
                )
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        report.errors[type(error).__name__] += 1


async def replay(
    url: str,
    requests: Sequence[PlannedRequest],
    *,
    model: str | None = None,
    max_seconds: float = 120.0,
    request_timeout_seconds: float = 300.0,
    headers: dict[str, str] | None = None,
) -> Report:
    """Sends `requests` to the completions `url` at their times; stops sending at `max_seconds`
    and waits for the answers of what was sent (each bounded by `request_timeout_seconds`)."""
    report = Report()
    timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
    connector = aiohttp.TCPConnector(limit=0)
    started = time.monotonic()
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, headers=headers
    ) as session:

        async def one(index: int, planned: PlannedRequest) -> None:
            await send_one(session, url, planned, index, model, report)

        tasks: list[asyncio.Task[None]] = []
        for index, planned in enumerate(requests):
            delay = planned.send_at_seconds - (time.monotonic() - started)
            if planned.send_at_seconds >= max_seconds:
                break
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, planned)))
            report.sent += 1
        await asyncio.gather(*tasks)
    report.wall_seconds = time.monotonic() - started
    return report


class ClosedLoop:
    """Keeps `concurrency` requests in flight against each URL, from a background thread, until
    the `with` block ends: steady pressure for tests, where a trace's timing is not the point."""

    def __init__(
        self,
        urls: Sequence[str],
        concurrency: int,
        max_tokens: int,
        prompt_tokens: int = 32,
        model: str | None = None,
    ) -> None:
        self._urls = list(urls)
        self._concurrency = concurrency
        self._planned = PlannedRequest(0.0, prompt_tokens, max_tokens)
        self._model = model
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.report = Report()

    async def _worker(self, session: aiohttp.ClientSession, url: str, seed: int) -> None:
        while not self._stop.is_set():
            await send_one(session, url, self._planned, seed, self._model, self.report)
            self.report.sent += 1

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(
                    self._worker(session, url, i)
                    for url in self._urls
                    for i in range(self._concurrency)
                )
            )

    def __enter__(self) -> ClosedLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=300)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thrifty_runtime.loadgen",
        description="Replay a trace against a model through thrifty-gateway.",
    )
    parser.add_argument("--gateway", required=True, help="thrifty-gateway's URL")
    parser.add_argument(
        "--model", required=True, help="served model name (the gateway routes on it)"
    )
    parser.add_argument(
        "--api-key-env",
        help="name of an environment variable holding the API key (sent as a Bearer token)",
    )
    parser.add_argument(
        "--trace", default="azure-conv", help="named trace, synthetic shape or trace file path"
    )
    parser.add_argument("--start", type=float, default=0.0, help="slice start in trace seconds")
    parser.add_argument("--duration", type=float, help="seconds to replay (after the speedup)")
    parser.add_argument("--speedup", type=float, help="time compression (10: ten times faster)")
    parser.add_argument("--target-rps", type=float, help="rescale rate series to this mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--max-prompt-tokens", type=int, default=2048)
    parser.add_argument("--max-output-tokens", type=int, default=1024)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from thrifty.tracefiles import TraceOptions, load_trace

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    trace = load_trace(
        args.trace,
        TraceOptions(
            start_seconds=args.start,
            duration_seconds=args.duration,
            speedup=args.speedup,
            target_rps=args.target_rps,
            seed=args.seed,
        ),
    )
    limits = Limits(
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        max_prompt_tokens=args.max_prompt_tokens,
        max_output_tokens=args.max_output_tokens,
    )
    requests = plan(trace, limits)
    url = f"{args.gateway.rstrip('/')}/v1/completions"
    headers = None
    if args.api_key_env:  # from the environment: a key on a command line shows in `ps`
        headers = {"Authorization": f"Bearer {os.environ[args.api_key_env]}"}
    report = asyncio.run(
        replay(url, requests, model=args.model, max_seconds=args.max_seconds, headers=headers)
    )
    print(json.dumps({"trace": trace.name, "attribution": trace.attribution, **report.summary()}))
    return 0 if report.sent and not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
