"""Invariants of the planner (hypothesis): on every tick over generated observations and carried
states, and over many ticks against a simple closed-loop fleet."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import pytest
from hypothesis import Phase, assume, example, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from thrifty import cost
from thrifty.policy import common, types
from thrifty.policy.hpa import HpaPolicy
from thrifty.policy.kpa import KpaPolicy
from thrifty.policy.planner import ThriftyPolicy
from thrifty.policy.planner.state import MAX_HISTORY, Source, State, load
from thrifty.policy.static import StaticPolicy
from thrifty.sim.observe import REQUEST_LATENCY_BUCKETS_SECONDS, TTFT_BUCKETS_SECONDS

POLICY = ThriftyPolicy()
rates = st.floats(min_value=0.0, max_value=50_000.0, allow_nan=False)
counts = st.floats(min_value=0.0, max_value=2_000.0, allow_nan=False)
times = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False)
fractions = st.floats(min_value=0.0, max_value=0.999)
"""Of a replica: replicas of several speeds count in reference replicas, rounded down."""


@st.composite
def signal_values(draw: st.DrawFn) -> types.Signals:
    return types.Signals(
        requests_waiting=draw(st.one_of(st.just(0.0), counts)),
        requests_running=draw(st.one_of(st.just(0.0), counts)),
        kv_cache_usage=draw(st.floats(min_value=0.0, max_value=1.0)),
        prompt_tokens_per_second=draw(st.one_of(st.just(0.0), rates)),
        generation_tokens_per_second=draw(st.one_of(st.just(0.0), rates)),
        requests_per_second=draw(
            st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=500.0))
        ),
        ttft_p95_seconds=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=60.0))),
        sample_age_seconds=draw(st.floats(min_value=0.0, max_value=30.0)),
        requests_waiting_mean=draw(st.one_of(st.none(), counts)),
        requests_running_mean=draw(st.one_of(st.none(), counts)),
        tokens_per_finished_request=draw(_maybe(st.floats(min_value=1.0, max_value=200_000.0))),
        ttft_buckets=draw(st.one_of(st.just(()), histograms())),
        queue_time_buckets=draw(st.one_of(st.just(()), histograms())),
        prefill_time_buckets=draw(st.one_of(st.just(()), histograms())),
    )


@st.composite
def histograms(draw: st.DrawFn) -> tuple[tuple[float, float], ...]:
    """Cumulative TTFT buckets as Prometheus returns them: ascending bounds, +Inf last."""
    bounds = sorted(set(draw(st.lists(st.floats(0.01, 100.0), min_size=1, max_size=8))))
    steps = draw(st.lists(counts, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    total, cumulative = 0.0, []
    for bound, step in zip([*bounds, math.inf], steps, strict=True):
        total += step
        cumulative.append((bound, total))
    return tuple(cumulative)


@st.composite
def policy_specs(draw: st.DrawFn) -> types.PolicySpec:
    min_replicas = draw(st.integers(min_value=0, max_value=4))
    zero = min_replicas == 0 and draw(st.booleans())
    return types.PolicySpec(
        min_replicas=min_replicas,
        max_replicas=draw(st.integers(min_value=max(min_replicas, 1), max_value=40)),
        queue_target_per_replica=draw(st.floats(min_value=0.5, max_value=200.0)),
        scale_down_delay_seconds=draw(st.sampled_from([0.0, 60.0, 300.0])),
        scale_to_zero_idle_seconds=draw(st.sampled_from([0.0, 300.0])) if zero else None,
        ttft_target_seconds=draw(st.one_of(st.none(), st.floats(min_value=0.1, max_value=10.0))),
        ttft_target_quantile=draw(st.sampled_from([0.5, 0.9, 0.95, 0.99])),
        max_dollars_per_hour=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=200.0))),
        max_dollars_per_million_tokens=draw(
            st.one_of(st.none(), st.floats(min_value=0.01, max_value=10.0))
        ),
        enforcement=draw(st.sampled_from(list(types.Enforcement))),
        soft_overrun_fraction=draw(st.floats(min_value=0.0, max_value=0.5)),
        cold_start_seconds=draw(st.floats(min_value=10.0, max_value=600.0)),
        staleness_limit_seconds=draw(st.sampled_from([30.0, 60.0, 120.0])),
        capacity_tokens_per_second_per_replica=draw(
            st.one_of(st.none(), st.floats(min_value=100.0, max_value=20_000.0))
        ),
        max_num_seqs_per_replica=draw(st.one_of(st.none(), st.integers(1, 1024))),
        replica_shape=draw(st.sampled_from(["pool/a", "pool/b"])),
    )


@st.composite
def observations(draw: st.DrawFn) -> types.Observation:
    desired = draw(st.integers(min_value=0, max_value=40))
    ready = draw(st.integers(min_value=0, max_value=desired))
    starting = draw(st.integers(min_value=0, max_value=desired - ready))
    return types.Observation(
        now_seconds=draw(st.floats(min_value=10_000.0, max_value=20_000.0)),
        signals=draw(st.one_of(st.none(), signal_values())),
        replicas=types.ReplicaCounts(
            desired=desired,
            ready=ready,
            starting=starting,
            oldest_starting_seconds=draw(times) if starting else 0.0,
            draining=draw(st.integers(min_value=0, max_value=8)),
            ready_units=draw(_maybe(fractions.map(lambda part: ready + part))),
        ),
        pool=types.PoolView(
            name="pool",
            price_per_gpu_hour=draw(st.floats(min_value=0.5, max_value=10.0)),
            gpus_per_replica=draw(st.sampled_from([1, 2, 4, 8])),
            free_gpus=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=64))),
        ),
        spec=draw(policy_specs()),
        budget_dollars_per_hour_available=draw(
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=200.0))
        ),
    )


def _maybe(value: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), value)


past = st.floats(min_value=0.0, max_value=10_000.0)


def _series(values: st.SearchStrategy[float]) -> st.SearchStrategy[tuple[tuple[float, float], ...]]:
    return st.lists(st.tuples(past, values), max_size=MAX_HISTORY).map(
        lambda pairs: tuple(sorted(pairs))
    )


@st.composite
def planner_states(draw: st.DrawFn) -> types.PolicyState:
    """Every field the planner reads, each possibly unknown, as status would carry it."""
    state = State(
        shape=draw(st.sampled_from(["", "pool/a", "pool/b"])),
        capacity=draw(_maybe(st.floats(min_value=1.0, max_value=20_000.0))),
        capacity_source=draw(
            st.sampled_from(["", Source.PRIOR, Source.SATURATED, Source.LOWER_BOUND])
        ),
        base_ttft=draw(_maybe(st.floats(min_value=0.001, max_value=30.0))),
        queue_scale=draw(_maybe(st.floats(min_value=0.0, max_value=30.0))),
        tokens_per_request=draw(_maybe(st.floats(min_value=1.0, max_value=20_000.0))),
        headroom=draw(st.floats(min_value=-0.5, max_value=1.0)),
        first_token_rate=draw(_maybe(st.floats(min_value=0.0, max_value=500.0))),
        late_token_rate=draw(_maybe(st.floats(min_value=0.0, max_value=500.0))),
        demand=draw(_series(rates)),
        arrivals=draw(_series(rates)),
        needs=draw(_series(st.integers(0, 40).map(float))),
        speed=draw(
            st.lists(st.tuples(rates, st.floats(0.1, 1_000.0)), max_size=MAX_HISTORY).map(tuple)
        ),
        batch_capacity=draw(_maybe(st.floats(min_value=1.0, max_value=100_000.0))),
        batch_error=draw(_maybe(st.floats(min_value=0.0, max_value=5.0))),
        served_max=draw(_maybe(st.floats(min_value=1.0, max_value=20_000.0))),
        saturated_batch=draw(_maybe(st.floats(min_value=0.1, max_value=1_024.0))),
        ready=draw(st.integers(min_value=-1, max_value=40)),
        ready_since=draw(_maybe(past)),
        grew_at=draw(_maybe(past)),
        fell_at=draw(_maybe(past)),
        last_seen=draw(_maybe(past)),
        waiting=draw(_maybe(counts)),
        queue_growth=draw(st.floats(min_value=0.0, max_value=100.0)),
        saturated_at=draw(_maybe(past)),
        missed_replicas=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=40))),
        missed_demand=draw(_maybe(rates)),
        missed_at=draw(_maybe(past)),
        below_since=draw(_maybe(past)),
        idle_since=draw(_maybe(past)),
        last_scale_up=draw(_maybe(past)),
        last_scale_down=draw(_maybe(past)),
    )
    carried: types.PolicyState = json.loads(json.dumps(state.to_json()))
    return carried


carried_states: st.SearchStrategy[types.PolicyState] = st.one_of(st.just({}), planner_states())


def _defaulted(cls: type[Any]) -> dict[str, Any]:
    """The fields a generator could leave out without an error (those with a default), but the
    state's version, which must not vary."""
    found: dict[str, Any] = {}
    for item in fields(cls):
        if item.default is not MISSING:
            found[item.name] = item.default
        elif item.default_factory is not MISSING:
            found[item.name] = item.default_factory()
    found.pop("version", None)
    return found


