"""The planner in situations: one per test, checked against what the policy must do."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import pytest
from policy_builders import observation, signals

from thrifty.policy import types
from thrifty.policy.planner import ThriftyPolicy, estimate, forecast, plan
from thrifty.policy.planner.state import Source, State, load

POLICY = ThriftyPolicy()

# Two saturated replicas serving 16,000 tok/s (4,000 tokens per request) with 340 requests queued.
BURST = signals(
    requests_waiting=340.0,
    requests_running=200.0,
    kv_cache_usage=0.95,
    prompt_tokens_per_second=8000.0,
    generation_tokens_per_second=8000.0,
    requests_per_second=4.0,
)
# The same with 1,000 queued: far more than the two replicas clear before new ones could serve.
BIG_BURST = replace(BURST, requests_waiting=1000.0)
IDLE = signals(
    requests_waiting=0.0,
    requests_running=0.0,
    kv_cache_usage=0.0,
    prompt_tokens_per_second=0.0,
    generation_tokens_per_second=0.0,
    requests_per_second=0.0,
    ttft_p95_seconds=None,
)
LIGHT = signals(prompt_tokens_per_second=1000.0, generation_tokens_per_second=1000.0)


def run(
    policy: ThriftyPolicy, ticks: list[types.Observation], state: types.PolicyState | None = None
) -> list[types.Decision]:
    """Feeds observations in order, carrying the state and applying each decision's replicas."""
    decisions: list[types.Decision] = []
    carried: types.PolicyState = state or {}
    for tick in ticks:
        decision = policy.decide(tick, carried)
        carried = decision.state
        decisions.append(decision)
    return decisions


def test_burst_scales_up_at_once_with_cost_in_the_message() -> None:
    decision = POLICY.decide(observation(sig=BIG_BURST, desired=2), {})
    # 16,000 tok/s + 4M queued tokens / 60 s drain = 82,667 tok/s at 8,000 per replica: 11.
    # (The capacity is the spec's prior, not measured: the backlog is sized as shared.)
    assert decision.replicas == 11
    assert decision.reason == types.Reason.SCALE_UP
    assert decision.bound == types.Bound.NONE
    assert decision.message.startswith("+9 replicas: 1,000 queued")
    assert "+$27.00/h, projected $0.57/1M tokens" in decision.message
    assert decision.projected_dollars_per_hour == 33.0


# What two saturated replicas of BURST taught: 8,000 tok/s each, 4,000 tokens per request.
MEASURED = State(capacity=8000.0, capacity_source=Source.SATURATED, tokens_per_request=4000.0)


def test_a_backlog_stays_on_the_replicas_that_took_it() -> None:
    decision = POLICY.decide(observation(sig=BIG_BURST, desired=2), MEASURED.to_json())
    # The 1,000 queued (4M tokens) stay in the two engines that took them, which drain them at
    # their 16,000 tok/s however many replicas join (clearing them in the 60-s drain would take
    # 66,667): the arrivals' 16,000 tok/s at 8,000 per replica need two more, not nine.
    assert decision.replicas == 4
    assert decision.message.startswith("+2 replicas: 1,000 queued")
    assert "it stays on the 2 ready, which drain it at 16,000 tok/s" in decision.message
    # One they clear within the drain time orders nothing: with a third replica taking the
    # arrivals in 10 s, the two are left 480k tokens, 8,000 tok/s over the 60-s drain.
    early = observation(sig=BURST, desired=3, ready=2, starting=1, oldest_starting_seconds=110.0)
    assert POLICY.decide(early, MEASURED.to_json()).replicas == 3


def test_a_queue_held_at_the_router_is_shared_by_the_replicas_that_come_up() -> None:
    # No replica ready: the gateway holds the 1,000 requests and releases them to every replica
    # that comes up, so more replicas clear them sooner: 4M tokens in 60 s at 8,000 per replica.
    held = replace(IDLE, requests_waiting=1000.0)
    decision = POLICY.decide(
        observation(sig=held, desired=1, ready=0, starting=1), MEASURED.to_json()
    )
    assert decision.replicas == 9
    assert "clearing it in 60 s at 8,000 tok/s per replica" in decision.message


def test_backlog_the_current_replicas_clear_before_a_cold_start_orders_nothing() -> None:
    # 4 replicas carry 6,000 tok/s; 40 queued requests (60k tokens) fit in the spare capacity.
    small_queue = signals(requests_waiting=40.0)
    decision = POLICY.decide(observation(sig=small_queue, desired=4), {})
    assert decision.replicas == 4
    assert decision.reason != types.Reason.SCALE_UP


def test_starting_replicas_count_as_capacity_arriving() -> None:
    # The big burst, but 9 replicas are already starting: nothing more to order.
    decision = POLICY.decide(
        observation(sig=BIG_BURST, desired=11, ready=2, starting=9, oldest_starting_seconds=60.0),
        {},
    )
    assert decision.replicas == 11
    assert decision.reason == types.Reason.WAITING_FOR_STARTUP


def test_starting_replicas_that_arrive_late_leave_more_backlog() -> None:
    early = POLICY.decide(
        observation(sig=BURST, desired=4, ready=2, starting=2, oldest_starting_seconds=110.0), {}
    )
    late = POLICY.decide(
        observation(sig=BURST, desired=4, ready=2, starting=2, oldest_starting_seconds=0.0), {}
    )
    # Arriving in 10 s, the two starting replicas clear the backlog before a new one could serve.
    assert early.replicas == 4
    assert early.reason == types.Reason.WAITING_FOR_STARTUP
    # Arriving in 120 s, they leave the whole backlog to clear: order more now.
    assert late.replicas == 5


