"""One reconcile pass, planned: the status, conditions and Events for each situation."""

from __future__ import annotations

import dataclasses
from typing import Any

from thrifty import explain
from thrifty.api import common, costbudget, gpupool, modelservice
from thrifty.reconciler import placement, reconcile

POOL = gpupool.GPUPoolSpec(
    accelerator="NVIDIA-H100-80GB-HBM3",
    gpu_memory_gib=80,
    gpus_per_node=8,
    node_selector={"thrifty.dev/pool": "h100"},
    price_per_gpu_hour=2.5,
)
NODES = [placement.NodeInfo(f"n{i}", {"thrifty.dev/pool": "h100"}, 8) for i in range(2)]


def inputs(spec: dict[str, Any], **changes: Any) -> reconcile.Inputs:
    """One pass's inputs; ``deployment``, ``replicas_holding_gpus`` (an int): the h100 pool's."""
    if "deployment" in changes:
        found = changes.pop("deployment")
        changes["deployments"] = {} if found is None else {"h100": found}
    if isinstance(changes.get("replicas_holding_gpus"), int):
        changes["replicas_holding_gpus"] = {"h100": changes["replicas_holding_gpus"]}
    base = reconcile.Inputs(
        name="llama",
        namespace="ns",
        uid="u1",
        generation=1,
        spec=spec,
        status=modelservice.ModelServiceStatus(),
        pools={"h100": POOL},
        nodes=NODES,
        pods=[],
        deployments={},
        now="2026-01-01T00:00:00Z",
    )
    return dataclasses.replace(base, **changes)


SPEC: dict[str, Any] = {
    "model": {"uri": "hf://a/b"},
    "pools": ["h100"],
    "engine": {"tensorParallelSize": 4},
    "replicas": 2,
    "scaling": {"maxReplicas": 4},
}


def condition(status: modelservice.ModelServiceStatus, type_: str) -> common.Condition:
    found = explain.find(status.conditions, type_)
    assert found is not None, type_
    return found


def rolled_out(replicas: int) -> reconcile.DeploymentState:
    return reconcile.DeploymentState(1, 1, replicas, replicas, replicas)


def test_desired_replicas_come_from_spec_else_the_lower_bound_but_at_least_one() -> None:
    def desired(**fields: Any) -> int:
        body = {"model": {"uri": "hf://a/b"}, "pools": ["p"], **fields}
        return reconcile.desired_replicas(modelservice.ModelServiceSpec.model_validate(body))

    assert desired(replicas=3, scaling={"maxReplicas": 5}) == 3
    assert desired(scaling={"minReplicas": 2, "maxReplicas": 5}) == 2
    assert desired(scaling={"minReplicas": 0, "maxReplicas": 5}) == 1
    assert desired(replicas=0, scaling={"minReplicas": 0, "maxReplicas": 5}) == 0


def test_ready_with_dollars_per_hour_once_rolled_out() -> None:
    plan = reconcile.plan(inputs(SPEC, deployment=rolled_out(2)))
    assert plan.manifests is not None
    status = plan.status
    assert status.pool == "h100" and status.gpus_per_replica == 4
    assert status.dollars_per_hour == 2 * 4 * 2.5
    assert status.selector == "thrifty.dev/model-service=llama"
    assert condition(status, explain.READY).status is common.ConditionStatus.TRUE
    assert condition(status, explain.DEGRADED).status is common.ConditionStatus.FALSE


def test_progressing_until_replicas_are_ready() -> None:
    starting = reconcile.DeploymentState(1, 1, 2, 1, 2)
    status = reconcile.plan(inputs(SPEC, deployment=starting)).status
    assert condition(status, explain.PROGRESSING).status is common.ConditionStatus.TRUE
    ready = condition(status, explain.READY)
    assert ready.status is common.ConditionStatus.FALSE and "1 of 2" in ready.message


def test_a_no_op_pass_returns_the_same_status_and_no_events() -> None:
    first = reconcile.plan(inputs(SPEC, deployment=rolled_out(2)))
    later = inputs(SPEC, deployment=rolled_out(2), status=first.status, now="2026-01-01T01:00:00Z")
    second = reconcile.plan(later)
    assert second.status == first.status
    assert second.events == []


