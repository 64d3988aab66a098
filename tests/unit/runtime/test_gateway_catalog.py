"""The gateway's routing table from ModelServices and EndpointSlices, and its balancer (pure)."""

from __future__ import annotations

import random
from typing import Any

from thrifty_runtime import podnet
from thrifty_runtime.gateway import balancer
from thrifty_runtime.gateway.catalog import Catalog, Endpoint, ready_addresses


def model_service(name: str, namespace: str = "team", served: str | None = None) -> dict[str, Any]:
    spec = {"servedModelName": served} if served else {}
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def endpoint_slice(
    name: str,
    model_service: str,
    endpoints: list[tuple[str, bool | None]],
    *,
    namespace: str = "team",
    port: int = 8000,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"thrifty.dev/model-service": model_service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {} if ready is None else {"ready": ready},
                "targetRef": {"kind": "Pod", "name": f"pod-{ip}"},
            }
            for ip, ready in endpoints
        ],
    }


def test_only_ready_endpoints_route_and_a_missing_condition_means_ready() -> None:
    addresses = ready_addresses(
        endpoint_slice(
            "s", "chat", [("127.0.1.1", True), ("127.0.1.2", False), ("127.0.1.3", None)]
        )
    )
    assert [a.url for a in addresses] == ["http://127.0.1.1:8000", "http://127.0.1.3:8000"]
    assert addresses[0].pod == "pod-127.0.1.1"


def test_reference_prices_come_from_the_cost_target() -> None:
    priced = model_service("chat")
    priced["spec"]["costTarget"] = {"referenceDollarsPerMillionTokens": {"input": 3, "output": 15}}
    catalog = Catalog()
    catalog.replace_model_services([priced, model_service("code")])
    assert catalog.reference_price(("team", "chat")) == (3.0, 15.0)
    assert catalog.reference_price(("team", "code")) is None
    catalog.delete_model_service(priced)
    assert catalog.reference_price(("team", "chat")) is None


def test_a_listing_of_one_namespace_replaces_only_that_namespace() -> None:
    catalog = Catalog()
    catalog.replace_model_services([model_service("chat", "a")], namespace="a")
    catalog.replace_model_services([model_service("code", "b")], namespace="b")
    catalog.replace_slices([endpoint_slice("s", "chat", [("127.0.1.1", True)], namespace="a")], "a")
    catalog.replace_slices([endpoint_slice("s", "code", [("127.0.1.2", True)], namespace="b")], "b")
    assert [m for m, _ in catalog.models()] == ["chat", "code"]
    catalog.replace_model_services([], namespace="a")
    catalog.replace_slices([], namespace="a")
    assert [m for m, _ in catalog.models()] == ["code"]
    assert catalog.endpoints(("a", "chat")) == [] and len(catalog.endpoints(("b", "code"))) == 1
    catalog.replace_model_services([])
    assert catalog.models() == []


def test_a_loopback_pod_network_maps_slice_addresses_to_their_twins_and_drops_the_rest() -> None:
    network = podnet.parse_network("10.0.0.0/8")
    catalog = Catalog(address_map=lambda address: podnet.loopback_twin(address, network))
    catalog.put_slice(endpoint_slice("s", "chat", [("10.7.0.3", True), ("192.0.2.1", True)]))
    assert [e.url for e in catalog.endpoints(("team", "chat"))] == ["http://127.7.0.3:8000"]


def test_models_resolve_by_served_name_and_the_first_of_two_claims_wins() -> None:
    catalog = Catalog()
    catalog.replace_model_services(
        [
            model_service("chat", served="llama-8b"),
            model_service("code"),
            model_service("chat", namespace="other", served="llama-8b"),
        ]
    )
    assert catalog.resolve("llama-8b") == ("other", "chat")
    assert catalog.resolve("code") == ("team", "code")
    assert catalog.resolve("chat") is None
    catalog.delete_model_service(model_service("chat", namespace="other"))
    assert catalog.resolve("llama-8b") == ("team", "chat")


