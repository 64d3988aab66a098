"""Condition bookkeeping: one condition per type, transition times that move only on a flip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from thrifty import explain
from thrifty.api import common

TYPES = st.sampled_from([explain.DEGRADED, explain.PROGRESSING, explain.CAPACITY_LIMITED])
UPDATES = st.lists(
    st.tuples(TYPES, st.sampled_from([True, False, None]), st.integers(0, 10)), max_size=20
)


@given(updates=UPDATES)
def test_one_condition_per_type_and_times_move_only_on_flips(
    updates: list[tuple[str, bool | None, int]],
) -> None:
    conditions: list[common.Condition] = []
    for type_, status, minute in updates:
        now = f"2026-01-01T00:{minute:02d}:00Z"
        before = explain.find(conditions, type_)
        conditions = explain.set_condition(
            conditions, explain.condition(type_, status, "R", "m", now=now)
        )
        after = explain.find(conditions, type_)
        assert after is not None
        if before is not None and before.status == after.status:
            assert after.last_transition_time == before.last_transition_time
        else:
            assert after.last_transition_time == now
    assert len({c.type for c in conditions}) == len(conditions)


def test_ready_is_derived_from_the_others() -> None:
    now = "2026-01-01T00:00:00Z"
    fine = [
        explain.condition(explain.DEGRADED, False, explain.AS_EXPECTED, "", now=now),
        explain.condition(explain.PROGRESSING, False, explain.ROLLED_OUT, "", now=now),
        explain.condition(explain.CAPACITY_LIMITED, True, explain.INSUFFICIENT_GPUS, "", now=now),
    ]
    assert explain.ready_from(fine, now=now).status is common.ConditionStatus.TRUE
    broken = explain.set_condition(
        fine, explain.condition(explain.DEGRADED, True, explain.UNKNOWN_POOL, "no pool x", now=now)
    )
    ready = explain.ready_from(broken, now=now)
    assert ready.status is common.ConditionStatus.FALSE
    assert (ready.reason, ready.message) == (explain.UNKNOWN_POOL, "no pool x")


def test_transitions_report_status_or_reason_changes_only() -> None:
    now = "2026-01-01T00:00:00Z"
    old = [explain.condition(explain.DEGRADED, False, explain.AS_EXPECTED, "a", now=now)]
    same = [explain.condition(explain.DEGRADED, False, explain.AS_EXPECTED, "b", now=now)]
    assert explain.transitions(old, same) == []
    flipped = [explain.condition(explain.DEGRADED, True, explain.UNKNOWN_POOL, "c", now=now)]
    assert [c.reason for c in explain.transitions(old, flipped)] == [explain.UNKNOWN_POOL]
