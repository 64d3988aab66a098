"""Building blocks shared by every thrifty resource: the base model, conditions, references.

The base model speaks the Kubernetes dialect (camelCase on the wire, snake_case in Python) and keeps
unknown fields out of the Python objects without failing on them, so a newer CRD in the cluster
never breaks an older operator that reads it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """Base of every API model: camelCase aliases, frozen values, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_kube(self) -> dict[str, object]:
        """The object as the API server wants it: camelCase keys, enums as strings, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label: what Kubernetes accepts as the name of a Secret, a GPUPool or a CostBudget."""

ObjectName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One aspect of an object's state, in the shape every Kubernetes tool understands."""

    type: str = Field(description="What this condition is about, e.g. Ready or CapacityLimited.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="A CamelCase word for the cause, for machines and for `kubectl get events`."
    )
    message: str = Field(default="", description="What happened and what to do, for a human.")
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339); not touched when only the message does.",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed from."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        description="The object's conditions, one per type.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(Model):
    """A pod toleration, as in core/v1, copied onto every pod placed in a pool."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.operator != 'Exists' || !has(self.value)",
                    "message": "a toleration with operator Exists must not set value",
                }
            ]
        }
    )

    key: str | None = Field(
        default=None, max_length=317, description="The taint key; empty with Exists matches all."
    )
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL,
        description="Exists (any value) or Equal (value must match).",
    )
    value: str | None = Field(
        default=None, max_length=63, description="The taint value to match with Equal."
    )
    effect: TaintEffect | None = Field(
        default=None, description="The taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=31_536_000,
        description=(
            "With NoExecute: how long the pod stays after the taint appears (a year at most)."
        ),
    )


class SecretKeyRef(Model):
    """A key in a Secret of the ModelService's namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_LABEL, description="Name of the Secret."
    )
    key: str = Field(
        default="token",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key inside the Secret that holds the value.",
    )


class LocalRef(Model):
    """A reference by name to an object of the same namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_LABEL, description="The object's name."
    )


class EnvVar(Model):
    """An environment variable for the engine container: a literal value or a key of a Secret."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.value) != has(self.secretKeyRef)",
                    "message": "set exactly one of value and secretKeyRef",
                }
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="The variable's name.",
    )
    value: str | None = Field(default=None, max_length=32768, description="A literal value.")
    secret_key_ref: SecretKeyRef | None = Field(
        default=None, description="Take the value from a key of a Secret in the same namespace."
    )