def test_transition_time_moves_only_on_a_flip() -> None:
    first = reconcile.plan(inputs(SPEC, deployment=rolled_out(2))).status
    flipped = reconcile.plan(
        inputs(
            SPEC,
            deployment=reconcile.DeploymentState(2, 1, 2, 2, 2),
            status=first,
            now="2026-01-01T02:00:00Z",
        )
    ).status
    assert condition(flipped, explain.READY).last_transition_time == "2026-01-01T02:00:00Z"
    assert condition(flipped, explain.DEGRADED).last_transition_time == "2026-01-01T00:00:00Z"


def test_capacity_limited_keeps_serving_and_warns() -> None:
    plan = reconcile.plan(inputs({**SPEC, "replicas": 5, "scaling": {"maxReplicas": 8}}))
    assert plan.manifests is not None
    limited = condition(plan.status, explain.CAPACITY_LIMITED)
    assert limited.status is common.ConditionStatus.TRUE
    assert "20 nvidia.com/gpu" in limited.message and "room for 4" in limited.message
    assert any(e.type == "Warning" and e.reason == explain.INSUFFICIENT_GPUS for e in plan.events)


def test_unknown_pool_degrades_without_touching_workloads() -> None:
    plan = reconcile.plan(inputs({**SPEC, "pools": ["missing"]}))
    assert plan.manifests is None
    degraded = condition(plan.status, explain.DEGRADED)
    assert degraded.reason == explain.UNKNOWN_POOL and "missing" in degraded.message
    assert condition(plan.status, explain.READY).status is common.ConditionStatus.FALSE
    assert [e.reason for e in plan.events] == [explain.UNKNOWN_POOL]


def test_too_many_gpus_per_replica_degrades() -> None:
    spec = {**SPEC, "engine": {"tensorParallelSize": 16}}
    degraded = condition(reconcile.plan(inputs(spec)).status, explain.DEGRADED)
    assert degraded.reason == explain.GPUS_PER_REPLICA_TOO_LARGE


def test_invalid_spec_names_the_field() -> None:
    plan = reconcile.plan(inputs({**SPEC, "model": {"uri": "ftp://x"}}))
    degraded = condition(plan.status, explain.DEGRADED)
    assert degraded.reason == explain.INVALID_SPEC and "spec.model.uri" in degraded.message


def test_missing_secret_seen_on_the_pod_degrades() -> None:
    waiting = [("CreateContainerConfigError", 'secret "hf-token" not found')]
    plan = reconcile.plan(inputs(SPEC, deployment=rolled_out(2), pod_waiting=waiting))
    degraded = condition(plan.status, explain.DEGRADED)
    assert degraded.reason == explain.SECRET_NOT_FOUND and "hf-token" in degraded.message
    assert plan.manifests is not None


def test_hard_cost_cap_below_the_minimum_degrades() -> None:
    spec = {
        **SPEC,
        "scaling": {"minReplicas": 2, "maxReplicas": 4},
        "costTarget": {"maxDollarsPerHour": 10},
    }
    degraded = condition(reconcile.plan(inputs(spec)).status, explain.DEGRADED)
    assert degraded.reason == explain.COST_CAP_BELOW_MINIMUM
    assert "$20.00/h" in degraded.message


def test_fields_owned_by_the_autoscaler_are_kept() -> None:
    others = modelservice.ModelServiceStatus(
        queue_depth=3.0,
        conditions=[
            explain.condition(
                explain.METRICS_AVAILABLE, True, "Scraped", "", now="2025-01-01T00:00:00Z"
            )
        ],
    )
    status = reconcile.plan(inputs(SPEC, status=others)).status
    assert status.queue_depth == 3.0
    assert condition(status, explain.METRICS_AVAILABLE).reason == "Scraped"


