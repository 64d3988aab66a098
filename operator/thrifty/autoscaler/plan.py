"""One autoscaling pass over the whole fleet, planned without I/O.

    plan(world, readings, states, now) -> per ModelService: decision, scale target, status, Event

1. Each ModelService is translated into the policy's `Observation` (`observe`): its pods, its
   pools' free GPUs, its spec in the policy's units, its signals, with replicas in reference
   replicas over every acceptable pool (`capacity`). What one decision orders is claimed from
   the pools before the next ModelService is decided, so one pass never hands out a GPU twice.
2. Members of a Hard CostBudget with a $/hour cap are planned together: each member's
   unconstrained demand (its policy's choice without the budget) goes into
   `thrifty.autoscaler.budget`, which gives every member an allowance so that the members' totals
   never pass the cap, whatever order the writes land in.
3. The policy decides each ModelService with the state it returned last pass (kept in memory by
   the caller, keyed by uid; status holds it for restarts).
4. Whether thrifty may write replicas (`status.authority`), the new status and the Event follow.

`decide` is steps 1-3, the part the simulator drives; `plan` adds step 4 for the operator. The same
inputs give the same decisions in both, which the tests check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from thrifty import cost
from thrifty.api import costbudget, modelservice, throughput
from thrifty.autoscaler import budget, capacity, observe
from thrifty.autoscaler import status as status_rules
from thrifty.autoscaler.world import ServiceKey, ServiceView, SignalsReading, World
from thrifty.policy import types

NO_READING = SignalsReading(None, "no reading for this ModelService in this pass")
_MANUAL = types.ScalingMode.MANUAL
ADVISORY = "/advisory"
"""Suffix of the uid that keys an advisory policy's state."""


class PolicyChooser(Protocol):
    """Which policy decides for a ModelService (`thrifty.control.policies.Registry` resolves
    spec.scaling.policy; the simulator always answers with the policy under test)."""

    def policy_for(self, ms: modelservice.ModelService) -> tuple[types.ScalingPolicy, str]:
        """The policy, and a note for the decision's message ("" when it is the one asked for)."""
        ...

    def advisory_for(self, ms: modelservice.ModelService) -> types.ScalingPolicy | str | None:
        """The advisory policy, why it cannot be had, or None when there is none."""
        ...


@dataclass(frozen=True)
class Fixed:
    """One policy for every ModelService, no advisory policy: what a simulation runs."""

    policy: types.ScalingPolicy

    def policy_for(self, ms: modelservice.ModelService) -> tuple[types.ScalingPolicy, str]:
        return self.policy, ""

    def advisory_for(self, ms: modelservice.ModelService) -> types.ScalingPolicy | str | None:
        return None


@dataclass(frozen=True)
class Advice:
    """What the advisory policy would do, never applied."""

    policy: str
    decision: types.Decision | None
    """None when the policy cannot be had (`problem` says why)."""
    problem: str = ""


@dataclass(frozen=True)
class ServiceDecision:
    """What the policy decided for one ModelService, and on what."""

    view: ServiceView
    observation: types.Observation
    reading: SignalsReading
    decision: types.Decision | None
    """None in mode Manual: nothing is decided."""
    authority: status_rules.Authority
    state: types.PolicyState
    """The policy state to carry to the next pass (the previous one when nothing was decided)."""
    advice: Advice | None = None
    pool_throughput: Sequence[modelservice.PoolThroughput] | None = None
    """What status keeps of each pool's learned throughput after this pass (`throughput`);
    None: nothing was measured, status keeps what it has."""

    @property
    def scale_to(self) -> int | None:
        """The replica count to write, or None: nothing to write (not Auto, or no change)."""
        decision = self.decision
        if decision is None or self.authority.mode is not types.ScalingMode.AUTO:
            return None
        if decision.replicas == self.observation.replicas.desired:
            return None
        return decision.replicas


@dataclass(frozen=True)
class ServicePlan:
    """One ModelService's part of the plan: the decision and what to write about it."""

    decided: ServiceDecision
    result: status_rules.PassResult
    """The pass as status reports it (re-applied to a fresher status after a write conflict)."""
    status: modelservice.ModelServiceStatus
    """The status after this pass."""
    status_patch: Mapping[str, Any] | None
    """The merge patch to write, or None: nothing a reader could notice changed."""
    events: tuple[tuple[str, str, str], ...]
    """(type, reason, message) of each Event this pass deserves."""


def _policy_state(view: ServiceView, states: Mapping[str, types.PolicyState]) -> types.PolicyState:
    """The state kept in memory since the last pass, else the one status checkpointed."""
    if view.uid in states:
        return states[view.uid]
    return observe.policy_state(view.model_service)


def _units(
    ms: modelservice.ModelService, world: World, settings: observe.ObserveSettings
) -> dict[str, float]:
    """Each pool's unit for ``ms`` at its prior cold start (spec, else the operator's default):
    the one the reconciler's spread counts with, so both see the same reference replicas."""
    cold_start = observe.cold_start_seconds(ms, settings)
    specs = {name: pool.spec for name, pool in world.pools.items()}
    speeds = throughput.in_use(ms.spec, ms.status, specs)
    return capacity.pool_units(world.pools, cold_start, world.observed_hazards, speeds)


