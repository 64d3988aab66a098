"""ModelService ``spec.podTemplate``: what a platform adds to the engine pod, not what thrifty runs.

Cloud clusters need more on a serving pod than the engine: a service account for IRSA or Workload
Identity (weights from S3/GCS), labels and annotations for cost allocation and the node autoscaler,
a priority class, affinity and topology spread, pull secrets, a security context, extra variables
and volumes. They are merged onto the rendered pod (`thrifty.reconciler.pod_template`). What thrifty
manages (GPU count, ports, probes, model and engine arguments, the pool's nodeSelector and
tolerations, its own labels, annotations, volumes and variables) is refused at admission by CEL
rules naming the field; the model applies the same tests, so an object admitted before a CRD
upgrade becomes ``Degraded`` naming the field instead of running a pod that disagrees with it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from thrifty.api import common, engine_flags

MANAGED_LABELS: tuple[str, ...] = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
"""Labels thrifty sets on every engine pod (besides every ``thrifty.dev/`` key): selectors,
dashboards and the gateway find replicas by them."""
MANAGED_LABEL_PREFIX = "thrifty.dev/"
MANAGED_ANNOTATIONS: tuple[str, ...] = (
    "prometheus.io/scrape",
    "prometheus.io/port",
    "prometheus.io/path",
)
"""Annotations thrifty sets: the autoscaler's metrics are scraped through them."""
MANAGED_VOLUMES: tuple[str, ...] = ("dshm", "model-cache", "model")
"""Volume names of the rendered pod: shared memory, the weights cache, a pvc:// model."""
MANAGED_MOUNT_PATHS: tuple[str, ...] = ("/dev/shm", "/root/.cache", "/models")
"""Mount paths of the rendered engine container (``/models`` and below hold pvc:// models)."""

REFUSED_POD_FIELDS: tuple[tuple[str, str], ...] = (
    (
        "containers",
        "the engine container is thrifty's: its GPU count follows engine.tensorParallelSize x "
        "pipelineParallelSize, its port is 8000, its probes, image and arguments follow "
        "spec.engine; add variables and mounts with podTemplate.spec.env and volumeMounts",
    ),
    (
        "resources",
        "the GPU count follows engine.tensorParallelSize x pipelineParallelSize; set CPU and "
        "memory in spec.resources",
    ),
    ("ports", "the engine's port is 8000: the Service, probes and routing use it"),
    ("livenessProbe", "the probes follow spec.engine.startupTimeoutSeconds"),
    ("readinessProbe", "the probes follow spec.engine.startupTimeoutSeconds"),
    ("startupProbe", "the probes follow spec.engine.startupTimeoutSeconds"),
    ("command", "the engine's command is the image's; add flags with spec.engine.extraArgs"),
    ("args", "the engine arguments follow spec.model and spec.engine; see engine.extraArgs"),
    ("image", "set spec.engine.image"),
    ("nodeSelector", "the GPUPool's nodeSelector places the pod; narrow it with affinity"),
    ("tolerations", "the GPUPool's tolerations are copied onto the pod; set them on the pool"),
    ("nodeName", "the scheduler places the pod on a node of its GPUPool"),
)
"""Pod and container fields a user might reach for, refused with the reason and the field to use
(declared so that admission names them instead of pruning them silently)."""

_LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
"""A label or annotation key: an optional DNS-subdomain prefix and a name (checked by CEL: a
structural schema cannot constrain map keys)."""
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_SUBDOMAIN = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
_ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


def _free_form(description: str) -> Any:
    """A Kubernetes object thrifty passes through as written (affinity, a security context): the
    API server validates it when the Deployment is applied; a refusal becomes ``Degraded``
    naming the field."""
    extra: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}
    return Field(default=None, description=description, json_schema_extra=extra)


def _refused(description: str, shape: str) -> Any:
    """A field declared only so that admission refuses it by name, typed as in core/v1 (``object``,
    ``objects``: a list of objects, ``strings``, ``string``) so that CEL sees it and a user's
    natural spelling meets the rule, not a type error."""
    kinds: dict[str, JsonDict] = {
        "object": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "objects": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "strings": {"type": "array", "items": {"type": "string"}},
        "string": {"type": "string"},
    }
    return Field(default=None, description=description, json_schema_extra=kinds[shape])