def test_budget_status_sums_members_and_flags_overspend() -> None:
    bodies = [
        {
            "metadata": {"name": n},
            "spec": {"costTarget": {"budgetRef": {"name": "team"}}},
            "status": {"dollarsPerHour": d},
        }
        for n, d in (("a", 10.1), ("b", 20.2))
    ] + [{"metadata": {"name": "c"}, "spec": {}, "status": {"dollarsPerHour": 99}}]
    members = reconcile.budget_members("team", bodies)
    assert [m.name for m in members] == ["a", "b"]
    spec = costbudget.CostBudgetSpec(max_dollars_per_hour=30)
    status = reconcile.budget_status(
        spec, costbudget.CostBudgetStatus(), members, now="2026-01-01T00:00:00Z", generation=1
    )
    assert status.dollars_per_hour == 30.3
    assert status.remaining_dollars_per_hour is not None
    assert round(status.remaining_dollars_per_hour, 6) == -0.3
    exceeded = explain.find(status.conditions, explain.BUDGET_EXCEEDED)
    assert exceeded is not None and exceeded.status is common.ConditionStatus.TRUE
    ready = explain.find(status.conditions, explain.READY)  # the Status printer column
    assert ready is not None and ready.status is common.ConditionStatus.FALSE
    within = reconcile.budget_status(
        costbudget.CostBudgetSpec(max_dollars_per_hour=50),
        status,
        members,
        now="2026-01-01T00:01:00Z",
        generation=1,
    )
    ready = explain.find(within.conditions, explain.READY)
    assert ready is not None and ready.status is common.ConditionStatus.TRUE


def test_a_new_object_gets_events_for_placement_and_start_only() -> None:
    plan = reconcile.plan(inputs(SPEC))
    assert [e.reason for e in plan.events] == [explain.PLACED, explain.REPLICAS_STARTING]


def test_dollars_per_hour_counts_only_replicas_holding_gpus() -> None:
    two_pods_one_pending = reconcile.DeploymentState(1, 1, 2, 1, 2)
    status = reconcile.plan(
        inputs(SPEC, deployment=two_pods_one_pending, replicas_holding_gpus=1)
    ).status
    assert status.replicas == 2
    assert status.dollars_per_hour == 1 * 4 * 2.5


def test_dollars_per_hour_counts_a_ready_replica_the_older_pod_listing_missed() -> None:
    # Pods are listed before the Deployment is read: a pod can be bound and ready in between.
    one_ready = reconcile.DeploymentState(1, 1, 1, 1, 1)
    status = reconcile.plan(inputs(SPEC, deployment=one_ready, replicas_holding_gpus=0)).status
    assert status.ready_replicas == 1
    assert status.dollars_per_hour == 1 * 4 * 2.5


def test_an_owned_flag_that_slipped_past_admission_degrades_naming_the_entry() -> None:
    """An object stored before the CRD had the rule: Degraded, its workloads left alone."""
    spec = {**SPEC, "engine": {"tensorParallelSize": 4, "extraArgs": ["--por=9000"]}}
    plan = reconcile.plan(inputs(spec))
    assert plan.manifests is None
    degraded = condition(plan.status, explain.DEGRADED)
    assert degraded.reason == explain.INVALID_SPEC
    assert "spec.engine" in degraded.message and "'--por=9000'" in degraded.message
    assert "--port" in degraded.message
    assert [e.type for e in plan.events] == ["Warning"]


def test_a_workload_the_api_server_refuses_degrades_once_with_its_message() -> None:
    first = inputs(SPEC)
    planned = reconcile.plan(first)
    manifest = planned.manifests[0]  # type: ignore[index]
    failure = [(manifest, "422 Unprocessable Entity: spec.x: Invalid", True)]
    refused = reconcile.apply_failed(first, planned, failure)
    degraded = condition(refused.status, explain.DEGRADED)
    assert degraded.reason == explain.APPLY_FAILED
    assert manifest["metadata"]["name"] in degraded.message and "spec.x" in degraded.message
    assert condition(refused.status, explain.READY).status is common.ConditionStatus.FALSE
    again = reconcile.apply_failed(
        dataclasses.replace(first, status=refused.status), planned, failure
    )
    assert [e.reason for e in refused.events if e.type == "Warning"] == [explain.APPLY_FAILED]
    assert again.events == []


# --- spread over pools -------------------------------------------------------------------------

SPOT = POOL.model_copy(
    update={
        "node_selector": {"thrifty.dev/pool": "spot"},
        "price_per_gpu_hour": 1.0,
        "capacity_type": gpupool.CapacityType.SPOT,
    }
)
L4 = POOL.model_copy(
    update={
        "node_selector": {"thrifty.dev/pool": "l4"},
        "gpu_memory_gib": 24,
        "gpus_per_node": 4,
        "price_per_gpu_hour": 0.8,
        "relative_throughput": 0.3,
    }
)
SPREAD_NODES = [
    *NODES,
    placement.NodeInfo("s0", {"thrifty.dev/pool": "spot"}, 8),
    placement.NodeInfo("l0", {"thrifty.dev/pool": "l4"}, 4),
]
SPREAD_SPEC: dict[str, Any] = {
    "model": {"uri": "hf://a/b"},
    "pools": ["h100", "spot", "l4"],
    "placement": "Cheapest",
    "engine": {"tensorParallelSize": 4},
    "replicas": 3,
    "scaling": {"maxReplicas": 8},
}


