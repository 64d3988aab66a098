"""The load generator replays the planned slice of a trace, bounded, with exact token counts."""

from __future__ import annotations

import asyncio

import pytest

from thrifty.sim.traces import Request, Trace
from thrifty_runtime.engine_server import EngineServer, settings_from_args
from thrifty_runtime.loadgen import Limits, build_parser, plan, prompt_ids, replay

pytestmark = pytest.mark.timeout(120)

TRACE = Trace(
    name="t",
    requests=tuple(Request(0.1 * i, 100 + i, 20 + i) for i in range(50)),
    duration_seconds=5.0,
    attribution="test",
)


def test_plan_is_bounded_by_count_time_and_token_caps() -> None:
    assert len(plan(TRACE, Limits(max_requests=7))) == 7
    timed = plan(TRACE, Limits(max_seconds=1.0))
    assert len(timed) == 10 and timed[-1].send_at_seconds < 1.0
    capped = plan(TRACE, Limits(max_prompt_tokens=120, max_output_tokens=30))
    assert max(r.prompt_tokens for r in capped) == 120
    assert max(r.max_tokens for r in capped) == 30
    assert capped[0].prompt_tokens == 100 and capped[0].max_tokens == 20


def test_prompt_ids_stay_inside_the_tiny_vocabulary() -> None:
    ids = prompt_ids(5000, seed=3)
    assert len(ids) == 5000 and min(ids) >= 3 and max(ids) < 2048


def test_replay_delivers_every_planned_token() -> None:
    async def scenario() -> None:
        settings, _ = settings_from_args(["--served-model-name", "m", "--port", "0"])
        engine = EngineServer(settings, process_metrics=False)
        await engine.start()
        try:
            requests = plan(TRACE, Limits(max_requests=20))
            report = await replay(f"{engine.url}/v1/completions", requests, model="m")
        finally:
            await engine.stop()
        assert report.sent == 20 and report.ok == 20 and not report.errors
        assert report.completion_tokens == sum(r.max_tokens for r in requests)
        # Arrivals are honoured: the last request left about 1.9 s after the first.
        assert report.wall_seconds >= requests[-1].send_at_seconds
        assert report.summary()["latency_p95_seconds"] is not None

    asyncio.run(scenario())


def test_the_command_line_targets_a_gateway_and_a_model() -> None:
    args = build_parser().parse_args(["--gateway", "http://127.0.0.1:1", "--model", "chat"])
    assert (args.gateway, args.model) == ("http://127.0.0.1:1", "chat")
    for incomplete in (["--gateway", "http://127.0.0.1:1"], ["--model", "chat"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(incomplete)
