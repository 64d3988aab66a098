"""The baselines against the documented formulas and defaults of HPA + KEDA, Knative KPA, static."""

from __future__ import annotations

from typing import Any

import pytest
from policy_builders import observation, signals

from thrifty.policy import hpa, kpa, types
from thrifty.policy.hpa import HpaPolicy
from thrifty.policy.kpa import KpaPolicy
from thrifty.policy.static import StaticPolicy


def waiting(count: float, running: float = 20.0) -> types.Signals:
    return signals(requests_waiting=count, requests_running=running)


def drive(
    policy: HpaPolicy | KpaPolicy,
    loads: list[types.Signals],
    desired: int,
    start: float = 1000.0,
    step: float = 15.0,
    **spec: Any,
) -> list[int]:
    """Runs the policy tick by tick, applying each decision (replicas become ready at once)."""
    state: types.PolicyState = {}
    counts: list[int] = []
    for i, load in enumerate(loads):
        decision = policy.decide(
            observation(now=start + step * i, sig=load, desired=desired, **spec), state
        )
        state, desired = decision.state, decision.replicas
        counts.append(desired)
    return counts


# --- HPA + KEDA ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "metric", "expected"),
    [
        (4, 40.0, 4),  # on target
        (4, 43.0, 4),  # ratio 1.075: inside the 0.1 tolerance
        (4, 37.0, 4),  # ratio 0.925: inside
        (4, 46.0, 5),  # ratio 1.15: ceil(46 / 10)
        (4, 80.0, 8),  # ceil(80 / 10), within max(100 %, 4 pods)
    ],
)
def test_hpa_average_value_formula_with_tolerance(
    current: int, metric: float, expected: int
) -> None:
    decision = HpaPolicy(target_per_replica=10.0).decide(
        observation(sig=waiting(metric), desired=current), {}
    )
    assert decision.replicas == expected


def test_hpa_target_defaults_to_the_spec_queue_target() -> None:
    decision = HpaPolicy().decide(
        observation(sig=waiting(80.0), desired=4, queue_target_per_replica=20.0), {}
    )
    assert decision.replicas == 4  # 80 / 20 = 4: on target


def test_hpa_scale_up_rate_is_the_larger_of_100_percent_and_4_pods_per_15_s() -> None:
    counts = drive(
        HpaPolicy(target_per_replica=1.0), [waiting(100.0)] * 5, desired=2, max_replicas=100
    )
    assert counts == [6, 12, 24, 48, 96]


def test_hpa_scale_down_waits_for_the_300_s_stabilization_window() -> None:
    loads = [waiting(80.0)] + [waiting(0.0)] * 22
    counts = drive(HpaPolicy(target_per_replica=10.0), loads, desired=8)
    # KEDA polled 80 waiting at t=0 and serves it until t=30, so the t=15 sync still recommends
    # 8; that recommendation leaves the 300 s window at t=315.
    assert counts[:21] == [8] * 21
    assert counts[21] == 1  # 100 % per 15 s allows going straight to min 1


def test_hpa_acts_only_every_15_s_sync() -> None:
    policy = HpaPolicy(target_per_replica=10.0)
    first = policy.decide(observation(now=1000.0, sig=waiting(80.0), desired=4), {})
    assert first.replicas == 8
    between = policy.decide(observation(now=1010.0, sig=waiting(200.0), desired=8), first.state)
    assert between.replicas == 8
    assert between.state == first.state


def test_hpa_sees_the_metric_only_as_often_as_keda_polls() -> None:
    policy = HpaPolicy(target_per_replica=10.0)
    first = policy.decide(observation(now=1000.0, sig=waiting(40.0), desired=4), {})
    stale = policy.decide(observation(now=1015.0, sig=waiting(200.0), desired=4), first.state)
    assert stale.replicas == 4  # still the 40 polled at t=0
    fresh = policy.decide(observation(now=1030.0, sig=waiting(200.0), desired=4), stale.state)
    assert fresh.replicas == 8  # 200 polled now; rate limit max(100 %, 4) from 4


def test_hpa_never_goes_below_one_without_keda_scale_to_zero() -> None:
    counts = drive(HpaPolicy(), [waiting(0.0, running=0.0)] * 60, desired=3, min_replicas=0)
    assert min(counts) == 1


def test_keda_deactivates_to_zero_after_the_cooldown_and_activates_on_demand() -> None:
    zero: dict[str, Any] = {"min_replicas": 0, "scale_to_zero_idle_seconds": 60.0}
    loads = [waiting(5.0)] + [waiting(0.0, running=0.0)] * 24
    counts = drive(HpaPolicy(target_per_replica=10.0), loads, desired=1, **zero)
    # Polled 5 waiting at t=0, still the polled value at t=15: last active at t=15, then KEDA's
    # 300 s cooldown (not the spec's 60 s) ends at t=315.
    assert counts[:21] == [1] * 21
    assert counts[21:] == [0] * 4
    activated = HpaPolicy().decide(observation(sig=waiting(3.0), desired=0, **zero), {})
    assert activated.replicas == 1
    assert activated.reason == types.Reason.SCALE_FROM_ZERO