GENERATED: list[tuple[st.SearchStrategy[Any], type[Any]]] = [
    (signal_values(), types.Signals),
    (observations().map(lambda observation: observation.replicas), types.ReplicaCounts),
    (observations(), types.Observation),
    (policy_specs(), types.PolicySpec),
    (planner_states().map(load), State),
]


@pytest.mark.parametrize(("strategy", "cls"), GENERATED, ids=[cls.__name__ for _, cls in GENERATED])
def test_the_generators_draw_every_field_the_policy_reads(
    strategy: st.SearchStrategy[Any], cls: type[Any]
) -> None:
    # A field added to the policy's inputs with a default would otherwise never vary in the
    # properties above: each must take a value other than its default in some example.
    for name, default in _defaulted(cls).items():

        def varied(value: Any, name: str = name, default: Any = default) -> bool:
            return bool(getattr(value, name) != default)

        try:
            find(
                strategy,
                varied,
                settings=settings(max_examples=500, database=None, phases=[Phase.generate]),
            )
        except NoSuchExample:
            pytest.fail(f"{cls.__name__}.{name} is never drawn other than {default!r}")


def _hourly_cap(observation: types.Observation) -> float | None:
    """The $/hour cap as documented: Soft spec caps stretched by their overrun, budgets Hard."""
    spec = observation.spec
    caps: list[float] = []
    if spec.max_dollars_per_hour is not None:
        stretch = (
            1.0 + spec.soft_overrun_fraction if spec.enforcement == types.Enforcement.SOFT else 1.0
        )
        caps.append(spec.max_dollars_per_hour * stretch)
    if observation.budget_dollars_per_hour_available is not None:
        caps.append(observation.budget_dollars_per_hour_available)
    return min(caps) if caps else None


