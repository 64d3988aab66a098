"""The contract between every scaling policy and whatever feeds it: the operator or the simulator.

Both build an `Observation` per ModelService per tick and apply the returned `Decision`; only the
source of observations differs. That is what makes the simulator's numbers mean something for
production. Everything here is frozen and explicit (``now`` included), so a policy is a pure
function of its inputs and its carried state, and a restart of the operator forgets nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeAlias

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
PolicyState: TypeAlias = Mapping[str, JSONValue]
"""A policy's memory between ticks. JSON-safe so the operator can persist it in status."""


class Enforcement(StrEnum):
    HARD = "Hard"
    SOFT = "Soft"


class ScalingMode(StrEnum):
    AUTO = "Auto"
    ADVISORY = "Advisory"
    MANUAL = "Manual"


class Reason(StrEnum):
    """Machine-readable reason of a decision; also the Event reason the operator emits."""

    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    SCALE_TO_ZERO = "ScaleToZero"
    SCALE_FROM_ZERO = "ScaleFromZero"
    STEADY = "Steady"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    WAITING_FOR_STARTUP = "WaitingForStartup"
    SCALE_DOWN_DELAYED = "ScaleDownDelayed"
    BUDGET_LIMITED = "BudgetLimited"
    CAPACITY_LIMITED = "CapacityLimited"
    BOUNDS = "Bounds"


class Bound(StrEnum):
    """Which constraint decided the replica count (NONE: demand alone did)."""

    NONE = "None"
    LATENCY_TARGET = "LatencyTarget"
    BUDGET = "Budget"
    CAPACITY = "Capacity"
    BOUNDS = "Bounds"
    HOLD = "Hold"


@dataclass(frozen=True)
class Signals:
    """What the Prometheus queries return for one ModelService, summed over its ready replicas."""

    requests_waiting: float
    requests_running: float
    kv_cache_usage: float
    """Mean over replicas, 0..1."""
    prompt_tokens_per_second: float
    generation_tokens_per_second: float
    requests_per_second: float
    ttft_p95_seconds: float | None
    """None when no request finished a first token in the window."""
    sample_age_seconds: float = 0.0
    """How old the newest sample is; a policy holds when this is above its staleness limit."""
    requests_waiting_mean: float | None = None
    """``requests_waiting`` averaged over the rate window (``avg_over_time``); None: not queried,
    read ``requests_waiting``. One scrape of vLLM's gauge shows a scheduler step, not a queue."""
    requests_running_mean: float | None = None
    """``requests_running`` averaged over the rate window; None: not queried. Over the generated
    tokens/s it gives the time a running sequence takes per token, which says how loaded the
    replicas are (`thrifty.policy.planner.estimate`)."""
    tokens_per_finished_request: float | None = None
    """Mean prompt + generated tokens of the requests finished over the rate window (vLLM's
    ``request_prompt_tokens`` and ``request_generation_tokens`` histograms); None: none
    finished or not queried. Token rates over request rates mix work on requests still in
    flight: after an outage the queued prompts' prefill alone reads as huge requests."""
    ttft_buckets: tuple[tuple[float, float], ...] = ()
    """The TTFT histogram over its window: (upper bound in seconds, cumulative count), ascending,
    ``inf`` last. Empty: not queried. Any percentile and the share within a target come from it."""
    queue_time_buckets: tuple[tuple[float, float], ...] = ()
    """vLLM's ``request_queue_time_seconds`` histogram over the TTFT window, in the same form:
    how long the requests that finished had waited to be scheduled. Empty: not queried."""
    prefill_time_buckets: tuple[tuple[float, float], ...] = ()
    """vLLM's ``request_prefill_time_seconds`` histogram over the TTFT window, in the same form:
    from scheduled to first token, the part of TTFT that is no queue. Empty: not queried."""


