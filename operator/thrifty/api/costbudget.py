"""CostBudget: a team's spending limits, shared by the ModelServices that reference it.

Per-model cost targets cannot express "these three models together may spend $40/hour"; a budget
can, and its status shows the live spend per member so the team sees where the money goes.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from thrifty.api import common
from thrifty.policy import types as policy_types


class CostBudgetSpec(common.Model):
    """Limits for the sum of the members' spend."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.maxDollarsPerHour) || has(self.maxDollarsPerMillionTokens)",
                    "message": "set maxDollarsPerHour, maxDollarsPerMillionTokens or both",
                }
            ]
        }
    )

    max_dollars_per_hour: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Most USD per hour for all members together.",
    )
    max_dollars_per_million_tokens: float | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Most USD per million tokens (prompt + generated), over all members' tokens.",
    )
    enforcement: policy_types.Enforcement = Field(
        default=policy_types.Enforcement.HARD,
        description="Hard: members are held below the limit. Soft: exceeding it is only reported.",
    )

    @model_validator(mode="after")
    def _check_some_limit(self) -> CostBudgetSpec:
        if self.max_dollars_per_hour is None and self.max_dollars_per_million_tokens is None:
            raise ValueError("set maxDollarsPerHour, maxDollarsPerMillionTokens or both")
        return self


class BudgetMember(common.Model):
    """One ModelService charged to the budget."""

    name: str = Field(description="The ModelService's name (same namespace).")
    dollars_per_hour: float = Field(ge=0, description="Its current spend, USD per hour.")


class CostBudgetStatus(common.Model):
    """Live spend against the limits."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    dollars_per_hour: float = Field(
        default=0.0, ge=0, description="Current spend of all members, USD per hour."
    )
    remaining_dollars_per_hour: float | None = Field(
        default=None, description="maxDollarsPerHour minus current spend (negative when over)."
    )
    members: list[BudgetMember] = Field(
        default_factory=list, description="The ModelServices charged to this budget."
    )
    conditions: common.Conditions


class CostBudget(common.Model):
    """Spending limits shared by several ModelServices of a namespace."""

    spec: CostBudgetSpec = Field(description="The limits.")
    status: CostBudgetStatus | None = Field(
        default=None, description="Current spend and members, maintained by the operator."
    )
