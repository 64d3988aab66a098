"""What the gateway serves: model names to ModelServices, ModelServices to ready endpoints.

Fed by two watches (see `kube`): ModelServices give the names clients use (`spec.servedModelName`,
else the ModelService's name), and the EndpointSlices of thrifty's Services give each ModelService's
endpoints. The EndpointSlice controller copies a Service's labels onto its slices, so a slice
carries `thrifty.dev/model-service` like the Service the operator rendered. Only endpoints whose
`conditions.ready` is not false count: a pod that is starting, failing its readiness probe or
terminating (its preStop sleep, its drain) gets no new request. Nor does one whose `nodeName` is a
node that is gone or not Ready (a third watch, of Nodes): the control plane keeps such an endpoint
ready until the pod is garbage-collected or evicted (measured: over 70 s after a node was deleted;
a node whose kubelet reports NotReady leaves its pods Ready), and a request sent there hangs.

Pure: objects in (as the API server's JSON), routes out, no I/O, so it is tested without a cluster.
An `Endpoint` keeps its identity across slice updates, so its in-flight count survives them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MODEL_SERVICE_LABEL = "thrifty.dev/model-service"
"""On thrifty's Services and so on their EndpointSlices (the operator's `placement` label)."""
ENDPOINT_PORT_NAME = "http"
"""The engine port's name in the Service the operator renders."""

ServiceKey = tuple[str, str]
"""(namespace, ModelService name)."""


@dataclass(eq=False)
class Endpoint:
    """One ready engine address. Compared by identity: two objects are two engines."""

    key: ServiceKey
    url: str
    pod: str
    in_flight: int = 0
    peak_in_flight: int = 0
    served: int = 0

    def begin(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def end(self) -> None:
        self.in_flight -= 1


@dataclass(frozen=True)
class SliceAddress:
    url: str
    pod: str
    node: str | None = None


def node_ready(node: Mapping[str, Any]) -> bool:
    """The Node's Ready condition is True (False and Unknown are not)."""
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def served_model_name(model_service: Mapping[str, Any]) -> str:
    """The name clients put in `model`: as the operator renders `--served-model-name`."""
    spec = model_service.get("spec") or {}
    name = spec.get("servedModelName") or (model_service.get("metadata") or {}).get("name")
    return str(name or "")


def reference_price(model_service: Mapping[str, Any]) -> tuple[float, float] | None:
    """`spec.costTarget.referenceDollarsPerMillionTokens` as (input, output) USD per million."""
    spec = model_service.get("spec") or {}
    price = (spec.get("costTarget") or {}).get("referenceDollarsPerMillionTokens") or {}
    try:
        return float(price["input"]), float(price["output"])
    except (KeyError, TypeError, ValueError):
        return None


def service_key(obj: Mapping[str, Any], label: str | None = None) -> ServiceKey | None:
    """The ModelService an object belongs to: its own name, or the value of `label`."""
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    name = metadata.get("name") if label is None else (metadata.get("labels") or {}).get(label)
    return (namespace, str(name)) if name else None


def ready_addresses(
    endpoint_slice: Mapping[str, Any], address_map: Callable[[str], str | None] = lambda a: a
) -> list[SliceAddress]:
    """The ready endpoints of one EndpointSlice, as URLs of its `http` port. `address_map` turns
    an address into the one to connect to (None: skip it); see thrifty_runtime.podnet."""
    ports = endpoint_slice.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == ENDPOINT_PORT_NAME), None)
    if port is None and ports:
        port = ports[0].get("port")
    if port is None:
        return []
    family = endpoint_slice.get("addressType", "IPv4")
    addresses: list[SliceAddress] = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False:  # absent means ready (the API's documented default)
            continue
        pod = str((endpoint.get("targetRef") or {}).get("name") or "")
        node = endpoint.get("nodeName")
        for listed in (endpoint.get("addresses") or [])[:1]:  # one address per endpoint
            address = address_map(str(listed))
            if address is None:
                continue
            host = f"[{address}]" if family == "IPv6" else address
            addresses.append(SliceAddress(f"http://{host}:{port}", pod, node))
    return addresses


