"""ModelService: an open-weight model served by vLLM, with replica bounds, latency and cost targets.

Everything a team states about a model lives here; the operator turns it into a Deployment on the
first acceptable GPUPool with room, and the autoscaler moves ``spec.replicas`` (through the scale
subresource) between the bounds. ``replicas`` is optional so GitOps tools can leave it out and let
the operator own it (see docs/api.md, "GitOps").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from thrifty.api import common, engine_flags, podtemplate
from thrifty.policy import types as policy_types

_PATH = r"(/[A-Za-z0-9._~@+=,:-]+)*/?"
MODEL_URI_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
    r"|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    + _PATH
    + r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
    + _PATH
    + r")$"
)
"""hf://org/name, pvc://claim[/path] or s3://bucket[/prefix]; path segments of safe characters."""

IMAGE_PATTERN = (
    r"^[^\s:@]+(:[0-9]+)?(/[^\s:@]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$"
)
"""An image reference with a tag or a digest: a moving default would change the engine under you."""

QUANTITY_CPU_PATTERN = r"^([0-9]{1,4}(\.[0-9]{1,3})?|[0-9]{1,7}m)$"
"""Cores (up to 9999.999) or millicores (up to 9999999m): more than any node has, never an
overflow."""
QUANTITY_MEMORY_PATTERN = r"^([0-9]{1,13}|[0-9]{1,6}(\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|k|M|G|T))$"
"""Bytes, or a Kubernetes suffix (k, M, G, T, Ki, Mi, Gi, Ti): at most 999999Ti, never an
overflow; Kubernetes has no ``K`` suffix."""

TENSOR_PARALLEL_SIZES = (1, 2, 4, 8, 16, 32, 64)

MAX_MODEL_LEN = 16_777_216
"""2^24 tokens: above the longest context of any open model (10M); vLLM refuses more than the
model's own limit at start anyway."""
MAX_NUM_SEQS = 65_536
MAX_REPLICAS = 1000
MAX_DELAY_SECONDS = 7 * 24 * 3600
"""A week: delays are meant in minutes or hours; a longer one is a typo."""
MAX_DOLLARS_PER_HOUR = 1_000_000.0
MAX_DOLLARS_PER_MILLION_TOKENS = 10_000.0


def uri_path_problem(uri: str) -> str | None:
    """What is wrong with the path of a model URI the pattern admits (``.``/``..`` segments,
    ``..`` in a Hugging Face name), or None. The CRD's CEL rule says the same."""
    if any(segment in (".", "..") for segment in uri.split("/")):
        return "model.uri must not contain '.' or '..' path segments"
    if uri.startswith("hf://") and ".." in uri:
        return "model.uri: a Hugging Face repository name cannot contain '..'"
    return None


PoolName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
]
"""A GPUPool name; at most 63 characters because it is a label value on the pods."""

EngineArg = Annotated[
    str,
    Field(
        max_length=1024,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!" + engine_flags.cel_owned("self"),
                    "messageExpression": (
                        "'extraArgs entry ' + self + ' would set a flag the operator manages ("
                        + engine_flags.describe(engine_flags.MANAGED)
                        + "); use the engine fields instead'"
                    ),
                }
            ]
        },
    ),
]
"""One vLLM argument; it may not set a flag the operator manages (engine_flags.MANAGED)."""


def _defaults(model: type[common.Model]) -> JsonDict:
    """A sub-object's defaults, spelled out: the API server checks CEL rules against the default
    itself, before nested defaults would fill it in."""
    filled: JsonDict = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return filled


def _cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