def test_load_gone_scales_down_only_after_the_delay_and_gradually() -> None:
    ticks = [observation(now=1000.0 + 15.0 * i, sig=LIGHT, desired=8) for i in range(21)]
    decisions = run(POLICY, ticks)
    # 2,000 tok/s needs one replica, but for 300 s nothing moves.
    assert all(d.replicas == 8 for d in decisions[:20])
    assert all(d.reason == types.Reason.SCALE_DOWN_DELAYED for d in decisions[:20])
    # Then one step of at most a quarter of the replicas.
    assert decisions[20].replicas == 6
    assert decisions[20].reason == types.Reason.SCALE_DOWN
    assert decisions[20].message.startswith("-2 replicas:")
    assert "-$6.00/h" in decisions[20].message


def test_a_cold_start_longer_than_the_delay_is_waited_out_before_a_scale_down() -> None:
    # A replica removed and needed again within its cold start costs that cold start billed
    # and the misses while it starts: keeping it is cheaper, so 600 s pass, not 300.
    ticks = [
        observation(now=1000.0 + 15.0 * i, sig=LIGHT, desired=8, cold_start_seconds=600.0)
        for i in range(41)
    ]
    decisions = run(POLICY, ticks)
    assert all(d.replicas == 8 for d in decisions[:40])
    assert all(d.reason == types.Reason.SCALE_DOWN_DELAYED for d in decisions[:40])
    assert "scale-down delayed for the 600 s cold start" in decisions[39].message
    assert decisions[40].replicas == 6


def test_scale_down_steps_are_spaced() -> None:
    policy = ThriftyPolicy()
    state: types.PolicyState = {}
    desired = 8
    history: list[tuple[float, int]] = []
    for i in range(60):
        now = 1000.0 + 15.0 * i
        decision = policy.decide(observation(now=now, sig=LIGHT, desired=desired), state)
        state = decision.state
        if decision.replicas != desired:
            history.append((now, decision.replicas))
        desired = decision.replicas
    assert [replicas for _, replicas in history] == [6, 5, 4, 3, 2, 1]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(history)]
    assert all(gap >= policy.scale_down_step_seconds for gap in gaps)


def test_a_higher_need_during_the_delay_restarts_nothing_but_resets_the_wait() -> None:
    ticks = [observation(now=1000.0 + 15.0 * i, sig=LIGHT, desired=8) for i in range(10)]
    ticks.append(observation(now=1150.0, sig=BURST, desired=8))
    ticks += [observation(now=1165.0 + 15.0 * i, sig=LIGHT, desired=8) for i in range(20)]
    decisions = run(POLICY, ticks)
    # The burst resets the clock: still 8 replicas 300 s after the first light tick.
    assert decisions[10].replicas >= 8
    assert all(d.replicas == 8 for d in decisions[11:30])


def test_idle_scales_to_zero_only_when_allowed_and_idle_long_enough() -> None:
    allowed: dict[str, Any] = {"min_replicas": 0, "scale_to_zero_idle_seconds": 600.0}
    ticks = [observation(now=1000.0 + 60.0 * i, sig=IDLE, desired=1, **allowed) for i in range(11)]
    decisions = run(POLICY, ticks)
    assert all(d.replicas == 1 for d in decisions[:10])
    assert decisions[10].replicas == 0
    assert decisions[10].reason == types.Reason.SCALE_TO_ZERO


@pytest.mark.parametrize(
    "spec_overrides",
    [
        {"min_replicas": 0, "scale_to_zero_idle_seconds": None},
        {"min_replicas": 1, "scale_to_zero_idle_seconds": None},
    ],
)
def test_idle_never_scales_to_zero_when_not_allowed(spec_overrides: dict[str, Any]) -> None:
    ticks = [
        observation(now=1000.0 + 60.0 * i, sig=IDLE, desired=1, **spec_overrides) for i in range(30)
    ]
    assert all(d.replicas == 1 for d in run(POLICY, ticks))


def test_a_request_resets_the_idle_clock() -> None:
    allowed: dict[str, Any] = {"min_replicas": 0, "scale_to_zero_idle_seconds": 600.0}
    one_request = signals(requests_running=1.0, requests_per_second=0.1)
    ticks = [observation(now=1000.0 + 60.0 * i, sig=IDLE, desired=1, **allowed) for i in range(9)]
    ticks.append(observation(now=1540.0, sig=one_request, desired=1, **allowed))
    ticks += [observation(now=1600.0 + 60.0 * i, sig=IDLE, desired=1, **allowed) for i in range(11)]
    decisions = run(POLICY, ticks)
    # Idle again from 1600 s: 600 s later (2200 s, the last tick) and not before.
    assert all(d.replicas == 1 for d in decisions[:20])
    assert decisions[20].replicas == 0


def test_no_replica_is_added_while_idle_for_a_forecast_of_the_minutes_before() -> None:
    # Busy at 2 replicas held down by a $/1M cap; then the traffic stops. Without tokens the cap
    # binds no more, while the forecast still carries the busy minutes: no replica for nobody.
    cap: dict[str, Any] = {"max_dollars_per_million_tokens": 0.02}
    busy = [observation(now=1000.0 + 15.0 * i, sig=BURST, desired=2, **cap) for i in range(4)]
    idle = [observation(now=1060.0 + 15.0 * i, sig=IDLE, desired=2, **cap) for i in range(8)]
    decisions = run(POLICY, busy + idle)
    assert all(d.replicas <= 2 for d in decisions[:4]), [d.message for d in decisions[:4]]
    assert decisions[3].reason == types.Reason.BUDGET_LIMITED
    assert [d.replicas for d in decisions[4:]] == [2] * 8, [d.message for d in decisions]
    assert "idle: no request arriving" in decisions[4].message