def test_hpa_holds_on_missing_metrics() -> None:
    decision = HpaPolicy().decide(observation(missing=True, desired=5), {})
    assert decision.replicas == 5
    assert decision.reason == types.Reason.METRICS_UNAVAILABLE


def test_hpa_state_keeps_only_the_windows_it_needs() -> None:
    state: types.PolicyState = {}
    policy = HpaPolicy(target_per_replica=10.0)
    for i in range(100):
        state = policy.decide(
            observation(now=1000.0 + 15.0 * i, sig=waiting(45.0), desired=4), state
        ).state
    recommendations = state[hpa.RECOMMENDATIONS]
    assert isinstance(recommendations, list)
    assert len(recommendations) == 20  # 300 s of 15 s syncs


# --- Knative KPA ------------------------------------------------------------------------------


def test_kpa_stable_mode_targets_70_percent_of_the_concurrency_target() -> None:
    # 140 in flight / (100 x 0.7) = 2 replicas.
    decision = KpaPolicy().decide(observation(sig=waiting(40.0, running=100.0), desired=2), {})
    assert decision.replicas == 2
    more = KpaPolicy().decide(observation(sig=waiting(41.0, running=100.0), desired=2), {})
    assert more.replicas == 3


def test_kpa_panics_at_200_percent_and_does_not_scale_down_while_panicking() -> None:
    policy = KpaPolicy(target_per_replica=10.0, target_utilization=1.0)
    calm = [waiting(0.0, running=20.0)] * 10
    burst = [waiting(60.0, running=20.0)]
    after = [waiting(0.0, running=20.0)] * 40
    counts = drive(policy, calm + burst + after, desired=2, step=2.0)
    assert counts[:10] == [2] * 10
    # The 6 s panic window averages 20, 20 and 80 in flight: 4 replicas, 200 % of 2: panic.
    assert counts[10] == 4
    # No scale-down while panicking, until 60 s after the last over-threshold tick (t=20 s).
    assert counts[11:41] == [4] * 30
    assert counts[41] == 2


def test_kpa_stable_average_is_over_60_s() -> None:
    policy = KpaPolicy(target_per_replica=10.0, target_utilization=1.0)
    loads = [waiting(0.0, running=30.0)] * 29 + [waiting(0.0, running=60.0)]
    counts = drive(policy, loads, desired=3, step=2.0)
    # The last sample alone would ask for 6; the 60 s average (31) asks for 4, and the 6 s
    # panic window (40 on average) is under 200 % of the 3 ready replicas.
    assert counts[:29] == [3] * 29
    assert counts[29] == 4


def test_kpa_scales_down_at_most_to_half_the_ready_replicas() -> None:
    decision = KpaPolicy().decide(observation(sig=waiting(0.0, running=1.0), desired=10), {})
    assert decision.replicas == 5


def test_kpa_scale_to_zero_after_a_quiet_stable_window_and_the_grace_period() -> None:
    zero: dict[str, Any] = {"min_replicas": 0, "scale_to_zero_idle_seconds": 60.0}
    loads = [waiting(0.0, running=5.0)] + [waiting(0.0, running=0.0)] * 60
    counts = drive(KpaPolicy(), loads, desired=1, step=2.0, **zero)
    # t=0 has traffic; the 60 s window is quiet from t=60; the 30 s grace ends at t=90.
    assert counts[:45] == [1] * 45
    assert counts[45] == 0


def test_kpa_scales_from_zero_on_traffic() -> None:
    zero: dict[str, Any] = {"min_replicas": 0, "scale_to_zero_idle_seconds": 60.0}
    decision = KpaPolicy().decide(
        observation(sig=waiting(300.0, running=0.0), desired=0, **zero), {}
    )
    assert decision.replicas == 5  # ceil(300 / 70)
    assert decision.reason == types.Reason.SCALE_FROM_ZERO


def test_kpa_keeps_one_replica_without_scale_to_zero() -> None:
    counts = drive(KpaPolicy(), [waiting(0.0, running=0.0)] * 60, desired=1, step=2.0)
    assert counts == [1] * 60


def test_kpa_state_keeps_only_the_stable_window() -> None:
    state: types.PolicyState = {}
    for i in range(100):
        state = (
            KpaPolicy()
            .decide(observation(now=1000.0 + 2.0 * i, sig=waiting(1.0), desired=1), state)
            .state
        )
    samples = state[kpa.SAMPLES]
    assert isinstance(samples, list)
    assert len(samples) == 30  # 60 s of 2 s ticks


# --- static -------------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [waiting(0.0, running=0.0), waiting(5000.0), None])
def test_static_never_moves(load: types.Signals | None) -> None:
    decision = StaticPolicy(replicas=6).decide(
        observation(sig=load, missing=load is None, desired=6), {}
    )
    assert decision.replicas == 6
    assert decision.reason == types.Reason.STEADY
    assert decision.projected_dollars_per_hour == 18.0