class ModelSource(common.Model):
    """Where the weights come from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!self.uri.split('/').exists(s, s == '.' || s == '..')",
                    "model.uri must not contain '.' or '..' path segments",
                ),
                _cel(
                    "!self.uri.startsWith('hf://') || !self.uri.contains('..')",
                    "model.uri: a Hugging Face repository name cannot contain '..'",
                ),
                _cel(
                    "!has(self.revision) || !self.revision.contains('..')",
                    "model.revision cannot contain '..'",
                ),
            ]
        }
    )

    uri: str = Field(
        max_length=512,
        pattern=MODEL_URI_PATTERN,
        description=(
            "hf://<org>/<name> (Hugging Face Hub), pvc://<claim>[/<path>] (a PersistentVolumeClaim "
            "in the same namespace, mounted read-only) or s3://<bucket>[/<prefix>] (streamed)."
        ),
    )
    revision: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="A Hugging Face branch, tag or commit; pin a commit for reproducible serving.",
    )
    weights_gib: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description=(
            "Size of the weights in GiB (about 2 x billions of parameters at 16 bits). With it, "
            "a pool whose GPUs cannot hold a replica's share (weights / (tensor x pipeline "
            "parallel) plus room for the KV cache) is not used and Degraded names it."
        ),
    )

    @model_validator(mode="after")
    def _check_paths(self) -> ModelSource:
        problem = uri_path_problem(self.uri)
        if problem is not None:
            raise ValueError(problem)
        if self.revision is not None and ".." in self.revision:
            raise ValueError("model.revision cannot contain '..'")
        return self


class EngineEnvVar(common.EnvVar):
    """An engine variable: any but those the operator sets (engine_flags.MANAGED_ENV)."""

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="The variable's name.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!(self in {sorted(engine_flags.MANAGED_ENV)})",
                    "messageExpression": (
                        "'env ' + self + ' is set by the operator or would break the engine "
                        "(use hfTokenSecretRef for the Hugging Face token)'"
                    ),
                }
            ]
        },
    )


class Engine(common.Model):
    """The vLLM OpenAI-compatible server and its settings (flags per the vLLM docs)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!self.image.endsWith(':latest')",
                    "image must pin a version: a tag other than latest, or a digest",
                ),
                {
                    "rule": "self.allowUnsafeArgs || !self.extraArgs.exists(a, "
                    + engine_flags.cel_unsafe("a")
                    + ")",
                    "messageExpression": (
                        "'extraArgs entry ' + self.extraArgs.filter(a, "
                        + engine_flags.cel_unsafe("a")
                        + ")[0] + ' widens what the engine may read or run ("
                        + engine_flags.describe(engine_flags.UNSAFE)
                        + "): allowed only with allowUnsafeArgs: true'"
                    ),
                    "fieldPath": ".extraArgs",
                },
            ]
        }
    )

    image: str = Field(
        default="vllm/vllm-openai:v0.19.0",
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="The vLLM OpenAI server image with a pinned tag or digest.",
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="GPUs one model copy is split across (--tensor-parallel-size): 1, 2, 4, 8...",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self in " + str(list(TENSOR_PARALLEL_SIZES)),
                    "tensorParallelSize must be a power of two (1, 2, 4, 8, 16, 32 or 64)",
                )
            ]
        },
    )
    pipeline_parallel_size: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Pipeline stages (--pipeline-parallel-size); GPUs per replica = TP x PP.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MODEL_LEN,
        description="Context length limit (--max-model-len); absent: the model's.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of GPU memory vLLM may take (--gpu-memory-utilization).",
    )
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NUM_SEQS,
        description="Most sequences in one batch (--max-num-seqs); absent: vLLM's.",
    )
    quantization: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9_-]+$",
        description="Quantization method (--quantization), e.g. fp8, awq; absent: from the model.",
    )
    kv_cache_dtype: str | None = Field(
        default=None,
        description="KV-cache data type (--kv-cache-dtype); absent: auto.",
        json_schema_extra={
            "enum": ["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla"]
        },
    )
    extra_args: list[EngineArg] = Field(
        default_factory=list,
        max_length=64,
        description="More vLLM flags, appended as given, e.g. --enable-prefix-caching.",
    )
    env: list[EngineEnvVar] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "More environment variables for the engine container (not HF_TOKEN, "
            "HUGGING_FACE_HUB_TOKEN, VLLM_PORT or VLLM_HOST_IP)."
        ),
    )
    allow_unsafe_args: bool = Field(
        default=False,
        description=(
            "Security decision: let extraArgs include flags that widen what the engine may read "
            "or run (--trust-remote-code, --allowed-local-media-path, plugins and classes "
            "imported by name). Off: such an entry is refused."
        ),
    )
    hf_token_secret_ref: common.SecretKeyRef | None = Field(
        default=None,
        description="A Secret key with a Hugging Face token (set as HF_TOKEN), for gated models.",
    )
    shutdown_timeout_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description=(
            "How long a stopping replica drains in-flight requests (--shutdown-timeout); "
            "the pod's grace period is set above it."
        ),
    )
    startup_timeout_seconds: int = Field(
        default=1200,
        ge=60,
        le=14400,
        description=(
            "How long a replica may take from start to healthy (download, load, compile) "
            "before it is restarted; size it for a cold start of the largest model."
        ),
    )

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Engine:
        if self.image.endswith(":latest"):
            raise ValueError("image must pin a version: a tag other than latest, or a digest")
        if self.tensor_parallel_size not in TENSOR_PARALLEL_SIZES:
            raise ValueError("tensorParallelSize must be a power of two (1, 2, 4, 8, 16, 32 or 64)")
        for i, arg in enumerate(self.extra_args):
            owned = engine_flags.owned_flag(arg)
            if owned is not None:
                raise ValueError(
                    f"extraArgs[{i}] {arg!r} would set {owned.name}, which the operator manages: "
                    f"{owned.why}"
                )
            unsafe = engine_flags.unsafe_flag(arg)
            if unsafe is not None and not self.allow_unsafe_args:
                raise ValueError(
                    f"extraArgs[{i}] {arg!r} would set {unsafe.name} ({unsafe.why}): allowed "
                    "only with allowUnsafeArgs: true"
                )
        for var in self.env:
            if var.name in engine_flags.MANAGED_ENV:
                raise ValueError(
                    f"env {var.name} is managed by the operator: "
                    f"{engine_flags.MANAGED_ENV[var.name]}"
                )
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class PodResources(common.Model):
    """CPU, memory and shared memory of each replica's pod (GPUs follow from the engine)."""

    cpu: str = Field(
        default="4",
        pattern=QUANTITY_CPU_PATTERN,
        description="CPU request and limit of the engine container, e.g. 8 or 7500m.",
    )
    memory: str = Field(
        default="32Gi",
        pattern=QUANTITY_MEMORY_PATTERN,
        description="Memory request and limit of the engine container, e.g. 64Gi.",
    )
    shared_memory: str | None = Field(
        default=None,
        pattern=QUANTITY_MEMORY_PATTERN,
        description=(
            "Size of the memory-backed /dev/shm; absent: 2Gi with one GPU per replica, 8Gi "
            "with tensor or pipeline parallelism (NCCL needs it)."
        ),
    )