def _usable(observation: types.Observation) -> bool:
    signals = observation.signals
    return (
        signals is not None
        and signals.sample_age_seconds <= observation.spec.staleness_limit_seconds
    )


@settings(max_examples=200, deadline=None)
@given(observation=observations(), state=carried_states)
def test_bounds_always_hold(observation: types.Observation, state: types.PolicyState) -> None:
    decision = POLICY.decide(observation, state)
    assert observation.spec.min_replicas <= decision.replicas <= observation.spec.max_replicas


@settings(max_examples=200, deadline=None)
@given(observation=observations(), state=carried_states)
def test_dollars_per_hour_cap_is_never_passed_unless_min_replicas_forces_it(
    observation: types.Observation, state: types.PolicyState
) -> None:
    cap = _hourly_cap(observation)
    if cap is None:
        return
    decision = POLICY.decide(observation, state)
    if decision.replicas > observation.spec.min_replicas:
        assert decision.projected_dollars_per_hour <= cap + 1e-9
    else:
        assert decision.replicas == observation.spec.min_replicas or (
            decision.projected_dollars_per_hour <= cap + 1e-9
        )


@settings(max_examples=300, deadline=None)
@given(observation=observations(), state=carried_states)
def test_new_replicas_and_draining_ones_stay_within_the_hourly_cap(
    observation: types.Observation, state: types.PolicyState
) -> None:
    # Draining replicas hold GPUs until gone: ordering more may not pass the cap with them.
    cap = _hourly_cap(observation)
    decision = POLICY.decide(observation, state)
    grows = decision.replicas > max(observation.replicas.desired, observation.spec.min_replicas)
    if cap is None or not grows:
        return
    replica_cost = common.replica_cost(observation.pool)
    spend = (decision.replicas + observation.replicas.draining) * replica_cost
    assert spend <= cap + 1e-9