def _keys_rule(field: str) -> JsonDict:
    return {
        "rule": f"self.{field}.all(k, size(k) <= 317 && k.matches('{_LABEL_KEY}'))",
        "message": f"{field} keys must be label keys: [prefix/]name, at most 317 characters",
        "fieldPath": f".{field}",
    }


def _key_problem(key: str) -> str | None:
    if len(key) > 317 or not re.fullmatch(_LABEL_KEY, key):
        return f"{key!r} is not a label key: [prefix/]name, at most 317 characters"
    return None


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def label_problem(key: str) -> str | None:
    if key in MANAGED_LABELS or key.startswith(MANAGED_LABEL_PREFIX):
        return f"label {key} is set by thrifty (app.kubernetes.io/* it sets and thrifty.dev/*)"
    return None


def mount_path_problem(path: str) -> str | None:
    normalised = path.rstrip("/") or "/"
    if normalised in MANAGED_MOUNT_PATHS or normalised.startswith("/models/"):
        return f"mountPath {path} is thrifty's ({', '.join(MANAGED_MOUNT_PATHS)})"
    return None


class PodMetadata(common.Model):
    """Labels and annotations added to every engine pod."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _keys_rule("labels"),
                _keys_rule("annotations"),
                {
                    "rule": "!self.labels.exists(k, k in "
                    + _cel_list(MANAGED_LABELS)
                    + f" || k.startsWith('{MANAGED_LABEL_PREFIX}'))",
                    "messageExpression": "'label ' + self.labels.filter(k, k in "
                    + _cel_list(MANAGED_LABELS)
                    + f" || k.startsWith('{MANAGED_LABEL_PREFIX}'))[0] + ' is set by thrifty "
                    "(app.kubernetes.io/* it sets and thrifty.dev/*)'",
                    "fieldPath": ".labels",
                },
                {
                    "rule": "!self.annotations.exists(k, k in "
                    + _cel_list(MANAGED_ANNOTATIONS)
                    + ")",
                    "message": "annotations prometheus.io/scrape, port and path are set by "
                    "thrifty: its autoscaler reads the engine's metrics through them",
                    "fieldPath": ".annotations",
                },
            ]
        }
    )

    labels: dict[str, Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra={"default": {}},
        description="Labels added to the engine pods (not thrifty.dev/* nor those thrifty sets).",
    )
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra={"default": {}},
        description=(
            'Annotations added to the engine pods, e.g. karpenter.sh/do-not-disrupt: "false" '
            "to let Karpenter move this service's replicas."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> PodMetadata:
        for key in [*self.labels, *self.annotations]:
            problem = _key_problem(key)
            if problem is not None:
                raise ValueError(f"podTemplate.metadata: {problem}")
        for key in self.labels:
            problem = label_problem(key)
            if problem is not None:
                raise ValueError(f"podTemplate.metadata.labels: {problem}")
        for key in self.annotations:
            if key in MANAGED_ANNOTATIONS:
                raise ValueError(
                    f"podTemplate.metadata.annotations: {key} is set by thrifty: its autoscaler "
                    "reads the engine's metrics through it"
                )
        return self


class ExtraEnvVar(common.Model):
    """A variable for the engine container, as in core/v1 (a value or a valueFrom source)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.value) && has(self.valueFrom))",
                    "message": "set at most one of value and valueFrom",
                }
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=_ENV_NAME,
        description="The variable's name (not one the operator manages).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!(self in {sorted(engine_flags.MANAGED_ENV)})",
                    "messageExpression": "'env ' + self + ' is set by the operator or would "
                    "break the engine (use engine.hfTokenSecretRef for the Hugging Face token)'",
                }
            ]
        },
    )
    value: str | None = Field(default=None, max_length=32768, description="A literal value.")
    value_from: dict[str, Any] | None = _free_form(
        "A source as in core/v1 EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef or "
        "resourceFieldRef."
    )

    @model_validator(mode="after")
    def _check(self) -> ExtraEnvVar:
        if self.name in engine_flags.MANAGED_ENV:
            raise ValueError(
                f"podTemplate.spec.env {self.name} is managed by the operator: "
                f"{engine_flags.MANAGED_ENV[self.name]}"
            )
        if self.value is not None and self.value_from is not None:
            raise ValueError("podTemplate.spec.env: set at most one of value and valueFrom")
        return self