class ModelCache(common.Model):
    """Where downloaded weights and compiled kernels are kept between restarts."""

    claim_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=common.DNS_LABEL,
        description=(
            "An existing PersistentVolumeClaim to mount at the cache paths (ReadWriteMany when "
            "replicas > 1); absent: an emptyDir that lives as long as the pod."
        ),
    )
    size_limit: str = Field(
        default="200Gi",
        pattern=QUANTITY_MEMORY_PATTERN,
        description="Size limit of the emptyDir cache (ignored with claimName).",
    )


POLICY_NAME_PATTERN = r"^(thrifty|hpa|kpa|static|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"


class PolicyRef(common.Model):
    """A scaling policy by name, with the parameters its constructor takes."""

    name: str = Field(
        default="thrifty",
        max_length=256,
        pattern=POLICY_NAME_PATTERN,
        description=(
            "thrifty (the default), hpa, kpa or static (the baselines, at their documented "
            "defaults), or module:ClassName of a policy installed in the operator's image and "
            "allowed by its THRIFTY_POLICY_MODULES setting."
        ),
    )
    parameters: dict[str, Annotated[float, Field(ge=-1e9, le=1e9)]] = Field(
        default_factory=dict,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self.all(k, size(k) <= 64)", "parameter names are at most 64 characters")
            ]
        },
        description=(
            "Constructor parameters, e.g. {targetPerReplica: 4} for hpa or {replicas: 2} for "
            "static (camelCase or snake_case); see docs/policy.md for each policy's knobs."
        ),
    )


