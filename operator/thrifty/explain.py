"""What thrifty tells humans: Event reasons, condition types and the rules for updating conditions.

Reasons are constants in one place (as Karpenter keeps them) so Events, conditions and docs agree
and can be grepped. Condition helpers keep ``lastTransitionTime`` fixed unless the status flips,
which is what kstatus-based tools (Argo CD, Flux) and ``kubectl wait`` expect, and which makes a
no-op reconcile produce an identical status, hence no write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from thrifty.api import common

# Condition types of a ModelService.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CAPACITY_LIMITED = "CapacityLimited"
BUDGET_LIMITED = "BudgetLimited"
METRICS_AVAILABLE = "MetricsAvailable"
REPLICAS_LOST = "ReplicasLost"
STALLED = "Stalled"
"""kstatus's "abnormal-true" condition: True when the operator cannot make progress until someone
changes something (sigs.k8s.io/cli-utils reports the object Failed, so Flux fails fast)."""

# Condition types of a CostBudget (besides Ready).
BUDGET_EXCEEDED = "Exceeded"

RECONCILER_CONDITIONS = (READY, PROGRESSING, DEGRADED, CAPACITY_LIMITED, REPLICAS_LOST, STALLED)
"""The conditions the reconciler owns; the autoscaler owns BudgetLimited and MetricsAvailable."""

# Reasons (condition reasons and Event reasons).
AVAILABLE = "Available"
REPLICAS_STARTING = "ReplicasStarting"
SCALED_TO_ZERO = "ScaledToZero"
ROLLED_OUT = "RolledOut"
AS_EXPECTED = "AsExpected"
PLACED = "Placed"
CAPACITY_RECLAIMED = "CapacityReclaimed"
"""Replicas lost to reclaimed nodes (spot interruption) or a shrunk pool: replaced elsewhere."""
SPILLED = "Spilled"
"""The preferred pool is full: new replicas went to the next pool."""
RETURNING = "Returning"
"""Cheaper capacity is free again: a replacement starts there before the old replica drains."""
RETURNED = "Returned"
"""The replacement is ready: the dearer replica drains."""
POOL_TOO_SMALL = "PoolGPUsTooSmall"
ENOUGH_CAPACITY = "EnoughCapacity"
INSUFFICIENT_GPUS = "InsufficientGPUs"
UNKNOWN_POOL = "UnknownPool"
GPUS_PER_REPLICA_TOO_LARGE = "GPUsPerReplicaTooLarge"
SECRET_NOT_FOUND = "SecretNotFound"
INVALID_SPEC = "InvalidSpec"
COST_CAP_BELOW_MINIMUM = "CostCapBelowMinimum"
APPLY_FAILED = "ApplyFailed"
APPLY_ERROR = "ApplyError"
NODE_LOST = "NodeLost"
NO_REPLICA_LOST = "NoReplicaLost"
WORKLOAD_APPLIED = "WorkloadApplied"
DEGRADED_REASON = "Degraded"
RECOVERED = "Recovered"
POOL_HAS_NO_NODES = "NoNodes"
POOL_READY = "NodesFound"
POOL_AUTOSCALED = "Autoscaled"
"""GPUPool Ready: its nodes come from a node autoscaler, none need exist."""
NODES_NOT_DELIVERED = "NodesNotDelivered"
"""GPUPool CapacityLimited: a pod waited longer than nodeStartSeconds plus a margin for a node."""
NODE_LAUNCH_FAILED = "NodeLaunchFailed"
"""GPUPool CapacityLimited: Karpenter could not launch a NodeClaim (e.g. InsufficientCapacity)."""
SCALE_UP_NOT_TRIGGERED = "ScaleUpNotTriggered"
"""GPUPool CapacityLimited: the cluster autoscaler said a pending pod would not get a node."""
POOL_SHORT = "PoolShort"
"""ModelService CapacityLimited: its pool's node autoscaler is failing (the pool's reason says
why)."""
WITHIN_BUDGET = "WithinBudget"
OVER_BUDGET = "OverBudget"
METRICS_READ = "MetricsRead"
METRICS_MISSING = "MetricsUnavailable"
LATENCY_UNMEASURED = "LatencyUnmeasured"
"""MetricsAvailable=True, but requests are served and Prometheus has no TTFT histogram for them:
the latency target cannot be checked."""
BUDGET_BOUND = "BudgetBound"

TERMINAL_REASONS = frozenset(
    {INVALID_SPEC, GPUS_PER_REPLICA_TOO_LARGE, COST_CAP_BELOW_MINIMUM, APPLY_FAILED}
)
"""Degraded reasons that waiting cannot heal: only a change of the ModelService (or of the pool's
GPUs per node) can. The others (UnknownPool, SecretNotFound) heal by themselves when the pool or
Secret appears, often in the same GitOps sync, so they are not reported as Stalled."""
# Decision reasons (ScaleUp, ScaleDown, ...) are the policy contract's: thrifty.policy.types.Reason.


def now_rfc3339(now: datetime | None = None) -> str:
    """Kubernetes' timestamp format: UTC, seconds precision, ``Z``."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp as `now_rfc3339` writes it; None when absent."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None = None,
) -> common.Condition:
    """A new condition; ``status`` None means Unknown."""
    value = (
        common.ConditionStatus.UNKNOWN
        if status is None
        else (common.ConditionStatus.TRUE if status else common.ConditionStatus.FALSE)
    )
    return common.Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def set_condition(
    conditions: Sequence[common.Condition], new: common.Condition
) -> list[common.Condition]:
    """Replace the condition of ``new.type``; its transition time moves only if the status flips."""
    out: list[common.Condition] = []
    replaced = False
    for old in conditions:
        if old.type != new.type:
            out.append(old)
            continue
        replaced = True
        if old.status == new.status:
            new = new.model_copy(update={"last_transition_time": old.last_transition_time})
        out.append(new)
    if not replaced:
        out.append(new)
    return out


