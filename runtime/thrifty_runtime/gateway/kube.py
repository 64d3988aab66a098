"""The gateway's watches: ModelServices, the EndpointSlices of thrifty's Services, and Nodes.

Each runs in a thread (the Kubernetes client's watch blocks): list, hand the full listing to the
event loop, watch from the listing's resourceVersion, hand over each event; relist when the watch
expires (410 Gone) and back off when the API server is away, never letting the thread die. The
catalog is only touched on the event loop (`call_soon_threadsafe`), so it needs no lock.
EndpointSlices are selected by the `thrifty.dev/model-service` label, API-key Secrets by
`thrifty.dev/tenant`: the API server sends only thrifty's own. Nodes (cluster-wide, read only) say
which endpoints sit on a node that is gone or not Ready (see catalog). A Secret's key is hashed the
moment it arrives (see tenants) and is never logged: warnings name the watch, not objects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from thrifty_runtime.gateway.catalog import MODEL_SERVICE_LABEL, Catalog
from thrifty_runtime.gateway.tenants import TENANT_LABEL, Tenants

log = logging.getLogger("thrifty_runtime.gateway.kube")

GROUP = "thrifty.dev"
VERSION = "v1alpha1"
PLURAL = "modelservices"
WATCH_TIMEOUT_SECONDS = 300
BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class _Source:
    what: str
    list_call: Callable[..., Any]
    kwargs: dict[str, Any]
    replace: Callable[[list[dict[str, Any]]], None]
    put: Callable[[dict[str, Any]], None]
    delete: Callable[[dict[str, Any]], None]


class Watches:
    """Keeps `catalog` in step with the API server; `on_synced` once both listings are in."""

    def __init__(
        self,
        api_client: Any,
        catalog: Catalog,
        loop: asyncio.AbstractEventLoop,
        *,
        namespaces: Sequence[str] = (),
        tenants: Tenants | None = None,
        key_namespace: str | None = None,
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        """`namespaces`: watch these (two watches each); empty: the whole cluster. With
        `key_namespace`, a third watch reads the API-key Secrets there into `tenants`."""
        from kubernetes import client

        self._api_client = api_client
        self._loop = loop
        self._stop = threading.Event()
        self._synced: set[str] = set()
        self._on_synced = on_synced
        custom = client.CustomObjectsApi(api_client)
        discovery = client.DiscoveryV1Api(api_client)
        self._sources: list[_Source] = []
        scopes: list[str | None] = [*namespaces] if namespaces else [None]
        for namespace in scopes:
            scope: dict[str, Any] = {"namespace": namespace} if namespace else {}
            if namespace:
                ms_call: Callable[..., Any] = custom.list_namespaced_custom_object
                slice_call: Callable[..., Any] = discovery.list_namespaced_endpoint_slice
            else:
                ms_call = custom.list_cluster_custom_object
                slice_call = discovery.list_endpoint_slice_for_all_namespaces
            self._sources += [
                _Source(
                    f"modelservices in {namespace or 'all namespaces'}",
                    ms_call,
                    {"group": GROUP, "version": VERSION, "plural": PLURAL, **scope},
                    functools.partial(catalog.replace_model_services, namespace=namespace),
                    catalog.put_model_service,
                    catalog.delete_model_service,
                ),
                _Source(
                    f"endpointslices in {namespace or 'all namespaces'}",
                    slice_call,
                    {"label_selector": MODEL_SERVICE_LABEL, **scope},
                    functools.partial(catalog.replace_slices, namespace=namespace),
                    catalog.put_slice,
                    catalog.delete_slice,
                ),
            ]
        core = client.CoreV1Api(api_client)
        self._sources.append(
            _Source(
                "nodes",
                core.list_node,
                {},
                catalog.replace_nodes,
                catalog.put_node,
                catalog.delete_node,
            )
        )
        if tenants is not None and key_namespace:
            self._sources.append(
                _Source(
                    f"api-key secrets in {key_namespace}",
                    core.list_namespaced_secret,
                    {"namespace": key_namespace, "label_selector": TENANT_LABEL},
                    tenants.replace_secrets,
                    tenants.put_secret,
                    tenants.delete_secret,
                )
            )
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for source in self._sources:
            thread = threading.Thread(
                target=self._run, args=(source,), name=f"watch {source.what}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _run(self, source: _Source) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                listing = self._plain(source.list_call(**source.kwargs))
                items = listing.get("items") or []
                version = (listing.get("metadata") or {}).get("resourceVersion")
                self._loop.call_soon_threadsafe(self._apply_listing, source, items)
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    source.list_call,
                    resource_version=version,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    **source.kwargs,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    kind = str(event["type"])
                    obj = self._plain(event["object"])
                    if kind == "DELETED":
                        self._loop.call_soon_threadsafe(source.delete, obj)
                    elif kind in {"ADDED", "MODIFIED"}:
                        self._loop.call_soon_threadsafe(source.put, obj)
            except ApiException as error:
                if error.status != 410:  # 410: our resourceVersion expired; relist at once
                    log.warning("%s watch failed (%s); retrying", source.what, error.status)
                    time.sleep(BACKOFF_SECONDS)
            except Exception as error:  # the API server may restart: never let the thread die
                log.warning("%s watch failed (%s); retrying", source.what, error)
                time.sleep(BACKOFF_SECONDS)

    def _plain(self, obj: Any) -> dict[str, Any]:
        """Typed client objects to the API's JSON (camelCase); custom objects already are."""
        if isinstance(obj, dict):
            return obj
        plain: dict[str, Any] = self._api_client.sanitize_for_serialization(obj)
        return plain

    def _apply_listing(self, source: _Source, items: list[dict[str, Any]]) -> None:
        source.replace([self._plain(item) for item in items])
        if source.what not in self._synced:
            self._synced.add(source.what)
            log.info("%s: %d listed", source.what, len(items))
            if len(self._synced) == len(self._sources):
                self._on_synced()
