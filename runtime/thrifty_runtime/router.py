"""The fleet's stand-in for Kubernetes Services: one HTTP router for every ModelService.

KWOK pods have no network, so a client cannot reach a ModelService through its Service. The
router listens on 127.0.0.1 and forwards `/<namespace>/<model-service>/<path>` to one of that
ModelService's engines, chosen least-loaded: the fewest requests in flight through the router
(ties: the one used least recently). Bodies stream through unchanged, so `stream: true` works.
An engine that cannot be reached, or that refuses with 503 because it is draining, is skipped and
the request tried on the next one.

A request for a ModelService with no engine at all (scaled to zero, or its first replica still
starting) is held, as Knative's activator holds requests for a revision at zero: it goes to the
first engine that becomes ready, or gets a 503 after `hold_timeout_seconds`. The number held per
ModelService is the gauge `thrifty_router_requests_held{namespace, modelservice}` on
`GET /metrics`: the operator reads it as waiting requests, the only demand signal a ModelService
without engines has, and scales it from zero (see docs/runtime.md).

`GET /engines` lists the engines and their in-flight counts (for tests and humans).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

log = logging.getLogger("thrifty_runtime.router")

HELD_METRIC = "thrifty_router_requests_held"
DEFAULT_HOLD_TIMEOUT_SECONDS = 300.0
"""Knative's default request timeout: long enough for a cold start of an 8B model (~2 min)."""

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)


class EngineUnreachableError(ConnectionError):
    """The chosen engine refused the connection before answering: try another one."""


@dataclass(eq=False)
class Backend:
    namespace: str
    model_service: str
    pod: str
    url: str
    in_flight: int = 0
    last_used: int = 0
    served: int = field(default=0)


class Router:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hold_timeout_seconds: float = DEFAULT_HOLD_TIMEOUT_SECONDS,
    ) -> None:
        self._host = host
        self._port = port
        self._hold_timeout_seconds = hold_timeout_seconds
        self._backends: dict[tuple[str, str], list[Backend]] = {}
        self._arrivals: dict[tuple[str, str], asyncio.Event] = {}
        """Set (and dropped) when a ModelService gets a backend: wakes the requests it holds."""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ticks = itertools.count(1)
        self.registry = CollectorRegistry()
        self._held = Gauge(
            HELD_METRIC,
            "Requests the router holds because their ModelService has no ready engine.",
            ("namespace", "modelservice"),
            registry=self.registry,
        )

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def add(self, backend: Backend) -> None:
        key = (backend.namespace, backend.model_service)
        pool = self._backends.setdefault(key, [])
        if backend not in pool:
            pool.append(backend)
        arrival = self._arrivals.pop(key, None)
        if arrival is not None:
            arrival.set()

    def remove(self, backend: Backend) -> None:
        pool = self._backends.get((backend.namespace, backend.model_service), [])
        if backend in pool:
            pool.remove(backend)

    def backends(self, namespace: str, model_service: str) -> list[Backend]:
        return list(self._backends.get((namespace, model_service), []))

    def held(self, namespace: str, model_service: str) -> int:
        """Requests held right now for this ModelService (the gauge's value)."""
        labels = {"namespace": namespace, "modelservice": model_service}
        return int(self.registry.get_sample_value(HELD_METRIC, labels) or 0)

    def pick(self, namespace: str, model_service: str, exclude: set[int]) -> Backend | None:
        """Least in flight; among equals the least recently used (spreads an idle start)."""
        candidates = [
            b for b in self._backends.get((namespace, model_service), []) if id(b) not in exclude
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda b: (b.in_flight, b.last_used))

    async def start(self) -> None:
        # No total timeout: a long stream is normal; connect failures still fail fast.
        timeout = aiohttp.ClientTimeout(total=None, connect=5)
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/engines", self._engines),
                web.get("/metrics", self._metrics),
                web.route("*", "/{namespace}/{model_service}/{path:.*}", self._forward),
            ]
        )
        # Cancelled with its client: a held request nobody waits for leaves the held count, and a
        # proxied one stops its upstream request, as behind any proxy.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        if self._port == 0:
            self._port = int(self._runner.addresses[0][1])

    @property
    def listening(self) -> bool:
        """Between `start` and `stop`: its address is worth publishing."""
        return self._runner is not None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def _engines(self, _: web.Request) -> web.Response:
        listing = [
            {
                "namespace": b.namespace,
                "model_service": b.model_service,
                "pod": b.pod,
                "url": b.url,
                "in_flight": b.in_flight,
                "served": b.served,
            }
            for pool in self._backends.values()
            for b in pool
        ]
        return web.json_response(listing)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        model_service = request.match_info["model_service"]
        path = request.match_info["path"]
        body = await request.read()
        tried: set[int] = set()
        while True:
            backend = self.pick(namespace, model_service, tried)
            if backend is None and not self._backends.get((namespace, model_service)):
                backend = await self._hold(namespace, model_service)
            if backend is None:
                return web.json_response(
                    {
                        "error": {
                            "message": f"no ready engine for {namespace}/{model_service}",
                            "type": "ServiceUnavailableError",
                            "code": 503,
                        }
                    },
                    status=503,
                )
            tried.add(id(backend))
            try:
                return await self._proxy(request, backend, path, body)
            except EngineUnreachableError as error:
                log.info("%s; trying another engine", error)

    async def _hold(self, namespace: str, model_service: str) -> Backend | None:
        """Waits for the ModelService's first ready backend; None after the hold timeout.

        Counted in the held gauge while it waits. A client that gives up cancels the handler,
        which uncounts it: the gauge never counts a request nobody waits for."""
        key = (namespace, model_service)
        gauge = self._held.labels(namespace=namespace, modelservice=model_service)
        deadline = time.monotonic() + self._hold_timeout_seconds
        gauge.inc()
        try:
            while not self._backends.get(key):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.info(
                        "no engine for %s/%s within the hold timeout", namespace, model_service
                    )
                    return None
                arrival = self._arrivals.setdefault(key, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrival.wait(), remaining)
            return self.pick(namespace, model_service, set())
        finally:
            gauge.dec()

    async def _proxy(
        self, request: web.Request, backend: Backend, path: str, body: bytes
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        backend.in_flight += 1
        backend.last_used = next(self._ticks)
        try:
            try:
                upstream = await self._session.request(
                    request.method,
                    f"{backend.url}/{path}",
                    params=request.query,
                    data=body,
                    headers=headers,
                )
            except aiohttp.ClientConnectionError as error:
                raise EngineUnreachableError(
                    f"engine {backend.url} unreachable: {error}"
                ) from error
            async with upstream:
                if upstream.status == 503 and self.pick(
                    backend.namespace, backend.model_service, {id(backend)}
                ):
                    # A draining engine refuses new work; retry elsewhere, as a proxy with
                    # retry-on-503 does, instead of passing the refusal to the client.
                    raise EngineUnreachableError(f"engine {backend.url} is shutting down")
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                    },
                )
                await response.prepare(request)
                # Once headers are out, a broken upstream is a cut stream for the client, as
                # behind any proxy: the error propagates and aiohttp closes the connection.
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                backend.served += 1
                return response
        finally:
            backend.in_flight -= 1
