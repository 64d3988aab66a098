"""The Kubernetes API as thrifty uses it: server-side apply, status patches, Events, Nodes and Pods.

The only module (with ``lease``) that calls the Kubernetes client. It returns plain dicts and the
small value types of ``thrifty.reconciler.placement``, and turns the client's exceptions into the
three errors the control layer distinguishes: the object is gone, someone else wrote first, or the
API server could not be reached (retry later). Blocking calls: kopf runs sync handlers in threads.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from thrifty.api import GROUP, VERSION
from thrifty.reconciler import placement

FIELD_MANAGER = "thrifty"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
GPU_RESOURCE = "nvidia.com/gpu"


class KubeError(Exception):
    """The API server failed or could not be reached: worth retrying later."""


class NotFound(KubeError):
    """The object does not exist (any more)."""


class Conflict(KubeError):
    """Someone changed the object since it was read."""


class Invalid(KubeError):
    """The API server refused the object itself (422): retrying the same object cannot help."""


def connect() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


REQUEST_HOOKS: list[Callable[[str], None]] = []
"""Called with the verb of every request thrifty sends (`get`, `list`, `patch`, `create`...):
the operator's metrics count them (`thrifty_kube_api_requests_total`)."""


def _verb(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "call").split("_", 1)[0]


def call_api(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls the client; its errors come back as KubeError / NotFound / Conflict."""
    for hook in REQUEST_HOOKS:
        hook(_verb(fn))
    try:
        return fn(*args, **kwargs)
    except ApiException as error:
        message = f"{error.status} {error.reason}: {_api_message(error)}"
        if error.status == 404:
            raise NotFound(message) from error
        if error.status == 409:
            raise Conflict(message) from error
        if error.status == 422:
            raise Invalid(message) from error
        raise KubeError(message) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise KubeError(f"API server unreachable: {error}") from error


def _cluster_ip_fixed(message: str) -> bool:
    """The API server's refusal to change an allocated ClusterIP (e.g. to None)."""
    return "spec.clusterIP" in message and "may not change once set" in message


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message", error.body))
    except ValueError:
        return str(error.body)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


EventKey = tuple[str, str, str, str, str]
"""(namespace, involved object's uid, type, reason, message)."""
EVENTS_REMEMBERED = 4096
"""Events whose name is kept for aggregation: a bounded cache, the oldest forgotten first."""


class Kube:
    """One API connection; its methods are the operations thrifty needs, nothing more."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.instance = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.posted: OrderedDict[EventKey, tuple[str, int]] = OrderedDict()
        """Events this process posted, by what makes two of them the same, with name and count."""
        self.posted_lock = threading.Lock()  # handlers post from kopf's and asyncio's threads

    # --- workloads -------------------------------------------------------------------------
    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager ``thrifty`` (forced: they are the operator's)."""
        kind = manifest["kind"]
        name = manifest["metadata"]["name"]
        namespace = manifest["metadata"]["namespace"]
        patchers: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
        }

        def send(body: Mapping[str, Any]) -> Any:
            return call_api(
                patchers[kind],
                name,
                namespace,
                dict(body),
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
            )

        try:
            return _json(send(manifest))
        except Invalid as error:
            if kind != "Service" or not _cluster_ip_fixed(str(error)):
                raise
        # A Service an earlier thrifty created with a ClusterIP: the address cannot change, so it
        # keeps it (deleting the Service lets the next pass create it headless).
        spec = {k: v for k, v in manifest["spec"].items() if k != "clusterIP"}
        return _json(send({**manifest, "spec": spec}))

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Deletes a Deployment (a pool the ModelService no longer uses); gone already is fine."""
        try:
            call_api(self.apps.delete_namespaced_deployment, name, namespace)
        except NotFound:
            return

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                call_api(
                    self.apps.read_namespaced_deployment, name, namespace, _preload_content=False
                )
            )
        except NotFound:
            return None

    # --- thrifty resources -----------------------------------------------------------------
    def list_gpu_pools(self) -> list[dict[str, Any]]:
        found = call_api(self.custom.list_cluster_custom_object, GROUP, VERSION, "gpupools")
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def get_model_service(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = call_api(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "modelservices",
            name,
        )
        return found

    def model_service_exists(self, namespace: str, name: str, uid: str) -> bool:
        """Whether the ModelService with this uid exists now and is not being deleted (asked of
        the API server, not a cache: a watch event can be older than a delete that returned)."""
        try:
            found = self.get_model_service(namespace, name)
        except NotFound:
            return False
        meta = found.get("metadata") or {}
        return meta.get("uid") == uid and not meta.get("deletionTimestamp")

    def list_model_services(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            found = call_api(
                self.custom.list_cluster_custom_object, GROUP, VERSION, "modelservices"
            )
        else:
            found = call_api(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "modelservices",
            )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def patch_status(
        self,
        plural: str,
        name: str,
        status: Mapping[str, Any],
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch ``.status``; with ``resource_version``, only if nobody wrote since."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        if namespace is None:
            result = call_api(
                self.custom.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                plural,
                name,
                body,
                _content_type=MERGE,
            )
        else:
            result = call_api(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
                _content_type=MERGE,
            )
        out: dict[str, Any] = result
        return out

    # --- the cluster -----------------------------------------------------------------------
    def nodes(self) -> list[placement.NodeInfo]:
        found = _json(call_api(self.core.list_node, _preload_content=False))
        return [node_info(item) for item in found.get("items", [])]

    def active_pods(self) -> list[dict[str, Any]]:
        """Pods that hold or wait for resources (not Succeeded or Failed), in every namespace."""
        found = _json(
            call_api(
                self.core.list_pod_for_all_namespaces,
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
                _preload_content=False,
            )
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    # --- Events ----------------------------------------------------------------------------
    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``involved`` (a full object: apiVersion, kind, metadata).

        The same Event again (same object, type, reason and message) raises the existing one's
        `count` and `lastTimestamp`, as client-go's correlator does, instead of a new object per
        occurrence; a new one is created when the old one expired (the API server's event TTL)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).isoformat()
        key = (namespace, str(meta.get("uid") or meta["name"]), type_, reason, message[:1024])
        with self.posted_lock:
            seen = self.posted.get(key)
        if seen is not None:
            name, count = seen
            patch = {"count": count + 1, "lastTimestamp": now}
            try:
                call_api(
                    self.core.patch_namespaced_event,
                    name,
                    namespace,
                    patch,
                    _preload_content=False,
                )
                self._remember(key, name, count + 1)
                return
            except NotFound:
                pass  # expired: post it anew
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created = _json(
            call_api(self.core.create_namespaced_event, namespace, body, _preload_content=False)
        )
        self._remember(key, str(created["metadata"]["name"]), 1)

    def _remember(self, key: EventKey, name: str, count: int) -> None:
        with self.posted_lock:
            self.posted[key] = (name, count)
            self.posted.move_to_end(key)
            while len(self.posted) > EVENTS_REMEMBERED:
                self.posted.popitem(last=False)


def _quantity(value: Any) -> int:
    """GPU counts are whole numbers; anything else (absent, malformed) counts as none."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def node_ready(node: Mapping[str, Any]) -> bool:
    """The node's Ready condition is True (False and Unknown are not)."""
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_info(node: Mapping[str, Any]) -> placement.NodeInfo:
    meta, spec, status = node.get("metadata", {}), node.get("spec", {}), node.get("status", {})
    ready = node_ready(node)
    return placement.NodeInfo(
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        allocatable_gpus=_quantity((status.get("allocatable") or {}).get(GPU_RESOURCE)),
        schedulable=ready and not spec.get("unschedulable", False),
        reclaiming=placement.reclaiming(t.get("key", "") for t in spec.get("taints") or []),
    )


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds: its containers' sum, or its largest init container if that is more."""
    spec = pod.get("spec", {})

    def gpus(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        return _quantity(limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE)))

    running = sum(gpus(c) for c in spec.get("containers", []))
    init = max((gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(running, init)


def pod_info(pod: Mapping[str, Any]) -> placement.PodInfo:
    meta = pod.get("metadata", {})
    return placement.PodInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        node_name=(pod.get("spec") or {}).get("nodeName"),
        gpus=pod_gpus(pod),
        labels=dict(meta.get("labels") or {}),
    )


def waiting_reasons(pod: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reason, message) of each waiting container: how a missing Secret shows."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    found = []
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting:
            found.append((waiting.get("reason", ""), waiting.get("message", "")))
    return found
