"""The gateway's HTTP front: OpenAI routes in, one ModelService's endpoint out.

`POST /v1/chat/completions` and `POST /v1/completions` (streaming or not) are routed on the body's
`model`; `GET /v1/models` lists every ModelService served; `GET /metrics` is Prometheus;
`/healthz` answers while the process lives, `/readyz` once the watches have synced and until a
drain starts; `GET /debug/endpoints` lists endpoints and their in-flight counts.

A request is proxied to the endpoint the balancer picks. A connection that fails before any
answer, or an engine that answers 503 because it is draining, is retried on another endpoint of
the same ModelService; when all refused the connection, they are tried again after a short
backoff (`CONNECT_BACKOFF_SECONDS`); with none left, the client gets a clean 503 with
`Retry-After`. Once the engine's status line is passed on, the response is the engine's: a
stream cut by a dying engine ends with an error event, as nothing else can be said mid-stream.

Bounded: bodies above `max_body_bytes` get 413 before they are read whole; at most
`max_concurrent_requests` are served (beyond: 503); held requests are bounded by `holding`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from thrifty_runtime import podnet
from thrifty_runtime.gateway import balancer, errors, metering
from thrifty_runtime.gateway.catalog import Catalog, Endpoint, ServiceKey
from thrifty_runtime.gateway.errors import GatewayError, Outcome
from thrifty_runtime.gateway.holding import (
    HoldCancelledError,
    Holding,
    HoldRejectedError,
    HoldSettings,
    HoldTimeoutError,
)
from thrifty_runtime.gateway.tenants import Tenants, TenantState, duration_text

log = logging.getLogger("thrifty_runtime.gateway")

HELD_METRIC = "thrifty_router_requests_held"
"""The name the operator reads (thrifty.adapters.prometheus.HELD_REQUESTS_METRIC)."""
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
ROUTED_PATHS = ("/v1/chat/completions", "/v1/completions")
CONNECT_BACKOFF_SECONDS = (0.1, 0.3, 0.9)
"""Pauses before trying endpoints that all refused the connection again: 1.3 s in all, about
what an EndpointSlice update takes to remove a dead pod."""


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    """OpenAI accepts prompts of a few hundred thousand tokens: ~1-2 MiB of text."""
    max_concurrent_requests: int = 20_000
    """In flight and held together; each costs a socket and a little memory."""
    connect_timeout_seconds: float = 3.0
    """A pod listed ready but not answering is skipped after this long."""
    hold: HoldSettings = field(default_factory=HoldSettings)
    allow_anonymous: bool = False
    """Requests without `Authorization` are served as the tenant `anonymous`."""
    loopback_pod_network: ipaddress.IPv4Network | None = None
    """Local cluster only: connect to each pod IP's loopback twin (thrifty_runtime.podnet);
    addresses outside this network are ignored, so nothing outside 127.0.0.0/8 is contacted."""


class Gateway:
    def __init__(self, settings: GatewaySettings, *, seed: int | None = None) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self._held = Gauge(
            HELD_METRIC,
            "Requests the gateway holds because their ModelService has no ready endpoint "
            "(or others wait before them).",
            ("namespace", "modelservice"),
            registry=self.registry,
        )
        self._requests = Counter(
            "thrifty_gateway_requests",
            "Requests by how they ended (outcome: a fixed set; see docs/gateway.md).",
            ("namespace", "modelservice", "outcome"),
            registry=self.registry,
        )
        self._retries = Counter(
            "thrifty_gateway_retries",
            "Attempts moved to another endpoint after a refused connection or a draining engine.",
            ("namespace", "modelservice"),
            registry=self.registry,
        )
        self._ready_endpoints = Gauge(
            "thrifty_gateway_ready_endpoints",
            "Ready endpoints per ModelService, from its EndpointSlices.",
            ("namespace", "modelservice"),
            registry=self.registry,
        )
        network = settings.loopback_pod_network
        self._tokens = Counter(
            "thrifty_gateway_tokens",
            "Tokens metered per tenant from the answers' usage (kind: prompt or completion).",
            ("tenant", "namespace", "modelservice", "kind"),
            registry=self.registry,
        )
        self._tenant_requests = Counter(
            "thrifty_gateway_tenant_requests",
            "Requests per tenant by outcome (rate_limited included).",
            ("tenant", "outcome"),
            registry=self.registry,
        )
        self._reference = Gauge(
            "thrifty_gateway_reference_dollars_per_million_tokens",
            "A ModelService's reference price (spec.costTarget.referenceDollarsPerMillionTokens): "
            "kind prompt = input tokens, completion = output tokens.",
            ("namespace", "modelservice", "kind"),
            registry=self.registry,
        )
        self.tenants = Tenants(anonymous_allowed=settings.allow_anonymous)
        self.tenants.replace_secrets([])
        self.catalog = Catalog(
            on_change=self._catalog_changed,
            address_map=(
                (lambda address: podnet.loopback_twin(address, network))
                if network is not None
                else (lambda address: address)
            ),
        )
        self.holding = Holding(
            settings.hold,
            ready=lambda key: len(self.catalog.endpoints(key)),
            on_held=lambda key, n: self._held.labels(*key).set(n),
        )
        self.synced = False
        """Set by the watches once both listings are in (or by a test that fills the catalog)."""
        self.draining = False
        self._active = 0
        self._idle = asyncio.Event()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._labelled: set[ServiceKey] = set()
        self.port = settings.port

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        # No total timeout: a long stream is normal. Connection failures fail fast and retry.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.settings.connect_timeout_seconds)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False
        )
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.add_routes(
            [
                *(web.post(path, self._route) for path in ROUTED_PATHS),
                web.get("/v1/models", self._models),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/debug/endpoints", self._debug_endpoints),
            ]
        )
        app.middlewares.append(self._not_found_as_openai)
        # A client that hangs up cancels its handler: a held request leaves the queue, a proxied
        # one stops its upstream request (the engine aborts it, as vLLM does).
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, backlog=4096)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        log.info("gateway listening on %s", self.url)

    async def drain(self, timeout_seconds: float) -> bool:
        """Refuses new requests (503) and held ones, waits for those in flight; True if all
        finished in time."""
        self.draining = True
        self.holding.cancel_all()
        if self._active:
            self._idle.clear()
            try:
                async with asyncio.timeout(timeout_seconds):
                    await self._idle.wait()
            except TimeoutError:
                return False
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _catalog_changed(self, key: ServiceKey) -> None:
        if key in self.catalog.services() or key in self._labelled:
            count = len(self.catalog.endpoints(key))
            self._ready_endpoints.labels(*key).set(count)
            self._held.labels(*key).set(self.holding.held(key))
            self._labelled.add(key)
        price = self.catalog.reference_price(key)
        for kind, value in zip(("prompt", "completion"), price or (None, None), strict=True):
            if value is not None:
                self._reference.labels(key[0], key[1], kind).set(value)
            else:
                with contextlib.suppress(KeyError):
                    self._reference.remove(key[0], key[1], kind)
        self.holding.release(key)

    # -- routes --------------------------------------------------------------------------------

    @web.middleware
    async def _not_found_as_openai(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return GatewayError(
                404,
                f"Unknown path {request.path}.",
                Outcome.BAD_REQUEST,
                kind="invalid_request_error",
                code="unknown_url",
            ).response()
        except web.HTTPMethodNotAllowed:
            return GatewayError(
                405,
                f"{request.method} is not allowed on {request.path}.",
                Outcome.BAD_REQUEST,
                kind="invalid_request_error",
                code="method_not_allowed",
            ).response()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.draining or not self.synced:
            return web.Response(status=503, text="draining" if self.draining else "syncing")
        return web.Response(text="ok")

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def _models(self, _: web.Request) -> web.Response:
        data = [
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": f"{namespace}/{name}",
                "ready_replicas": len(self.catalog.endpoints((namespace, name))),
            }
            for model, (namespace, name) in self.catalog.models()
        ]
        return web.json_response({"object": "list", "data": data})

    async def _debug_endpoints(self, _: web.Request) -> web.Response:
        listing = [
            {
                "namespace": e.key[0],
                "model_service": e.key[1],
                "pod": e.pod,
                "url": e.url,
                "in_flight": e.in_flight,
                "peak_in_flight": e.peak_in_flight,
                "served": e.served,
            }
            for key in self.catalog.services()
            for e in self.catalog.endpoints(key)
        ]
        return web.json_response(listing)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        key: ServiceKey = ("", "")
        tenant: TenantState | None = None
        self._active += 1
        try:
            if self.draining:
                raise errors.draining()
            if self._active > self.settings.max_concurrent_requests:
                raise errors.overloaded(self.settings.max_concurrent_requests)
            tenant = self._admit(request)
            headers = self._quota_headers(tenant)
            body, model, hide_usage = await self._read(request)
            found = self.catalog.resolve(model)
            if found is None:
                raise errors.model_not_found(model)
            key = found
            response, outcome, usage = await self._serve(
                request, key, model, body, headers, hide_usage
            )
            self._count(key, outcome, tenant)
            if usage is not None:
                self._meter(tenant, key, usage)
            return response
        except GatewayError as error:
            self._count(key, error.outcome, tenant)
            extra = self._quota_headers(tenant) if tenant is not None else {}
            return error.response(extra)
        except (asyncio.CancelledError, ConnectionResetError):
            self._count(key, Outcome.CLIENT_CLOSED, tenant)
            raise
        finally:
            if tenant is not None:
                self.tenants.release(tenant)
            self._active -= 1
            if not self._active:
                self._idle.set()

    def _admit(self, request: web.Request) -> TenantState:
        """The request's tenant, holding one of its request slots; or a 401/429."""
        tenant = self.tenants.authenticate(request.headers.get("Authorization"))
        if tenant is None:
            raise errors.unauthorized()
        refusal = self.tenants.admit(tenant, time.monotonic())
        if refusal is not None:
            self._tenant_requests.labels(tenant.name, Outcome.RATE_LIMITED.value).inc()
            retry = max(1, math.ceil(refusal.retry_after_seconds))
            error = errors.rate_limited(refusal.limit, refusal.message, retry)
            raise _Refused(error, self._quota_headers(tenant))
        return tenant

    def _quota_headers(self, tenant: TenantState) -> dict[str, str]:
        """OpenAI's rate-limit headers, for the limits the tenant has."""
        quota = self.tenants.quota(tenant, time.monotonic())
        headers: dict[str, str] = {}
        for kind, limit, remaining, reset in (
            ("requests", quota.requests_limit, quota.requests_remaining,
             quota.requests_reset_seconds),
            ("tokens", quota.tokens_limit, quota.tokens_remaining, quota.tokens_reset_seconds),
        ):  # fmt: skip
            if limit is None or remaining is None or reset is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(int(remaining))
            headers[f"x-ratelimit-reset-{kind}"] = duration_text(reset)
        return headers

    def _count(self, key: ServiceKey, outcome: Outcome, tenant: TenantState | None) -> None:
        self._requests.labels(key[0], key[1], outcome.value).inc()
        if tenant is not None:
            self._tenant_requests.labels(tenant.name, outcome.value).inc()

    def _meter(self, tenant: TenantState, key: ServiceKey, usage: metering.Usage) -> None:
        self._tokens.labels(tenant.name, key[0], key[1], "prompt").inc(usage.prompt_tokens)
        self._tokens.labels(tenant.name, key[0], key[1], "completion").inc(usage.completion_tokens)
        total = usage.prompt_tokens + usage.completion_tokens
        self.tenants.charge(tenant, total, time.monotonic())

    async def _read(self, request: web.Request) -> tuple[bytes, str, bool]:
        """The body to send on, its model, and whether the gateway asked for the usage chunk."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise errors.body_too_large(limit)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise errors.body_too_large(limit) from None
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise errors.bad_request("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise errors.bad_request("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise errors.bad_request("`model` is required and must be a string.", "model")
        hide_usage = metering.ask_for_usage(body)
        if hide_usage:
            raw = json.dumps(body).encode()
        return raw, model, hide_usage

    async def _serve(
        self,
        request: web.Request,
        key: ServiceKey,
        model: str,
        body: bytes,
        headers: dict[str, str],
        hide_usage: bool,
    ) -> tuple[web.StreamResponse, Outcome, metering.Usage | None]:
        held = self.holding.must_wait(key)
        if held:
            await self._hold(key, model)
        try:
            return await self._proxy(request, key, model, body, headers, hide_usage)
        finally:
            if held:
                self.holding.finished(key)

    async def _hold(self, key: ServiceKey, model: str) -> None:
        hold = self.settings.hold
        started = time.monotonic()
        try:
            await self.holding.wait(key)
        except HoldRejectedError as error:
            what = f"`{model}`" if error.scope == "model" else "this gateway"
            raise errors.hold_full(what, hold.retry_after_seconds) from None
        except HoldTimeoutError:
            waited = time.monotonic() - started
            raise errors.hold_timeout(model, waited, hold.retry_after_seconds) from None
        except HoldCancelledError:
            raise errors.draining() from None

    async def _proxy(
        self,
        request: web.Request,
        key: ServiceKey,
        model: str,
        body: bytes,
        extra_headers: dict[str, str],
        hide_usage: bool,
    ) -> tuple[web.StreamResponse, Outcome, metering.Usage | None]:
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"
        }
        tried: set[Endpoint] = set()
        reason = "no ready endpoint"
        refused_rounds = 0
        attempts = 0
        while True:
            endpoint = balancer.pick(self.catalog.endpoints(key), tried, self._rng)
            if (
                endpoint is None
                and reason.endswith("unreachable")
                and refused_rounds < len(CONNECT_BACKOFF_SECONDS)
            ):
                # Every endpoint refused: a pod listed ready an instant before its server
                # listens, or one that just died and is not yet out of its EndpointSlice.
                await asyncio.sleep(CONNECT_BACKOFF_SECONDS[refused_rounds])
                refused_rounds += 1
                tried.clear()
                continue
            if endpoint is None:
                raise errors.upstream_unavailable(model, reason)
            if attempts:
                self._retries.labels(*key).inc()
            attempts += 1
            tried.add(endpoint)
            endpoint.begin()
            try:
                try:
                    upstream = await self._session.post(
                        endpoint.url + request.path, data=body, headers=headers
                    )
                except (aiohttp.ClientConnectionError, TimeoutError) as error:
                    reason = f"{endpoint.pod or endpoint.url} unreachable"
                    log.info("%s: %s; trying another endpoint", reason, error)
                    continue
                async with upstream:
                    if upstream.status == 503:
                        reason = f"{endpoint.pod or endpoint.url} is draining"
                        await upstream.read()
                        continue
                    return await self._relay(
                        request, upstream, endpoint, model, extra_headers, hide_usage
                    )
            finally:
                endpoint.end()

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        endpoint: Endpoint,
        model: str,
        extra_headers: dict[str, str],
        hide_usage: bool,
    ) -> tuple[web.StreamResponse, Outcome, metering.Usage | None]:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        out_headers.update(extra_headers)
        streaming = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
        if not streaming:
            try:
                payload = await upstream.read()
            except aiohttp.ClientError:
                raise errors.upstream_closed(model) from None
            endpoint.served += 1
            usage = metering.json_usage(payload) if upstream.status == 200 else None
            answer = web.Response(status=upstream.status, body=payload, headers=out_headers)
            return answer, Outcome.OK, usage
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        await response.prepare(request)
        events = metering.SseUsage(hide_usage_chunk=hide_usage)
        try:
            async for chunk in upstream.content.iter_any():
                passed = events.feed(chunk)
                if passed:
                    await response.write(passed)
        except aiohttp.ClientError:
            # The engine died mid-stream: the status is long gone, so the error is an event.
            log.info("%s closed a stream of %s mid-way", endpoint.pod or endpoint.url, model)
            await response.write(events.flush() + errors.upstream_closed(model).sse_event())
            await response.write_eof()
            return response, Outcome.UPSTREAM_CLOSED, events.usage
        rest = events.flush()
        if rest:
            await response.write(rest)
        await response.write_eof()
        endpoint.served += 1
        return response, Outcome.OK, events.usage


class _Refused(GatewayError):
    """A 429 that carries the tenant's rate-limit headers."""

    def __init__(self, error: GatewayError, headers: dict[str, str]) -> None:
        super().__init__(
            error.status,
            error.message,
            error.outcome,
            kind=error.kind,
            code=error.code,
            retry_after_seconds=error.retry_after_seconds,
        )
        self.headers = headers

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        return super().response({**self.headers, **(headers or {})})