def test_requests_at_zero_scale_from_zero() -> None:
    queued = signals(
        requests_waiting=3.0,
        requests_running=0.0,
        prompt_tokens_per_second=0.0,
        generation_tokens_per_second=0.0,
        requests_per_second=0.0,
    )
    decision = POLICY.decide(
        observation(sig=queued, desired=0, min_replicas=0, scale_to_zero_idle_seconds=600.0), {}
    )
    assert decision.replicas >= 1
    assert decision.reason == types.Reason.SCALE_FROM_ZERO


def test_idle_at_zero_stays_at_zero() -> None:
    decision = POLICY.decide(
        observation(sig=IDLE, desired=0, min_replicas=0, scale_to_zero_idle_seconds=600.0), {}
    )
    assert decision.replicas == 0


def test_capacity_bound_orders_only_replicas_that_can_get_gpus() -> None:
    decision = POLICY.decide(observation(sig=BIG_BURST, desired=2, free_gpus=3), {})
    assert decision.replicas == 5
    assert decision.reason == types.Reason.CAPACITY_LIMITED
    assert decision.bound == types.Bound.CAPACITY
    assert "free GPUs for 3 more" in decision.message


def test_capacity_counts_gpus_per_replica() -> None:
    decision = POLICY.decide(
        observation(sig=BIG_BURST, desired=2, free_gpus=7, gpus_per_replica=4), {}
    )
    assert decision.replicas == 3


def test_hard_dollars_per_hour_cap_bounds_the_scale_up() -> None:
    decision = POLICY.decide(observation(sig=BIG_BURST, desired=2, max_dollars_per_hour=15.0), {})
    assert decision.replicas == 5
    assert decision.reason == types.Reason.BUDGET_LIMITED
    assert decision.bound == types.Bound.BUDGET
    assert decision.projected_dollars_per_hour <= 15.0


def test_cost_budget_allowance_bounds_like_a_hard_cap() -> None:
    decision = POLICY.decide(observation(sig=BIG_BURST, desired=2, budget=12.0), {})
    assert decision.replicas == 4
    assert decision.bound == types.Bound.BUDGET


def test_hard_dollars_per_million_tokens_cap_bounds_the_scale_up() -> None:
    # At 16,000 tok/s a $3/h replica costs $0.052/1M tokens; a $0.30 cap allows 5 of them.
    decision = POLICY.decide(
        observation(sig=BIG_BURST, desired=2, max_dollars_per_million_tokens=0.30), {}
    )
    assert decision.replicas == 5
    assert decision.projected_dollars_per_million_tokens is not None
    assert decision.projected_dollars_per_million_tokens <= 0.30
    assert decision.bound == types.Bound.BUDGET


def test_soft_budget_allows_its_declared_overrun_and_no_more() -> None:
    hard = POLICY.decide(observation(sig=BIG_BURST, desired=2, max_dollars_per_hour=15.0), {})
    soft = POLICY.decide(
        observation(
            sig=BIG_BURST,
            desired=2,
            max_dollars_per_hour=15.0,
            enforcement=types.Enforcement.SOFT,
            soft_overrun_fraction=0.2,
        ),
        {},
    )
    assert hard.replicas == 5
    assert soft.replicas == 6  # $18/h = 15 x 1.2
    assert soft.projected_dollars_per_hour <= 15.0 * 1.2


def test_min_replicas_wins_over_a_hard_budget() -> None:
    decision = POLICY.decide(
        observation(sig=LIGHT, desired=3, min_replicas=3, max_dollars_per_hour=5.0), {}
    )
    assert decision.replicas == 3


def test_hard_budget_cuts_at_once_without_the_scale_down_delay() -> None:
    decision = POLICY.decide(observation(sig=LIGHT, desired=6, budget=9.0), {})
    assert decision.replicas == 3
    assert decision.reason == types.Reason.BUDGET_LIMITED


def test_max_replicas_bounds_the_need() -> None:
    decision = POLICY.decide(observation(sig=BIG_BURST, desired=2, max_replicas=4), {})
    assert decision.replicas == 4
    assert decision.bound == types.Bound.BOUNDS


@pytest.mark.parametrize(
    ("tick", "named"),
    [
        (observation(missing=True, desired=5), "metrics unavailable"),
        (observation(sig=signals(sample_age_seconds=120.0), desired=5), "stale (120 s old)"),
        (observation(sig=signals(requests_waiting=float("nan")), desired=5), "waiting nan"),
        (observation(sig=signals(prompt_tokens_per_second=-3.0), desired=5), "tokens/s -3"),
    ],
    ids=["missing", "stale", "nan", "negative"],
)
def test_missing_or_stale_data_holds_naming_why(tick: types.Observation, named: str) -> None:
    before = State(below_since=0.0, needs=((0.0, 1.0),)).to_json()
    decision = POLICY.decide(tick, before)
    assert decision.replicas == 5
    assert named in decision.message and "holding" in decision.message
    assert decision.reason == types.Reason.METRICS_UNAVAILABLE
    assert decision.bound == types.Bound.HOLD
    # The scale-down clock does not run through a gap in the data.
    assert load(decision.state).below_since is None


def test_missing_data_still_enforces_a_hard_dollars_per_hour_cap() -> None:
    decision = POLICY.decide(observation(missing=True, desired=5, max_dollars_per_hour=9.0), {})
    assert decision.replicas == 3
    assert decision.reason == types.Reason.BUDGET_LIMITED


def test_ttft_over_target_adds_a_replica_once_the_last_scale_up_serves() -> None:
    # 40 waiting at 4 requests/s: 10 s of queue, far past what a step's budget holds back.
    slow = signals(ttft_p95_seconds=3.0, requests_waiting=40.0)
    decision = POLICY.decide(observation(sig=slow, desired=3), {})
    assert decision.replicas == 4
    assert decision.bound == types.Bound.LATENCY_TARGET
    assert "TTFT p95 3.00 s > target 2 s" in decision.message
    # Right after, while it starts, nothing more is added and nothing removed.
    again = POLICY.decide(
        observation(now=1015.0, sig=slow, desired=4, ready=3, starting=1), decision.state
    )
    assert again.replicas == 4


