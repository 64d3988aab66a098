"""What a node autoscaler says when it will not deliver a node: Karpenter's NodeClaims and Events,
the cluster autoscaler's Events. Read only for an Autoscaled GPUPool with pods waiting for a node.

Karpenter (kubernetes-sigs/karpenter, `pkg/controllers/nodeclaim/lifecycle/launch.go`): when the
cloud provider's create fails, the NodeClaim's `Launched` condition stays Unknown with the error's
reason and message and the launch is retried; on insufficient capacity or a NodeClass that is not
ready it posts a Warning Event (`InsufficientCapacityError`, `NodeClassNotReady`) on the NodeClaim
and deletes it, so only the Event remains. NodeClaims carry the label `karpenter.sh/nodepool` and
are named after their NodePool (`<nodepool>-<suffix>`).

The cluster autoscaler posts `NotTriggerScaleUp` on a Pending pod that no node group can take
("pod didn't trigger scale-up: ...").

A cluster without Karpenter answers 404 for NodeClaims: no signal, not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from thrifty import explain
from thrifty.adapters import kube
from thrifty.reconciler import pool_capacity

KARPENTER_GROUP = "karpenter.sh"
KARPENTER_VERSION = "v1"
KARPENTER_EVENT_REASONS = ("InsufficientCapacityError", "NodeClassNotReady")
NOT_TRIGGER_SCALE_UP = "NotTriggerScaleUp"
EVENTS_OF_CLUSTER_OBJECTS = "default"
"""client-go's recorder files an Event about a cluster-scoped object (a NodeClaim) in `default`."""
log = logging.getLogger(__name__)


def _epoch(text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def _event_time(event: Mapping[str, Any], now_seconds: float) -> float:
    series = event.get("series") or {}
    return _epoch(
        event.get("lastTimestamp") or series.get("lastObservedTime") or event.get("eventTime"),
        now_seconds,
    )


def node_claim_failures(
    claims: Iterable[Mapping[str, Any]], now_seconds: float
) -> list[pool_capacity.NodeFailure]:
    """NodeClaims whose launch failed: `Launched` not True and a reason other than the plain
    "not launched yet"."""
    found = []
    for claim in claims:
        name = (claim.get("metadata") or {}).get("name", "")
        for condition in (claim.get("status") or {}).get("conditions") or []:
            if condition.get("type") != "Launched" or condition.get("status") == "True":
                continue
            reason = str(condition.get("reason") or "")
            if not reason or reason in ("Unknown", "AwaitingReconciliation"):
                continue
            found.append(
                pool_capacity.NodeFailure(
                    explain.NODE_LAUNCH_FAILED,
                    f"Karpenter NodeClaim {name}: {reason}: {condition.get('message', '')}",
                    _epoch(condition.get("lastTransitionTime"), now_seconds),
                )
            )
    return found


def karpenter_event_failures(
    events: Iterable[Mapping[str, Any]], node_pool: str, now_seconds: float
) -> list[pool_capacity.NodeFailure]:
    """Karpenter's launch-failure Events on NodeClaims of ``node_pool``."""
    found = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if (
            involved.get("kind") != "NodeClaim"
            or event.get("reason") not in KARPENTER_EVENT_REASONS
        ):
            continue
        if not str(involved.get("name", "")).startswith(f"{node_pool}-"):
            continue
        found.append(
            pool_capacity.NodeFailure(
                explain.NODE_LAUNCH_FAILED,
                f"Karpenter {event.get('reason')}: {event.get('message', '')}",
                _event_time(event, now_seconds),
            )
        )
    return found


def scale_up_not_triggered(
    events: Iterable[Mapping[str, Any]],
    pending: Sequence[pool_capacity.PendingPod],
    now_seconds: float,
) -> list[pool_capacity.NodeFailure]:
    """The cluster autoscaler's NotTriggerScaleUp Events on the pool's pending pods."""
    waiting = {(pod.namespace, pod.name) for pod in pending}
    found = []
    for event in events:
        involved = event.get("involvedObject") or {}
        key = (involved.get("namespace", ""), involved.get("name", ""))
        if event.get("reason") != NOT_TRIGGER_SCALE_UP or key not in waiting:
            continue
        found.append(
            pool_capacity.NodeFailure(
                explain.SCALE_UP_NOT_TRIGGERED,
                f"cluster autoscaler on pod {key[0]}/{key[1]}: {event.get('message', '')}",
                _event_time(event, now_seconds),
            )
        )
    return found


def failures(
    api: kube.Kube,
    node_pool: str | None,
    pending: Sequence[pool_capacity.PendingPod],
    now_seconds: float,
) -> list[pool_capacity.NodeFailure]:
    """Every sign of failure for one pool's pending pods (a few list calls, made only while pods
    wait)."""
    found: list[pool_capacity.NodeFailure] = []
    if node_pool:
        try:
            claims = kube.call_api(
                api.custom.list_cluster_custom_object,
                KARPENTER_GROUP,
                KARPENTER_VERSION,
                "nodeclaims",
                label_selector=f"{pool_capacity.KARPENTER_NODE_POOL_LABEL}={node_pool}",
            )
            found += node_claim_failures(claims.get("items", []), now_seconds)
        except kube.KubeError as error:  # 404: Karpenter is not installed
            log.debug("Karpenter NodeClaims not read: %s", error)
        try:
            events = kube.call_api(
                api.core.list_namespaced_event,
                EVENTS_OF_CLUSTER_OBJECTS,
                field_selector="involvedObject.kind=NodeClaim,type=Warning",
                _preload_content=False,
            )
            found += karpenter_event_failures(_items(events), node_pool, now_seconds)
        except kube.KubeError as error:  # e.g. a namespaced operator may not read `default`
            log.debug("Karpenter's NodeClaim Events not read: %s", error)
    for namespace in sorted({pod.namespace for pod in pending}):
        try:
            events = kube.call_api(
                api.core.list_namespaced_event,
                namespace,
                field_selector=f"reason={NOT_TRIGGER_SCALE_UP}",
                _preload_content=False,
            )
        except kube.KubeError as error:  # not served by this operator: the timeout still applies
            log.debug("NotTriggerScaleUp Events of %s not read: %s", namespace, error)
            continue
        found += scale_up_not_triggered(_items(events), pending, now_seconds)
    return found


def _items(response: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(response.data).get("items", [])
    return items
