"""A vLLM-compatible HTTP server backed by the simulated engine: vLLM's API without a GPU.

KWOK pods run no containers, so the local cluster needs something that answers like vLLM: the
OpenAI routes (`/v1/completions`, `/v1/chat/completions`, with `stream: true` as server-sent
events), `/v1/models`, `/health`, and `/metrics` with vLLM's exact series. Timing comes from
`thrifty.sim.engine.Engine` (the fleet simulator's model), so queues, TTFT and token rates here
behave like the simulator's and like vLLM's under the same load. The text is filler: only token
counts matter. A prompt given as token ids (vLLM accepts a list of ints) has exactly that many
tokens; a text prompt counts one token per whitespace-separated word.

Lifecycle as vLLM's: SIGTERM with `--shutdown-timeout N` (N > 0) drains: in-flight and queued
requests finish, new ones get 503, `/health` stays 200; with N = 0 the server stops at once.

    python -m thrifty_runtime.engine_server --port 8000 --served-model-name llama --profile 8b \\
        --max-num-seqs 64 --shutdown-timeout 30 [other vLLM flags, GPU-only ones ignored]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from thrifty.sim.engine import EngineDrainingError, RequestTooLongError
from thrifty.sim.profiles import EngineProfile, ProfileError
from thrifty.tracefiles import load_profile
from thrifty_runtime.driver import EngineDriver, Submitted
from thrifty_runtime.vllm_metrics import VllmMetrics

log = logging.getLogger("thrifty_runtime.engine_server")

DEFAULT_COMPLETION_MAX_TOKENS = 16
"""vLLM's default `max_tokens` for /v1/completions."""
DEFAULT_CHAT_MAX_TOKENS = 512
"""vLLM lets a chat answer fill the context; the simulator caps the default to keep runs short."""
CHAT_TOKENS_PER_MESSAGE = 4
"""Role markers a chat template adds around each message."""
STREAM_INTERVAL_SECONDS = 0.05
"""How often a stream sends the tokens generated since its last chunk."""
FILLER_WORDS = ("the", "model", "says", "hello", "to", "a", "cluster", "without", "gpus")


@dataclass(frozen=True)
class ServerSettings:
    served_model_names: tuple[str, ...]
    profile: EngineProfile
    host: str = "127.0.0.1"
    port: int = 8000
    shutdown_timeout_seconds: float = 0.0
    engine_index: int = 0

    @property
    def model_name(self) -> str:
        """The `model_name` label: the first served name, as in vLLM."""
        return self.served_model_names[0]


def parse_model_len(text: str, default: int) -> int:
    """vLLM's `--max-model-len` forms: 4096, 32k, 1M, auto (the profile's value)."""
    value = text.strip().lower()
    if value in {"auto", "-1"}:
        return default
    multiplier = {"k": 1_000, "m": 1_000_000}.get(value[-1:], 1)
    if value[-1:] in {"k", "m"}:
        value = value[:-1]
    return int(float(value) * multiplier)


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


def _count_prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        if prompt and isinstance(prompt[0], str):
            return sum(_count_prompt_tokens(p) for p in prompt)
        if prompt and isinstance(prompt[0], list):
            return sum(len(p) for p in prompt)
    if isinstance(prompt, str):
        return max(1, len(prompt.split()))
    raise ValueError("prompt must be a string, a list of strings or a list of token ids")