@dataclass(frozen=True)
class ReplicaCounts:
    desired: int
    ready: int
    starting: int
    """Replicas created but not ready yet (cold start under way). ``desired - ready - starting``
    are replicas ordered but not created or not placed (e.g. pending for want of GPUs)."""
    oldest_starting_seconds: float = 0.0
    """How long the oldest not-yet-ready replica has been starting."""
    draining: int = 0
    """Replicas removed from ``desired`` but still finishing their requests (pods terminating):
    they hold GPUs and cost money until gone, so a $/hour cap counts them before ordering more."""
    ready_units: float | None = None
    """``ready`` before rounding, when replicas of different speeds count as fractions of a
    reference replica (`thrifty.autoscaler.capacity`); None: exactly ``ready``."""

    @property
    def serving(self) -> float:
        """What the ready replicas are worth: the divisor of per-replica throughput, so that a
        fleet whose count was rounded down does not read each replica as serving more."""
        return self.ready if self.ready_units is None else max(self.ready_units, self.ready)


@dataclass(frozen=True)
class PoolView:
    """The GPU pool the ModelService runs on, as the policy needs it."""

    name: str
    price_per_gpu_hour: float
    gpus_per_replica: int
    free_gpus: int | None
    """GPUs that could still be had for more replicas; None when unknown (no limit assumed)."""


@dataclass(frozen=True)
class PolicySpec:
    """The ModelService's scaling, latency and cost settings, in the policy's units.

    No defaults: `thrifty.autoscaler.observe.policy_spec` is the one translation from a
    ModelService, and a field it forgets fails type checking instead of taking a silent default."""

    min_replicas: int
    max_replicas: int
    queue_target_per_replica: float
    scale_down_delay_seconds: float
    scale_to_zero_idle_seconds: float | None
    """None: never scale to zero (also when min_replicas > 0)."""
    ttft_target_seconds: float | None
    """The time to first token to meet at ``ttft_target_quantile``; None: no latency target."""
    ttft_target_quantile: float
    """Share of requests that must meet ``ttft_target_seconds`` (0.95 for a p95 target)."""
    max_dollars_per_hour: float | None
    max_dollars_per_million_tokens: float | None
    enforcement: Enforcement
    soft_overrun_fraction: float
    """With Soft enforcement, how far above a cap spend may go (0.2 = 20 %)."""
    cold_start_seconds: float
    """Expected time from ordering a replica to it serving."""
    staleness_limit_seconds: float
    capacity_tokens_per_second_per_replica: float | None
    """Prior for one replica's saturated throughput (prompt + generation tokens/s); None: learn it
    from observed metrics only. A policy may refine it from observations."""
    max_num_seqs_per_replica: int | None
    """The engine's running-batch limit per replica (vLLM ``--max-num-seqs``); None: not set, the
    engine's default applies and a policy assumes its own."""
    replica_shape: str
    """What a replica's speed depends on (GPU type, GPUs per replica, engine arguments), as one
    opaque string: what a policy learned about a replica holds only while it is unchanged."""

    @property
    def ttft_target_percentile(self) -> str:
        """The target's percentile as users write it: ``p95``."""
        return f"p{round(self.ttft_target_quantile * 100)}"


@dataclass(frozen=True)
class Observation:
    """One ModelService at one tick."""

    now_seconds: float
    signals: Signals | None
    """None when metrics are missing (Prometheus down, empty or stale query)."""
    replicas: ReplicaCounts
    pool: PoolView
    spec: PolicySpec
    budget_dollars_per_hour_available: float | None = None
    """What a shared CostBudget allows this ModelService to spend per hour in total (its current
    spend included, see `thrifty.autoscaler.budget.allowances`), if any. Enforced like a Hard
    cap."""


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: Reason
    message: str
    """For a human, with the numbers and the cost delta."""
    bound: Bound
    projected_dollars_per_hour: float
    projected_dollars_per_million_tokens: float | None
    state: PolicyState = field(default_factory=dict)


class ScalingPolicy(Protocol):
    """A policy: thrifty's own or a baseline. Must be deterministic and do no I/O."""

    @property
    def name(self) -> str: ...

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        """Returns the replica count for this tick; `Decision.state` is the next tick's `state`."""
        ...
