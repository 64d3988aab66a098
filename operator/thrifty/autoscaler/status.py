"""What one autoscaler pass means for a ModelService, decided without I/O.

The fleet pass (thrifty.control.fleet) reads the cluster and Prometheus, asks the policy, and
then needs answers to three questions that deserve tests of their own:

- *May thrifty write replicas at all?* Mode Manual: no. Mode Advisory: no, it only reports. And in
  mode Auto thrifty still steps back to Advisory when someone else drives ``spec.replicas``: a
  HorizontalPodAutoscaler whose scaleTargetRef is the ModelService, or another field manager that
  owns ``spec.replicas`` by server-side apply (a GitOps tool that declares replicas). Two writers of
  one field only fight; the status says who owns it and how to hand it over.
- *What is the new status?* The autoscaler's fields only (queue, tokens/s, $/1M tokens and the
  reference price beside it, the last decision, the policy state, MetricsAvailable and
  BudgetLimited); the reconciler owns the rest.
- *Did anything change?* A status write per pass only when something a reader could notice changed:
  numbers are rounded to what status shows; the policy's state rides along with those writes and
  is otherwise checkpointed when the operator stops (`state_patch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thrifty import cost, explain
from thrifty.api import common, modelservice
from thrifty.policy import types

FIELD_MANAGER = "thrifty-autoscaler"
"""Our field manager on the scale subresource and on status."""

HPA_CONTROLLER_MANAGER = "kube-controller-manager"

STATUS_FIELDS = (
    "queueDepth",
    "tokensPerSecond",
    "dollarsPerMillionTokens",
    "referenceDollarsPerMillionTokens",
    "savingsVsReference",
    "autoscaler",
    "conditions",
)
"""The status fields the autoscaler owns (the reconciler owns the rest)."""


@dataclass(frozen=True)
class Authority:
    """Whether this pass may write replicas, and why not."""

    mode: types.ScalingMode
    """The mode in effect: the spec's, or Advisory when someone else drives replicas."""
    why: str = ""


def owns_replicas(fields: Mapping[str, Any]) -> bool:
    spec = fields.get("f:spec")
    return isinstance(spec, Mapping) and "f:replicas" in spec


def other_replicas_owners(managed_fields: Iterable[Mapping[str, Any]]) -> list[str]:
    """Field managers other than thrifty that drive spec.replicas: appliers, and the HPA."""
    owners = []
    for entry in managed_fields:
        manager = str(entry.get("manager", ""))
        if manager == FIELD_MANAGER or not owns_replicas(entry.get("fieldsV1") or {}):
            continue
        applied = entry.get("operation") == "Apply"
        hpa = manager == HPA_CONTROLLER_MANAGER and entry.get("subresource") == "scale"
        if applied or hpa:
            owners.append(manager)
    return sorted(set(owners))


def authority(
    spec_mode: types.ScalingMode,
    hpa_names: Sequence[str],
    managed_fields: Iterable[Mapping[str, Any]],
) -> Authority:
    if spec_mode is not types.ScalingMode.AUTO:
        return Authority(spec_mode)
    if hpa_names:
        names = ", ".join(sorted(hpa_names))
        return Authority(
            types.ScalingMode.ADVISORY,
            f"HorizontalPodAutoscaler {names} drives replicas: thrifty only advises "
            "(delete the HPA to let thrifty scale)",
        )
    owners = other_replicas_owners(managed_fields)
    if owners:
        return Authority(
            types.ScalingMode.ADVISORY,
            f"spec.replicas is owned by field manager {', '.join(owners)}: thrifty only advises "
            "(drop replicas from that manager's manifest to let thrifty scale)",
        )
    return Authority(types.ScalingMode.AUTO)


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(max(value, 0.0), digits)


@dataclass(frozen=True)
class PassResult:
    """What the pass decided, as the status reports it."""

    decision: types.Decision | None
    """None in mode Manual: nothing decided."""
    signals: types.Signals | None
    metrics_reason: str
    authority: Authority
    scaled: bool
    """Replicas were written this pass."""
    dollars_per_hour: float
    """Current spend (what the reconciler reports), for $/1M tokens."""
    now: str
    generation: int | None = None
    advisory: modelservice.AdvisoryDecision | None = None
    """What spec.scaling.advisoryPolicy would do (None: none is set)."""
    reference: modelservice.ReferencePrice | None = None
    """spec.costTarget.referenceDollarsPerMillionTokens (None: none is set)."""
    pool_throughput: Sequence[modelservice.PoolThroughput] | None = None
    """Each pool's learned throughput after this pass (None: keep what status has)."""
    latency_target: str | None = None
    """The declared TTFT target as status names it ("2 s at p95"); None: none is declared."""