@settings(max_examples=300, deadline=None)
@given(observation=observations(), state=carried_states)
def test_a_scale_down_never_removes_capacity_the_running_load_needs(
    observation: types.Observation, state: types.PolicyState
) -> None:
    # Only the user's caps and bounds may cut deeper; demand estimates may not.
    signals = observation.signals
    if signals is None or not _usable(observation) or observation.replicas.ready == 0:
        return
    decision = POLICY.decide(observation, state)
    at_max = decision.replicas >= observation.spec.max_replicas  # a lowered max_replicas cuts
    user_cut = decision.reason in (types.Reason.BUDGET_LIMITED, types.Reason.BOUNDS)
    to_zero = decision.reason == types.Reason.SCALE_TO_ZERO
    if at_max or user_cut or to_zero or decision.replicas >= observation.replicas.desired:
        return
    fraction = POLICY.scale_down_load_fraction
    batch = POLICY.batch_limit(observation.spec.max_num_seqs_per_replica)
    per_replica = signals.requests_running / decision.replicas
    assert per_replica <= batch * fraction + 1e-9
    kv_after = signals.kv_cache_usage * observation.replicas.ready / decision.replicas
    assert kv_after <= POLICY.full_kv_cache * fraction + 1e-9


@settings(max_examples=200, deadline=None)
@given(observation=observations(), state=carried_states)
def test_dollars_per_million_tokens_cap_holds_above_the_smallest_serving_fleet(
    observation: types.Observation, state: types.PolicyState
) -> None:
    spec = observation.spec
    if spec.max_dollars_per_million_tokens is None or not _usable(observation):
        return
    assert observation.signals is not None
    stretch = (
        1.0 + spec.soft_overrun_fraction if spec.enforcement == types.Enforcement.SOFT else 1.0
    )
    cap = spec.max_dollars_per_million_tokens * stretch
    decision = POLICY.decide(observation, state)
    projected = decision.projected_dollars_per_million_tokens
    busy = observation.signals.requests_waiting > 0 or observation.signals.requests_running > 0
    smallest = max(spec.min_replicas, 1 if busy else 0)
    if projected is not None and decision.replicas > smallest:
        assert projected <= cap * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    observation=observations(),
    state=carried_states,
    waiting=st.floats(min_value=0.5, max_value=2000.0),
)
def test_no_scale_to_zero_while_requests_wait(
    observation: types.Observation, state: types.PolicyState, waiting: float
) -> None:
    if observation.signals is None or observation.replicas.desired == 0:
        return
    observation = replace(
        observation, signals=replace(observation.signals, requests_waiting=waiting)
    )
    if not _usable(observation):
        return
    cap = _hourly_cap(observation)
    replica_cost = cost.replica_dollars_per_hour(
        observation.pool.gpus_per_replica, observation.pool.price_per_gpu_hour
    )
    if cap is not None and cost.replicas_within_dollars_per_hour(cap, replica_cost) < 1:
        return  # a Hard budget that cannot pay one replica stops the model (documented)
    assert POLICY.decide(observation, state).replicas >= 1