@dataclass
class Catalog:
    """The routing table. `on_change(key)` is called after a ModelService's endpoints or its
    existence changed (the gateway releases held requests from it)."""

    on_change: Callable[[ServiceKey], None] = field(default=lambda _: None)
    address_map: Callable[[str], str | None] = field(default=lambda address: address)
    _served: dict[ServiceKey, str] = field(default_factory=dict)
    _reference: dict[ServiceKey, tuple[float, float]] = field(default_factory=dict)
    _models: dict[str, ServiceKey] = field(default_factory=dict)
    _slices: dict[tuple[str, str], tuple[ServiceKey, list[SliceAddress]]] = field(
        default_factory=dict
    )
    _endpoints: dict[ServiceKey, list[Endpoint]] = field(default_factory=dict)
    _nodes: dict[str, bool] | None = None
    """Node name -> Ready, once Nodes are watched; None: not watched, no endpoint is dropped."""

    # -- reads ---------------------------------------------------------------------------------

    def resolve(self, model: str) -> ServiceKey | None:
        return self._models.get(model)

    def endpoints(self, key: ServiceKey) -> list[Endpoint]:
        return self._endpoints.get(key, [])

    def reference_price(self, key: ServiceKey) -> tuple[float, float] | None:
        return self._reference.get(key)

    def models(self) -> list[tuple[str, ServiceKey]]:
        return sorted(self._models.items())

    def services(self) -> list[ServiceKey]:
        return sorted(self._served)

    # -- ModelServices -------------------------------------------------------------------------

    def replace_model_services(
        self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None
    ) -> None:
        """A full listing (after a relist) of `namespace` (None: all): ModelServices of that
        scope absent from it are gone."""
        before = set(self._served)
        self._served = {
            key: name
            for key, name in self._served.items()
            if namespace is not None and key[0] != namespace
        }
        for obj in objects:
            key = service_key(obj)
            if key is not None:
                self._served[key] = served_model_name(obj)
                self._set_reference(key, obj)
        self._reference = {k: v for k, v in self._reference.items() if k in self._served}
        self._rebuild_models()
        for key in before | set(self._served):
            self.on_change(key)

    def put_model_service(self, obj: Mapping[str, Any]) -> None:
        key = service_key(obj)
        if key is None:
            return
        self._served[key] = served_model_name(obj)
        self._set_reference(key, obj)
        self._rebuild_models()
        self.on_change(key)

    def delete_model_service(self, obj: Mapping[str, Any]) -> None:
        key = service_key(obj)
        if key is None or self._served.pop(key, None) is None:
            return
        self._reference.pop(key, None)
        self._rebuild_models()
        self.on_change(key)

    def _set_reference(self, key: ServiceKey, obj: Mapping[str, Any]) -> None:
        price = reference_price(obj)
        if price is None:
            self._reference.pop(key, None)
        else:
            self._reference[key] = price

    def _rebuild_models(self) -> None:
        # Two ModelServices serving one name: the first by namespace and name wins, so every
        # gateway replica picks the same one.
        models: dict[str, ServiceKey] = {}
        for key in sorted(self._served):
            models.setdefault(self._served[key], key)
        self._models = models

    # -- EndpointSlices ------------------------------------------------------------------------

    def replace_slices(
        self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None
    ) -> None:
        """A full listing of `namespace`'s slices (None: all namespaces)."""
        touched = {key for key, _ in self._slices.values()}
        self._slices = {
            slice_id: entry
            for slice_id, entry in self._slices.items()
            if namespace is not None and slice_id[0] != namespace
        }
        for obj in objects:
            entry = self._slice_entry(obj)
            if entry is not None:
                self._slices[entry[0]] = entry[1]
                touched.add(entry[1][0])
        for key in touched:
            self._rebuild_endpoints(key)

    def put_slice(self, obj: Mapping[str, Any]) -> None:
        entry = self._slice_entry(obj)
        if entry is None:
            return
        previous = self._slices.get(entry[0])
        self._slices[entry[0]] = entry[1]
        if previous is not None and previous[0] != entry[1][0]:
            self._rebuild_endpoints(previous[0])
        self._rebuild_endpoints(entry[1][0])

    def delete_slice(self, obj: Mapping[str, Any]) -> None:
        slice_id = service_key(obj)
        if slice_id is None:
            return
        previous = self._slices.pop(slice_id, None)
        if previous is not None:
            self._rebuild_endpoints(previous[0])

    def _slice_entry(
        self, obj: Mapping[str, Any]
    ) -> tuple[tuple[str, str], tuple[ServiceKey, list[SliceAddress]]] | None:
        slice_id = service_key(obj)
        key = service_key(obj, MODEL_SERVICE_LABEL)
        if slice_id is None or key is None:
            return None
        return slice_id, (key, ready_addresses(obj, self.address_map))

    # -- Nodes -------------------------------------------------------------------------------

    def replace_nodes(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self._nodes = {
            str((obj.get("metadata") or {}).get("name")): node_ready(obj) for obj in objects
        }
        self._rebuild_all()

    def put_node(self, obj: Mapping[str, Any]) -> None:
        name, ready = str((obj.get("metadata") or {}).get("name")), node_ready(obj)
        nodes = self._nodes if self._nodes is not None else {}
        changed = nodes.get(name) != ready
        nodes[name] = ready
        self._nodes = nodes
        if changed:
            self._rebuild_all()

    def delete_node(self, obj: Mapping[str, Any]) -> None:
        if self._nodes is not None:
            self._nodes.pop(str((obj.get("metadata") or {}).get("name")), None)
            self._rebuild_all()

    def _on_lost_node(self, address: SliceAddress) -> bool:
        return (
            self._nodes is not None
            and address.node is not None
            and not self._nodes.get(address.node, False)
        )

    def _rebuild_all(self) -> None:
        for key in sorted({owner for owner, _ in self._slices.values()} | set(self._endpoints)):
            self._rebuild_endpoints(key)

    def _rebuild_endpoints(self, key: ServiceKey) -> None:
        existing = {e.url: e for e in self._endpoints.get(key, [])}
        addresses: dict[str, SliceAddress] = {}
        for owner, slice_addresses in self._slices.values():
            if owner == key:
                for address in slice_addresses:
                    if not self._on_lost_node(address):
                        addresses.setdefault(address.url, address)
        endpoints = [
            existing.get(url) or Endpoint(key, url, address.pod)
            for url, address in sorted(addresses.items())
        ]
        if endpoints:
            self._endpoints[key] = endpoints
        else:
            self._endpoints.pop(key, None)
        self.on_change(key)