def test_late_ttft_right_after_the_fleet_grew_adds_no_replica() -> None:
    # A replacement came up 60 s ago after a spot reclaim: the 120 s window's late first
    # tokens are the outage's. The same percentile with the fleet grown long ago adds some.
    slow = signals(ttft_p95_seconds=3.0, requests_waiting=40.0)
    recent = State(ready=3, ready_since=940.0, grew_at=940.0, last_seen=985.0).to_json()
    assert POLICY.decide(observation(sig=slow, desired=3), recent).replicas == 3
    settled = State(ready=3, ready_since=700.0, grew_at=700.0, last_seen=985.0).to_json()
    assert POLICY.decide(observation(sig=slow, desired=3), settled).replicas > 3


def test_late_ttft_without_a_queue_adds_no_replica() -> None:
    # Long prompts or a burst already over: nothing waits, so a replica would serve nobody sooner.
    slow = signals(ttft_p95_seconds=3.0, requests_waiting=0.0)
    decision = POLICY.decide(observation(sig=slow, desired=3), {})
    assert decision.replicas == 3
    assert decision.bound != types.Bound.LATENCY_TARGET


def test_capacity_is_learned_from_saturated_replicas() -> None:
    saturated = signals(
        requests_waiting=40.0,
        kv_cache_usage=0.95,
        prompt_tokens_per_second=6000.0,
        generation_tokens_per_second=6000.0,
    )
    state: types.PolicyState = {}
    for i in range(40):
        decision = POLICY.decide(
            observation(now=1000.0 + 15.0 * i, sig=saturated, desired=4), state
        )
        state = decision.state
    # The prior said 8,000 tok/s; 4 saturated replicas serve 12,000: 3,000 each.
    assert load(state).capacity == pytest.approx(3000.0)
    assert load(state).capacity_source == Source.SATURATED


def test_capacity_is_learned_without_a_prior() -> None:
    saturated = signals(requests_waiting=40.0, kv_cache_usage=0.95)
    ticks = _unknown_capacity_ticks(saturated, desired=2, count=10)
    decisions = run(POLICY, ticks)
    # Rates mix old and new replicas for a while after the ready count is first seen: until
    # then what they served is only a bound (a rate over a count that may have risen in its
    # window understates each one's share), however saturated they look.
    assert load(decisions[7].state).capacity == pytest.approx(3000.0)  # 105 s
    assert load(decisions[7].state).capacity_source == Source.LOWER_BOUND
    assert load(decisions[8].state).capacity == pytest.approx(3000.0)  # 120 s
    assert load(decisions[8].state).capacity_source == Source.SATURATED


def test_a_prior_under_what_a_replica_served_is_raised_before_the_fleet_settles() -> None:
    # One replica with a queue serves 6,000 tok/s in the first minute; the spec's prior says
    # 1,000. A rate over a window in which the ready count only rose bounds the capacity from
    # below, so the prior is refuted at once, not only by a saturated window the fleet it
    # sized would never reach (a prior half the truth kept 44 or more replicas all hour, where
    # 34 settle now).
    queued = signals(requests_waiting=40.0, kv_cache_usage=0.95)
    ticks = [
        observation(
            now=1000.0 + 15.0 * i,
            sig=queued,
            desired=1,
            capacity_tokens_per_second_per_replica=1000.0,
        )
        for i in range(3)
    ]
    decisions = run(POLICY, ticks)
    learned = load(decisions[-1].state)
    assert learned.capacity == pytest.approx(6000.0)
    assert learned.capacity_source == Source.PRIOR  # no measurement of the limit yet


def test_throughput_below_saturation_is_only_a_lower_bound() -> None:
    # 4 replicas serve 6,000 tok/s without a queue: each can do at least 1,500 tok/s. That
    # allows scaling down, never up.
    ticks = [
        observation(now=1000.0 + 15.0 * i, desired=4, capacity_tokens_per_second_per_replica=None)
        for i in range(10)
    ]
    decisions = run(POLICY, ticks)
    assert load(decisions[-1].state).capacity == pytest.approx(1500.0)
    assert load(decisions[-1].state).capacity_source == Source.LOWER_BOUND
    assert all(d.replicas <= 4 for d in decisions)
    # The message says so, and predicts no latency: the model has no utilisation on a bound.
    assert "on a bound of 1,500 tok/s per replica" in decisions[-1].message
    assert "predicted" not in decisions[-1].message


def test_one_replica_carrying_steady_traffic_from_the_start_stays_one() -> None:
    # Steady 2 requests/s on one replica (19,000 tok/s at its limit): 1-minute rates swing by
    # about 10 % around 2,800 tok/s. Bounding only on ticks after the count settled (120 s)
    # took one low rate for the bound, under the level the earlier ticks set: 2 replicas for
    # the hour, each serving half of what one had served with no queue.
    rates = [2950.0, 2700.0, 3000.0, 2850.0, 2650.0, 2900.0, 2800.0, 2750.0, 2300.0, 2600.0]
    ticks = [
        observation(
            now=1000.0 + 15.0 * i,
            sig=signals(
                prompt_tokens_per_second=rate * 0.8,
                generation_tokens_per_second=rate * 0.2,
                requests_waiting=0.0,
                requests_running=3.0,
                kv_cache_usage=0.02,
                ttft_p95_seconds=0.2,
            ),
            desired=1,
            capacity_tokens_per_second_per_replica=None,
        )
        for i, rate in enumerate(rates)
    ]
    decisions = run(POLICY, ticks)
    assert [d.replicas for d in decisions] == [1] * len(rates)
    assert load(decisions[-1].state).capacity == pytest.approx(3000.0)


