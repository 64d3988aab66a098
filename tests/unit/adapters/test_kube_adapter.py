"""The Kubernetes adapter's translation of Node and Pod objects into placement's value types."""

from __future__ import annotations

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
