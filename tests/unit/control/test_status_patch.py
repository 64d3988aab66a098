"""The reconciler's status write: only what changed, never the fields other writers own."""

from __future__ import annotations

from thrifty.control import handlers


def test_only_changed_fields_are_patched_and_foreign_fields_are_left_alone() -> None:
    old = {"replicas": 1, "pool": "a", "queueDepth": 4.0}
    new = {"replicas": 2, "pool": "a"}
    assert handlers.status_patch(old, new) == {"replicas": 2}


def test_an_unchanged_status_patches_nothing() -> None:
    same = {"replicas": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    assert handlers.status_patch(same, dict(same)) == {}