def test_a_rate_over_a_fall_of_the_ready_count_bounds_nothing() -> None:
    # 2 replicas served 3,000 tok/s each until one went: the next minute's rate counts the gone
    # replica's tokens as the remaining one's (6,000), more than it may carry alone.
    known = State(capacity=3000.0, capacity_source=Source.LOWER_BOUND, ready=2, ready_since=0.0)
    mixed = signals(prompt_tokens_per_second=5000.0, generation_tokens_per_second=1000.0)
    after = _unknown_capacity_ticks(mixed, desired=1, count=9)
    decisions = run(POLICY, after, known.to_json())
    assert all(load(d.state).capacity == pytest.approx(3000.0) for d in decisions[:-1])
    # Once the count has held for the settle time (120 s) the rate is one replica's own.
    assert load(decisions[-1].state).capacity == pytest.approx(6000.0)


def test_replicas_of_several_speeds_carrying_the_level_on_a_bound_order_none() -> None:
    # 3 reference replicas are worth 3.05 (an L40S at 0.15 among H100s): their first rate is
    # the bound and the level at once, 7,408 / 3.05 = 2,429 per replica. Sized at the bound,
    # the level asks for 3.05 replicas: rounded up, one more than the three carrying it now.
    first = observation(
        now=1015.0,
        sig=signals(prompt_tokens_per_second=3704.0, generation_tokens_per_second=3704.0),
        desired=3,
        capacity_tokens_per_second_per_replica=None,
    )
    first = replace(first, replicas=replace(first.replicas, ready_units=3.05))
    decision = POLICY.decide(first, {})
    assert load(decision.state).capacity == pytest.approx(7408.0 / 3.05)
    assert decision.replicas == 3


def test_a_miss_never_lowers_the_capacity_under_a_bound_replicas_served() -> None:
    # 18 replicas once served 187 tok/s each; at the first burst after a silence the window's
    # rate reads 60 each with a late p95. The miss model puts the capacity at 184 tok/s, under
    # what the replicas were seen to serve: the bound stands.
    known = State(
        capacity=187.0,
        capacity_source=Source.LOWER_BOUND,
        served_max=184.0,
        base_ttft=1.49,
        ready=18,
        ready_since=0.0,
        last_seen=985.0,
    )
    late = signals(
        prompt_tokens_per_second=900.0,
        generation_tokens_per_second=185.0,
        requests_running=5.0,
        kv_cache_usage=0.01,
        ttft_p95_seconds=2.41,
    )
    tick = observation(sig=late, desired=18, capacity_tokens_per_second_per_replica=None)
    decision = POLICY.decide(tick, known.to_json())
    assert load(decision.state).capacity == pytest.approx(187.0)
    assert load(decision.state).capacity_source == Source.LOWER_BOUND


def test_a_late_burst_orders_no_replicas_for_what_the_ready_ones_serve() -> None:
    # azure-code: a lower bound of 1,359 tok/s learned at light load, then one replica served a
    # burst at 6,853 tok/s with a late TTFT and no queue: 6,853 / 1,359 ordered 5 replicas that
    # came after the burst. The ready replica serving 6,853 tok/s raises the lower bound instead.
    known = State(capacity=1359.0, capacity_source=Source.LOWER_BOUND).to_json()
    late = signals(
        prompt_tokens_per_second=6500.0,
        generation_tokens_per_second=353.0,
        ttft_p95_seconds=4.4,
        kv_cache_usage=0.02,
        requests_running=1.0,
    )
    tick = observation(sig=late, desired=1, capacity_tokens_per_second_per_replica=None)
    decision = POLICY.decide(tick, known)
    assert decision.replicas == 1


def test_a_burst_tick_among_steady_ones_is_spread_not_level() -> None:
    # 2 replicas plan on 8,000 tok/s each at the ceiling. Steady 10,000 tok/s, then one tick at
    # 16,000: the forecast's level moves by a fraction of the jump, its spread takes the rest.
    calm = signals(prompt_tokens_per_second=5000.0, generation_tokens_per_second=5000.0)
    busy = signals(prompt_tokens_per_second=8000.0, generation_tokens_per_second=8000.0)
    ticks = [observation(now=1000.0 + 15.0 * i, sig=calm, desired=2) for i in range(12)]
    ticks.append(observation(now=1180.0, sig=busy, desired=2))
    decisions = run(POLICY, ticks)
    outlook = forecast.forecast(load(decisions[-1].state).demand, 1180.0, 120.0, 0.95)
    assert 10_000.0 < outlook.level < 11_000.0
    assert outlook.spread > 1000.0


def test_without_capacity_the_queue_target_drives() -> None:
    # Replicas that have served nothing yet bound nothing: only the queue says what they need.
    queued = signals(
        requests_waiting=55.0, prompt_tokens_per_second=0.0, generation_tokens_per_second=0.0
    )
    decision = POLICY.decide(
        observation(sig=queued, desired=2, capacity_tokens_per_second_per_replica=None), {}
    )
    assert decision.replicas == 6  # 55 queued / 10 per replica
    assert "55 queued vs target 20" in decision.message


def test_state_is_json_and_a_restart_forgets_nothing() -> None:
    ticks = [observation(now=1000.0 + 15.0 * i, sig=LIGHT, desired=8) for i in range(21)]
    state: types.PolicyState = {}
    for tick in ticks:
        decision = POLICY.decide(tick, state)
        state = json.loads(json.dumps(decision.state))  # what status persistence does
    assert decision.replicas == 6


