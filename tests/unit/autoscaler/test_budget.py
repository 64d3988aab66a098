"""Who yields when a team's CostBudget runs out, and that members deciding in turn never pass it."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty.autoscaler import budget
from thrifty.autoscaler.budget import BudgetMember


def member(
    key: str,
    current: float,
    demand: float,
    *,
    floor: float = 0.0,
    priority: int = 0,
    cost: float | None = 1.0,
) -> BudgetMember:
    return BudgetMember(
        key=key,
        current_dollars_per_hour=current,
        demand_dollars_per_hour=demand,
        floor_dollars_per_hour=floor,
        priority=priority,
        dollars_per_million_tokens=cost,
    )


def test_higher_priority_keeps_its_money_lower_priority_yields() -> None:
    members = [member("t/chat", 6, 6, priority=1), member("t/batch", 6, 6, priority=0)]
    available = budget.allowances(10, members)
    assert available == {"t/chat": 6, "t/batch": 4}


def test_equal_priority_the_dearer_per_token_yields_first() -> None:
    members = [member("t/cheap", 6, 6, cost=0.2), member("t/dear", 6, 6, cost=0.9)]
    assert budget.allowances(10, members) == {"t/cheap": 6, "t/dear": 4}


def test_a_member_without_tokens_yields_before_one_with_tokens() -> None:
    members = [member("t/idle", 6, 6, cost=None), member("t/busy", 6, 6, cost=5.0)]
    assert budget.allowances(10, members)["t/idle"] == 4


def test_ties_are_broken_by_name_deterministically() -> None:
    members = [member("t/b", 6, 6), member("t/a", 6, 6)]
    assert budget.allowances(10, members) == {"t/a": 6, "t/b": 4}
    assert [m.key for m in budget.yield_order(members)] == ["t/a", "t/b"]


def test_the_member_yielded_to_grows_only_after_the_other_shrank() -> None:
    chat = member("t/chat", 4, 8, priority=1)
    batch = member("t/batch", 6, 6)
    first = budget.allowances(10, [chat, batch])
    assert first == {"t/chat": 4, "t/batch": 2}
    # batch applied its cut; on the next tick chat gets the freed money.
    second = budget.allowances(10, [chat, member("t/batch", 2, 6)])
    assert second == {"t/chat": 8, "t/batch": 2}


def test_floors_of_members_to_come_are_reserved() -> None:
    members = [member("t/a", 0, 10, priority=1), member("t/b", 3, 3, floor=3)]
    grants = budget.grants(10, members)
    assert grants == {"t/a": 7, "t/b": 3}


def test_unclaimed_money_lets_a_member_grow_at_once() -> None:
    members = [member("t/a", 2, 2), member("t/b", 2, 2)]
    assert budget.allowances(10, members) == {"t/a": 8, "t/b": 8}


def test_over_budget_cuts_the_yielding_member_not_the_kept_one() -> None:
    # The budget was lowered under the current spend.
    members = [member("t/keep", 6, 6, priority=1), member("t/yield", 6, 6)]
    available = budget.allowances(8, members)
    assert available == {"t/keep": 6, "t/yield": 2}


QUANTUM = 2.5  # $/hour of one replica


@st.composite
def fleets(draw: st.DrawFn) -> tuple[float, list[BudgetMember]]:
    count = draw(st.integers(1, 5))
    cap = draw(st.integers(0, 40)) * QUANTUM
    members: list[BudgetMember] = []
    room = cap
    for i in range(count):
        current = draw(st.integers(0, int(room // QUANTUM))) * QUANTUM
        room -= current
        members.append(
            member(
                f"ns/m{i}",
                current,
                draw(st.integers(0, 20)) * QUANTUM,
                priority=draw(st.integers(0, 2)),
                cost=draw(st.one_of(st.none(), st.floats(0.01, 10))),
            )
        )
    return cap, members


@given(fleets(), st.lists(st.integers(0, 4), min_size=1, max_size=30))
@settings(max_examples=300)
def test_members_deciding_in_turn_never_pass_the_cap(
    fleet: tuple[float, list[BudgetMember]], turns: list[int]
) -> None:
    cap, members = fleet
    by_key = {m.key: m for m in members}
    keys = sorted(by_key)
    for turn in turns:
        key = keys[turn % len(keys)]
        available = budget.allowances(cap, list(by_key.values()))[key]
        # The member's policy takes as many whole replicas as its demand and allowance permit.
        wanted = by_key[key].demand_dollars_per_hour
        replicas = min(wanted, available) // QUANTUM
        old = by_key[key]
        by_key[key] = member(
            key,
            replicas * QUANTUM,
            old.demand_dollars_per_hour,
            priority=old.priority,
            cost=old.dollars_per_million_tokens,
        )
        total = sum(m.current_dollars_per_hour for m in by_key.values())
        assert total <= cap + 1e-9


@given(fleets())
def test_a_kept_member_is_never_cut_below_its_spend_while_a_yielding_one_has_money(
    fleet: tuple[float, list[BudgetMember]],
) -> None:
    cap, members = fleet
    available = budget.allowances(cap, members)
    order = budget.yield_order(members)
    for i, kept in enumerate(order):
        wanted = min(kept.demand_dollars_per_hour, kept.current_dollars_per_hour)
        if available[kept.key] + 1e-9 < wanted:
            later = order[i + 1 :]
            assert all(math.isclose(available[m.key], 0.0, abs_tol=1e-9) for m in later)