@settings(max_examples=200, deadline=None)
@given(observation=observations(), state=carried_states)
def test_no_change_on_missing_data(
    observation: types.Observation, state: types.PolicyState
) -> None:
    observation = replace(observation, signals=None)
    decision = POLICY.decide(observation, state)
    current = observation.replicas.desired
    cap = _hourly_cap(observation)
    replica_cost = cost.replica_dollars_per_hour(
        observation.pool.gpus_per_replica, observation.pool.price_per_gpu_hour
    )
    bounded = min(max(current, observation.spec.min_replicas), observation.spec.max_replicas)
    allowed = (
        bounded
        if cap is None
        else max(
            cost.replicas_within_dollars_per_hour(cap, replica_cost), observation.spec.min_replicas
        )
    )
    if current == min(bounded, allowed):
        assert decision.replicas == current
        assert decision.reason == types.Reason.METRICS_UNAVAILABLE
        assert decision.bound == types.Bound.HOLD
    else:
        # Only the bounds and a $/hour cap, which need no metrics, move a held count.
        assert decision.replicas == min(bounded, allowed)
        assert decision.reason in (types.Reason.BOUNDS, types.Reason.BUDGET_LIMITED)


@settings(max_examples=200, deadline=None)
@given(
    observation=observations(),
    state=carried_states,
    less=st.floats(min_value=0.0, max_value=2000.0),
    more=st.floats(min_value=0.0, max_value=2000.0),
)
def test_more_queue_never_yields_fewer_replicas(
    observation: types.Observation, state: types.PolicyState, less: float, more: float
) -> None:
    if observation.signals is None:
        return
    less, more = sorted((less, more))
    fewer = POLICY.decide(
        replace(observation, signals=replace(observation.signals, requests_waiting=less)), state
    )
    longer = POLICY.decide(
        replace(observation, signals=replace(observation.signals, requests_waiting=more)), state
    )
    assert longer.replicas >= fewer.replicas


@settings(max_examples=200, deadline=None)
@given(observation=observations(), state=carried_states)
def test_deterministic_and_state_is_json(
    observation: types.Observation, state: types.PolicyState
) -> None:
    first = POLICY.decide(observation, state)
    second = POLICY.decide(observation, dict(state))
    assert first == second
    assert json.loads(json.dumps(first.state)) == first.state


@settings(max_examples=100, deadline=None)
@given(observation=observations(), previous=observations())
def test_baselines_are_deterministic_and_carry_json_state(
    observation: types.Observation, previous: types.Observation
) -> None:
    for policy in (HpaPolicy(), KpaPolicy(), StaticPolicy(replicas=3)):
        earlier = policy.decide(replace(previous, now_seconds=observation.now_seconds - 15.0), {})
        state = json.loads(json.dumps(earlier.state))
        first = policy.decide(observation, state)
        assert first == policy.decide(observation, dict(state))
        assert json.loads(json.dumps(first.state)) == first.state
        if policy.name != "static" and common.usable_signals(observation) is not None:
            assert first.replicas <= max(
                observation.spec.max_replicas, observation.replicas.desired
            )


# -- many ticks against a closed-loop fleet ----------------------------------------------------

TICK = 15.0
BATCH = 256