def test_malformed_state_is_ignored() -> None:
    bad: types.PolicyState = {
        "version": 2,
        "capacity": "fast",
        "below_since": [1, 2],
        "idle_since": True,
    }
    clean = POLICY.decide(observation(sig=BIG_BURST, desired=2), {})
    assert POLICY.decide(observation(sig=BIG_BURST, desired=2), bad).replicas == clean.replicas


def test_drain_time_follows_the_latency_target() -> None:
    tuning = POLICY
    assert plan.drain_seconds(observation(ttft_target_seconds=2.0).spec, tuning) == 60.0
    assert plan.drain_seconds(observation(ttft_target_seconds=60.0).spec, tuning) == 120.0
    assert plan.drain_seconds(observation(ttft_target_seconds=None).spec, tuning) == 120.0
    assert plan.drain_seconds(observation(ttft_target_seconds=0.1).spec, tuning) == 10.0


def test_pending_replicas_are_kept_but_no_more_are_ordered() -> None:
    # 4 desired, 2 ready, 2 pending for want of GPUs, none free: keep 4, order none.
    decision = POLICY.decide(observation(sig=BURST, desired=4, ready=2, free_gpus=0), {})
    assert decision.replicas == 4
    assert decision.reason == types.Reason.CAPACITY_LIMITED


def test_a_growing_queue_counts_as_demand_beyond_what_is_served() -> None:
    # Growth seen at two ticks in a row counts (the lower of the two): 20 requests/s at 4,000
    # tokens each is 80,000 tok/s on top of the 16,000 served. One tick's jump does not.
    state = State(tokens_per_request=4000.0, waiting=340.0, last_seen=1000.0)
    reading = estimate.read(BURST, observation().spec, state, POLICY, 2)
    one = estimate.queue_growth(state, 1015.0, 640.0)
    assert one == pytest.approx(20.0)
    assert POLICY.demand(state, reading, min(0.0, one)) == pytest.approx(16_000.0)
    assert POLICY.demand(state, reading, min(one, 25.0)) == pytest.approx(96_000.0)
    assert estimate.queue_growth(state, 1015.0, 100.0) == 0.0


def test_arrivals_are_remembered_with_the_queue_the_demand_counts_and_held_ticks_forget() -> None:
    # The queue grows 20 requests/s at two ticks in a row: the demand is six times what is
    # served, and so are the prompts that arrived.
    ticks = [
        observation(now=now, sig=replace(BURST, requests_waiting=waiting), desired=2)
        for now, waiting in ((1000.0, 340.0), (1015.0, 640.0), (1030.0, 940.0))
    ]
    kept = load(run(POLICY, ticks)[-1].state)
    assert len(kept.arrivals) == len(kept.demand) == 3
    assert kept.arrivals[-1][1] == pytest.approx(8000.0 * kept.demand[-1][1] / 16_000.0)
    assert kept.arrivals[-1][1] > 8000.0
    held = POLICY.decide(observation(now=1045.0, missing=True), kept.to_json())
    assert load(held.state).arrivals == ()


# 10 replicas serving 6,000 tok/s, 300 requests queued on the one that took a burst before the
# fleet grew: its batch is full, the others' light (40 running in all).
HELD = signals(
    requests_waiting=300.0, requests_running=40.0, kv_cache_usage=0.2, requests_per_second=4.0
)


HELD_STATE = State(
    capacity=8000.0, capacity_source=Source.SATURATED, saturated_batch=200.0, ready=10
)
"""The capacity measured earlier, with batches far fuller than the held queue's light ones."""


def test_a_queue_held_by_a_few_replicas_lets_the_spare_ones_go() -> None:
    # vLLM queues inside each engine: the backlog drains on the replica holding it whatever the
    # rest do. 6,000 tok/s need 1 replica at 85 %; after the delay the spare ones go by steps.
    ticks = [observation(now=1000.0 + 15.0 * i, sig=HELD, desired=10) for i in range(25)]
    decisions = run(POLICY, ticks, HELD_STATE.to_json())
    assert estimate.read(HELD, ticks[0].spec, State(), POLICY, 10).queued
    assert all(d.replicas == 10 for d in decisions[:20])
    assert decisions[-1].replicas == 8


def test_a_held_queue_still_keeps_replicas_whose_kv_caches_are_near_full() -> None:
    # The queue lets the spare replicas go, but not past the running load's guard: with the KV
    # caches past 75 % of their saturation level, fewer replicas would not hold what runs.
    full = replace(HELD, kv_cache_usage=0.7)
    ticks = [observation(now=1000.0 + 15.0 * i, sig=full, desired=10) for i in range(40)]
    assert all(d.replicas >= 10 for d in run(POLICY, ticks, HELD_STATE.to_json()))


@pytest.mark.parametrize(
    ("served", "ready", "starting", "kept"),
    [
        (6000.0, 10, 0, 1),  # one replica holds the queue, nine are spare
        (68_000.0, 10, 0, 10),  # every ready replica at the ceiling: the queue is the fleet's
        (16_000.0, 2, 9, 11),  # the ready ones at their limit, the starting ones awaited
    ],
)
def test_a_queue_keeps_the_replicas_that_carry_what_is_served(
    served: float, ready: int, starting: int, kept: int
) -> None:
    known = State(capacity=8000.0, capacity_source=Source.SATURATED)
    tick = observation(desired=ready + starting, ready=ready, starting=starting)
    half = served / 2.0
    sig = replace(HELD, prompt_tokens_per_second=half, generation_tokens_per_second=half)
    reading = estimate.read(sig, tick.spec, known, POLICY, ready)
    assert reading.queued
    need = plan.kept_for_queue(tick, reading, known, POLICY)
    assert need.replicas == kept
    assert need.because.startswith("300.0 queued on average")