def advisory_status(
    policy: str, decision: types.Decision | None, problem: str
) -> modelservice.AdvisoryDecision:
    """The advisory policy's decision as status shows it (or why there is none)."""
    if decision is None:
        return modelservice.AdvisoryDecision(
            policy=policy, replicas=0, reason="Unavailable", message=problem
        )
    return modelservice.AdvisoryDecision(
        policy=policy,
        replicas=decision.replicas,
        reason=decision.reason.value,
        message=decision.message,
        projected_dollars_per_hour=_round(decision.projected_dollars_per_hour, 2),
    )


def _metrics_condition(result: PassResult) -> common.Condition:
    available = result.signals is not None
    reason = explain.METRICS_READ if available else explain.METRICS_MISSING
    message = result.metrics_reason
    unmeasured = latency_unmeasured(result)
    if unmeasured is not None:
        reason, message = explain.LATENCY_UNMEASURED, unmeasured
    return explain.condition(
        explain.METRICS_AVAILABLE,
        available,
        reason,
        message,
        now=result.now,
        generation=result.generation,
    )


def latency_unmeasured(result: PassResult) -> str | None:
    """Why the declared latency target cannot be checked, or None when it can (or none is set).

    Requests finish, yet Prometheus has no TTFT histogram for them: its buckets were dropped (a
    relabeling or a managed Prometheus' metric filter keeping only _sum and _count is common) or
    never scraped. The policy then sizes on throughput alone."""
    signals = result.signals
    if result.latency_target is None or signals is None or signals.requests_per_second <= 0.0:
        return None
    if signals.ttft_buckets or signals.ttft_p95_seconds is not None:
        return None
    return (
        f"{result.metrics_reason}; but requests finish and Prometheus has no "
        "vllm:time_to_first_token_seconds_bucket series for them, so the latency target "
        f"({result.latency_target}) cannot be checked and replicas are sized on throughput "
        "alone: keep that histogram's buckets in the scrape and in any metric filter"
    )


def _budget_condition(result: PassResult) -> common.Condition:
    decision = result.decision
    bound = decision is not None and decision.bound is types.Bound.BUDGET
    message = decision.message if bound and decision is not None else "within budget"
    return explain.condition(
        explain.BUDGET_LIMITED,
        bound,
        explain.BUDGET_BOUND if bound else explain.WITHIN_BUDGET,
        message,
        now=result.now,
        generation=result.generation,
    )


def next_status(
    status: modelservice.ModelServiceStatus, result: PassResult
) -> modelservice.ModelServiceStatus:
    """The status after this pass: the autoscaler's fields replaced, everything else kept."""
    signals = result.signals
    update: dict[str, Any] = {}
    if signals is not None:
        served = signals.prompt_tokens_per_second + signals.generation_tokens_per_second
        update["queue_depth"] = _round(signals.requests_waiting, 1)
        update["tokens_per_second"] = _round(signals.generation_tokens_per_second, 1)
        realised = _round(cost.dollars_per_million_tokens(result.dollars_per_hour, served), 4)
        update["dollars_per_million_tokens"] = realised
        update.update(_reference_fields(result.reference, signals, realised))
    conditions = explain.set_conditions(
        status.conditions, [_metrics_condition(result), _budget_condition(result)]
    )
    update["conditions"] = conditions
    update["autoscaler"] = _autoscaler_block(status.autoscaler, result)
    return status.model_copy(update=update)


def _reference_fields(
    reference: modelservice.ReferencePrice | None,
    signals: types.Signals,
    realised: float | None,
) -> dict[str, float | None]:
    """The reference price blended by this window's token mix, and the saving against it, both
    from the rounded figures status shows, so they change only when a shown figure changes."""
    blended = None
    if reference is not None:
        blended = _round(
            cost.blended_reference_dollars_per_million_tokens(
                reference.input,
                reference.output,
                signals.prompt_tokens_per_second,
                signals.generation_tokens_per_second,
            ),
            4,
        )
    saving = cost.savings_fraction(realised, blended)
    return {
        "reference_dollars_per_million_tokens": blended,
        "savings_vs_reference": None if saving is None else round(saving, 3),
    }


