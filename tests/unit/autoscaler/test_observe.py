"""What the policy is told of a ModelService: desired replicas, starting pods, free GPUs, caps."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from thrifty.adapters import prometheus
from thrifty.api import costbudget, gpupool, modelservice
from thrifty.autoscaler import observe
from thrifty.autoscaler.observe import ObserveSettings, PodView
from thrifty.autoscaler.world import ServiceKey
from thrifty.policy import limits, types
from thrifty.policy.planner import ThriftyPolicy

SETTINGS = ObserveSettings(cold_start_seconds=30, staleness_limit_seconds=45)


def model_service(status: dict[str, Any] | None = None, **spec: Any) -> modelservice.ModelService:
    body: dict[str, Any] = {
        "spec": {
            "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "pools": ["h100-on-demand", "h100-spot"],
            "scaling": {"minReplicas": 0, "maxReplicas": 8, "queueDepthTargetPerReplica": 4},
            **spec,
        }
    }
    if status is not None:
        body["status"] = status
    return modelservice.ModelService.model_validate(body)


def pool(free: int | None = 16, price: float = 2.5) -> gpupool.GPUPool:
    body: dict[str, Any] = {
        "spec": {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"thrifty.dev/pool": "h100-on-demand"},
            "pricePerGpuHour": price,
        }
    }
    if free is not None:
        body["status"] = {"gpusAllocatable": 16, "gpusUsed": 16 - free, "gpusFree": free}
    return gpupool.GPUPool.model_validate(body)


def budget(**spec: Any) -> costbudget.CostBudget:
    return costbudget.CostBudget.model_validate({"spec": spec})


def test_desired_is_spec_replicas_else_last_deployed_else_min() -> None:
    assert observe.desired_replicas(model_service(replicas=3)) == 3
    assert observe.desired_replicas(model_service({"desiredReplicas": 5})) == 5
    ms = model_service(scaling={"minReplicas": 2, "maxReplicas": 4})
    assert observe.desired_replicas(ms) == 2


def _observe(
    ms: modelservice.ModelService,
    pods: list[PodView],
    *,
    signals: types.Signals | None = None,
    free: int = 8,
) -> types.Observation:
    """The observation of `ms` at t=1000 s on the H100 on-demand pool with `free` GPUs."""
    return observe.observation(
        ms,
        now_seconds=1000.0,
        pods=pods,
        pool_name="h100-on-demand",
        pool=pool(free=free),
        signals=signals,
        settings=SETTINGS,
    )


def test_only_scheduled_unready_pods_are_starting() -> None:
    pods = [
        PodView(ready=True, scheduled=True),
        PodView(ready=False, scheduled=True, starting_seconds=40),
        PodView(ready=False, scheduled=True, starting_seconds=12),
        PodView(ready=False, scheduled=False),  # pending: no GPU yet, cold start not begun
    ]
    counts = observe.replica_counts(4, pods)
    assert counts == types.ReplicaCounts(desired=4, ready=1, starting=2, oldest_starting_seconds=40)


def test_terminating_pods_are_draining_and_neither_ready_nor_starting() -> None:
    pods = [
        PodView(ready=True, scheduled=True),
        # Readiness lags the deletion: a terminating pod may still say Ready.
        PodView(ready=True, scheduled=True, terminating=True),
        PodView(ready=False, scheduled=True, starting_seconds=5, terminating=True),
        PodView(ready=False, scheduled=False, terminating=True),  # never placed: no GPU held
    ]
    counts = observe.replica_counts(1, pods)
    assert counts == types.ReplicaCounts(desired=1, ready=1, starting=0, draining=2)


def test_draining_pods_take_their_share_of_a_hard_hourly_cap() -> None:
    # $7.5/h at 1 GPU x $2.5: 3 replicas fit; 2 still draining leave room for 1.
    ms = model_service(
        replicas=1,
        costTarget={"maxDollarsPerHour": 7.5, "enforcement": "Hard"},
    )
    pods = [PodView(ready=True, scheduled=True)] + [
        PodView(ready=False, scheduled=True, terminating=True)
    ] * 2
    obs = _observe(ms, pods)
    assert obs.replicas.draining == 2
    assert obs.pool.free_gpus == 8  # draining pods are not unplaced replicas
    assert limits.replicas_within_hourly_cap(obs, 7.5) == 1


def test_free_gpus_exclude_those_our_unplaced_replicas_wait_for() -> None:
    ms = model_service(replicas=4, engine={"tensorParallelSize": 2})
    pods = [PodView(ready=True, scheduled=True), PodView(ready=False, scheduled=False)]
    obs = _observe(ms, pods)
    # 4 desired, 1 placed: 3 replicas x 2 GPUs already claimed from the 8 free.
    assert obs.pool == types.PoolView("h100-on-demand", 2.5, 2, 2)
    assert obs.replicas.desired == 4


def test_pool_without_status_has_unknown_free_gpus() -> None:
    view = observe.pool_view("p", pool(free=None), 1, 0)
    assert view.free_gpus is None


def test_placed_pool_is_from_status_else_first_acceptable() -> None:
    assert observe.placed_pool_name(model_service()) == "h100-on-demand"
    assert observe.placed_pool_name(model_service({"pool": "h100-spot"})) == "h100-spot"


def test_spec_carries_targets_and_a_hard_team_cap_tightens_the_member() -> None:
    ms = model_service(
        scaling={"minReplicas": 0, "maxReplicas": 8, "scaleToZeroIdleSeconds": 300},
        latencyTarget={"timeToFirstTokenP95Seconds": 0.5},
        costTarget={"maxDollarsPerMillionTokens": 2.0, "enforcement": "Soft"},
    )
    spec = observe.policy_spec(ms, SETTINGS, budget(maxDollarsPerMillionTokens=1.2))
    assert spec.max_dollars_per_million_tokens == 1.2
    assert spec.scale_to_zero_idle_seconds == 300.0
    assert spec.ttft_target_seconds == 0.5
    assert spec.enforcement is types.Enforcement.SOFT
    assert spec.cold_start_seconds == 30
    assert spec.staleness_limit_seconds == 45
    soft_team = budget(maxDollarsPerMillionTokens=1.2, enforcement="Soft")
    assert observe.policy_spec(ms, SETTINGS, soft_team).max_dollars_per_million_tokens == 2.0


def test_the_latency_target_carries_its_percentile_and_the_older_field_is_p95() -> None:
    p99 = model_service(latencyTarget={"timeToFirstTokenSeconds": 1.5, "percentile": "p99"})
    spec = observe.policy_spec(p99, SETTINGS)
    assert (spec.ttft_target_seconds, spec.ttft_target_quantile) == (1.5, 0.99)
    older = model_service(latencyTarget={"timeToFirstTokenP95Seconds": 0.5})
    spec = observe.policy_spec(older, SETTINGS)
    assert (spec.ttft_target_seconds, spec.ttft_target_quantile) == (0.5, 0.95)


def test_the_replica_shape_changes_with_the_pools_and_the_engine_only() -> None:
    base = model_service()
    shape = observe.replica_shape(base)
    assert observe.replica_shape(model_service(scaling={"maxReplicas": 9})) == shape
    # Capacity is learned in reference replicas: most replicas moving to another acceptable
    # pool (a spot reclaim) keeps it; another set of acceptable pools does not.
    assert observe.replica_shape(model_service({"pool": "h100-spot"})) == shape
    assert observe.replica_shape(model_service(pools=["l4"])) != shape
    faster = model_service(engine={"maxNumSeqs": 64})
    assert observe.replica_shape(faster) != shape


def test_spec_carries_the_engine_batch_limit_when_set() -> None:
    assert observe.policy_spec(model_service(), SETTINGS).max_num_seqs_per_replica is None
    ms = model_service(engine={"maxNumSeqs": 64})
    assert observe.policy_spec(ms, SETTINGS).max_num_seqs_per_replica == 64


def test_policy_state_comes_back_from_status() -> None:
    ms = model_service({"autoscaler": {"policyState": {"capacity": 900.0}}})
    assert observe.policy_state(ms) == {"capacity": 900.0}
    assert observe.policy_state(model_service()) == {}


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(0, 1e4), st.booleans()), max_size=20
    ),
    st.integers(0, 30),
)
def test_counts_never_exceed_the_pods(
    pods_raw: list[tuple[bool, bool, float, bool]], d: int
) -> None:
    pods = [
        PodView(ready=r and s, scheduled=s, starting_seconds=t, terminating=x)
        for r, s, t, x in pods_raw
    ]
    counts = observe.replica_counts(d, pods)
    assert counts.ready + counts.starting + counts.draining == sum(1 for p in pods if p.scheduled)
    assert counts.oldest_starting_seconds >= 0


def _at_zero(signals: types.Signals | None) -> types.Observation:
    ms = model_service(
        replicas=0, scaling={"minReplicas": 0, "maxReplicas": 4, "scaleToZeroIdleSeconds": 60}
    )
    return _observe(ms, [], signals=signals, free=16)


def test_requests_held_by_the_gateway_scale_a_service_from_zero() -> None:
    key = ServiceKey("team-a", "chat")
    no_engines: dict[str, dict[ServiceKey, float]] = {
        name: {} for name in prometheus.build_queries(key)
    }
    held = {"requests_held": {key: 3.0}, "held_sample_age_seconds": {key: 2.0}}
    reading = prometheus.signals_from_results(key, no_engines | held, staleness_limit_seconds=45)
    decision = ThriftyPolicy().decide(_at_zero(reading.signals), {})
    assert decision.replicas >= 1
    assert decision.reason is types.Reason.SCALE_FROM_ZERO
    # Nothing held and no engines: no signals, and the policy invents no load.
    silent = prometheus.signals_from_results(key, no_engines, staleness_limit_seconds=45)
    assert ThriftyPolicy().decide(_at_zero(silent.signals), {}).replicas == 0


def test_the_cold_start_is_measured_on_the_ready_replicas_else_the_spec_else_the_default() -> None:
    ready = [PodView(ready=True, scheduled=True, cold_start_seconds=s) for s in (40, 50, 900)]
    assert observe.cold_start_seconds(model_service(), SETTINGS, ready) == 50, "the median"
    starting = [PodView(ready=False, scheduled=True, starting_seconds=10)]
    assert observe.cold_start_seconds(model_service(), SETTINGS, starting) == 30, "the default"
    prior = model_service(scaling={"maxReplicas": 8, "coldStartSeconds": 240})
    assert observe.cold_start_seconds(prior, SETTINGS, starting) == 240
    assert observe.policy_spec(prior, SETTINGS, pods=ready).cold_start_seconds == 50
