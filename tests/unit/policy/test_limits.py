"""GPU and money limits: what each allows and which one binds."""

from __future__ import annotations

from policy_builders import observation, signals

from thrifty.policy import limits, types


def test_soft_caps_stretch_by_their_overrun_and_hard_ones_do_not() -> None:
    soft = observation(enforcement=types.Enforcement.SOFT, soft_overrun_fraction=0.2).spec
    hard = observation(soft_overrun_fraction=0.2).spec
    assert limits.scaled_cap(soft, 10.0) == 12.0
    assert limits.scaled_cap(hard, 10.0) == 10.0
    assert limits.scaled_cap(soft, None) is None


def test_dollars_per_hour_cap_is_the_tighter_of_spec_and_budget() -> None:
    assert limits.dollars_per_hour_cap(observation(max_dollars_per_hour=20.0, budget=12.0)) == 12.0
    assert limits.dollars_per_hour_cap(observation(max_dollars_per_hour=9.0, budget=12.0)) == 9.0
    assert limits.dollars_per_hour_cap(observation()) is None


def test_gpu_limit_counts_free_gpus_and_keeps_pending_replicas() -> None:
    free = limits.gpu_limit(
        observation(desired=3, ready=2, starting=1, free_gpus=9, gpus_per_replica=4)
    )
    assert free is not None
    assert free.replicas == 5
    pending = limits.gpu_limit(observation(desired=6, ready=2, starting=1, free_gpus=0))
    assert pending is not None
    assert pending.replicas == 6
    assert limits.gpu_limit(observation(free_gpus=None)) is None


def test_min_replicas_floors_the_dollars_per_hour_limit() -> None:
    found = limits.limits(observation(min_replicas=3, max_dollars_per_hour=5.0), signals(), 6000.0)
    assert [limit.replicas for limit in found] == [3]


def test_token_cap_never_drops_below_one_replica_with_work() -> None:
    busy = signals(requests_running=5.0)
    found = limits.limits(
        observation(min_replicas=0, max_dollars_per_million_tokens=0.01), busy, 100.0
    )
    assert [limit.replicas for limit in found] == [1]
    idle = signals(requests_running=0.0, requests_waiting=0.0)
    found = limits.limits(
        observation(min_replicas=0, max_dollars_per_million_tokens=0.01), idle, 100.0
    )
    assert [limit.replicas for limit in found] == [0]


def test_the_deepest_cut_binds_and_a_tie_names_the_budget() -> None:
    gpu = limits.Limit(4, types.Reason.CAPACITY_LIMITED, types.Bound.CAPACITY, "gpus")
    money = limits.Limit(4, types.Reason.BUDGET_LIMITED, types.Bound.BUDGET, "money")
    deeper = limits.Limit(3, types.Reason.CAPACITY_LIMITED, types.Bound.CAPACITY, "fewer gpus")
    assert limits.binding([gpu, money], 6) == money
    assert limits.binding([gpu, money, deeper], 6) == deeper
    assert limits.binding([gpu, money], 4) is None


def test_draining_replicas_block_growth_within_the_hourly_cap() -> None:
    # $9/h at $3 per replica: 3 replicas. One still draining holds a third of it.
    grow = observation(desired=2, draining=1, max_dollars_per_hour=9.0)
    assert limits.replicas_within_hourly_cap(grow, 9.0) == 2
    assert limits.replicas_within_hourly_cap(observation(desired=2, draining=0), 9.0) == 3


def test_draining_replicas_never_cut_the_replicas_kept_within_the_cap() -> None:
    # Cutting for a draining replica would drain one more, which would cut again.
    assert limits.replicas_within_hourly_cap(observation(desired=3, draining=2), 9.0) == 3
    # A fleet over the cap on its own is still cut to the cap.
    assert limits.replicas_within_hourly_cap(observation(desired=5, draining=2), 9.0) == 3