@dataclass
class Fleet:
    """Replicas of a fixed capacity under constant demand: the queue, TTFT and batches they show.

    Small on purpose: enough physics (capacity, cold start, queueing, the batch a load fills) to
    close the loop, so properties over many ticks test the policy, not a model of vLLM."""

    demand: float
    capacity: float
    base_ttft: float
    cold_ticks: int
    ready: int
    tokens_per_request: float = 2000.0
    queued_tokens: float = 0.0
    starting: list[int] = field(default_factory=list)
    histograms: bool = False
    """Also what vLLM's histograms and token counters give (the TTFT, queue-time and
    prefill-time histograms, tokens per finished request, the running batch averaged): the
    paths the operator takes against a real vLLM, the feedback on the measured attainment
    among them. Without them, the gauges and a p95 alone."""

    @property
    def desired(self) -> int:
        return self.ready + len(self.starting)

    def scale_to(self, replicas: int) -> None:
        while self.desired > replicas and self.starting:
            self.starting.pop()
        self.ready = min(self.ready, replicas)
        self.starting += [self.cold_ticks] * (replicas - self.desired)

    def tick(self) -> types.Signals:
        self.starting = [left - 1 for left in self.starting]
        self.ready += sum(1 for left in self.starting if left <= 0)
        self.starting = [left for left in self.starting if left > 0]
        supply = self.ready * self.capacity
        served = min(self.demand + self.queued_tokens / TICK, supply)
        self.queued_tokens = max(self.queued_tokens + (self.demand - served) * TICK, 0.0)
        load = self.demand / supply if supply > 0 else math.inf
        waiting = self.queued_tokens / self.tokens_per_request
        ttft = self.base_ttft / (1.0 - load) if load < 1.0 else 30.0 + waiting
        rps = served / self.tokens_per_request
        running = min(rps * 20.0, BATCH * self.ready)  # 20 s per request, Little's law
        signals = types.Signals(
            requests_waiting=waiting,
            requests_running=running,
            kv_cache_usage=min(running / (BATCH * max(self.ready, 1)), 1.0),
            prompt_tokens_per_second=served / 2.0,
            generation_tokens_per_second=served / 2.0,
            requests_per_second=rps,
            ttft_p95_seconds=min(ttft, 600.0),
            sample_age_seconds=5.0,
            requests_waiting_mean=waiting,
        )
        if not self.histograms:
            return signals
        return self._histograms(signals, load, ttft)

    def _histograms(self, signals: types.Signals, load: float, ttft: float) -> types.Signals:
        """The window's first tokens: each prefills in the base time after waiting as an
        M/M/1 queue would (a share ``load`` waits, exponentially, with the p95 of TTFT at
        ``base / (1 - load)`` as the gauges' p95 says); at or over capacity every one waits
        as long as the gauges' TTFT says."""
        first_tokens = signals.requests_per_second * POLICY.ttft_window_seconds
        base = self.base_ttft
        if load >= 1.0:

            def waited(seconds: float) -> float:
                return 1.0 if seconds >= ttft - base else 0.0

        else:
            extra = base * load / (1.0 - load)
            mean = extra / math.log(load / 0.05) if load > 0.05 else max(extra, 1e-6)

            def waited(seconds: float) -> float:
                return 1.0 - load * math.exp(-seconds / mean)

        def cumulative(
            bounds: tuple[float, ...], share: Callable[[float], float]
        ) -> tuple[tuple[float, float], ...]:
            edges = [*bounds, math.inf]
            return tuple((edge, first_tokens * share(edge)) for edge in edges)

        return replace(
            signals,
            requests_running_mean=signals.requests_running,
            tokens_per_finished_request=self.tokens_per_request,
            ttft_buckets=cumulative(
                TTFT_BUCKETS_SECONDS, lambda b: waited(b - base) if b >= base else 0.0
            ),
            queue_time_buckets=cumulative(REQUEST_LATENCY_BUCKETS_SECONDS, waited),
            prefill_time_buckets=cumulative(
                REQUEST_LATENCY_BUCKETS_SECONDS, lambda b: 1.0 if b >= base else 0.0
            ),
        )