def set_conditions(
    conditions: Sequence[common.Condition], new: Iterable[common.Condition]
) -> list[common.Condition]:
    result = list(conditions)
    for one in new:
        result = set_condition(result, one)
    return result


def find(conditions: Sequence[common.Condition], type_: str) -> common.Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def ready_from(
    conditions: Sequence[common.Condition], *, now: str, generation: int | None = None
) -> common.Condition:
    """Ready, rolled up from the others (as Karpenter does): Degraded or Progressing block it.

    CapacityLimited does not: a service with fewer replicas than wanted still serves (it is
    reported, and Progressing stays True while replicas are missing).
    """
    degraded = find(conditions, DEGRADED)
    if degraded is not None and degraded.status is common.ConditionStatus.TRUE:
        return condition(
            READY, False, degraded.reason, degraded.message, now=now, generation=generation
        )
    progressing = find(conditions, PROGRESSING)
    if progressing is not None and progressing.status is common.ConditionStatus.TRUE:
        return condition(
            READY, False, progressing.reason, progressing.message, now=now, generation=generation
        )
    return condition(
        READY, True, AVAILABLE, "all desired replicas are ready", now=now, generation=generation
    )


def stalled_from(
    conditions: Sequence[common.Condition], *, now: str, generation: int | None = None
) -> common.Condition | None:
    """Stalled (kstatus), from Degraded: True with its reason and message when that reason is
    terminal; False once it is not, if it was ever written; None (not written) otherwise, so a
    healthy object carries no Stalled condition at all, as kstatus recommends."""
    degraded = find(conditions, DEGRADED)
    if (
        degraded is not None
        and degraded.status is common.ConditionStatus.TRUE
        and degraded.reason in TERMINAL_REASONS
    ):
        return condition(
            STALLED, True, degraded.reason, degraded.message, now=now, generation=generation
        )
    if find(conditions, STALLED) is None:
        return None
    return condition(
        STALLED,
        False,
        AS_EXPECTED,
        "no failure that needs a change of the spec",
        now=now,
        generation=generation,
    )


def with_rollups(
    conditions: Sequence[common.Condition], *, now: str, generation: int | None = None
) -> list[common.Condition]:
    """Ready and Stalled, rolled up from the others and set."""
    out = list(conditions)
    stalled = stalled_from(out, now=now, generation=generation)
    if stalled is not None:
        out = set_condition(out, stalled)
    return set_condition(out, ready_from(out, now=now, generation=generation))


def transitions(
    before: Sequence[common.Condition], after: Sequence[common.Condition]
) -> list[common.Condition]:
    """Conditions whose status or reason changed: each deserves an Event."""
    changed = []
    for new in after:
        old = find(before, new.type)
        if old is None or old.status != new.status or old.reason != new.reason:
            changed.append(new)
    return changed