class ExtraVolumeMount(common.Model):
    """A mount of one of podTemplate.spec.volumes into the engine container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(self.name in " + _cel_list(MANAGED_VOLUMES) + ")",
                    "message": "volumeMounts: dshm, model-cache and model are thrifty's volumes",
                    "fieldPath": ".name",
                },
                {
                    "rule": "!(self.mountPath in "
                    + _cel_list(MANAGED_MOUNT_PATHS)
                    + " || self.mountPath.startsWith('/models/'))",
                    "message": "volumeMounts: /dev/shm, /root/.cache and /models are thrifty's "
                    "mount paths",
                    "fieldPath": ".mountPath",
                },
            ]
        }
    )

    name: str = Field(
        min_length=1, max_length=63, pattern=common.DNS_LABEL, description="The volume's name."
    )
    mount_path: str = Field(
        min_length=1, max_length=4096, pattern=r"^/", description="Absolute path in the container."
    )
    read_only: bool | None = Field(default=None, description="Mount read-only.")
    sub_path: str | None = Field(
        default=None, max_length=4096, description="A path inside the volume to mount instead."
    )

    @model_validator(mode="after")
    def _check(self) -> ExtraVolumeMount:
        if self.name in MANAGED_VOLUMES:
            raise ValueError(f"volumeMounts: {self.name} is one of thrifty's volumes")
        problem = mount_path_problem(self.mount_path)
        if problem is not None:
            raise ValueError(f"volumeMounts: {problem}")
        return self


class ExtraVolume(common.Model):
    """A pod volume as in core/v1: a name and one source (secret, configMap, csi, ...)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-validations": [
                {
                    "rule": "!(self.name in " + _cel_list(MANAGED_VOLUMES) + ")",
                    "message": "volumes: dshm, model-cache and model are thrifty's volumes",
                    "fieldPath": ".name",
                }
            ],
        },
    )

    name: str = Field(
        min_length=1, max_length=63, pattern=common.DNS_LABEL, description="The volume's name."
    )

    @model_validator(mode="after")
    def _check(self) -> ExtraVolume:
        if self.name in MANAGED_VOLUMES:
            raise ValueError(f"volumes: {self.name} is one of thrifty's volumes")
        return self


_REFUSED_OBJECTS = frozenset(
    {"resources", "livenessProbe", "readinessProbe", "startupProbe", "nodeSelector"}
)


def _refused_rules() -> list[JsonDict]:
    # Lists default to [] in the CRD (see schema._default_lists_to_empty): empty is not set.
    return [
        {
            "rule": f"!has(self.{name})"
            + ("" if name in _REFUSED_OBJECTS else f" || size(self.{name}) == 0"),
            "message": f"podTemplate.spec.{name} cannot be set: {why}",
            "fieldPath": f".{name}",
        }
        for name, why in REFUSED_POD_FIELDS
    ]