def _spec(prior: float | None, target: float, max_replicas: int) -> types.PolicySpec:
    return types.PolicySpec(
        min_replicas=1,
        max_replicas=max_replicas,
        queue_target_per_replica=8.0,
        scale_down_delay_seconds=300.0,
        scale_to_zero_idle_seconds=None,
        ttft_target_seconds=target,
        ttft_target_quantile=0.95,
        max_dollars_per_hour=None,
        max_dollars_per_million_tokens=None,
        enforcement=types.Enforcement.HARD,
        soft_overrun_fraction=0.0,
        cold_start_seconds=4 * TICK,
        staleness_limit_seconds=60.0,
        capacity_tokens_per_second_per_replica=prior,
        max_num_seqs_per_replica=BATCH,
        replica_shape="pool/a",
    )


def replay(fleet: Fleet, spec: types.PolicySpec, ticks: int) -> list[int]:
    """The replicas ordered at every tick of constant demand, the state carried as status does."""
    pool = types.PoolView("pool", 2.5, 1, None)
    state: types.PolicyState = {}
    ordered: list[int] = []
    for index in range(ticks):
        signals = fleet.tick()
        counts = types.ReplicaCounts(fleet.desired, fleet.ready, len(fleet.starting))
        decision = POLICY.decide(
            types.Observation(1000.0 + TICK * index, signals, counts, pool, spec), state
        )
        assert spec.min_replicas <= decision.replicas <= spec.max_replicas
        state = json.loads(json.dumps(decision.state))
        fleet.scale_to(decision.replicas)
        ordered.append(decision.replicas)
    return ordered


fleets = st.builds(
    Fleet,
    demand=st.floats(min_value=500.0, max_value=60_000.0),
    capacity=st.floats(min_value=2_000.0, max_value=15_000.0),
    base_ttft=st.floats(min_value=0.05, max_value=0.8),
    cold_ticks=st.integers(min_value=1, max_value=8),
    ready=st.integers(min_value=1, max_value=12),
    histograms=st.booleans(),
)
priors = st.sampled_from([None, 0.5, 1.0, 1.5])
"""No prior, or one that is half, exactly or one and a half times the true capacity."""


def _prior(fleet: Fleet, factor: float | None) -> float | None:
    return None if factor is None else fleet.capacity * factor


@settings(max_examples=60, deadline=None)
@given(fleet=fleets, prior=priors, target=st.floats(min_value=1.0, max_value=5.0))
# Found by Hypothesis: a prior half the true capacity stood until a saturated window, which the
# 64 replicas its backlog ordered never showed; the fleet still stepped down (47 -> 44) an hour
# on, where 31 serve. What one replica served before the fleet settled refutes it.
@example(
    fleet=Fleet(demand=30033.0, capacity=2000.0, base_ttft=0.5, cold_ticks=4, ready=1),
    prior=0.5,
    target=1.0,
)
def test_constant_load_settles_within_bounded_ticks_and_then_never_moves(
    fleet: Fleet, prior: float | None, target: float
) -> None:
    ordered = replay(fleet, _spec(_prior(fleet, prior), target, 64), 240)
    # 60 minutes of constant demand: settled within the first 40, then not one move.
    tail = ordered[-80:]
    assert len(set(tail)) == 1, ordered


@settings(max_examples=60, deadline=None)
@given(fleet=fleets, prior=priors, target=st.floats(min_value=1.0, max_value=5.0))
def test_the_settled_fleet_serves_the_load_it_measures(
    fleet: Fleet, prior: float | None, target: float
) -> None:
    replay(fleet, _spec(_prior(fleet, prior), target, 64), 240)
    assert fleet.ready * fleet.capacity >= fleet.demand
    assert fleet.queued_tokens <= fleet.demand * TICK


