"""The gateway over real HTTP on 127.0.0.1, in front of the simulated vLLM engine: routing,
balancing, retries, drains, holding at zero with gradual release, and OpenAI-style errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from polling import until
from test_gateway_catalog import endpoint_slice, model_service
from test_gateway_tenants import key_secret

from thrifty_runtime.engine_server import EngineServer, settings_from_args
from thrifty_runtime.gateway.holding import HoldSettings
from thrifty_runtime.gateway.server import Gateway, GatewaySettings

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "team"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


@asynccontextmanager
async def engine(name: str = "llama", max_num_seqs: int = 64) -> AsyncIterator[EngineServer]:
    settings, _ = settings_from_args(
        ["--served-model-name", name, "--profile", "8b", "--max-num-seqs", str(max_num_seqs),
         "--port", "0", "--shutdown-timeout", "30"]
    )  # fmt: skip
    server = EngineServer(settings, process_metrics=False)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def gateway(
    anonymous: bool = True, **hold: Any
) -> AsyncIterator[tuple[Gateway, aiohttp.ClientSession]]:
    settings = GatewaySettings(
        port=0, max_body_bytes=64 * 1024, allow_anonymous=anonymous, hold=HoldSettings(**hold)
    )
    gw = Gateway(settings, seed=1)
    gw.catalog.replace_model_services(
        [model_service("chat", NAMESPACE, served="llama"), model_service("code", NAMESPACE)]
    )
    gw.synced = True
    await gw.start()
    try:
        async with aiohttp.ClientSession(base_url=gw.url) as session:
            yield gw, session
    finally:
        await gw.stop()


def route(gw: Gateway, model_service: str, *urls: str) -> None:
    """Publishes `urls` as the ready endpoints of `model_service`: one EndpointSlice each (one
    port per slice, as the engines listen on different ports of 127.0.0.1)."""
    slices = []
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        slices.append(
            endpoint_slice(
                f"{model_service}-{i}", model_service, [(parts.hostname, True)], port=parts.port
            )
        )
    others = [s for s in _slices(gw) if s["metadata"]["labels"]["thrifty.dev/model-service"]
              != model_service]  # fmt: skip
    _published[id(gw)] = others + slices
    gw.catalog.replace_slices(_published[id(gw)])


_published: dict[int, list[dict[str, Any]]] = {}


def _slices(gw: Gateway) -> list[dict[str, Any]]:
    return _published.get(id(gw), [])


def sample(gw: Gateway, name: str, **labels: str) -> float:
    return gw.registry.get_sample_value(name, labels) or 0.0


def outcomes(gw: Gateway, outcome: str, model_service: str = "chat") -> float:
    namespace = NAMESPACE if model_service else ""
    return sample(
        gw,
        "thrifty_gateway_requests_total",
        namespace=namespace,
        modelservice=model_service,
        outcome=outcome,
    )


def held(gw: Gateway, model_service: str = "chat") -> float:
    return sample(
        gw, "thrifty_router_requests_held", namespace=NAMESPACE, modelservice=model_service
    )


async def complete(
    session: aiohttp.ClientSession, model: str = "llama", max_tokens: int = 4, **extra: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"model": model, "prompt": "hello there", "max_tokens": max_tokens, **extra}
    async with session.post("/v1/completions", json=body) as response:
        return response.status, await response.json(), dict(response.headers)


def test_routes_on_model_to_that_model_services_engine_and_lists_models() -> None:
    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            llama = await stack.enter_async_context(engine("llama"))
            code = await stack.enter_async_context(engine("code"))
            gw, session = await stack.enter_async_context(gateway())
            route(gw, "chat", llama.url)
            route(gw, "code", code.url)
            status, body, _ = await complete(session, "llama")
            assert status == 200 and body["model"] == "llama" and body["usage"]["total_tokens"]
            status, body, _ = await complete(session, "code")
            assert status == 200 and body["model"] == "code"
            async with session.get("/v1/models") as response:
                listing = await response.json()
            assert [(m["id"], m["ready_replicas"]) for m in listing["data"]] == [
                ("code", 1),
                ("llama", 1),
            ]
            assert outcomes(gw, "ok") == 1 and outcomes(gw, "ok", "code") == 1

    run(scenario)


def test_streams_pass_through_event_by_event() -> None:
    async def scenario() -> None:
        async with engine() as llama, gateway() as (gw, session):
            route(gw, "chat", llama.url)
            body = {
                "model": "llama",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 12,
                "stream": True,
            }
            events: list[str] = []
            async with session.post("/v1/chat/completions", json=body) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
                async for line in response.content:
                    if line.startswith(b"data: "):
                        events.append(line[6:].decode().strip())
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
            assert outcomes(gw, "ok") == 1

    run(scenario)


def test_bad_input_gets_openai_errors_with_the_right_status_and_is_counted() -> None:
    async def scenario() -> None:
        async with gateway() as (gw, session):

            async def post(data: bytes) -> tuple[int, dict[str, Any]]:
                headers = {"Content-Type": "application/json"}
                async with session.post("/v1/completions", data=data, headers=headers) as r:
                    return r.status, await r.json()

            status, body = await post(b"{not json")
            assert status == 400 and body["error"]["type"] == "invalid_request_error"
            status, body = await post(b"[1, 2]")
            assert status == 400
            status, body = await post(json.dumps({"prompt": "x"}).encode())
            assert status == 400 and body["error"]["param"] == "model"
            status, body = await post(json.dumps({"model": "gpt-9", "prompt": "x"}).encode())
            assert status == 404 and body["error"]["code"] == "model_not_found"
            big = json.dumps({"model": "llama", "prompt": "x" * 100_000}).encode()
            status, body = await post(big)
            assert status == 413 and body["error"]["code"] == "request_too_large"
            async with session.post("/v1/embeddings", json={"model": "llama"}) as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "unknown_url"
            assert outcomes(gw, "bad_request", "") == 3
            assert outcomes(gw, "model_not_found", "") == 1
            assert outcomes(gw, "body_too_large", "") == 1

    run(scenario)


def test_balances_on_requests_in_flight() -> None:
    async def scenario() -> None:
        async with engine() as first, engine() as second, gateway() as (gw, session):
            route(gw, "chat", first.url, second.url)
            results = await asyncio.gather(*(complete(session, max_tokens=40) for _ in range(16)))
            assert all(status == 200 for status, _, _ in results)
            served = sorted(e.served for e in gw.catalog.endpoints(("team", "chat")))
            assert served[0] >= 6, served  # least-loaded keeps both busy, not 16-0 or 13-3

    run(scenario)


def test_a_refused_connection_is_retried_on_another_endpoint() -> None:
    async def scenario() -> None:
        async with engine() as live, engine() as doomed, gateway() as (gw, session):
            dead_url = doomed.url
            await doomed.stop()  # the port now refuses connections
            route(gw, "chat", dead_url, live.url)
            results = await asyncio.gather(*(complete(session) for _ in range(8)))
            assert [status for status, _, _ in results] == [200] * 8
            retries = sample(
                gw, "thrifty_gateway_retries_total", namespace="team", modelservice="chat"
            )
            assert retries >= 1
            route(gw, "chat", dead_url)
            status, body, headers = await complete(session)
            assert status == 503 and body["error"]["code"] == "model_unavailable"
            assert headers["Retry-After"] == "1"
            assert outcomes(gw, "upstream_unavailable") == 1

    run(scenario)


def test_a_draining_engine_is_skipped_and_alone_gives_a_clean_503() -> None:
    async def scenario() -> None:
        async with engine() as draining, engine() as live, gateway() as (gw, session):
            route(gw, "chat", draining.url, live.url)
            draining.draining = True  # what SIGTERM with --shutdown-timeout does: 503 to new work
            results = await asyncio.gather(*(complete(session) for _ in range(8)))
            assert [status for status, _, _ in results] == [200] * 8
            assert all(e.served == 0 for e in gw.catalog.endpoints(("team", "chat"))
                       if e.url == draining.url)  # fmt: skip
            route(gw, "chat", draining.url)
            status, body, headers = await complete(session)
            assert status == 503 and "draining" in body["error"]["message"]
            assert "Retry-After" in headers

    run(scenario)


def test_held_at_zero_until_an_endpoint_is_ready_and_counted_in_the_gauge() -> None:
    async def scenario() -> None:
        async with engine() as llama, gateway() as (gw, session):
            assert held(gw) == 0  # the series exists from the start, at zero
            waiting = asyncio.gather(*(complete(session) for _ in range(3)))
            await until(lambda: held(gw) == 3)
            text = await (await session.get("/metrics")).text()
            assert 'thrifty_router_requests_held{modelservice="chat",namespace="team"} 3.0' in text
            route(gw, "chat", llama.url)
            results = await waiting
            assert [status for status, _, _ in results] == [200] * 3
            assert held(gw) == 0

    run(scenario)


def test_held_requests_are_released_gradually_not_all_at_once() -> None:
    async def scenario() -> None:
        async with engine() as llama, gateway(release_per_endpoint=2) as (gw, session):
            waiting = asyncio.gather(*(complete(session, max_tokens=30) for _ in range(8)))
            await until(lambda: held(gw) == 8)
            route(gw, "chat", llama.url)
            endpoint = gw.catalog.endpoints(("team", "chat"))[0]
            await until(lambda: endpoint.in_flight == 2 and held(gw) == 6)
            results = await waiting
            assert [status for status, _, _ in results] == [200] * 8
            assert endpoint.peak_in_flight == 2
            # The backlog is gone: requests go straight to the endpoints again.
            await asyncio.gather(*(complete(session, max_tokens=30) for _ in range(4)))
            assert endpoint.peak_in_flight == 4

    run(scenario)


def test_holding_is_bounded_per_model_in_total_and_in_time() -> None:
    async def scenario() -> None:
        async with gateway(per_service_cap=2, total_cap=3, timeout_seconds=1.0) as (gw, session):
            first = asyncio.gather(*(complete(session) for _ in range(2)))
            await until(lambda: held(gw) == 2)
            status, body, headers = await complete(session)
            assert status == 429 and body["error"]["type"] == "rate_limit_error"
            assert headers["Retry-After"] == "10"
            other = asyncio.ensure_future(complete(session, "code"))
            await until(lambda: held(gw, "code") == 1)
            status, body, _ = await complete(session, "code")
            assert status == 429 and "this gateway" in body["error"]["message"]
            results = [*(await first), await other]
            assert [status for status, _, _ in results] == [503] * 3
            assert all(b["error"]["code"] == "model_unavailable" for _, b, _ in results)
            assert all(h["Retry-After"] == "10" for _, _, h in results)
            assert held(gw) == 0 and gw.holding.total == 0
            assert outcomes(gw, "hold_full") == 1 and outcomes(gw, "hold_timeout") == 2

    run(scenario)


def test_a_client_that_leaves_while_held_is_no_longer_counted() -> None:
    async def scenario() -> None:
        async with gateway() as (gw, session):
            leaving = asyncio.ensure_future(complete(session))
            await until(lambda: held(gw) == 1)
            leaving.cancel()
            await until(lambda: held(gw) == 0 and outcomes(gw, "client_closed") == 1)
            assert gw.holding.total == 0

    run(scenario)


def test_a_draining_gateway_refuses_new_and_held_requests_and_finishes_the_rest() -> None:
    async def scenario() -> None:
        async with engine("code") as code, gateway() as (gw, session):
            route(gw, "code", code.url)  # serves "code"; "llama" stays at zero
            in_flight = asyncio.ensure_future(complete(session, "code", max_tokens=40))
            held_one = asyncio.ensure_future(complete(session, "llama"))
            await until(lambda: held(gw) == 1 and gw.catalog.endpoints(("team", "code"))[0]
                        .in_flight == 1)  # fmt: skip
            drained = asyncio.ensure_future(gw.drain(30))
            status, body, headers = await held_one
            assert status == 503 and body["error"]["code"] == "gateway_draining"
            status, _, headers = await complete(session, "code")
            assert status == 503 and headers["Retry-After"] == "1"
            assert (await session.get("/readyz")).status == 503
            assert (await in_flight)[0] == 200
            assert await drained

    run(scenario)


def test_an_engine_dying_mid_stream_ends_the_stream_with_an_error_event() -> None:
    async def dying(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": [{"text": " the"}]}\n\n')
        assert request.transport is not None
        request.transport.close()  # the engine process dies
        return response

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", dying)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            async with gateway() as (gw, session):
                route(gw, "chat", f"http://127.0.0.1:{port}")
                body = {"model": "llama", "prompt": "x", "stream": True}
                async with session.post("/v1/completions", json=body) as response:
                    assert response.status == 200
                    text = (await response.read()).decode()
                assert text.startswith('data: {"choices"')
                last = json.loads(text.strip().split("\n\n")[-1].removeprefix("data: "))
                assert last["error"]["code"] == "upstream_closed"
                assert outcomes(gw, "upstream_closed") == 1
        finally:
            await runner.cleanup()

    run(scenario)


def test_an_endpoint_listed_before_its_server_listens_is_reached_once_it_does() -> None:
    async def scenario() -> None:
        async with gateway() as (gw, session):
            async with engine() as early:
                url = early.url
            route(gw, "chat", url)  # listed ready; nothing listens there yet
            waiting = asyncio.ensure_future(complete(session))
            await until(
                lambda: (
                    sample(
                        gw, "thrifty_gateway_retries_total", namespace="team", modelservice="chat"
                    )
                    >= 1
                )
            )  # refused at least twice: waiting for the next try
            assert not waiting.done()
            settings, _ = settings_from_args(
                ["--served-model-name", "llama", "--port", str(urlsplit(url).port)]
            )
            late = EngineServer(settings, process_metrics=False)
            await late.start()
            try:
                status, _, _ = await waiting
                assert status == 200
            finally:
                await late.stop()

    run(scenario)


def tokens(gw: Gateway, tenant: str, kind: str) -> float:
    return sample(
        gw,
        "thrifty_gateway_tokens_total",
        tenant=tenant,
        namespace=NAMESPACE,
        modelservice="chat",
        kind=kind,
    )


def test_tenants_authenticate_by_key_and_wrong_or_revoked_keys_get_401(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    secret = "sk-alpha-not-to-be-logged"

    async def scenario() -> None:
        async with engine() as llama, gateway(anonymous=False) as (gw, session):
            route(gw, "chat", llama.url)
            gw.tenants.replace_secrets([key_secret("alpha-key", "alpha", secret)])
            status, body, _ = await complete(session)
            assert status == 401 and body["error"]["code"] == "invalid_api_key"
            auth = {"Authorization": f"Bearer {secret}"}
            body = {"model": "llama", "prompt": "hi there", "max_tokens": 5}
            async with session.post("/v1/completions", json=body, headers=auth) as response:
                assert response.status == 200
                usage = (await response.json())["usage"]
            assert tokens(gw, "alpha", "prompt") == usage["prompt_tokens"]
            assert tokens(gw, "alpha", "completion") == usage["completion_tokens"] == 5
            wrong = {"Authorization": "Bearer sk-wrong"}
            async with session.post("/v1/completions", json=body, headers=wrong) as response:
                assert response.status == 401
            gw.tenants.delete_secret(key_secret("alpha-key", "alpha", secret))
            async with session.post("/v1/completions", json=body, headers=auth) as response:
                assert response.status == 401
            assert outcomes(gw, "unauthorized", "") == 3

    run(scenario)
    assert secret not in caplog.text


def test_streams_are_metered_with_the_usage_the_gateway_asked_for_and_hid() -> None:
    async def scenario() -> None:
        async with engine() as llama, gateway() as (gw, session):
            route(gw, "chat", llama.url)
            for include_usage in (False, True):
                body: dict[str, Any] = {
                    "model": "llama",
                    "messages": [{"role": "user", "content": "one two three"}],
                    "max_tokens": 9,
                    "stream": True,
                }
                if include_usage:
                    body["stream_options"] = {"include_usage": True}
                async with session.post("/v1/chat/completions", json=body) as response:
                    text = (await response.read()).decode()
                assert ('"usage"' in text) is include_usage, text
                assert text.endswith("data: [DONE]\n\n")
            assert tokens(gw, "anonymous", "completion") == 18
            assert tokens(gw, "anonymous", "prompt") == 2 * (4 + 3)

    run(scenario)


def test_tenant_limits_give_openai_429s_with_rate_limit_headers() -> None:
    async def scenario() -> None:
        async with engine() as llama, gateway(anonymous=False) as (gw, session):
            route(gw, "chat", llama.url)
            gw.tenants.replace_secrets(
                [key_secret("k", "beta", "sk-beta", requests_per_minute="2")]
            )
            auth = {"Authorization": "Bearer sk-beta"}
            body = {"model": "llama", "prompt": "hi", "max_tokens": 2}
            statuses, headers = [], []
            for _ in range(3):
                async with session.post("/v1/completions", json=body, headers=auth) as r:
                    statuses.append(r.status)
                    headers.append(dict(r.headers))
                    last = await r.json()
            assert statuses == [200, 200, 429]
            assert headers[0]["x-ratelimit-limit-requests"] == "2"
            assert headers[0]["x-ratelimit-remaining-requests"] == "1"
            assert headers[2]["x-ratelimit-remaining-requests"] == "0"
            assert int(headers[2]["Retry-After"]) >= 29
            assert last["error"]["code"] == "rate_limit_exceeded"
            assert last["error"]["type"] == "requests"
            limited = sample(
                gw, "thrifty_gateway_tenant_requests_total", tenant="beta", outcome="rate_limited"
            )
            assert limited == 1

    run(scenario)


def test_reference_prices_are_exported_beside_the_tokens() -> None:
    async def scenario() -> None:
        async with gateway() as (gw, _):
            priced = model_service("chat", NAMESPACE, served="llama")
            priced["spec"]["costTarget"] = {
                "referenceDollarsPerMillionTokens": {"input": 0.5, "output": 1.5}
            }
            gw.catalog.put_model_service(priced)
            labels = {"namespace": NAMESPACE, "modelservice": "chat"}
            name = "thrifty_gateway_reference_dollars_per_million_tokens"
            assert sample(gw, name, **labels, kind="prompt") == 0.5
            assert sample(gw, name, **labels, kind="completion") == 1.5
            gw.catalog.put_model_service(model_service("chat", NAMESPACE, served="llama"))
            assert gw.registry.get_sample_value(name, {**labels, "kind": "prompt"}) is None

    run(scenario)


def test_the_load_generator_replays_through_the_gateway_as_a_tenant() -> None:
    from thrifty_runtime import loadgen

    async def scenario() -> None:
        async with engine() as llama, gateway(anonymous=False) as (gw, _):
            route(gw, "chat", llama.url)
            gw.tenants.replace_secrets([key_secret("k", "delta", "sk-delta")])
            planned = [loadgen.PlannedRequest(0.01 * i, 10, 3) for i in range(5)]
            report = await loadgen.replay(
                f"{gw.url}/v1/completions",
                planned,
                model="llama",
                headers={"Authorization": "Bearer sk-delta"},
            )
            assert report.statuses == {200: 5}
            assert tokens(gw, "delta", "prompt") == 50
            assert tokens(gw, "delta", "completion") == 15

    run(scenario)


def test_a_client_leaving_mid_stream_is_counted_and_frees_the_engine() -> None:
    async def scenario() -> None:
        async with engine() as llama, gateway() as (gw, session):
            route(gw, "chat", llama.url)
            endpoint = gw.catalog.endpoints(("team", "chat"))[0]
            body = {"model": "llama", "prompt": "hi", "max_tokens": 400, "stream": True}
            response = await session.post("/v1/completions", json=body)
            assert response.status == 200
            await response.content.readline()  # the stream has started
            assert endpoint.in_flight == 1
            response.close()  # the client hangs up mid-stream
            await until(lambda: outcomes(gw, "client_closed") == 1 and endpoint.in_flight == 0)
            driver = llama.driver
            assert driver is not None
            await until(lambda: driver.in_flight == 0)  # the engine aborted it too

    run(scenario)