def test_endpoints_keep_their_identity_across_slice_updates_and_leave_with_them() -> None:
    changed: list[tuple[str, str]] = []
    catalog = Catalog(on_change=changed.append)
    catalog.put_slice(endpoint_slice("s1", "chat", [("127.0.1.1", True)]))
    first = catalog.endpoints(("team", "chat"))[0]
    first.begin()
    catalog.put_slice(endpoint_slice("s1", "chat", [("127.0.1.1", True), ("127.0.1.2", True)]))
    catalog.put_slice(endpoint_slice("s2", "chat", [("127.0.1.3", True)]))
    endpoints = catalog.endpoints(("team", "chat"))
    assert len(endpoints) == 3 and endpoints[0] is first and first.in_flight == 1
    catalog.put_slice(endpoint_slice("s1", "chat", [("127.0.1.1", False), ("127.0.1.2", True)]))
    assert [e.url for e in catalog.endpoints(("team", "chat"))] == [
        "http://127.0.1.2:8000",
        "http://127.0.1.3:8000",
    ]
    catalog.delete_slice(endpoint_slice("s1", "chat", []))
    catalog.replace_slices([])
    assert catalog.endpoints(("team", "chat")) == []
    assert changed and set(changed) == {("team", "chat")}


def test_power_of_two_choices_prefers_the_less_loaded_and_skips_those_tried() -> None:
    rng = random.Random(7)
    busy = Endpoint(("team", "chat"), "http://127.0.1.1:8000", "a", in_flight=5)
    idle = Endpoint(("team", "chat"), "http://127.0.1.2:8000", "b")
    assert all(balancer.pick([busy, idle], set(), rng) is idle for _ in range(50))
    assert balancer.pick([busy, idle], {idle}, rng) is busy
    assert balancer.pick([busy, idle], {idle, busy}, rng) is None
    # With many endpoints, the loaded ones are picked rarely (only when drawn together).
    many = [Endpoint(("team", "chat"), f"http://127.0.1.{i}:8000", str(i)) for i in range(10)]
    for e in many[:5]:
        e.in_flight = 3
    picks = [balancer.pick(many, set(), rng) for _ in range(1000)]
    loaded = sum(1 for p in picks if p is not None and p.in_flight)
    assert loaded < 300  # both drawn from the loaded half: ~22 % of draws


def node(name: str, ready: str = "True") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def test_endpoints_on_a_deleted_or_not_ready_node_get_no_request_until_it_is_back() -> None:
    """The EndpointSlice still says ready (the control plane keeps it until the pod is evicted
    or collected): the node's own state decides."""
    changed: list[tuple[str, str]] = []
    catalog = Catalog(on_change=changed.append)
    catalog.put_model_service(model_service("chat"))
    on_nodes = endpoint_slice("s", "chat", [("127.0.1.1", True), ("127.0.2.1", True)])
    for endpoint, host in zip(on_nodes["endpoints"], ("a", "b"), strict=True):
        endpoint["nodeName"] = host
    catalog.put_slice(on_nodes)
    assert len(catalog.endpoints(("team", "chat"))) == 2, "Nodes not watched: none dropped"
    catalog.replace_nodes([node("a"), node("b")])
    kept = catalog.endpoints(("team", "chat"))
    assert [e.url for e in kept] == ["http://127.0.1.1:8000", "http://127.0.2.1:8000"]
    catalog.put_node(node("b", "Unknown"))
    assert [e.pod for e in catalog.endpoints(("team", "chat"))] == ["pod-127.0.1.1"]
    catalog.put_node(node("b"))
    back = catalog.endpoints(("team", "chat"))
    assert len(back) == 2 and back[0] is kept[0], "the other engine keeps its identity"
    catalog.delete_node(node("a"))
    assert [e.pod for e in catalog.endpoints(("team", "chat"))] == ["pod-127.0.2.1"]
    assert changed.count(("team", "chat")) >= 4
