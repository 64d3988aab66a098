"""A failing object sits out the periodic resyncs for twice as long after each failure."""

from __future__ import annotations

from thrifty.control.backoff import Backoff


def test_delays_double_up_to_the_cap_and_a_success_clears_them() -> None:
    backoff = Backoff(first_delay_seconds=10, max_delay_seconds=600)
    delays = [backoff.failed("u1", now=0.0) for _ in range(10)]
    assert delays == [10, 20, 40, 80, 160, 320, 600, 600, 600, 600]
    assert not backoff.due("u1", now=599.0)
    assert backoff.due("u1", now=600.0)
    assert backoff.due("u2", now=0.0), "an object that never failed is always due"
    backoff.succeeded("u1")
    assert backoff.due("u1", now=0.0) and backoff.failures("u1") == 0


def test_records_are_bounded_by_the_live_objects() -> None:
    backoff = Backoff(first_delay_seconds=1)
    for uid in ("a", "b", "c"):
        backoff.failed(uid, now=0.0)
    backoff.keep_only(["b"])
    assert len(backoff) == 1 and backoff.failures("b") == 1
