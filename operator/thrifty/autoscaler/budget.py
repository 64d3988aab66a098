"""Sharing one CostBudget's dollars per hour among the ModelServices that reference it.

A team's budget is one number, but each ModelService's policy decides alone. This module turns the
budget into a per-member allowance (`Observation.budget_dollars_per_hour_available`) so that the
members' decisions, taken together in one pass, never add up to more than the cap, and so that
when money runs out it is defined who yields:

1. the member with the lower ``priority`` yields first (priority is optional, default 0);
2. among equal priorities, the member with the lower value per dollar yields first, i.e. the higher
   realised $/1M tokens (a member that served no tokens has no value per dollar and yields first);
3. ties broken by namespace/name, so the order is deterministic.

Two rules make the allowances safe when members decide one after the other:

- *Grants* (who deserves the money): walk the members from the one that keeps its money longest
  to the one that yields first; each gets what it asks for (at least its floor, the spend of its
  minimum replicas), as long as the money left covers the floors of the members still to come.
- *No growth into money someone else spends*: a member may grow only into dollars that the others do
  not currently spend. A member that must yield is cut to its grant at once; the member it yields to
  gets the money on the next tick, after the cut shows in the other's spend. Hence the sum of
  current spends never passes the cap, provided each member applies its allowance before the next
  member is allocated. The fleet pass (`thrifty.autoscaler.plan`) allocates all members of a budget
  at once from the same readings, and a member's decision never exceeds its demand, so what is
  granted together still adds up to at most the cap.

Pure: no I/O, no clock, deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetMember:
    """One ModelService of a CostBudget, as the allocation needs it (all money in USD per hour)."""

    key: str
    """``namespace/name``: unique, and the final tie-break."""
    current_dollars_per_hour: float
    """What it spends now: desired replicas x GPUs per replica x price per GPU-hour."""
    demand_dollars_per_hour: float
    """What it would spend without the budget (its policy's unconstrained choice)."""
    floor_dollars_per_hour: float = 0.0
    """The spend of its minimum replicas: reserved before anyone grows."""
    priority: int = 0
    """Higher keeps its money longer."""
    dollars_per_million_tokens: float | None = None
    """Realised $/1M tokens; None when it served no tokens (no value per dollar: yields first)."""


def yield_order(members: Iterable[BudgetMember]) -> list[BudgetMember]:
    """Members from the one that keeps its money longest to the one that yields first."""

    def keep_key(member: BudgetMember) -> tuple[int, float, str]:
        cost = member.dollars_per_million_tokens
        return (-member.priority, math.inf if cost is None else cost, member.key)

    return sorted(members, key=keep_key)


def grants(cap_dollars_per_hour: float, members: Sequence[BudgetMember]) -> dict[str, float]:
    """What each member deserves under the cap, serving members in keep order."""
    ordered = yield_order(members)
    remaining = max(cap_dollars_per_hour, 0.0)
    floors_to_come = sum(m.floor_dollars_per_hour for m in ordered)
    granted: dict[str, float] = {}
    for member in ordered:
        floors_to_come -= member.floor_dollars_per_hour
        wanted = max(member.demand_dollars_per_hour, member.floor_dollars_per_hour)
        grant = min(wanted, max(remaining - floors_to_come, 0.0))
        granted[member.key] = grant
        remaining -= grant
    return granted


def allowances(cap_dollars_per_hour: float, members: Sequence[BudgetMember]) -> dict[str, float]:
    """Each member's available $/hour: grant plus unclaimed money, never growth into others' spend.

    Unclaimed money (cap minus all grants) is offered to every member, so a member whose demand rose
    since the others last looked can still grow at once; the no-growth rule keeps that safe.
    """
    granted = grants(cap_dollars_per_hour, members)
    unclaimed = max(cap_dollars_per_hour - sum(granted.values()), 0.0)
    total_current = sum(m.current_dollars_per_hour for m in members)
    available: dict[str, float] = {}
    for member in members:
        spent_by_others = total_current - member.current_dollars_per_hour
        growth_room = max(cap_dollars_per_hour - spent_by_others, 0.0)
        ceiling = max(member.current_dollars_per_hour, growth_room)
        available[member.key] = max(min(granted[member.key] + unclaimed, ceiling), 0.0)
    return available
