"""Bad objects cost little: failing ones back off, deleted ones are left alone, and memory is
bounded by the objects that exist, however often their passes fail.

The resync loop runs here for real (`handlers.resync_loops`) over fake watch caches and a fake API
that refuses the Services of the "broken" objects with a 500, as a full Service range does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import tracemalloc
from collections.abc import Iterator, Mapping
from typing import Any

import kopf
import pytest
from test_reconcile_pass import BODY, FakeView

from thrifty.adapters import kube as kube_adapter
from thrifty.control import backoff, handlers, settings

BROKEN = 100


def body(name: str, uid: str) -> dict[str, Any]:
    return {**BODY, "metadata": {"namespace": "ns", "name": name, "uid": uid, "generation": 1}}


class FloodKube:
    """The API: a Service of a "broken-*" object fails with 500; everything else succeeds."""

    def __init__(self) -> None:
        self.applies: dict[str, int] = {}
        self.gone: set[str] = set()

    def model_service_exists(self, namespace: str, name: str, uid: str) -> bool:
        return uid not in self.gone

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        owner = manifest["metadata"]["labels"]["thrifty.dev/model-service"]
        self.applies[owner] = self.applies.get(owner, 0) + 1
        if owner.startswith("broken") and manifest["kind"] == "Service":
            raise kube_adapter.KubeError("500 Internal Server Error: range is full")
        return {**manifest, "metadata": {**manifest["metadata"], "generation": 1}}

    def patch_status(self, *args: Any, **kwargs: Any) -> None:
        pass

    def event(self, *args: Any) -> None:
        pass


class FloodCaches(FakeView):
    """The watch caches: every ModelService by (namespace, name); Deployments of applied ones."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        super().__init__()
        self.model_services = {
            (b["metadata"]["namespace"], b["metadata"]["name"]): [b] for b in bodies
        }

    def model_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.model_services.get((namespace, name))
        return found[0] if found else None

    def deployment(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        return None if name.startswith("broken") else {"metadata": {"generation": 1}}


def memo_for(bodies: list[dict[str, Any]], first_delay_seconds: float) -> kopf.Memo:
    memo = kopf.Memo()
    memo.kube = FloodKube()
    memo.thrifty_caches = FloodCaches(bodies)
    memo.thrifty_applied = {}
    memo.thrifty_backoff = backoff.Backoff(first_delay_seconds)
    memo.locks = {}
    memo.locks_guard = threading.Lock()
    return memo


def fleet() -> list[dict[str, Any]]:
    return [body(f"broken-{i}", f"b{i}") for i in range(BROKEN)] + [body("healthy", "h")]


def resync(memo: kopf.Memo) -> None:
    model_services = handlers.resync_loops(memo, settings.Settings(), lambda: True)[0]

    async def one_pass() -> None:
        await model_services.work()

    asyncio.run(one_pass())


@pytest.fixture
def quiet() -> Iterator[None]:
    """One warning per failure is the point of `_log_failure`; pytest's log capture would keep
    every record in memory and hide what the operator keeps."""
    logger = logging.getLogger("thrifty")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def test_failing_objects_sit_out_resyncs_and_the_healthy_one_is_served(quiet: None) -> None:
    memo = memo_for(fleet(), first_delay_seconds=60)
    resync(memo)
    kube: FloodKube = memo.kube
    first = {f"broken-{i}": kube.applies[f"broken-{i}"] for i in range(BROKEN)}
    assert all(count >= 1 for count in first.values())
    assert memo.thrifty_backoff.failures("b0") == 1
    resync(memo)
    resync(memo)
    assert all(kube.applies[name] == count for name, count in first.items()), (
        "a failing object is not retried while it backs off"
    )
    assert "h" in memo.thrifty_applied, "the healthy object was applied"


def test_an_object_deleted_before_its_turn_is_not_acted_on() -> None:
    memo = memo_for([body("healthy", "h")], first_delay_seconds=10)
    stale = body("healthy", "h")
    memo.thrifty_caches.model_services.clear()  # its DELETED event reached the cache
    outcome = handlers._guarded_pass(memo, "ns", "healthy", lambda: stale, logging.getLogger())
    assert outcome == handlers.GONE
    assert memo.kube.applies == {}
    # Same name, new object: the old body's pass does nothing either.
    memo.thrifty_caches.model_services[("ns", "healthy")] = [body("healthy", "h2")]
    assert handlers._guarded_pass(memo, "ns", "healthy", lambda: stale, logging.getLogger()) == (
        handlers.GONE
    )
    assert memo.kube.applies == {}


def test_failing_reconciles_do_not_grow_memory(quiet: None) -> None:
    """Thousands of failed passes over the same objects keep no more than a few passes do: the
    operator's memory is bounded by the objects, not by time or failures (bench/flood.py measures
    the process over 10 minutes on the cluster)."""
    memo = memo_for(fleet(), first_delay_seconds=0)  # no backoff: every pass fails again
    # Traced from before the warm-up: what a pass replaces (its status, its claims) is then traced
    # in both snapshots, and only what accumulates shows as growth.
    tracemalloc.start()
    try:
        for _ in range(3):
            resync(memo)
        gc.collect()
        before = tracemalloc.take_snapshot()
        for _ in range(20):  # 2,000 failures
            resync(memo)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 32 * 1024, f"{grown} bytes kept after 2,000 more failures"
    live = BROKEN + 1
    assert len(memo.locks) <= live and len(memo.thrifty_backoff) <= live
    assert len(memo.thrifty_applied) <= live
    assert memo.thrifty_backoff.failures("b0") == 23


def test_the_tables_of_deleted_objects_are_dropped(quiet: None) -> None:
    memo = memo_for(fleet(), first_delay_seconds=60)
    resync(memo)
    memo.thrifty_caches.model_services = {("ns", "healthy"): [body("healthy", "h")]}
    resync(memo)
    assert len(memo.thrifty_backoff) == 0
    assert set(memo.locks) <= {"ms/ns/healthy"}
    assert set(memo.thrifty_applied) == {"h"}
