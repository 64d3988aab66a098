"""GPUPool: a set of identical GPU nodes with a price, the unit thrifty places replicas on.

Cluster-scoped because nodes are: a platform team declares the pools once (which nodes, what GPU,
what an hour of one GPU costs, on-demand or spot), and every team's ModelServices pick from them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from thrifty.api import accelerators, common, spot

MAX_PRICE_PER_GPU_HOUR = 1000.0
"""USD; the dearest GPU-hour on any cloud is a few tens of dollars, so more is a typo."""
DEFAULT_NOTICE_SECONDS = 30
"""The reclaim notice when a Spot pool does not say: Google Cloud's 30 s, the shorter (AWS gives
120 s), so that the exposure to a reclaim is not underestimated."""
MAX_NAME_LENGTH = 63
"""A GPUPool's name is a label value on the pods placed in it (thrifty.dev/pool)."""

LabelValue = Annotated[
    str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
]


class CapacityType(StrEnum):
    ON_DEMAND = "OnDemand"
    SPOT = "Spot"
    RESERVED = "Reserved"


class SpeedSource(StrEnum):
    DECLARED = "Declared"
    ACCELERATOR = "Accelerator"
    DEFAULT = "Default"


class ProvisioningMode(StrEnum):
    EXISTING = "Existing"
    AUTOSCALED = "Autoscaled"


