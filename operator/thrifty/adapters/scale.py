"""The Kubernetes reads and writes of the autoscaler: its replica pods, HPAs, budgets, the scale
subresource.

Kept apart from `thrifty.adapters.kube` (the reconciler's operations) so that the autoscaler's
only write to a ModelService's spec is visible in one place: `patch_scale`, through the scale
subresource, as field manager ``thrifty-autoscaler``. Errors are translated into kube's
`KubeError` / `NotFound` / `Conflict`, so the control layer handles one family. Blocking calls:
the timer runs them in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes import client

from thrifty.adapters.kube import NotFound, call_api
from thrifty.api import GROUP, VERSION
from thrifty.autoscaler import status as autoscaling
from thrifty.autoscaler.observe import PodView
from thrifty.reconciler import placement, render

MERGE = "application/merge-patch+json"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pod_view(pod: Mapping[str, Any], now: datetime) -> PodView | None:
    """A replica pod as the policy counts it; None for a finished pod (it holds no GPU)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    scheduled_condition = conditions.get("PodScheduled") or {}
    scheduled = bool((pod.get("spec") or {}).get("nodeName")) or (
        scheduled_condition.get("status") == "True"
    )
    since = _parse_time(scheduled_condition.get("lastTransitionTime")) or _parse_time(
        meta.get("creationTimestamp")
    )
    starting = max((now - since).total_seconds(), 0.0) if scheduled and since else 0.0
    ready_at = _parse_time((conditions.get("Ready") or {}).get("lastTransitionTime"))
    cold_start = ready_for = None
    if ready and since is not None and ready_at is not None and ready_at >= since:
        cold_start = (ready_at - since).total_seconds()
    if ready and ready_at is not None:
        ready_for = max((now - ready_at).total_seconds(), 0.0)
    return PodView(
        ready=ready,
        scheduled=scheduled,
        starting_seconds=starting,
        terminating=bool(meta.get("deletionTimestamp")),
        cold_start_seconds=cold_start,
        pool=((meta.get("labels") or {}).get(placement.POOL_LABEL)),
        ready_seconds=ready_for,
    )


class ScaleClient:
    """The autoscaler's operations on one API connection."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.hpa = client.AutoscalingV2Api(api)

    def read_model_service(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = call_api(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "modelservices",
            name,
        )
        return found

    def read_pool(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = call_api(
                self.custom.get_cluster_custom_object, GROUP, VERSION, "gpupools", name
            )
        except NotFound:
            return None
        return found

    def read_budget(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = call_api(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "costbudgets",
                name,
            )
        except NotFound:
            return None
        return found

    def list_model_services(self, namespace: str) -> list[dict[str, Any]]:
        found = call_api(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "modelservices"
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def replica_pods(self, namespace: str, name: str, now: datetime) -> list[PodView]:
        response = call_api(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=render.selector_string(name),
            _preload_content=False,
        )
        items = json.loads(response.data).get("items", [])
        views = (pod_view(pod, now) for pod in items)
        return [view for view in views if view is not None]

    def hpas_targeting(self, namespace: str, name: str) -> list[str]:
        """HorizontalPodAutoscalers whose scaleTargetRef is this ModelService."""
        response = call_api(
            self.hpa.list_namespaced_horizontal_pod_autoscaler, namespace, _preload_content=False
        )
        names = []
        for item in json.loads(response.data).get("items", []):
            ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            api_version = str(ref.get("apiVersion", ""))
            if (
                ref.get("kind") == "ModelService"
                and ref.get("name") == name
                and api_version.startswith(f"{GROUP}/")
            ):
                names.append(str(item["metadata"]["name"]))
        return names

    def patch_scale(self, namespace: str, name: str, replicas: int) -> str:
        """Writes the scale target: the autoscaler's only write to a ModelService's spec.

        Returns the ModelService's new resourceVersion (for the status patch that follows)."""
        scale = call_api(
            self.custom.patch_namespaced_custom_object_scale,
            GROUP,
            VERSION,
            namespace,
            "modelservices",
            name,
            {"spec": {"replicas": replicas}},
            field_manager=autoscaling.FIELD_MANAGER,
            _content_type=MERGE,
        )
        return str(scale["metadata"]["resourceVersion"])

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> None:
        """Merge-patches status, only if nobody wrote the object since it was read."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        call_api(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            "modelservices",
            name,
            body,
            field_manager=autoscaling.FIELD_MANAGER,
            _content_type=MERGE,
        )