def spread_inputs(spec: dict[str, Any] = SPREAD_SPEC, **changes: Any) -> reconcile.Inputs:
    return inputs(spec, pools={"h100": POOL, "spot": SPOT, "l4": L4}, nodes=SPREAD_NODES, **changes)


def test_a_spread_service_has_a_deployment_status_and_cost_per_pool() -> None:
    plan = reconcile.plan(spread_inputs())
    assert plan.manifests is not None
    deployments = {
        m["metadata"]["labels"]["thrifty.dev/pool"]: m["spec"]["replicas"]
        for m in plan.manifests
        if m["kind"] == "Deployment"
    }
    # Spot holds 2 replicas of 4 GPUs; then an H100 replica ($10/h) beats 4 L4 GPUs at 0.3 of
    # its speed ($3.20 / 0.3 = $10.67/h per reference replica). Every pool has its Deployment.
    assert deployments == {"h100": 1, "spot": 2, "l4": 0}
    status = plan.status
    assert status.placement == "h100=1 spot=2"
    assert status.dollars_per_hour == 0.0  # nothing holds GPUs yet
    by_pool = {p.pool: p for p in status.pools}
    assert by_pool["spot"].capacity_type == "Spot" and by_pool["spot"].replicas == 2
    assert by_pool["spot"].effective_dollars_per_hour == 4.0
    assert condition(status, explain.CAPACITY_LIMITED).status is common.ConditionStatus.FALSE


def test_an_unknown_pool_degrades_naming_it_and_the_others_serve() -> None:
    spec = {**SPREAD_SPEC, "pools": ["nope", "spot"]}
    plan = reconcile.plan(spread_inputs(spec))
    assert plan.manifests is not None
    degraded = condition(plan.status, explain.DEGRADED)
    assert degraded.reason == explain.UNKNOWN_POOL and "nope" in degraded.message


def test_a_pool_with_gpus_too_small_for_the_model_is_not_used_and_named() -> None:
    spec = {**SPREAD_SPEC, "model": {"uri": "hf://a/b", "weightsGib": 140}}
    plan = reconcile.plan(spread_inputs(spec))
    assert plan.manifests is not None
    pools = {
        m["metadata"]["labels"]["thrifty.dev/pool"]
        for m in plan.manifests
        if m["kind"] == "Deployment"
    }
    assert pools == {"h100", "spot"}  # 140 / 4 = 35 GiB per GPU: not on a 24 GiB L4
    degraded = condition(plan.status, explain.DEGRADED)
    assert degraded.reason == explain.POOL_TOO_SMALL
    assert "l4" in degraded.message and "weightsGib" in degraded.message


def test_the_single_deployment_of_before_goes_once_the_pools_serve() -> None:
    legacy = {"llama-engine": rolled_out(3)}
    waiting = reconcile.plan(spread_inputs(orphans=legacy))
    assert waiting.prune == []
    serving = {"h100": rolled_out(1), "spot": rolled_out(2), "l4": rolled_out(0)}
    done = reconcile.plan(spread_inputs(orphans=legacy, deployments=serving))
    assert done.prune == ["llama-engine"]


def test_spend_counts_every_pool() -> None:
    """What a Hard cap and a CostBudget see: the sum of every pool's replicas on GPUs."""
    serving = {"h100": rolled_out(1), "spot": rolled_out(2)}
    status = reconcile.plan(spread_inputs(deployments=serving)).status
    assert status.dollars_per_hour == 1 * 4 * 2.5 + 2 * 4 * 1.0
    assert {p.pool: p.dollars_per_hour for p in status.pools} == {
        "h100": 10.0,
        "spot": 8.0,
        "l4": 0.0,
    }