class Scaling(common.Model):
    """Replica bounds and how the autoscaler moves between them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be less than or equal to maxReplicas",
                ),
                _cel(
                    "!has(self.scaleToZeroIdleSeconds) || self.minReplicas == 0",
                    "scaleToZeroIdleSeconds requires minReplicas: 0",
                ),
            ]
        }
    )

    min_replicas: int = Field(
        default=1, ge=0, le=MAX_REPLICAS, description="Fewest replicas; 0 allows scale to zero."
    )
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="Most replicas.")
    queue_depth_target_per_replica: float = Field(
        default=8.0,
        ge=0.01,
        le=10_000,
        description="Waiting requests per replica to aim for (vllm:num_requests_waiting).",
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        le=MAX_DELAY_SECONDS,
        description=(
            "How long load must stay low before a replica is removed. The thrifty policy waits "
            "at least the cold start: a replica needed again sooner costs more to restart."
        ),
    )
    scale_to_zero_idle_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DELAY_SECONDS,
        description="Scale to zero after this long without requests; needs minReplicas 0.",
    )
    cold_start_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description=(
            "Expected time from ordering a replica to it serving (scheduling, image, weights, "
            "compile); the autoscaler orders replicas this far ahead. Absent: the operator's "
            "default (THRIFTY_COLD_START_SECONDS, 120 s)."
        ),
    )
    policy: PolicyRef = Field(
        json_schema_extra={"default": _defaults(PolicyRef)},
        default_factory=PolicyRef,
        description="The policy that decides replicas (mode Auto) or advises (mode Advisory).",
    )
    advisory_policy: PolicyRef | None = Field(
        default=None,
        description=(
            "A second policy decided every pass beside `policy` and never applied: its decision "
            "is shown in status.autoscaler.advisory and the operator's metrics, to compare two "
            "policies live on real traffic before switching."
        ),
    )
    mode: policy_types.ScalingMode = Field(
        default=policy_types.ScalingMode.AUTO,
        description=(
            "Auto: the autoscaler sets replicas. Advisory: it only reports what it would do. "
            "Manual: replicas are set by hand."
        ),
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        if self.scale_to_zero_idle_seconds is not None and self.min_replicas != 0:
            raise ValueError("scaleToZeroIdleSeconds requires minReplicas: 0")
        return self


PERCENTILES: dict[str, float] = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


class LatencyTarget(common.Model):
    """The latency the model must meet: this share of requests gets its first token this soon.

    The autoscaler plans the fewest replicas its latency model predicts meet it, and corrects the
    plan by the percentile it measures (docs/policy.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.timeToFirstTokenSeconds) || !has(self.timeToFirstTokenP95Seconds)",
                    "set timeToFirstTokenSeconds (with percentile) or the older "
                    "timeToFirstTokenP95Seconds, not both",
                ),
                _cel(
                    "!has(self.timeToFirstTokenP95Seconds) || self.percentile == 'p95'",
                    "timeToFirstTokenP95Seconds is a p95 target: use timeToFirstTokenSeconds "
                    "for another percentile",
                ),
            ]
        }
    )

    time_to_first_token_seconds: float | None = Field(
        default=None,
        ge=0.01,
        le=3600,
        description="Time to first token to meet at `percentile`, in seconds (10 ms to an hour).",
    )
    percentile: Literal["p50", "p90", "p95", "p99"] = Field(
        default="p95",
        description="Share of requests that must meet timeToFirstTokenSeconds: p50, p90, p95, p99.",
    )
    time_to_first_token_p95_seconds: float | None = Field(
        default=None,
        ge=0.01,
        le=3600,
        description=(
            "Deprecated: timeToFirstTokenSeconds with percentile p95. Still honoured, for "
            "objects written before percentiles."
        ),
    )

    @model_validator(mode="after")
    def _one_form(self) -> LatencyTarget:
        if self.time_to_first_token_seconds is not None and (
            self.time_to_first_token_p95_seconds is not None
        ):
            raise ValueError(
                "set timeToFirstTokenSeconds (with percentile) or the older "
                "timeToFirstTokenP95Seconds, not both"
            )
        if self.time_to_first_token_p95_seconds is not None and self.percentile != "p95":
            raise ValueError(
                "timeToFirstTokenP95Seconds is a p95 target: use timeToFirstTokenSeconds "
                "for another percentile"
            )
        return self

    @property
    def seconds(self) -> float | None:
        """The target in seconds, whichever form set it."""
        if self.time_to_first_token_seconds is not None:
            return self.time_to_first_token_seconds
        return self.time_to_first_token_p95_seconds

    @property
    def quantile(self) -> float:
        """The target's share of requests (0.95 for p95); the older field is always p95."""
        if self.time_to_first_token_p95_seconds is not None:
            return PERCENTILES["p95"]
        return PERCENTILES[self.percentile]


