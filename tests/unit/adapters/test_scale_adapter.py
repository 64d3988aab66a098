"""How the autoscaler reads one replica pod from the API server's JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from thrifty.adapters.scale import pod_view
from thrifty.autoscaler.observe import PodView

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def pod(*, ready: bool, deleted: bool = False, phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "creationTimestamp": "2026-01-01T11:58:00Z"}
    if deleted:
        meta["deletionTimestamp"] = "2026-01-01T11:59:30Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": "gpu-node-1"},
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-01-01T11:59:00Z",
                },
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def test_a_pod_being_deleted_is_terminating_and_still_placed() -> None:
    view = pod_view(pod(ready=True, deleted=True), NOW)
    assert view is not None
    assert view.terminating and view.scheduled


def test_a_live_pod_is_not_terminating() -> None:
    assert pod_view(pod(ready=False), NOW) == PodView(
        ready=False, scheduled=True, starting_seconds=60.0
    )


def test_a_finished_pod_is_not_counted_even_while_being_deleted() -> None:
    assert pod_view(pod(ready=False, phase="Succeeded"), NOW) is None
    assert pod_view(pod(ready=False, deleted=True, phase="Failed"), NOW) is None


def test_a_ready_pod_tells_its_cold_start_from_scheduled_to_ready() -> None:
    body = pod(ready=True)
    body["status"]["conditions"][1]["lastTransitionTime"] = "2026-01-01T11:59:45Z"
    view = pod_view(body, NOW)
    assert view is not None and view.cold_start_seconds == 45.0
    assert view.ready_seconds == 15.0  # Ready at 11:59:45, now 12:00:00
    not_ready = pod_view(pod(ready=False), NOW)
    assert not_ready is not None and not_ready.cold_start_seconds is None
    assert not_ready.ready_seconds is None