@settings(max_examples=60, deadline=None)
@given(fleet=fleets, prior=priors, target=st.floats(min_value=1.0, max_value=5.0))
def test_with_vllms_histograms_the_settled_fleet_keeps_the_target(
    fleet: Fleet, prior: float | None, target: float
) -> None:
    # The promise itself: what the fleet's TTFT percentile is once settled. Where prefill takes
    # half the target or more, a late percentile on a capacity bound orders no replica
    # (docs/policy.md, "Known gaps"), so the property is stated where it does.
    assume(fleet.base_ttft < target / 2.0)
    fleet = replace(fleet, histograms=True)
    replay(fleet, _spec(_prior(fleet, prior), target, 64), 240)
    load = fleet.demand / (fleet.ready * fleet.capacity)
    assert load < 1.0
    # Within the resolution of what it is measured on: vLLM's buckets (1 s, 2.5 s, ...) leave
    # the percentile interpolated (a fleet at 1.5006 s for 1.5 s reads as within it).
    assert fleet.base_ttft / (1.0 - load) <= target * 1.05


@settings(max_examples=40, deadline=None)
@given(
    fleet=fleets,
    prior=priors,
    target=st.floats(min_value=1.0, max_value=5.0),
    more=st.floats(min_value=1.0, max_value=3.0),
)
# Found by Hypothesis: a fleet that never ran below half load never learned a latency model and
# settled at 67 % utilisation, its p95 at 2.25 s for a 1 s target, below the quieter fleet's count.
@example(
    fleet=Fleet(demand=2016.0, capacity=2018.0, base_ttft=0.75, cold_ticks=1, ready=2),
    prior=1.0,
    target=1.0,
    more=2.0,
)
# And one where that first base, read at a load computed from a prior 1.5x too high, came out
# at 10 s: over the target, it said no replica count could help, and 8 saturated replicas stayed.
@example(
    fleet=Fleet(demand=8001.0, capacity=2000.0, base_ttft=0.5, cold_ticks=1, ready=8),
    prior=1.5,
    target=1.0,
    more=2.0,
)
def test_more_demand_never_settles_on_fewer_replicas(
    fleet: Fleet, prior: float | None, target: float, more: float
) -> None:
    spec = _spec(_prior(fleet, prior), target, 64)
    busier = replace(fleet, demand=fleet.demand * more, starting=[])
    low = replay(fleet, spec, 240)[-1]
    high = replay(busier, spec, 240)[-1]
    assert high >= low


@settings(max_examples=40, deadline=None)
@given(
    fleet=fleets,
    cold_ticks=st.integers(min_value=1, max_value=60),
    delay=st.sampled_from([0.0, 60.0, 300.0]),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.2, max_value=3.0), st.integers(1, 40)),
        min_size=2,
        max_size=8,
    ),
)
def test_no_replica_is_removed_within_a_cold_start_of_one_ordered(
    fleet: Fleet, cold_ticks: int, delay: float, steps: list[tuple[float, int]]
) -> None:
    # A replica removed and ordered again within its cold start costs more than one kept, so
    # a scale-down comes at least a cold start (and the delay) after the last scale-up.
    fleet = replace(fleet, cold_ticks=cold_ticks)
    spec = replace(
        _spec(None, 2.0, 64), scale_down_delay_seconds=delay, cold_start_seconds=cold_ticks * TICK
    )
    levels = [fleet.demand * factor for factor, ticks in steps for _ in range(ticks)]
    pool = types.PoolView("pool", 2.5, 1, None)
    state: types.PolicyState = {}
    last_up: float | None = None
    for index, demand in enumerate(levels):
        fleet.demand = demand
        now = 1000.0 + TICK * index
        signals = fleet.tick()
        counts = types.ReplicaCounts(fleet.desired, fleet.ready, len(fleet.starting))
        decision = POLICY.decide(types.Observation(now, signals, counts, pool, spec), state)
        state = decision.state
        if decision.replicas > fleet.desired:
            last_up = now
        elif decision.replicas < fleet.desired and last_up is not None:
            assert now - last_up >= max(delay, spec.cold_start_seconds), (index, levels)
        fleet.scale_to(decision.replicas)