def test_an_object_that_could_not_be_applied_is_named_and_the_rest_of_the_status_stands() -> None:
    """A quota or a full IP range refusing the Service: Degraded ApplyError (retried, not
    Stalled) naming the Service and the error; the Deployment's status is still reported."""
    first = inputs(SPEC, deployment=rolled_out(2))
    planned = reconcile.plan(first)
    service = next(m for m in planned.manifests or [] if m["kind"] == "Service")
    error = '403 Forbidden: services "llama-engine" is forbidden: exceeded quota: q'
    failed = reconcile.apply_failed(first, planned, [(service, error, False)])
    degraded = condition(failed.status, explain.DEGRADED)
    assert degraded.reason == explain.APPLY_ERROR
    assert "Service llama-engine" in degraded.message and "exceeded quota" in degraded.message
    assert explain.find(failed.status.conditions, explain.STALLED) is None
    assert (failed.status.ready_replicas, failed.status.pool) == (2, "h100")
    assert [e.reason for e in failed.events if e.type == "Warning"] == [explain.APPLY_ERROR]


def test_a_terminal_failure_is_stalled_and_a_fixed_spec_clears_it() -> None:
    """kstatus reads Stalled=True as Failed (Flux fails fast); waiting cannot heal these."""
    broken = reconcile.plan(inputs({**SPEC, "engine": {"tensorParallelSize": 16}}))
    stalled = condition(broken.status, explain.STALLED)
    assert stalled.status is common.ConditionStatus.TRUE
    assert stalled.reason == explain.GPUS_PER_REPLICA_TOO_LARGE
    assert [e.reason for e in broken.events] == [explain.GPUS_PER_REPLICA_TOO_LARGE]
    fixed = reconcile.plan(inputs(SPEC, status=broken.status, deployment=rolled_out(2)))
    cleared = condition(fixed.status, explain.STALLED)
    assert cleared.status is common.ConditionStatus.FALSE
    assert condition(fixed.status, explain.READY).status is common.ConditionStatus.TRUE


def test_a_failure_that_heals_by_itself_is_not_stalled() -> None:
    """An unknown pool (it may be created in the same sync) or a missing Secret: Ready=False
    (kstatus: InProgress), no Stalled condition at all; nor on a healthy object."""
    unknown = reconcile.plan(inputs({**SPEC, "pools": ["nope"]})).status
    assert condition(unknown, explain.DEGRADED).reason == explain.UNKNOWN_POOL
    assert explain.find(unknown.conditions, explain.STALLED) is None
    healthy = reconcile.plan(inputs(SPEC, deployment=rolled_out(2))).status
    assert explain.find(healthy.conditions, explain.STALLED) is None


def test_every_refusal_by_the_api_server_is_stalled() -> None:
    first = inputs(SPEC)
    planned = reconcile.plan(first)
    manifest = planned.manifests[0]  # type: ignore[index]
    refused = reconcile.apply_failed(first, planned, [(manifest, "422 Unprocessable Entity", True)])
    assert condition(refused.status, explain.STALLED).reason == explain.APPLY_FAILED


def _pod(name: str, node: str | None, *, ready: bool = True, deleting: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ready_condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": "Running", "conditions": [ready_condition]},
    }


def test_lost_replicas_are_those_on_deleted_or_not_ready_nodes_not_yet_being_deleted() -> None:
    pods = [
        _pod("fine", "n0"),
        _pod("on-deleted", "gone"),
        _pod("on-sick", "sick", ready=False),
        _pod("evicted", "sick", deleting=True),
        _pod("pending", None),
    ]
    lost = reconcile.lost_replicas(pods, {"n0": True, "sick": False})
    assert lost == [
        reconcile.LostReplica("on-deleted", "gone", "deleted", True),
        reconcile.LostReplica("on-sick", "sick", "NotReady", False),
    ]