class Provisioning(common.Model):
    """How the pool's nodes come: only those that exist, or from a node autoscaler (a Karpenter
    NodePool, a cluster-autoscaler node group) that creates one when a pod waits for it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.mode != 'Autoscaled' || has(self.maxNodes)",
                    "message": "provisioning.maxNodes is required with mode Autoscaled: the most "
                    "nodes the node autoscaler may create for the pool",
                    "fieldPath": ".maxNodes",
                }
            ]
        }
    )

    mode: ProvisioningMode = Field(
        default=ProvisioningMode.EXISTING,
        description=(
            "Existing: capacity is the nodes that exist. Autoscaled: a node autoscaler adds nodes "
            "for Pending pods up to maxNodes (and maxGpus), so thrifty creates pods that wait "
            "for a node, counting nodeStartSeconds in the cold start."
        ),
    )
    max_nodes: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="The most nodes the pool may have (its NodePool or node group limit).",
    )
    node_start_seconds: int = Field(
        default=300,
        ge=1,
        le=7200,
        description=(
            "Expected time from a Pending pod to its node Ready (launch, boot, GPU driver): "
            "added to the cold start; a pod Pending longer (plus a margin) marks the pool short."
        ),
    )
    backoff_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description=(
            "How long the pool counts only its existing nodes after the node autoscaler failed "
            "(CapacityLimited), before new nodes are counted on again."
        ),
    )
    karpenter_node_pool: str | None = Field(
        default=None,
        max_length=253,
        pattern=common.DNS_LABEL,
        description=(
            "The Karpenter NodePool behind the pool, whose NodeClaims' launch failures mark the "
            "pool short; absent: the nodeSelector's karpenter.sh/nodepool value, if any."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Provisioning:
        if self.mode is ProvisioningMode.AUTOSCALED and self.max_nodes is None:
            raise ValueError("provisioning.maxNodes is required with mode Autoscaled")
        return self


class GPUPoolSpec(common.Model):
    """Which nodes form the pool, what their GPUs are, and what they cost."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.reservedGpus) || !has(self.maxGpus) "
                    "|| self.reservedGpus <= self.maxGpus",
                    "message": "reservedGpus must not exceed maxGpus: a reservation larger than "
                    "the pool is paid for GPUs that cannot be used",
                },
                {
                    "rule": "!has(self.reservedGpus) || self.capacityType == 'Reserved'",
                    "message": "reservedGpus applies to capacityType Reserved only",
                },
                {
                    "rule": "!has(self.interruptionRate) || self.capacityType == 'Spot'",
                    "message": "interruptionRate applies to capacityType Spot only",
                },
                {
                    "rule": "!has(self.interruptionNoticeSeconds) || self.capacityType == 'Spot'",
                    "message": "interruptionNoticeSeconds applies to capacityType Spot only",
                },
            ]
        }
    )

    accelerator: str = Field(
        min_length=1,
        max_length=128,
        description=(
            "The GPU model as the NVIDIA GPU operator labels it (nvidia.com/gpu.product), "
            "e.g. NVIDIA-H100-80GB-HBM3. Informational: nodes are matched by nodeSelector."
        ),
    )
    gpu_memory_gib: float = Field(
        ge=1, le=1024, description="Memory of one GPU in GiB (80 for an H100 SXM)."
    )
    gpus_per_node: int = Field(
        ge=1,
        le=64,
        description=(
            "GPUs on each node of the pool. A replica's tensorParallelSize x pipelineParallelSize "
            "must fit on one node."
        ),
    )
    node_selector: dict[str, LabelValue] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, size(k) <= 317)",
                    "message": "nodeSelector keys are label keys: at most 317 characters",
                }
            ]
        },
        description=(
            "Node labels that identify the pool's nodes; copied into every pod placed in the pool."
        ),
    )
    tolerations: list[common.Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations of the taints of the pool's nodes, copied into its pods.",
    )
    price_per_gpu_hour: float = Field(
        ge=0,
        lt=MAX_PRICE_PER_GPU_HOUR,
        description="One GPU-hour in USD (below 1000): the basis of every $/hour thrifty reports.",
    )
    capacity_type: CapacityType = Field(
        default=CapacityType.ON_DEMAND,
        description="OnDemand, Spot (may be interrupted) or Reserved (paid whether used or not).",
    )
    max_gpus: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Quota: the most GPUs thrifty may use in this pool; absent means all it finds.",
    )
    relative_throughput: float | None = Field(
        default=None,
        ge=0.01,
        le=100,
        description=(
            "Tokens per second one replica serves here, relative to a reference replica (an "
            "H100 SXM = 1.0). Sizing counts a replica here as this many reference replicas, and "
            "the $/token of the pool is its price over it. Absent: the prior of the accelerator "
            "from its datasheet (L4 0.10, L40S 0.31, A100 0.44; docs/pools.md), else 1.0, "
            "beside other pools (a ModelService on this pool alone counts in its replicas). "
            "Either is replaced by what the pool's replicas are measured to serve."
        ),
    )
    interruption_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Spot only: the fraction of the pool's nodes reclaimed per month, as the cloud "
            "publishes it (AWS Spot Instance Advisor: H100 0.10-0.20, A100 0.05-0.10, L4 < "
            "0.05). Spot replicas are over-provisioned by what it, or the rate observed if "
            "higher, takes within the exposure to a reclaim (docs/pools.md)."
        ),
    )
    interruption_notice_seconds: int | None = Field(
        default=None,
        ge=0,
        le=3600,
        description=(
            "Spot only: the warning a node gets before it is reclaimed (AWS 120 s, Google Cloud "
            f"30 s); absent: {DEFAULT_NOTICE_SECONDS} s. A replacement is ordered at the notice, "
            "so only a cold start longer than it leaves a gap to over-provision for."
        ),
    )
    reserved_gpus: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description=(
            "Reserved only: GPUs paid for whether used or not. Up to this many, a replica here "
            "costs nothing more, so thrifty fills them first; absent: the whole pool is reserved."
        ),
    )

    provisioning: Provisioning = Field(
        default_factory=Provisioning,
        json_schema_extra={
            "default": {"mode": "Existing", "nodeStartSeconds": 300, "backoffSeconds": 300}
        },
        description="How the nodes come: existing only, or from a node autoscaler.",
    )

    @property
    def speed(self) -> float:
        """The relative throughput sizing starts from: declared, else the accelerator's prior
        (`thrifty.api.accelerators`), else the reference's 1.0."""
        if self.relative_throughput is not None:
            return self.relative_throughput
        prior = accelerators.prior(self.accelerator)
        return 1.0 if prior is None else prior

    @property
    def speed_source(self) -> SpeedSource:
        if self.relative_throughput is not None:
            return SpeedSource.DECLARED
        if accelerators.prior(self.accelerator) is not None:
            return SpeedSource.ACCELERATOR
        return SpeedSource.DEFAULT

    @property
    def is_spot(self) -> bool:
        return self.capacity_type is CapacityType.SPOT

    def hazard_per_hour(self, observed: float = 0.0) -> float:
        """Reclaims per node-hour the pool is planned with: the larger of the published one
        (interruptionRate, monthly) and ``observed`` (`spot.observed_hazard`); 0 unless Spot."""
        if not self.is_spot:
            return 0.0
        return max(spot.hazard_from_monthly(self.interruption_rate or 0.0), observed)

    def exposure_seconds(self, cold_start_seconds: float) -> float:
        """Seconds a reclaimed replica's capacity is missing here: the replacement's cold start
        (plus nodeStartSeconds on an Autoscaled pool, whose replacement node may be new) beyond
        the notice. 0 unless Spot."""
        if not self.is_spot:
            return 0.0
        ready = cold_start_seconds
        if self.provisioning.mode is ProvisioningMode.AUTOSCALED:
            ready += self.provisioning.node_start_seconds
        notice = self.interruption_notice_seconds
        return spot.exposure_seconds(ready, DEFAULT_NOTICE_SECONDS if notice is None else notice)

    def replica_units(
        self,
        exposure_seconds: float,
        observed_hazard: float = 0.0,
        throughput: float | None = None,
    ) -> float:
        """THE conversion between GPU types: how many reference replicas (relativeThroughput 1)
        one replica here counts as when sizing. Its relative throughput (``throughput`` when
        learned for the service, `thrifty.api.throughput`, else `speed`), times
        on Spot the share a reclaim is expected to leave within ``exposure_seconds``
        (`spot.survival`)."""
        hazard = self.hazard_per_hour(observed_hazard)
        speed = self.speed if throughput is None else throughput
        return speed * spot.survival(hazard, exposure_seconds)

    def planned_units(
        self,
        cold_start_seconds: float,
        observed_hazard: float = 0.0,
        throughput: float | None = None,
    ) -> float:
        """`replica_units` for a service whose replicas take ``cold_start_seconds`` to serve:
        what the autoscaler, the spread and the simulator all count a replica here as."""
        exposure = self.exposure_seconds(cold_start_seconds)
        return self.replica_units(exposure, observed_hazard, throughput)

    def node_wait_seconds(self, free_gpus_on_nodes: int, gpus_per_replica: int) -> float:
        """How long a new replica waits for a node before its own cold start: nodeStartSeconds
        when it cannot fit on a Ready node of an Autoscaled pool, else 0."""
        autoscaled = self.provisioning.mode is ProvisioningMode.AUTOSCALED
        if autoscaled and free_gpus_on_nodes < gpus_per_replica:
            return float(self.provisioning.node_start_seconds)
        return 0.0