def _observation(
    view: ServiceView,
    world: World,
    reading: SignalsReading,
    now_seconds: float,
    settings: observe.ObserveSettings,
    allowance: float | None,
    claimed: capacity.Claimed | None = None,
) -> types.Observation | None:
    """The policy's view, in reference replicas over every acceptable pool (`capacity`)."""
    ms = view.model_service
    pool_name = observe.placed_pool_name(ms)
    pool = world.pools.get(pool_name)
    if pool is None:
        known = [name for name in ms.spec.pools if name in world.pools]
        if not known:
            return None  # the reconciler reports UnknownPool; nothing to size against
        pool_name, pool = known[0], world.pools[known[0]]
    obs = observe.observation(
        ms,
        now_seconds=now_seconds,
        pods=view.pods,
        pool_name=pool_name,
        pool=pool,
        signals=reading.signals,
        settings=settings,
        budget=_budget_of(view, world),
        budget_dollars_per_hour_available=allowance,
    )
    units = _units(ms, world, settings)
    counts = capacity.replica_counts(obs.replicas, view.pods, units)
    placed = capacity.placed_units(view.pods, units)
    spread_pool = capacity.pool_view(ms, world.pools, units, counts, placed, claimed or {})
    return dataclasses.replace(obs, replicas=counts, pool=spread_pool)


def _budget_of(view: ServiceView, world: World) -> costbudget.CostBudget | None:
    ref = view.model_service.spec.cost_target.budget_ref
    if ref is None:
        return None
    return world.budgets.get(ServiceKey(view.key.namespace, ref.name))


def _capped_budget(budget_key: ServiceKey, world: World) -> float | None:
    """The $/hour cap of a Hard budget, which members share; None for any other budget."""
    team = world.budgets.get(budget_key)
    if team is None or team.spec.enforcement is not types.Enforcement.HARD:
        return None
    return team.spec.max_dollars_per_hour


def _member(
    view: ServiceView, demand: types.Decision | None, current: float
) -> budget.BudgetMember:
    ms = view.model_service
    status = ms.status or modelservice.ModelServiceStatus()
    gpus = ms.spec.engine.gpus_per_replica
    price = status.price_per_gpu_hour or 0.0
    return budget.BudgetMember(
        key=str(view.key),
        current_dollars_per_hour=current,
        demand_dollars_per_hour=current if demand is None else demand.projected_dollars_per_hour,
        floor_dollars_per_hour=cost.dollars_per_hour(ms.spec.scaling.min_replicas, gpus, price),
        priority=ms.spec.cost_target.budget_priority,
        dollars_per_million_tokens=status.dollars_per_million_tokens,
    )


def _current_dollars_per_hour(view: ServiceView) -> float:
    ms = view.model_service
    status = ms.status or modelservice.ModelServiceStatus()
    return cost.dollars_per_hour(
        observe.desired_replicas(ms),
        ms.spec.engine.gpus_per_replica,
        status.price_per_gpu_hour or 0.0,
    )


def allowances(
    world: World,
    readings: Mapping[ServiceKey, SignalsReading],
    states: Mapping[str, types.PolicyState],
    now_seconds: float,
    settings: observe.ObserveSettings,
    policies: PolicyChooser,
) -> dict[str, float]:
    """Each Hard budget member's $/hour allowance, by uid, from every member's demand this pass."""
    groups: dict[ServiceKey, list[ServiceView]] = {}
    for view in world.services:
        ref = view.model_service.spec.cost_target.budget_ref
        if ref is not None:
            groups.setdefault(ServiceKey(view.key.namespace, ref.name), []).append(view)
    result: dict[str, float] = {}
    for budget_key, views in groups.items():
        cap = _capped_budget(budget_key, world)
        if cap is None:
            continue
        members = []
        for view in views:
            reading = readings.get(view.key, NO_READING)
            obs = _observation(view, world, reading, now_seconds, settings, None)
            wanted = None
            if obs is not None and view.model_service.spec.scaling.mode is not _MANUAL:
                policy, _ = policies.policy_for(view.model_service)
                wanted = policy.decide(obs, _policy_state(view, states))
            members.append(_member(view, wanted, _current_dollars_per_hour(view)))
        by_key = budget.allowances(cap, members)
        result.update({view.uid: by_key[str(view.key)] for view in views})
    return result