class ReferencePrice(common.Model):
    """What buying the tokens elsewhere would cost (a hosted API's list price): the buy side of
    buy-or-build, shown beside the realised price."""

    input: float = Field(ge=0, description="USD per million prompt (input) tokens.")
    output: float = Field(ge=0, description="USD per million generated (output) tokens.")


class CostTarget(common.Model):
    """What the model may cost, and what gives when money and latency conflict."""

    max_dollars_per_million_tokens: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DOLLARS_PER_MILLION_TOKENS,
        description="Most USD per million tokens (prompt + generated).",
    )
    max_dollars_per_hour: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DOLLARS_PER_HOUR,
        description="Most USD per hour for all replicas together.",
    )
    reference_dollars_per_million_tokens: ReferencePrice | None = Field(
        default=None,
        description="A reference price to compare the realised one with (e.g. a hosted API's); "
        "informational, never enforced.",
    )
    enforcement: policy_types.Enforcement = Field(
        default=policy_types.Enforcement.HARD,
        description="Hard: never exceed a cap. Soft: exceed it by softOverrunFraction for latency.",
    )
    soft_overrun_fraction: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="With Soft enforcement, how far above a cap spend may go (0.2 = 20 %).",
    )
    budget_ref: common.LocalRef | None = Field(
        default=None, description="A CostBudget in the same namespace that this model shares."
    )
    budget_priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description=(
            "Within a Hard CostBudget, who keeps its money longer when the money runs out: the "
            "lower priority yields first (then the higher realised $/1M tokens, then the name)."
        ),
    )


class PlacementPolicy(StrEnum):
    ORDERED = "Ordered"
    """Fill the pools in the order listed, spilling to the next when one is full."""
    CHEAPEST = "Cheapest"
    """Reserved capacity first, then the lowest $/token (price over relative throughput)."""


class ModelServiceSpec(common.Model):
    """A model, its engine, where it may run, its bounds and its targets."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.replicas) || (self.replicas >= self.scaling.minReplicas "
                    "&& self.replicas <= self.scaling.maxReplicas)",
                    "replicas must be within scaling.minReplicas and scaling.maxReplicas",
                ),
                _cel(
                    "!has(self.model.revision) || self.model.uri.startsWith('hf://')",
                    "model.revision applies to hf:// models only",
                ),
                {
                    "rule": "!has(self.podTemplate) || !self.podTemplate.spec.env.exists(e, "
                    "self.engine.env.exists(f, f.name == e.name))",
                    "message": "podTemplate.spec.env must not repeat a name of engine.env",
                    "fieldPath": ".podTemplate.spec.env",
                },
            ]
        }
    )

    model: ModelSource = Field(description="Where the weights come from.")
    served_model_name: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="The model name clients send (--served-model-name); absent: the object's name.",
    )
    engine: Engine = Field(
        json_schema_extra={"default": _defaults(Engine)},
        default_factory=Engine,
        description="The vLLM server image and its settings.",
    )
    resources: PodResources = Field(
        json_schema_extra={"default": _defaults(PodResources)},
        default_factory=PodResources,
        description="CPU, memory and /dev/shm of each replica.",
    )
    model_cache: ModelCache = Field(
        json_schema_extra={"default": _defaults(ModelCache)},
        default_factory=ModelCache,
        description="Where weights are cached between restarts.",
    )
    pools: list[PoolName] = Field(
        min_length=1,
        max_length=16,
        description=(
            "Acceptable GPUPools, in order of preference; replicas spread over them as "
            "spec.placement says, spilling to the next when one is full."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self.all(p, self.exists_one(q, q == p))", "pools must not list a pool twice")
            ]
        },
    )
    placement: PlacementPolicy = Field(
        default=PlacementPolicy.ORDERED,
        description=(
            "How replicas are spread over the pools: Ordered (the list's order, spilling to the "
            "next pool when one is full) or Cheapest (reserved first, then the lowest $/token)."
        ),
    )
    min_on_demand_replicas: int = Field(
        default=0,
        ge=0,
        le=MAX_REPLICAS,
        description=(
            "Replicas kept on pools that are not Spot, so that no reclaim takes the service "
            "below them."
        ),
    )
    scaling: Scaling = Field(
        json_schema_extra={"default": _defaults(Scaling)},
        default_factory=Scaling,
        description="Replica bounds and mode.",
    )
    latency_target: LatencyTarget = Field(
        json_schema_extra={"default": _defaults(LatencyTarget)},
        default_factory=LatencyTarget,
        description="The latency to meet.",
    )
    cost_target: CostTarget = Field(
        json_schema_extra={"default": _defaults(CostTarget)},
        default_factory=CostTarget,
        description="The cost not to exceed.",
    )
    pod_template: podtemplate.PodTemplate | None = Field(
        default=None,
        description=(
            "Labels, annotations, service account, priority class, affinity, topology spread, "
            "pull secrets, security contexts, variables and volumes merged onto the engine pods; "
            "what thrifty manages (GPUs, port, probes, arguments, the pool's placement) is refused."
        ),
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description=(
            "Desired replicas. Leave it out in Git: the autoscaler (mode Auto) or kubectl scale "
            "(mode Manual) sets it through the scale subresource."
        ),
    )

    @model_validator(mode="after")
    def _check_replicas(self) -> ModelServiceSpec:
        if self.replicas is not None and not (
            self.scaling.min_replicas <= self.replicas <= self.scaling.max_replicas
        ):
            raise ValueError("replicas must be within scaling.minReplicas and scaling.maxReplicas")
        if self.model.revision is not None and not self.model.uri.startswith("hf://"):
            raise ValueError("model.revision applies to hf:// models only")
        if len(set(self.pools)) != len(self.pools):
            raise ValueError("pools must not list a pool twice")
        if self.pod_template is not None:
            engine_env = {var.name for var in self.engine.env}
            for var in self.pod_template.spec.env:
                if var.name in engine_env:
                    raise ValueError(
                        f"podTemplate.spec.env {var.name} is also in engine.env: set it once"
                    )
        return self


class LastDecision(common.Model):
    """The autoscaler's last decision, with its reason and the constraint that bound it."""

    replicas: int = Field(ge=0, description="The replica count decided.")
    reason: str = Field(description="Why, as a CamelCase word (also the Event reason).")
    message: str = Field(default="", description="Why, with the numbers and the cost delta.")
    bound: str = Field(
        default=policy_types.Bound.NONE.value,
        description="What decided: None, LatencyTarget, Budget, Capacity, Bounds, Hold.",
        json_schema_extra={"enum": [b.value for b in policy_types.Bound]},
    )
    at: str = Field(description="When (RFC 3339).", json_schema_extra={"format": "date-time"})