def _count_chat_tokens(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    total = 0
    for message in messages:
        content = message.get("content", "") if isinstance(message, dict) else ""
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += CHAT_TOKENS_PER_MESSAGE + len(str(content).split())
    return total


def _filler(start: int, count: int) -> str:
    return "".join(" " + FILLER_WORDS[(start + i) % len(FILLER_WORDS)] for i in range(count))


class EngineServer:
    """One engine behind vLLM's HTTP API; usable in-process (fleet mirror) or via `main`."""

    def __init__(self, settings: ServerSettings, *, process_metrics: bool = True) -> None:
        self.settings = settings
        self.metrics = VllmMetrics(
            settings.model_name,
            settings.profile,
            settings.engine_index,
            process_metrics=process_metrics,
        )
        self.driver: EngineDriver | None = None
        self._runner: web.AppRunner | None = None
        self._created = int(time.time())
        self.port = settings.port
        self.draining = False
        self._active_responses = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.driver = EngineDriver(self.settings.profile, self.metrics)
        self.driver.start()
        app = web.Application()
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/ping", self._health),
                web.get("/metrics", self._metrics),
                web.get("/v1/models", self._models),
                web.post("/v1/completions", self._completions),
                web.post("/v1/chat/completions", self._chat_completions),
            ]
        )
        # A client that hangs up cancels its handler, whose `finally` frees the engine slot (as vLLM
        # aborts requests of disconnected clients).
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def drain(self, timeout_seconds: float) -> bool:
        """Stops taking requests and waits for those in flight; True when all finished."""
        self.draining = True
        driver = self._require_driver()
        driver.engine.start_draining()
        deadline = time.monotonic() + timeout_seconds
        while (driver.in_flight or self._active_responses) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not (driver.in_flight or self._active_responses)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.driver is not None:
            await self.driver.stop()

    async def kill(self) -> None:
        """What losing the machine does: the port closes and every connection is cut at once,
        requests in flight included; nothing drains."""
        runner = self._runner
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()
            for connection in runner.server.connections if runner.server is not None else ():
                if connection.transport is not None:
                    connection.transport.abort()  # a reset, as from a machine that is gone
        await self.stop()

    async def shutdown(self) -> None:
        """What SIGTERM does: drain for `--shutdown-timeout` seconds (if > 0), then stop."""
        if self.settings.shutdown_timeout_seconds > 0:
            finished = await self.drain(self.settings.shutdown_timeout_seconds)
            if not finished:
                log.warning("shutdown timeout reached with requests still in flight")
        await self.stop()

    def _require_driver(self) -> EngineDriver:
        if self.driver is None:
            raise RuntimeError("the engine server is not started")
        return self.driver

    # -- routes --------------------------------------------------------------------------------

    async def _health(self, _: web.Request) -> web.Response:
        # vLLM keeps /health at 200 while draining; endpoints are removed by readiness upstream.
        return web.Response(status=200)

    async def _metrics(self, _: web.Request) -> web.Response:
        self._require_driver().sync()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _models(self, _: web.Request) -> web.Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": self._created,
                "owned_by": "vllm",
                "root": self.settings.profile.model,
                "parent": None,
                "max_model_len": self.settings.profile.max_model_len,
            }
            for name in self.settings.served_model_names
        ]
        return web.json_response({"object": "list", "data": data})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not JSON", "BadRequestError")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "BadRequestError")
        model = body.get("model", self.settings.model_name)
        if model not in self.settings.served_model_names:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        try:
            prompt_tokens = (
                _count_chat_tokens(body.get("messages"))
                if chat
                else _count_prompt_tokens(body.get("prompt"))
            )
            default = DEFAULT_CHAT_MAX_TOKENS if chat else DEFAULT_COMPLETION_MAX_TOKENS
            max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or default)
        except (ValueError, TypeError) as error:
            return _error(400, str(error), "BadRequestError")
        if self.draining:
            return _error(503, "the engine is shutting down", "ServiceUnavailableError")
        driver = self._require_driver()
        try:
            submitted = driver.submit(prompt_tokens, max_tokens)
        except EngineDrainingError:
            return _error(503, "the engine is shutting down", "ServiceUnavailableError")
        except (RequestTooLongError, ValueError) as error:
            return _error(400, str(error), "BadRequestError")
        self._active_responses += 1
        try:
            if body.get("stream"):
                return await self._stream(request, submitted, chat=chat, model=model, body=body)
            return await self._answer(submitted, chat=chat, model=model)
        except ConnectionResetError:
            # The client left mid-stream; its slot is freed below, as vLLM aborts it.
            return web.Response(status=499)
        finally:
            self._active_responses -= 1
            driver.abort(
                submitted.request_id
            )  # no-op once finished; frees a vanished client's slot

    async def _answer(self, submitted: Submitted, *, chat: bool, model: str) -> web.Response:
        timing, reason = await submitted.finished
        text = _filler(0, timing.output_tokens)
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": str(reason),
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": str(reason)}
        return web.json_response(
            {
                "id": f"{'chatcmpl' if chat else 'cmpl'}-{submitted.request_id}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": _usage(timing.prompt_tokens, timing.output_tokens),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        submitted: Submitted,
        *,
        chat: bool,
        model: str,
        body: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        driver = self._require_driver()
        chunk_id = f"{'chatcmpl' if chat else 'cmpl'}-{submitted.request_id}"
        created = int(time.time())

        async def send(text: str | None, finish_reason: str | None, first: bool = False) -> None:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
                if text is not None:
                    delta["content"] = text
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish_reason,
                }
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish_reason}
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        if chat:
            await send(None, None, first=True)
        sent = 0
        async for generated in _progress(driver, submitted):
            if generated > sent:
                await send(_filler(sent, generated - sent), None)
                sent = generated
        timing, reason = submitted.finished.result()
        if timing.output_tokens > sent:
            await send(_filler(sent, timing.output_tokens - sent), None)
        await send("" if not chat else None, str(reason))
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            usage_chunk: dict[str, Any] = {
                "id": chunk_id,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(timing.prompt_tokens, timing.output_tokens),
            }
            await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def _progress(driver: EngineDriver, submitted: Submitted) -> AsyncIterator[int]:
    """Yields the request's generated-token count every stream interval until it finishes."""
    await submitted.first_token
    while not submitted.finished.done():
        yield driver.tokens_generated(submitted.request_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(submitted.finished), STREAM_INTERVAL_SECONDS)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# -- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thrifty_runtime.engine_server",
        description="vLLM-compatible server on the simulated engine. Accepts vLLM's flags; "
        "flags that only matter on a GPU are ignored.",
    )
    parser.add_argument("model_tag", nargs="?", help="vLLM's positional model (as `vllm serve M`)")
    parser.add_argument("--model", help="model path or name (the served name by default)")
    parser.add_argument("--served-model-name", nargs="+", help="names clients use (first: label)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--profile", default="8b", help="engine profile: 8b, 70b or a profile YAML file"
    )
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--max-num-batched-tokens", type=int)
    parser.add_argument("--max-model-len")
    parser.add_argument("--shutdown-timeout", type=float, default=0.0)
    parser.add_argument("--engine-index", type=int, default=0, help="the `engine` label")
    parser.add_argument("--log-level", default="info")
    return parser