def decide(
    world: World,
    readings: Mapping[ServiceKey, SignalsReading],
    states: Mapping[str, types.PolicyState],
    now_seconds: float,
    settings: observe.ObserveSettings,
    policies: PolicyChooser,
) -> list[ServiceDecision]:
    """Steps 1-3: every ModelService's decision. ``now_seconds`` is wall-clock epoch time (the
    states it stamps survive restarts and move between operator replicas)."""
    granted = allowances(world, readings, states, now_seconds, settings, policies)
    decided = []
    claimed: capacity.Claimed = {}
    for view in world.services:
        reading = readings.get(view.key, NO_READING)
        allowance = granted.get(view.uid)
        obs = _observation(view, world, reading, now_seconds, settings, allowance, claimed)
        if obs is None:
            continue
        state = _policy_state(view, states)
        ms = view.model_service
        mode = ms.spec.scaling.mode
        decision = None
        if mode is not _MANUAL:
            policy, note = policies.policy_for(ms)
            decision = policy.decide(obs, state)
            if note:
                decision = dataclasses.replace(decision, message=f"{note}: {decision.message}")
        authority = status_rules.authority(mode, view.hpas, view.managed_fields)
        if decision is not None and authority.mode is types.ScalingMode.AUTO:
            more = decision.replicas - obs.replicas.desired
            if more > 0:
                units = _units(ms, world, settings)
                capacity.claim(ms, world.pools, units, more, claimed)
        decided.append(
            ServiceDecision(
                view=view,
                observation=obs,
                reading=reading,
                decision=decision,
                authority=authority,
                state=state if decision is None else decision.state,
                advice=_advice(ms, obs, states.get(view.uid + ADVISORY, {}), policies),
                pool_throughput=_learn(view, world, reading),
            )
        )
    return decided


def _learn(
    view: ServiceView, world: World, reading: SignalsReading
) -> list[modelservice.PoolThroughput] | None:
    """Each pool's throughput after this window's prefill samples (None: none were read)."""
    ms = view.model_service
    if not reading.pool_prefill:
        return None
    specs = {name: pool.spec for name, pool in world.pools.items()}
    return throughput.update(ms.spec, ms.status, specs, reading.pool_prefill, _served(view.pods))


def _served(pods: Sequence[observe.PodView]) -> set[str]:
    """Pools where a replica has been serving for the whole measurement window: only those
    saw the same traffic over it (a pool that came back mid-window saw only part of it)."""
    return {
        pod.pool
        for pod in pods
        if pod.pool
        and not pod.terminating
        and pod.ready_seconds is not None
        and pod.ready_seconds >= throughput.WINDOW_SECONDS
    }


def _advice(
    ms: modelservice.ModelService,
    obs: types.Observation,
    state: types.PolicyState,
    policies: PolicyChooser,
) -> Advice | None:
    ref = ms.spec.scaling.advisory_policy
    advisor = policies.advisory_for(ms)
    if ref is None or advisor is None:
        return None
    if isinstance(advisor, str):
        return Advice(ref.name, None, advisor)
    return Advice(ref.name, advisor.decide(obs, state))


def report(decided: ServiceDecision, now_text: str) -> ServicePlan:
    """Step 4 for one ModelService: the status after the pass and the Event it deserves."""
    ms = decided.view.model_service
    obs = decided.observation
    status = ms.status or modelservice.ModelServiceStatus()
    spend = status.dollars_per_hour
    if spend is None:
        spend = cost.dollars_per_hour(
            obs.replicas.ready, obs.pool.gpus_per_replica, obs.pool.price_per_gpu_hour
        )
    advice = decided.advice
    result = status_rules.PassResult(
        advisory=None
        if advice is None
        else status_rules.advisory_status(advice.policy, advice.decision, advice.problem),
        decision=decided.decision,
        signals=decided.reading.signals,
        metrics_reason=decided.reading.reason,
        authority=decided.authority,
        scaled=decided.scale_to is not None,
        dollars_per_hour=spend,
        now=now_text,
        generation=decided.view.generation,
        reference=ms.spec.cost_target.reference_dollars_per_million_tokens,
        pool_throughput=decided.pool_throughput,
        latency_target=_latency_target(obs.spec),
    )
    after = status_rules.next_status(status, result)
    patch = (
        status_rules.status_patch(status, after)
        if status_rules.status_changed(status, after)
        else None
    )
    previous = status.autoscaler.last_decision if status.autoscaler else None
    events = (
        status_rules.event_for(result, previous, obs.replicas.desired),
        status_rules.warning_for(status, after),
    )
    return ServicePlan(
        decided=decided,
        result=result,
        status=after,
        status_patch=patch,
        events=tuple(event for event in events if event is not None),
    )


def _latency_target(spec: types.PolicySpec) -> str | None:
    if spec.ttft_target_seconds is None:
        return None
    return f"{spec.ttft_target_seconds:g} s at {spec.ttft_target_percentile}"


def plan(
    world: World,
    readings: Mapping[ServiceKey, SignalsReading],
    states: Mapping[str, types.PolicyState],
    now_seconds: float,
    now_text: str,
    settings: observe.ObserveSettings,
    policies: PolicyChooser,
) -> Sequence[ServicePlan]:
    """The whole pass: every ModelService's decision and what to write about it."""
    decided = decide(world, readings, states, now_seconds, settings, policies)
    return [report(one, now_text) for one in decided]