def test_scale_down_goes_to_the_highest_need_of_the_delay_window() -> None:
    # Needs of 3 for a while, then, as the demand falls, of 4 (the fall is spread the forecast
    # plans bursts for) and then of 1. With no step limit, the scale-down after the delay stops
    # at 4, the highest need still in the 300 s window, not at the latest need of 1.
    policy = ThriftyPolicy(scale_down_step_fraction=1.0)
    medium = signals(prompt_tokens_per_second=8000.0, generation_tokens_per_second=8000.0)
    ticks = [observation(now=1000.0 + 15.0 * i, sig=medium, desired=8) for i in range(18)]
    # KV caches a tenth full: 3 replicas hold what 8 hold now (the load guard allows it).
    light = replace(LIGHT, kv_cache_usage=0.1)
    ticks += [observation(now=1270.0 + 15.0 * i, sig=light, desired=8) for i in range(3)]
    decisions = run(policy, ticks)
    assert [d.replicas for d in decisions[:20]] == [8] * 20
    assert "needs 3" in decisions[17].message and "needs 4" in decisions[19].message
    assert decisions[20].replicas == 4


def _unknown_capacity_ticks(
    sig: types.Signals, *, desired: int, count: int
) -> list[types.Observation]:
    """`count` ticks 15 s apart of the same signals, without a capacity prior."""
    return [
        observation(
            now=1000.0 + 15.0 * i,
            sig=sig,
            desired=desired,
            capacity_tokens_per_second_per_replica=None,
        )
        for i in range(count)
    ]


def test_a_lower_bound_removes_replicas_the_rest_surely_carry_after_the_delay() -> None:
    # Never saturated, but one replica once served 4,000 tok/s: 2 surely carry 6,000.
    roomy = signals(
        kv_cache_usage=0.3,
        ttft_p95_seconds=0.5,
        prompt_tokens_per_second=3000.0,
        generation_tokens_per_second=3000.0,
    )
    ticks = _unknown_capacity_ticks(roomy, desired=3, count=21)
    known = State(capacity=4000.0, capacity_source=Source.LOWER_BOUND).to_json()
    decisions = run(POLICY, ticks, known)
    assert all(d.replicas == 3 for d in decisions[:20])
    assert decisions[20].replicas == 2
    assert decisions[20].reason == types.Reason.SCALE_DOWN


def test_no_probe_when_fewer_replicas_might_not_carry_the_forecast() -> None:
    # servegen-mid (70B, 300 s cold start): 3 replicas each serving 4,000 tok/s, the most any
    # ever served. At that bound 2 cannot carry 12,000 tok/s: a lost bet costs a cold start.
    roomy = signals(kv_cache_usage=0.3, ttft_p95_seconds=0.5)
    ticks = _unknown_capacity_ticks(roomy, desired=3, count=30)
    assert all(d.replicas == 3 for d in run(POLICY, ticks))


@pytest.mark.parametrize(("running", "after"), [(60.0, 2), (450.0, 3)])
def test_headroom_probe_never_leaves_too_few_replicas_for_the_running_batches(
    running: float, after: int
) -> None:
    # servegen-mid: the probe went to one replica with 260 requests running. A replica holds at
    # most 192 (75 % of a 256-sequence batch): 450 running need 3 replicas, 60 fit on 2.
    roomy = signals(
        requests_running=running,
        kv_cache_usage=0.2,
        ttft_p95_seconds=0.5,
        prompt_tokens_per_second=3000.0,
        generation_tokens_per_second=3000.0,
    )
    ticks = _unknown_capacity_ticks(roomy, desired=3, count=21)
    known = State(capacity=4000.0, capacity_source=Source.LOWER_BOUND).to_json()
    decisions = run(POLICY, ticks, known)
    assert all(d.replicas == 3 for d in decisions[:20])
    assert decisions[20].replicas == after


def test_headroom_probe_never_halves_the_fleet() -> None:
    # servegen-small (70B): 2 replicas with roomy signals probed down to 1; its load then doubled,
    # the batch filled and requests queued for a whole 300 s cold start. From 2, no probe.
    roomy = signals(kv_cache_usage=0.05, ttft_p95_seconds=0.5)
    ticks = _unknown_capacity_ticks(roomy, desired=2, count=40)
    assert all(d.replicas == 2 for d in run(POLICY, ticks))


def test_a_nearly_full_running_batch_counts_as_saturation() -> None:
    # No queue and a KV cache under 90 %, but 240 sequences running per replica: past 90 % of the
    # engine's 256. The throughput that fills those batches is what a replica carries.
    full = signals(requests_running=480.0, kv_cache_usage=0.5)
    ticks = _unknown_capacity_ticks(full, desired=2, count=10)
    state = load(run(POLICY, ticks)[-1].state)
    assert state.capacity_source == Source.SATURATED
    assert state.capacity == pytest.approx(3000.0)
    roomier = [
        replace(tick, spec=replace(tick.spec, max_num_seqs_per_replica=1024)) for tick in ticks
    ]
    assert load(run(POLICY, roomier)[-1].state).capacity_source == Source.LOWER_BOUND


@pytest.mark.parametrize(
    "sig",
    [
        signals(requests_running=400.0),  # 200 per replica: past 75 % of the batch limit
        signals(kv_cache_usage=0.7),  # KV past 75 % of the saturation level
    ],
)
def test_no_scale_down_while_replicas_are_near_their_limits(sig: types.Signals) -> None:
    # A prior capacity says one replica carries the tokens, but the batches or caches are full
    # (batches that full also teach that a replica carries less than the prior: one may be added).
    ticks = [observation(now=1000.0 + 15.0 * i, sig=sig, desired=2) for i in range(30)]
    assert all(d.replicas >= 2 for d in run(POLICY, ticks))