class AdvisoryDecision(common.Model):
    """What `scaling.advisoryPolicy` would do now, never applied."""

    policy: str = Field(description="The advisory policy's name.")
    replicas: int = Field(ge=0, description="The replica count it would set.")
    reason: str = Field(description="Why, as a CamelCase word.")
    message: str = Field(default="", description="Why, with the numbers and the cost delta.")
    projected_dollars_per_hour: float | None = Field(
        default=None, ge=0, description="What its choice would cost per hour, USD."
    )


class PoolThroughput(common.Model):
    """What one replica of this ModelService serves in one pool, learned from its replicas."""

    pool: str = Field(max_length=63, description="The GPUPool.")
    relative_throughput: float = Field(
        ge=0.01,
        le=100,
        description=(
            "Reference replicas one replica here is worth, measured: the pool's prefill seconds "
            "per prompt token against those of the service's fastest declared pool in use. "
            "Used instead of the GPUPool's relativeThroughput (docs/pools.md)."
        ),
    )
    requests: int = Field(ge=0, description="Finished requests the measurement rests on.")
    basis: str = Field(
        max_length=256,
        description="The GPU type and engine it was measured on: a change of either forgets it.",
    )


class AutoscalerStatus(common.Model):
    """The autoscaler's memory, kept in status so an operator restart forgets nothing."""

    last_decision: LastDecision | None = Field(default=None, description="The last decision.")
    last_scale_time: str | None = Field(
        default=None,
        description="When replicas last changed because of the autoscaler (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    policy_state: dict[str, Any] | None = Field(
        default=None,
        description="The scaling policy's state between ticks (free-form JSON).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    advisory: AdvisoryDecision | None = Field(
        default=None, description="The advisory policy's decision (scaling.advisoryPolicy)."
    )
    pool_throughput: list[PoolThroughput] = Field(
        default_factory=list,
        max_length=16,
        description="Per pool, the relative throughput learned from this service's replicas.",
    )


