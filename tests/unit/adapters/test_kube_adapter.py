"""The Kubernetes adapter's translation of Node and Pod objects into placement's value types."""

from __future__ import annotations

import collections
import json
import threading

from kubernetes.client.exceptions import ApiException

from thrifty.adapters import kube


def test_node_info_reads_gpus_readiness_and_cordon() -> None:
    node = {
        "metadata": {"name": "n", "labels": {"thrifty.dev/pool": "h100"}},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8", "cpu": "96"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    info = kube.node_info(node)
    assert (info.name, info.allocatable_gpus, info.schedulable) == ("n", 8, True)
    cordoned = {**node, "spec": {"unschedulable": True}}
    assert not kube.node_info(cordoned).schedulable
    not_ready = {**node, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert kube.node_info(not_ready).schedulable is False
    assert kube.node_info(not_ready).allocatable_gpus == 0


def test_pod_gpus_sum_containers_or_the_largest_init_container() -> None:
    def container(gpus: str) -> dict[str, object]:
        return {"resources": {"limits": {"nvidia.com/gpu": gpus}}}

    pod = {"spec": {"containers": [container("2"), container("2"), {}]}}
    assert kube.pod_gpus(pod) == 4
    pod["spec"]["initContainers"] = [container("8")]
    assert kube.pod_gpus(pod) == 8
    assert kube.pod_gpus({"spec": {"containers": [{"resources": {}}]}}) == 0


def test_waiting_reasons_show_a_missing_secret() -> None:
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "hf-token" not found',
                        }
                    }
                },
                {"state": {"running": {}}},
            ]
        }
    }
    assert kube.waiting_reasons(pod) == [
        ("CreateContainerConfigError", 'secret "hf-token" not found')
    ]


class FakeEventsApi:
    """CoreV1Api's two Event calls; the API server's state in a dict."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, object]] = {}

    def create_namespaced_event(
        self, namespace: str, body: dict[str, object], **_: object
    ) -> object:
        name = f"e{len(self.events)}"
        self.events[name] = {**body, "metadata": {"name": name}}
        return _Response({"metadata": {"name": name}})

    def patch_namespaced_event(
        self, name: str, namespace: str, patch: dict[str, object], **_: object
    ) -> object:
        if name not in self.events:
            raise ApiException(status=404, reason="Not Found")
        self.events[name].update(patch)
        return _Response(self.events[name])


class _Response:
    def __init__(self, body: object) -> None:
        self.data = json.dumps(body)


def test_the_same_event_again_counts_up_instead_of_adding_an_object() -> None:
    api = FakeEventsApi()
    adapter = kube.Kube.__new__(kube.Kube)
    adapter.core = api  # type: ignore[assignment]
    adapter.instance = "test"
    adapter.posted = collections.OrderedDict()
    adapter.posted_lock = threading.Lock()
    involved = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1"},
    }
    for _ in range(3):
        adapter.event(involved, "Normal", "ScaleUp", "+1 replica")
    adapter.event(involved, "Normal", "ScaleDown", "-1 replica")
    assert len(api.events) == 2
    assert api.events["e0"]["count"] == 3
    api.events.clear()  # the API server's TTL removed it: post anew
    adapter.event(involved, "Normal", "ScaleUp", "+1 replica")
    assert [e["count"] for e in api.events.values()] == [1]