@pytest.mark.parametrize(("max_num_seqs", "kept"), [(None, 1), (64, 2), (1024, 1)])
def test_load_guard_uses_the_engine_batch_limit_from_the_spec(
    max_num_seqs: int | None, kept: int
) -> None:
    # 60 running on 2 replicas: one replica can take them under the default 256-sequence batch
    # (192 at 75 %) and under 1024, but not under 64 (48 at 75 %).
    sig = signals(requests_running=60.0, kv_cache_usage=0.2)
    ticks = [
        observation(
            now=1000.0 + 15.0 * i, sig=sig, desired=2, max_num_seqs_per_replica=max_num_seqs
        )
        for i in range(40)
    ]
    assert min(d.replicas for d in run(POLICY, ticks)) == kept


def test_at_a_lower_bound_bursts_keep_the_replicas_that_carry_them() -> None:
    # The same level, but bursting between 3,000 and 9,000 tok/s: at the 4,000 tok/s bound, two
    # replicas would not carry the forecast's bursts, so three stay.
    calm = signals(prompt_tokens_per_second=1500.0, generation_tokens_per_second=1500.0)
    busy = signals(prompt_tokens_per_second=4500.0, generation_tokens_per_second=4500.0)
    ticks = [
        observation(
            now=1000.0 + 15.0 * i,
            sig=busy if i % 2 else calm,
            desired=3,
            capacity_tokens_per_second_per_replica=None,
        )
        for i in range(40)
    ]
    known = State(capacity=4000.0, capacity_source=Source.LOWER_BOUND).to_json()
    assert all(d.replicas == 3 for d in run(POLICY, ticks, known))


def test_a_few_waiting_requests_are_not_saturation() -> None:
    # vLLM's gauge shows prompts a step's token budget holds back, spare replicas or not.
    few_waiting = signals(requests_waiting=3.0, requests_waiting_mean=2.0)
    ticks = _unknown_capacity_ticks(few_waiting, desired=4, count=10)
    assert load(run(POLICY, ticks)[-1].state).capacity_source == Source.LOWER_BOUND


def test_saturation_replaces_a_lower_bound_at_once() -> None:
    state = State(
        capacity=1000.0,
        capacity_source=Source.LOWER_BOUND,
        ready=2,
        ready_since=0.0,
        last_seen=985.0,
    ).to_json()
    saturated = signals(requests_waiting=40.0, kv_cache_usage=0.95)
    decision = POLICY.decide(
        observation(sig=saturated, desired=2, capacity_tokens_per_second_per_replica=None), state
    )
    assert load(decision.state).capacity == pytest.approx(3000.0)
    assert load(decision.state).capacity_source == Source.SATURATED


def test_a_queue_in_front_of_no_ready_replica_is_not_sized_by_the_queue_target() -> None:
    # servegen-mid across pools: a spot reclaim left 0 ready and 3 replacements starting; the
    # queue-target rule read 374 waiting as a low capacity and ordered 32 replicas for a backlog
    # the 3 cleared in 60 s once up. With a capacity bound of 6,000 tok/s the 3 arriving in 180 s
    # clear it, so nothing more is ordered.
    known = State(
        capacity=6000.0, capacity_source=Source.LOWER_BOUND, tokens_per_request=2000.0
    ).to_json()
    lost = signals(
        requests_waiting=374.0,
        requests_waiting_mean=110.0,
        requests_running=0.0,
        prompt_tokens_per_second=0.0,
        generation_tokens_per_second=0.0,
        requests_per_second=0.0,
        ttft_p95_seconds=None,
    )
    tick = observation(
        sig=lost,
        desired=3,
        ready=0,
        starting=3,
        oldest_starting_seconds=120.0,
        cold_start_seconds=300.0,
        queue_target_per_replica=8.0,
    )
    decision = POLICY.decide(tick, known)
    assert decision.replicas == 3, decision.message


def test_a_queue_in_front_of_replicas_just_up_is_not_sized_by_the_queue_target() -> None:
    # servegen-mid across pools, seed 1: after a reclaim 3 replacements came up in front of
    # 1,400 queued requests, with 7 more starting. The queue's window average still grew, and
    # the queue-target rule read that as a low capacity and ordered the maximum. Replicas that
    # have served for seconds say nothing of their speed: the 10 on their way clear it.
    known = State(
        capacity=6000.0,
        capacity_source=Source.LOWER_BOUND,
        tokens_per_request=2000.0,
        waiting=1400.0,
        ready=0,
        ready_since=700.0,
        last_seen=985.0,
    ).to_json()
    back = signals(
        requests_waiting=1400.0,
        requests_waiting_mean=1600.0,
        prompt_tokens_per_second=9000.0,
        generation_tokens_per_second=9000.0,
        requests_per_second=9.0,
        ttft_p95_seconds=None,
    )
    tick = observation(
        sig=back,
        desired=10,
        ready=3,
        starting=7,
        oldest_starting_seconds=150.0,
        cold_start_seconds=300.0,
        queue_target_per_replica=8.0,
    )
    decision = POLICY.decide(tick, known)
    assert decision.replicas == 10, decision.message


def test_tokens_per_request_come_from_finished_requests_when_the_engine_reports_them() -> None:
    # Right after an outage the queued prompts' prefill is served while few requests finish:
    # token rate over request rate read 15,000 tokens per request where each carried 1,350.
    draining = signals(
        prompt_tokens_per_second=30_000.0,
        generation_tokens_per_second=0.0,
        requests_per_second=2.0,
        tokens_per_finished_request=1350.0,
    )
    decision = POLICY.decide(observation(sig=draining), {})
    assert load(decision.state).tokens_per_request == pytest.approx(1350.0)
    without = POLICY.decide(
        observation(sig=replace(draining, tokens_per_finished_request=None)), {}
    )
    assert load(without.state).tokens_per_request == pytest.approx(15_000.0)