def test_lost_replicas_are_reported_replaced_at_once_and_not_counted_ready() -> None:
    lost = [
        reconcile.LostReplica("p1", "n1", "deleted", True, "h100"),
        reconcile.LostReplica("p2", "n1", "deleted", True, "h100"),
    ]
    settled = reconcile.plan(inputs(SPEC, deployment=rolled_out(2)))
    plan = reconcile.plan(inputs(SPEC, deployment=rolled_out(2), status=settled.status, lost=lost))
    replicas = plan.manifests[0]["spec"]["replicas"]  # type: ignore[index]
    assert replicas == 2 + 2, "a replacement per lost replica, ordered now"
    assert plan.status.ready_replicas == 0 and plan.status.desired_replicas == 2
    condition_ = condition(plan.status, explain.REPLICAS_LOST)
    assert condition_.status is common.ConditionStatus.TRUE
    assert condition_.reason == explain.NODE_LOST
    assert "p1 on node n1 (deleted)" in condition_.message
    assert condition(plan.status, explain.READY).status is common.ConditionStatus.FALSE
    warnings = [e for e in plan.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == [explain.NODE_LOST]
    # One more node lost while the first lost pod is still there: a new Event names it.
    more = [*lost, reconcile.LostReplica("p3", "n2", "NotReady", True, "h100")]
    worse = reconcile.plan(inputs(SPEC, deployment=rolled_out(2), status=plan.status, lost=more))
    assert [(e.type, e.reason) for e in worse.events] == [("Warning", explain.NODE_LOST)]
    assert "p3 on node n2 (NotReady)" in worse.events[0].message
    # The lost pods are gone and the replacements ready: back to the spec's count, an Event.
    healed = reconcile.plan(inputs(SPEC, deployment=rolled_out(2), status=plan.status))
    assert healed.manifests[0]["spec"]["replicas"] == 2  # type: ignore[index]
    assert condition(healed.status, explain.REPLICAS_LOST).status is common.ConditionStatus.FALSE
    assert explain.NO_REPLICA_LOST in [e.reason for e in healed.events]
    assert condition(healed.status, explain.READY).status is common.ConditionStatus.TRUE


def test_a_healthy_new_object_has_no_replicas_lost_event() -> None:
    plan = reconcile.plan(inputs(SPEC))
    assert explain.NO_REPLICA_LOST not in [e.reason for e in plan.events]


def test_a_short_autoscaled_pool_limits_capacity_with_its_reason() -> None:
    autoscaled = gpupool.GPUPoolSpec.model_validate(
        {**POOL.to_kube(), "provisioning": {"mode": "Autoscaled", "maxNodes": 4}}
    )
    ok = reconcile.plan(inputs(SPEC, pools={"h100": autoscaled}, nodes=[]))
    assert condition(ok.status, explain.CAPACITY_LIMITED).status is common.ConditionStatus.FALSE
    short = reconcile.plan(
        inputs(
            SPEC,
            pools={"h100": autoscaled},
            nodes=[],
            pool_shortages={"h100": "NodesNotDelivered: pod ns/x has waited 400 s"},
        )
    )
    limited = condition(short.status, explain.CAPACITY_LIMITED)
    assert limited.status is common.ConditionStatus.TRUE
    assert limited.reason == explain.POOL_SHORT
    assert "GPUPool h100 is short: NodesNotDelivered" in limited.message
    assert short.manifests is not None  # the pods stay and wait: the autoscaler may still deliver


def test_a_spot_pool_reclaimed_often_is_planned_with_the_rate_seen() -> None:
    """Two reclaims an hour seen on spot, 120 s cold start past a 30 s notice: a spot replica
    counts 0.95, so its 2 replicas hold 1.9 of the 3 reference replicas and H100 takes 2."""
    plan = reconcile.plan(spread_inputs(observed_hazards={"spot": 2.0}))
    assert plan.manifests is not None
    assert plan.status.placement == "h100=2 spot=2"


def _read_back(plan: reconcile.Plan, ready: dict[str, int]) -> dict[str, reconcile.DeploymentState]:
    """The Deployments the next pass reads: what ``plan`` rendered, ``ready`` of them ready."""
    states = {}
    for manifest in plan.manifests or []:
        if manifest["kind"] != "Deployment":
            continue
        pool = manifest["metadata"]["labels"][placement.POOL_LABEL]
        asked = manifest["spec"]["replicas"]
        body = {
            **manifest,
            "metadata": {**manifest["metadata"], "generation": 1},
            "status": {
                "observedGeneration": 1,
                "replicas": asked,
                "readyReplicas": ready.get(pool, 0),
                "updatedReplicas": asked,
            },
        }
        states[pool] = reconcile.deployment_state(body)
    return states


def settled_spread() -> reconcile.Inputs:
    """SPREAD_SPEC rolled out as placed: 1 replica on h100 and 2 on spot, all ready."""
    return spread_inputs(
        deployments={
            "h100": rolled_out(1),
            "spot": rolled_out(2),
            "l4": reconcile.DeploymentState(),
        }
    )


def test_a_lost_replicas_replacement_is_not_read_as_placed_once_the_lost_pod_is_gone() -> None:
    """The spot node deleted: its 2 replicas are lost, H100 takes their place, and the spot
    Deployment keeps asking for 2 (the lost pods' replacements) while its ReplicaSet still
    counts the lost pods. Once the pod garbage collector removes them, the replacements are pods
    like any other: read as spot replicas, they were lost a second time (a second
    CapacityReclaimed, the return delay stamped again) and, had the node come back by then, kept
    all at once instead of returning to spot one replica at a time."""
    settled = settled_spread()
    before = reconcile.plan(settled)
    assert before.status.placement == "h100=1 spot=2" and before.moves == []
    without_spot = [n for n in SPREAD_NODES if n.name != "s0"]
    lost = [reconcile.LostReplica(f"p{i}", "s0", "deleted", True, "spot") for i in range(2)]
    deleted = reconcile.plan(
        dataclasses.replace(
            settled,
            status=before.status,
            nodes=without_spot,
            lost=lost,
            deployments=_read_back(before, {"h100": 1, "spot": 2}),
        )
    )
    assert deleted.status.placement == "h100=3"
    assert _read_back(deleted, {})["spot"].asked == 2, "the lost pods' replacements"
    stamped = {p.pool: p.last_reclaim_time for p in deleted.status.pools}
    # The lost pods are gone; the replacements wait Pending for a node that is not there.
    later = dataclasses.replace(
        settled,
        status=deleted.status,
        nodes=without_spot,
        deployments=_read_back(deleted, {"h100": 3}),
        now="2026-01-01T00:01:00Z",
    )
    collected = reconcile.plan(later)
    assert collected.moves == [], "nothing was reclaimed a second time"
    assert {p.pool: p.last_reclaim_time for p in collected.status.pools} == stamped
    assert _read_back(collected, {})["spot"].asked == 0, "the replacements go with the lost pods"
    # The node is back at that very moment: one replica returns to spot, not both at once.
    back = reconcile.plan(dataclasses.replace(later, nodes=SPREAD_NODES))
    assert _read_back(back, {})["spot"].asked == 1
    assert [move.reason for move in back.moves] == [explain.RETURNING]


def test_replicas_under_a_reclaim_notice_are_lost_once_not_at_every_pass() -> None:
    """The spot node is tainted for reclaim and stays for its notice, several passes: the first
    pass orders the replacements (CapacityReclaimed, the return delay stamped), the next ones
    see the same doomed replicas already replaced and neither report nor stamp them again."""
    settled = settled_spread()
    before = reconcile.plan(settled)
    on_spot = [
        placement.PodInfo(
            "ns",
            f"spot-{i}",
            "s0",
            4,
            {placement.POOL_LABEL: "spot", placement.MODEL_SERVICE_LABEL: "llama"},
        )
        for i in range(2)
    ]
    nodes = [dataclasses.replace(n, reclaiming=True) if n.name == "s0" else n for n in SPREAD_NODES]
    noticed = dataclasses.replace(
        settled,
        status=before.status,
        nodes=nodes,
        pods=on_spot,
        deployments=_read_back(before, {"h100": 1, "spot": 2}),
    )
    first = reconcile.plan(noticed)
    assert [move.reason for move in first.moves] == [explain.CAPACITY_RECLAIMED]
    spot = {p.pool: p for p in first.status.pools}["spot"]
    assert (spot.replicas, spot.reclaiming) == (2, 2), "the doomed serve through the notice"
    assert spot.last_reclaim_time == "2026-01-01T00:00:00Z"
    second = reconcile.plan(
        dataclasses.replace(
            noticed,
            status=first.status,
            deployments=_read_back(first, {"h100": 1, "spot": 2}),
            now="2026-01-01T00:00:30Z",
            now_seconds=30.0,
        )
    )
    assert second.moves == [], "the same notice is news once"
    again = {p.pool: p for p in second.status.pools}["spot"]
    assert again == spot, "not stamped again: the return delay counts from the notice"
    assert _read_back(second, {})["h100"].asked == _read_back(first, {})["h100"].asked
