"""Reading a node autoscaler's failure signs from the objects Karpenter and the cluster
autoscaler write (shapes as in kubernetes-sigs/karpenter's NodeClaim status and Events)."""

from __future__ import annotations

from thrifty import explain
from thrifty.adapters import node_autoscaler
from thrifty.reconciler import pool_capacity

NOW = 1_800_000_000.0


def test_a_node_claim_whose_launch_failed_is_a_failure_a_launching_one_is_not() -> None:
    claims = [
        {
            "metadata": {"name": "h100-abcde"},
            "status": {
                "conditions": [
                    {
                        "type": "Launched",
                        "status": "Unknown",
                        "reason": "LaunchFailed",
                        "message": "creating instance, insufficient capacity",
                        "lastTransitionTime": "2027-01-15T08:00:00Z",
                    }
                ]
            },
        },
        {
            "metadata": {"name": "h100-fghij"},
            "status": {"conditions": [{"type": "Launched", "status": "Unknown"}]},
        },
        {
            "metadata": {"name": "h100-klmno"},
            "status": {"conditions": [{"type": "Launched", "status": "True", "reason": "X"}]},
        },
    ]
    found = node_autoscaler.node_claim_failures(claims, NOW)
    assert [f.reason for f in found] == [explain.NODE_LAUNCH_FAILED]
    assert "h100-abcde" in found[0].message and "insufficient capacity" in found[0].message


def test_karpenter_insufficient_capacity_events_count_for_their_node_pool_only() -> None:
    event = {
        "reason": "InsufficientCapacityError",
        "message": "NodeClaim h100-abcde event: all requested instance types were unavailable",
        "involvedObject": {"kind": "NodeClaim", "name": "h100-abcde"},
        "lastTimestamp": "2027-01-15T08:00:00Z",
    }
    other = {**event, "involvedObject": {"kind": "NodeClaim", "name": "l4-zzz"}}
    found = node_autoscaler.karpenter_event_failures([event, other], "h100", NOW)
    assert len(found) == 1 and "unavailable" in found[0].message


def test_not_trigger_scale_up_on_a_waiting_pod_of_the_pool_is_a_failure() -> None:
    pending = [pool_capacity.PendingPod("team", "chat-engine-1", 30.0)]
    events = [
        {
            "reason": "NotTriggerScaleUp",
            "message": "pod didn't trigger scale-up: 1 max node group size reached",
            "involvedObject": {"kind": "Pod", "namespace": "team", "name": "chat-engine-1"},
        },
        {
            "reason": "NotTriggerScaleUp",
            "message": "elsewhere",
            "involvedObject": {"kind": "Pod", "namespace": "team", "name": "someone-else"},
        },
    ]
    found = node_autoscaler.scale_up_not_triggered(events, pending, NOW)
    assert [f.reason for f in found] == [explain.SCALE_UP_NOT_TRIGGERED]
    assert "max node group size" in found[0].message
    assert found[0].at_seconds == NOW  # no timestamp: seen now
