"""Leader election: at no instant do two operator replicas both believe they lead.

The Lease store here keeps resourceVersions like the API server does (a write with a stale version
is refused), and both candidates share one virtual clock, so interleavings are explored exactly.
The two-process test against a real API server is in e2e/test_autoscale.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty.adapters.lease import LeaseRecord
from thrifty.control import leadership
from thrifty.control.leadership import ElectionSettings, LeaderElector

T = TypeVar("T")

SETTINGS = ElectionSettings(
    lease_duration_seconds=15, renew_deadline_seconds=10, retry_period_seconds=2
)


class Clock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.seconds)


class VersionedLease:
    """One Lease with optimistic concurrency, as the API server keeps it."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0

    async def read(self) -> LeaseRecord | None:
        return self.record

    async def write(self, record: LeaseRecord) -> bool:
        expected = None if self.record is None else self.record.resource_version
        if record.resource_version != expected:
            return False
        self.version += 1
        self.record = replace(record, resource_version=str(self.version))
        return True


def elector(name: str, lease: VersionedLease, clock: Clock) -> LeaderElector:
    return LeaderElector(lease, name, SETTINGS, monotonic=clock.monotonic, wall_clock=clock.wall)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_first_candidate_leads_and_the_second_waits_while_it_renews() -> None:
    clock, lease = Clock(), VersionedLease()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    assert run(a.try_once()) is True
    for _ in range(20):
        clock.seconds += 2
        assert run(a.try_once()) is True
        assert run(b.try_once()) is False
    assert lease.record is not None and lease.record.holder == "a"


def test_a_dead_leader_is_replaced_only_after_the_lease_expires_and_stops_first() -> None:
    clock, lease = Clock(), VersionedLease()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    run(a.try_once())
    run(b.try_once())  # b sees a's record now
    taken_over_after = None
    for step in range(1, 20):
        clock.seconds += 1
        if run(b.try_once()):
            taken_over_after = step
            break
        assert a.is_leader() == (step < SETTINGS.renew_deadline_seconds)
    assert taken_over_after == SETTINGS.lease_duration_seconds
    assert not a.is_leader()
    assert lease.record is not None and lease.record.transitions == 1


def test_racing_candidates_with_the_same_read_cannot_both_acquire() -> None:
    clock, lease = Clock(), VersionedLease()
    a, b = elector("a", lease, clock), elector("b", lease, clock)

    async def race() -> list[bool]:
        return list(await asyncio.gather(a.try_once(), b.try_once()))

    assert sorted(run(race())) == [False, True]


def test_release_hands_the_lease_over_at_once() -> None:
    clock, lease = Clock(), VersionedLease()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    run(a.try_once())
    run(b.try_once())
    run(a.release())
    assert not a.is_leader()
    clock.seconds += 2
    assert run(b.try_once()) is True


def test_claim_renews_own_lease_and_keeps_acquire_time() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    mine = LeaseRecord("a", 15, t0, t0, 3, resource_version="7")
    later = t0 + timedelta(seconds=4)
    renewed = leadership.claim(
        mine, "a", seen_unchanged_seconds=100, wall_now=later, lease_duration_seconds=15
    )
    assert renewed == replace(mine, renew_time=later)


def test_settings_refuse_a_deadline_longer_than_the_lease() -> None:
    try:
        ElectionSettings(lease_duration_seconds=10, renew_deadline_seconds=12)
    except ValueError as error:
        assert "lease duration > renew deadline" in str(error)
    else:
        raise AssertionError("accepted a renew deadline beyond the lease")


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "tick", "kill-a", "kill-b"]), st.integers(0, 6)),
        max_size=80,
    )
)
@settings(max_examples=200, deadline=None)
def test_never_two_leaders_at_once(steps: list[tuple[str, int]]) -> None:
    clock, lease = Clock(), VersionedLease()
    candidates = {name: elector(name, lease, clock) for name in "abc"}
    dead: set[str] = set()
    for action, seconds in steps:
        if action == "tick":
            clock.seconds += seconds
        elif action.startswith("kill-"):
            dead.add(action.removeprefix("kill-"))  # stops renewing, never releases
        elif action not in dead:
            run(candidates[action].try_once())
        leaders = [name for name, c in candidates.items() if c.is_leader()]
        assert len(leaders) <= 1, leaders


class CountingLease(VersionedLease):
    """Counts writes, from whichever thread and loop the elector runs on."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def write(self, record: LeaseRecord) -> bool:
        self.writes += 1
        return await super().write(record)


def test_renewals_go_on_while_the_operators_event_loop_is_blocked() -> None:
    """The election has its own thread and loop: a main loop busy with a long synchronous pass (or
    an executor full of handlers) cannot make the only candidate lose its Lease."""
    lease = CountingLease()
    fast = ElectionSettings(
        lease_duration_seconds=2, renew_deadline_seconds=1.0, retry_period_seconds=0.1
    )
    candidate = LeaderElector(lease, "a", fast)

    async def operator() -> list[bool]:
        election = leadership.ElectionThread(candidate).start()
        seen = []
        try:
            for _ in range(30):  # 3 s of a blocked loop, three renew deadlines
                time.sleep(0.1)  # the point: this loop does not get to run
                seen.append(candidate.is_leader())
        finally:
            await election.stop(timeout_seconds=5)
        return seen

    seen = run(operator())
    assert all(seen[5:]), f"lost the Lease while the main loop was blocked: {seen}"
    assert lease.writes >= 20
    assert lease.record is not None and lease.record.holder is None, "released on stop"
    assert not candidate.is_leader()