class PoolReplicas(common.Model):
    """A ModelService's share of one GPUPool."""

    pool: str = Field(max_length=63, description="The GPUPool.")
    capacity_type: str = Field(max_length=16, description="OnDemand, Spot or Reserved.")
    replicas: int = Field(ge=0, description="Replicas the operator asked for in this pool.")
    ready_replicas: int = Field(default=0, ge=0, description="Of those, passing readiness.")
    reclaiming: int = Field(
        default=0,
        ge=0,
        description=(
            "Of those, replicas on nodes being reclaimed (tainted for interruption): they serve "
            "until their node goes but count for nothing, and their replacements are ordered."
        ),
    )
    dollars_per_hour: float = Field(ge=0, description="Their spend, USD per hour.")
    effective_dollars_per_hour: float = Field(
        ge=0,
        description=(
            "The pool's effective price: what a reference replica's throughput costs per hour "
            "here (a replica's $/hour over the pool's relativeThroughput)."
        ),
    )
    last_reclaim_time: str | None = Field(
        default=None,
        description="When the pool last lost replicas (reclaimed nodes, quota): no return "
        "to it until the operator's return delay has passed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class ModelServiceStatus(common.Model):
    """What is running, where, at what cost, and why."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    replicas: int = Field(
        default=0, ge=0, description="Replica pods that exist (scale subresource status)."
    )
    desired_replicas: int = Field(
        default=0, ge=0, description="Replicas the operator asked for in the Deployment."
    )
    ready_replicas: int = Field(default=0, ge=0, description="Replicas passing readiness.")
    selector: str = Field(
        default="", description="Label selector of the replica pods (for the scale subresource)."
    )
    pool: str | None = Field(
        default=None, description="The GPUPool holding the most replicas (the first on a tie)."
    )
    pools: list[PoolReplicas] = Field(
        default_factory=list,
        max_length=16,
        description="Replicas and spend in each GPUPool the service is spread over.",
    )
    placement: str | None = Field(
        default=None,
        max_length=1024,
        description="Replicas per pool in one line, e.g. 'h100-reserved=2 h100-spot=3' (column).",
    )
    gpus_per_replica: int | None = Field(
        default=None, ge=0, description="nvidia.com/gpu per replica: tensor x pipeline parallel."
    )
    price_per_gpu_hour: float | None = Field(
        default=None, ge=0, description="The chosen pool's price per GPU-hour, USD."
    )
    dollars_per_hour: float | None = Field(
        default=None, ge=0, description="Current spend in USD per hour: replicas x GPUs x price."
    )
    dollars_per_million_tokens: float | None = Field(
        default=None,
        ge=0,
        description="Realised USD per million tokens (prompt + generated) over the last window.",
    )
    reference_dollars_per_million_tokens: float | None = Field(
        default=None,
        ge=0,
        description="spec.costTarget.referenceDollarsPerMillionTokens blended by the service's "
        "own prompt/generated token mix over the last window: what the same tokens would cost "
        "bought (absent without a reference or without tokens).",
    )
    savings_vs_reference: float | None = Field(
        default=None,
        le=1,
        description="What self-hosting saves against the reference price, as a fraction of it: "
        "(reference - realised) / reference; negative when self-hosting costs more.",
    )
    queue_depth: float | None = Field(
        default=None,
        ge=0,
        description="Requests waiting across replicas (vllm:num_requests_waiting).",
    )
    tokens_per_second: float | None = Field(
        default=None, ge=0, description="Generated tokens per second across replicas."
    )
    autoscaler: AutoscalerStatus | None = Field(
        default=None, description="The autoscaler's last decision and state."
    )
    conditions: common.Conditions


MAX_NAME_LENGTH = 63
"""A ModelService's name is a label value on its pods (thrifty.dev/model-service)."""


class ModelService(common.Model):
    """An LLM served by vLLM replicas on GPUs, scaled to its latency target within its cost."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                    f"metadata.name must be at most {MAX_NAME_LENGTH} characters: it is a label "
                    "value on the engine pods",
                )
            ]
        }
    )

    spec: ModelServiceSpec = Field(description="What to serve, where, and within which targets.")
    status: ModelServiceStatus | None = Field(
        default=None, description="Replicas, placement, cost and conditions, set by the operator."
    )