class PoolUsage(common.Model):
    """The GPUs one ModelService holds in a pool."""

    namespace: str = Field(description="The ModelService's namespace.")
    name: str = Field(description="The ModelService's name.")
    gpus: int = Field(ge=0, description="GPUs requested by its pods that are placed in this pool.")


class GPUPoolStatus(common.Model):
    """What the pool has and who uses it, recomputed from Nodes and Pods."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    nodes: int = Field(default=0, ge=0, description="Ready nodes matching the nodeSelector.")
    relative_throughput: float | None = Field(
        default=None,
        ge=0,
        description=(
            "The relative throughput a replica here is sized with beside a ModelService's "
            "other pools, until it learns its own (its status.autoscaler.poolThroughput); a "
            "ModelService on this pool alone counts in its replicas."
        ),
    )
    relative_throughput_source: SpeedSource | None = Field(
        default=None,
        description=(
            "Where relativeThroughput comes from: Declared (spec.relativeThroughput), "
            "Accelerator (the datasheet prior of spec.accelerator) or Default (1.0: the "
            "accelerator is not one thrifty knows; declare relativeThroughput)."
        ),
    )
    gpus_allocatable: int = Field(
        default=0,
        ge=0,
        description="nvidia.com/gpu allocatable on those nodes, capped by maxGpus when set.",
    )
    gpus_used: int = Field(
        default=0, ge=0, description="GPUs requested by any pod bound to the pool's nodes."
    )
    gpus_free: int = Field(default=0, ge=0, description="gpusAllocatable minus gpusUsed.")
    gpus_provisionable: int = Field(
        default=0,
        ge=0,
        description=(
            "GPUs the node autoscaler may still add (Autoscaled pools, up to maxNodes and "
            "maxGpus); 0 while the pool is CapacityLimited."
        ),
    )
    capacity_limited_until: str | None = Field(
        default=None,
        description=(
            "While CapacityLimited: until when only the existing nodes count (the last sign of "
            "the node autoscaler failing plus provisioning.backoffSeconds), RFC 3339."
        ),
        json_schema_extra={"format": "date-time"},
    )
    usage: list[PoolUsage] = Field(
        default_factory=list, description="GPUs held in this pool by each thrifty ModelService."
    )
    reclaims: int = Field(
        default=0,
        ge=0,
        description=(
            "Spot pools: nodes of the pool seen tainted for reclaim since reclaimsSince while "
            "they held a ModelService's replica, each once (an empty node going is a node "
            "autoscaler's scale-down). Over nodeHours, the reclaim rate the pool is planned "
            "with when it is above the published interruptionRate."
        ),
    )
    reclaims_since: str | None = Field(
        default=None,
        description="Spot pools: when the operator started counting reclaims and node-hours.",
        json_schema_extra={"format": "date-time"},
    )
    node_hours: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Spot pools: node-hours of the pool's nodes holding a replica, from reclaimsSince "
            "to nodeHoursAt (since then, servingNodes nodes)."
        ),
    )
    serving_nodes: int = Field(
        default=0,
        ge=0,
        description=(
            "Spot pools: the pool's nodes holding a ModelService's replica now, not tainted "
            "for reclaim."
        ),
    )
    node_hours_at: str | None = Field(
        default=None,
        description="Spot pools: when nodeHours was last brought up to date, RFC 3339.",
        json_schema_extra={"format": "date-time"},
    )
    reclaiming_nodes: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=10_000,
        description=(
            "Spot pools: the nodes tainted for reclaim now, each seen once (counted in reclaims "
            "if it held a replica)."
        ),
    )
    conditions: common.Conditions


class GPUPool(common.Model):
    """A GPU pool: nodes, GPU type, price per GPU-hour, capacity type and quota."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                    "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters: it "
                    "is a label value on the pods placed in the pool",
                }
            ]
        }
    )

    spec: GPUPoolSpec = Field(description="The pool's nodes, GPUs and price.")
    status: GPUPoolStatus | None = Field(
        default=None, description="Capacity and usage, maintained by the operator."
    )
