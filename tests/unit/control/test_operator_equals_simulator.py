"""The decisions the benchmark proves are the decisions the operator makes.

The same series of signals goes through the operator's fleet pass (state kept in memory, writes to
a fake API server, a restart half-way that resumes from the status checkpoint) and through the
simulator's call of the same plan (state handed back every tick). Both must decide the same
replica counts for the same reasons at every tick.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from test_autoscaler_pass import NS, FakeCluster, FakeEvents, ms_body

from thrifty.adapters.operator_metrics import OperatorMetrics
from thrifty.autoscaler import plan
from thrifty.autoscaler.observe import ObserveSettings
from thrifty.autoscaler.world import ServiceKey, SignalsReading
from thrifty.control.fleet import FleetPass
from thrifty.control.policies import Registry
from thrifty.policy import types
from thrifty.policy.planner import ThriftyPolicy

START = datetime(2026, 3, 1, tzinfo=UTC)
TICKS = 120


def signals_at(tick: int) -> types.Signals:
    """A day's shape in half an hour: a swell, a burst with a queue, then a long quiet stretch
    with the same numbers pass after pass (nothing visible changes, so nothing is written: the
    policy's state lives in memory only)."""
    load = 1.0 + 0.8 * math.sin(tick / 12.0) if tick < 50 else 0.3
    waiting = 30.0 if 40 <= tick < 46 else 0.0
    return types.Signals(
        requests_waiting=waiting,
        requests_running=20.0 * load,
        kv_cache_usage=min(0.95, 0.4 * load),
        prompt_tokens_per_second=2000.0 * load,
        generation_tokens_per_second=600.0 * load,
        requests_per_second=3.0 * load,
        ttft_p95_seconds=0.4 + waiting / 20,
        sample_age_seconds=5.0,
    )


class SeriesSignals:
    def __init__(self) -> None:
        self.tick = 0

    async def read_all(
        self, keys: Iterable[ServiceKey], per_pool: bool = True
    ) -> dict[ServiceKey, SignalsReading]:
        return {key: SignalsReading(signals_at(self.tick), "read") for key in keys}


def fleet_pass(cluster: FakeCluster, source: SeriesSignals) -> FleetPass:
    return FleetPass(
        cluster=cluster,
        events=FakeEvents(),
        prometheus=source,
        metrics=OperatorMetrics(),
        observe_settings=ObserveSettings(),
        policies=Registry(),
    )


Seen = list[tuple[int, str, dict[str, types.JSONValue]]]
"""Per tick: replicas, reason, and the state the policy carries to the next tick."""


def operator_decisions(restart_at: int | None) -> Seen:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    source = SeriesSignals()
    scaler = fleet_pass(cluster, source)
    seen = []
    for tick in range(TICKS):
        if tick == restart_at:
            asyncio.run(scaler.flush())  # SIGTERM: the state goes to status
            scaler = fleet_pass(cluster, source)  # a new process: nothing in memory
        source.tick = tick
        now = START + timedelta(seconds=15 * tick)
        plans = asyncio.run(scaler.run_once(cluster.world(), now))
        decision = plans[0].decided.decision
        assert decision is not None
        seen.append((decision.replicas, decision.reason.value, dict(decision.state)))
    return seen


def simulator_decisions() -> Seen:
    cluster = FakeCluster([ms_body("chat", replicas=2)])
    state: types.PolicyState = {}
    seen = []
    for tick in range(TICKS):
        world = cluster.world()
        key = ServiceKey(NS, "chat")
        now = (START + timedelta(seconds=15 * tick)).timestamp()
        readings = {key: SignalsReading(signals_at(tick), "read")}
        uid = world.services[0].uid
        chooser = plan.Fixed(ThriftyPolicy())
        one = plan.decide(world, readings, {uid: state}, now, ObserveSettings(), chooser)
        decision = one[0].decision
        assert decision is not None
        state = one[0].state
        cluster.bodies["chat"]["spec"]["replicas"] = decision.replicas
        seen.append((decision.replicas, decision.reason.value, dict(decision.state)))
    return seen


def test_the_operator_decides_what_the_simulator_decides() -> None:
    simulated = simulator_decisions()
    assert len({replicas for replicas, _, _ in simulated}) > 1, "the series must make it scale"
    assert operator_decisions(restart_at=None) == simulated


def test_a_restart_after_a_checkpoint_changes_no_decision() -> None:
    assert operator_decisions(restart_at=TICKS // 2) == simulator_decisions()