def _autoscaler_block(
    before: modelservice.AutoscalerStatus | None, result: PassResult
) -> modelservice.AutoscalerStatus:
    before = before or modelservice.AutoscalerStatus()
    learned = before.pool_throughput
    if result.pool_throughput is not None:
        learned = list(result.pool_throughput)
    decision = result.decision
    if decision is None:
        return before.model_copy(update={"advisory": result.advisory, "pool_throughput": learned})
    message = decision.message
    if result.authority.mode is types.ScalingMode.ADVISORY:
        message = f"Advisory: {message}" + (
            f" ({result.authority.why})" if result.authority.why else ""
        )
    last = before.last_decision
    at = result.now
    if last is not None and (last.replicas, last.reason, last.message, last.bound) == (
        decision.replicas,
        decision.reason.value,
        message,
        decision.bound.value,
    ):
        at = last.at  # the same decision again: keep its time, so nothing changes
    return modelservice.AutoscalerStatus(
        last_decision=modelservice.LastDecision(
            replicas=decision.replicas,
            reason=decision.reason.value,
            message=message,
            bound=decision.bound.value,
            at=at,
        ),
        last_scale_time=result.now if result.scaled else before.last_scale_time,
        policy_state=dict(decision.state),
        advisory=result.advisory,
        pool_throughput=learned,
    )


def _visible(status: modelservice.ModelServiceStatus) -> dict[str, Any]:
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    block = wire.get("autoscaler") or {}
    block.pop("policyState", None)
    wire["autoscaler"] = block
    return wire


def status_changed(
    before: modelservice.ModelServiceStatus, after: modelservice.ModelServiceStatus
) -> bool:
    """Whether writing `after` tells a reader anything new. The policy's own state does not count:
    it changes every pass (clock stamps, a window of recent demand), lives in memory between passes
    and is written along with every visible change, so a settled ModelService costs no write."""
    return _visible(before) != _visible(after)


def status_patch(
    before: modelservice.ModelServiceStatus, after: modelservice.ModelServiceStatus
) -> dict[str, Any]:
    """The merge patch of the autoscaler's status fields. A field that became unknown is written
    as null, which deletes it: a merge patch that leaves it out would keep the last value (a busy
    hour's $/1M tokens shown forever once traffic stops). Conditions go as a whole list, since a
    merge patch replaces lists; the caller guards the write with the resourceVersion it read."""
    old = before.model_dump(mode="json", by_alias=True, exclude_none=True)
    new = after.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch: dict[str, Any] = {key: new[key] for key in STATUS_FIELDS if key in new}
    patch.update({key: None for key in STATUS_FIELDS if key in old and key not in new})
    return patch


def state_patch(
    status: modelservice.ModelServiceStatus | None, state: types.PolicyState
) -> dict[str, Any] | None:
    """The patch that checkpoints a policy state into status, or None when status holds it."""
    block = status.autoscaler if status is not None else None
    held = block.policy_state if block is not None else None
    if dict(held or {}) == dict(state):
        return None
    removed = {key: None for key in held or {} if key not in state}
    return {"autoscaler": {"policyState": {**removed, **dict(state)}}}


def warning_for(
    before: modelservice.ModelServiceStatus, after: modelservice.ModelServiceStatus
) -> tuple[str, str, str] | None:
    """A Warning when the latency target stops being measurable (not every pass it stays so)."""
    old = explain.find(before.conditions, explain.METRICS_AVAILABLE)
    new = explain.find(after.conditions, explain.METRICS_AVAILABLE)
    if new is None or new.reason != explain.LATENCY_UNMEASURED:
        return None
    if old is not None and old.reason == explain.LATENCY_UNMEASURED:
        return None
    return ("Warning", new.reason, new.message)


def event_for(
    result: PassResult, previous: modelservice.LastDecision | None, current_replicas: int
) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event this pass deserves, or None.

    Auto: one per scale. Advisory: one each time the advised count changes, so a team sees what
    thrifty would do without an Event every tick."""
    decision = result.decision
    if decision is None:
        return None
    if result.scaled:
        return ("Normal", decision.reason.value, decision.message)
    if (
        result.authority.mode is types.ScalingMode.ADVISORY
        and decision.replicas != current_replicas
    ):
        advised_before = None if previous is None else previous.replicas
        if advised_before != decision.replicas:
            return (
                "Normal",
                f"Advised{decision.reason.value}",
                f"Advisory: {current_replicas} -> {decision.replicas} replicas: {decision.message}",
            )
    return None