class PodTemplateSpec(common.Model):
    """What is added to the engine pod's spec (and, for env and volumeMounts, to its container)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *_refused_rules(),
                {
                    "rule": "self.volumeMounts.all(m, self.volumes.exists(v, v.name == m.name))",
                    "message": "every volumeMounts[].name must name one of podTemplate.spec."
                    "volumes",
                    "fieldPath": ".volumeMounts",
                },
                {
                    "rule": "self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))",
                    "message": "volumes must not repeat a name",
                    "fieldPath": ".volumes",
                },
                {
                    "rule": "self.env.all(e, self.env.exists_one(f, f.name == e.name))",
                    "message": "env must not repeat a name",
                    "fieldPath": ".env",
                },
            ]
        }
    )

    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=_SUBDOMAIN,
        description=(
            "The pods' ServiceAccount, e.g. one annotated for IRSA or Workload Identity to read "
            "weights from S3 or GCS; absent: the namespace's default."
        ),
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=_SUBDOMAIN, description="The pods' PriorityClass."
    )
    affinity: dict[str, Any] | None = _free_form(
        "Node, pod and anti-affinity as in core/v1; the GPUPool's nodeSelector applies as well."
    )
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
        description=(
            "Topology spread constraints as in core/v1 (select the replicas with "
            "thrifty.dev/model-service: <name>)."
        ),
    )
    image_pull_secrets: list[common.LocalRef] = Field(
        default_factory=list, max_length=16, description="Secrets to pull the engine image with."
    )
    security_context: dict[str, Any] | None = _free_form(
        "The pod's security context as in core/v1 PodSecurityContext."
    )
    container_security_context: dict[str, Any] | None = _free_form(
        "The engine container's security context as in core/v1 SecurityContext."
    )
    env: list[ExtraEnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="More variables for the engine container, with valueFrom sources.",
    )
    volumes: list[ExtraVolume] = Field(
        default_factory=list, max_length=32, description="More pod volumes (not thrifty's)."
    )
    volume_mounts: list[ExtraVolumeMount] = Field(
        default_factory=list,
        max_length=32,
        description="Mounts of podTemplate.spec.volumes into the engine container.",
    )
    # Declared only to be refused by name (see REFUSED_POD_FIELDS).
    containers: list[dict[str, Any]] | None = _refused(
        "Refused: the engine container is thrifty's.", "objects"
    )
    resources: dict[str, Any] | None = _refused(
        "Refused: GPUs follow spec.engine, CPU and memory spec.resources.", "object"
    )
    ports: list[dict[str, Any]] | None = _refused("Refused: the engine's port is 8000.", "objects")
    liveness_probe: dict[str, Any] | None = _refused("Refused: the probes are thrifty's.", "object")
    readiness_probe: dict[str, Any] | None = _refused(
        "Refused: the probes are thrifty's.", "object"
    )
    startup_probe: dict[str, Any] | None = _refused("Refused: the probes are thrifty's.", "object")
    command: list[str] | None = _refused("Refused: the engine's command is the image's.", "strings")
    args: list[str] | None = _refused(
        "Refused: the engine arguments follow spec.model and spec.engine.", "strings"
    )
    image: str | None = _refused("Refused: set spec.engine.image.", "string")
    node_selector: dict[str, Any] | None = _refused(
        "Refused: the GPUPool's nodeSelector places the pod.", "object"
    )
    tolerations: list[dict[str, Any]] | None = _refused(
        "Refused: the GPUPool's tolerations are copied.", "objects"
    )
    node_name: str | None = _refused("Refused: the scheduler places the pod.", "string")

    @model_validator(mode="after")
    def _check(self) -> PodTemplateSpec:
        for name, why in REFUSED_POD_FIELDS:
            attribute = _snake(name)
            value = getattr(self, attribute)
            # As the CEL rules: an object is set when present, a list or string when not empty.
            if (value is not None) if name in _REFUSED_OBJECTS else value:
                raise ValueError(f"podTemplate.spec.{name} cannot be set: {why}")
        volumes = [v.name for v in self.volumes]
        if len(set(volumes)) != len(volumes):
            raise ValueError("podTemplate.spec.volumes must not repeat a name")
        names = [e.name for e in self.env]
        if len(set(names)) != len(names):
            raise ValueError("podTemplate.spec.env must not repeat a name")
        for mount in self.volume_mounts:
            if mount.name not in volumes:
                raise ValueError(
                    f"podTemplate.spec.volumeMounts: {mount.name} is not one of "
                    "podTemplate.spec.volumes"
                )
        return self


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def _defaults(model: type[common.Model]) -> JsonDict:
    filled: JsonDict = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return filled


class PodTemplate(common.Model):
    """A partial pod template merged onto the rendered engine pod."""

    metadata: PodMetadata = Field(
        default_factory=PodMetadata,
        json_schema_extra={"default": _defaults(PodMetadata)},
        description="Labels and annotations for the engine pods.",
    )
    spec: PodTemplateSpec = Field(
        default_factory=PodTemplateSpec,
        json_schema_extra={"default": _defaults(PodTemplateSpec)},
        description="Pod settings merged onto the engine pods.",
    )
