"""The world as one autoscaling pass sees it: every ModelService, its pods, pools, budgets, signals.

The shell (`thrifty.control.fleet`) fills these frozen values from kopf's watch caches and one
round of Prometheus queries; the simulator fills them from its virtual fleet. Both hand them to
`thrifty.autoscaler.plan`, so what the benchmark proves is what the operator decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thrifty.api import costbudget, gpupool, modelservice, throughput
from thrifty.autoscaler.observe import PodView
from thrifty.policy.types import Signals


@dataclass(frozen=True, order=True)
class ServiceKey:
    """A ModelService by namespace and name (the Prometheus label pair `namespace`,
    `modelservice`)."""

    namespace: str
    model_service: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.model_service}"


@dataclass(frozen=True)
class SignalsReading:
    """What the policy gets: signals, or None and the reason (for `MetricsAvailable=False`)."""

    signals: Signals | None
    reason: str
    pool_prefill: Sequence[throughput.PoolPrefill] = ()
    """Per pool, the prefill work of the requests that finished there over
    `throughput.WINDOW_SECONDS`, from which each pool's speed is learned. Empty: not read."""


@dataclass(frozen=True)
class ServiceView:
    """One ModelService as a pass reads it: parsed, with the cluster's facts about it."""

    key: ServiceKey
    uid: str
    model_service: modelservice.ModelService
    resource_version: str
    generation: int | None
    pods: Sequence[PodView]
    """Its replica pods (finished ones left out)."""
    hpas: Sequence[str] = ()
    """HorizontalPodAutoscalers whose scaleTargetRef is this ModelService."""
    managed_fields: Sequence[Mapping[str, Any]] = ()
    """metadata.managedFields: who else owns spec.replicas."""


@dataclass(frozen=True)
class World:
    """Everything one pass plans from. Objects that fail validation are left out: the reconciler
    reports them (`Degraded`), there is nothing to scale."""

    services: Sequence[ServiceView]
    pools: Mapping[str, gpupool.GPUPool]
    budgets: Mapping[ServiceKey, costbudget.CostBudget] = field(default_factory=dict)
    """CostBudgets by namespace and name (ServiceKey's second field holds the budget's name)."""
    observed_hazards: Mapping[str, float] = field(default_factory=dict)
    """Reclaims per node-hour seen on each spot pool (`thrifty.api.spot.observed_hazard`): a
    pool is planned with it when it is above the published rate. Absent: none seen."""