def settings_from_args(argv: Sequence[str]) -> tuple[ServerSettings, list[str]]:
    """Parses vLLM-style arguments; returns the settings and the flags that were ignored."""
    args, ignored = build_parser().parse_known_args(list(argv))
    profile = load_profile(args.profile)
    overrides: dict[str, int] = {}
    if args.max_num_seqs:
        overrides["max_num_seqs"] = args.max_num_seqs
    if args.max_num_batched_tokens:
        overrides["max_num_batched_tokens"] = args.max_num_batched_tokens
    if args.max_model_len:
        overrides["max_model_len"] = parse_model_len(args.max_model_len, profile.max_model_len)
    profile = dataclasses.replace(profile, **overrides)  # type: ignore[arg-type]
    model = args.model or args.model_tag or profile.model
    names = tuple(args.served_model_name or [model])
    settings = ServerSettings(
        served_model_names=names,
        profile=profile,
        host=args.host,
        port=args.port,
        shutdown_timeout_seconds=max(0.0, args.shutdown_timeout),
        engine_index=args.engine_index,
    )
    return settings, ignored


async def serve(settings: ServerSettings) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down as vLLM does."""
    server = EngineServer(settings)
    await server.start()
    log.info(
        "serving %s on %s (profile %s)", settings.model_name, server.url, settings.profile.name
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("signal received: shutting down (timeout %.0f s)", settings.shutdown_timeout_seconds)
    await server.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, ignored = settings_from_args(sys.argv[1:] if argv is None else argv)
    except ProfileError as error:
        print(f"engine_server: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if ignored:
        log.info("ignoring flags without meaning for the simulator: %s", " ".join(ignored))
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
