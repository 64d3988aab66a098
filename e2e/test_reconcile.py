"""The reconciler against a real control plane: examples in, vLLM workloads on the H100 nodes out.

The operator runs as its own process (``operator_process``) limited to the test's namespace; the
fake GPU nodes come from the cluster fixture. Every wait polls with a timeout and names what it
waited for; on failure the operator's log and ``kubectl get all,events`` are in the report.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Cluster
from harness.cluster import wait_until
from operator_process import StartOperator, operator_process
from thrifty.reconciler import render

__all__ = ["operator_process"]  # the fixture, re-exported for pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
H100_ON_DEMAND_NODES = {"kwok-h100-od-0", "kwok-h100-od-1"}
WAIT_SECONDS = 120.0


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def apply(cluster: Cluster, namespace: str | None, *bodies: dict[str, Any]) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    cluster.kubectl(*args, input="\n---\n".join(json.dumps(b) for b in bodies))


@pytest.fixture(scope="module", autouse=True)
def crds_and_pools(cluster: Cluster) -> Iterator[None]:
    """The CRDs (as generated) and the example pools, established before any test."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    for crd in ("modelservices", "gpupools", "costbudgets"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.thrifty.dev", "--timeout=60s"
        )
    for pool in ("gpupool-h100-on-demand.yaml", "gpupool-h100-spot.yaml", "gpupool-l4.yaml"):
        apply(cluster, None, example(pool))
    yield


def free_gpus(cluster: Cluster, nodes: set[str]) -> int:
    """GPUs on ``nodes`` not requested by any pod that is still there (terminating ones count)."""
    pods = cluster.kubectl_json("get", "pods", "-A")["items"]
    used = 0
    for pod in pods:
        if pod["spec"].get("nodeName") not in nodes:
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"]["containers"]:
            limits = (container.get("resources") or {}).get("limits") or {}
            used += int(limits.get("nvidia.com/gpu", 0))
    return 8 * len(nodes) - used


def wait_for_h100_on_demand(cluster: Cluster, gpus: int) -> None:
    """Other tests' pods may still be leaving the shared fake nodes: wait for room first."""
    wait_until(
        lambda: True if free_gpus(cluster, H100_ON_DEMAND_NODES) >= gpus else None,
        timeout_seconds=180,
        what=f"{gpus} free GPUs on the h100-on-demand nodes (other tests' pods to leave)",
        interval_seconds=2,
    )


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", kind, name, "-n", namespace)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for found in (body.get("status") or {}).get("conditions", []):
        if found["type"] == type_:
            return dict(found)
    return None


def wait_condition(
    cluster: Cluster, name: str, namespace: str, type_: str, status: str = "True"
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = get(cluster, "modelservice", name, namespace)
        found = condition(body, type_)
        return body if found is not None and found["status"] == status else None

    return wait_until(
        probe, timeout_seconds=WAIT_SECONDS, what=f"ModelService {name} {type_}={status}"
    )


def engine_pods(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"thrifty.dev/model-service={name}"
    )
    items: list[dict[str, Any]] = listing["items"]
    return items


def running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )
    return status.get("phase") == "Running" and ready


def _running_pods(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]] | None:
    return [p for p in engine_pods(cluster, name, namespace) if running(p)] or None


def test_examples_become_ready_vllm_workloads_on_h100_nodes(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 5)
    operator_process(namespaces=[namespace])
    apply(
        cluster,
        namespace,
        example("costbudget-team-a.yaml"),
        example("modelservice-llama-8b.yaml"),
        example("modelservice-llama-70b.yaml"),
    )
    expected = {"llama-8b": (1, 2.49), "llama-70b": (4, 9.96)}
    for name, (gpus, dollars_per_hour) in expected.items():
        deployment = wait_until(
            functools.partial(
                _deployment_or_none,
                cluster,
                render.deployment_name(name, "h100-on-demand"),
                namespace,
            ),
            timeout_seconds=WAIT_SECONDS,
            what=f"the h100-on-demand Deployment of {name}",
        )
        engine = deployment["spec"]["template"]["spec"]["containers"][0]
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
        args = engine["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == str(gpus)
        pods = wait_until(
            functools.partial(_running_pods, cluster, name, namespace),
            timeout_seconds=WAIT_SECONDS,
            what=f"a running pod of {name}",
        )
        assert {p["spec"]["nodeName"] for p in pods} <= H100_ON_DEMAND_NODES
        ready = wait_condition(cluster, name, namespace, "Ready")
        status = ready["status"]
        assert status["pool"] == "h100-on-demand"
        assert status["gpusPerReplica"] == gpus
        assert status["readyReplicas"] == 1
        assert status["dollarsPerHour"] == pytest.approx(dollars_per_hour)
        assert status["selector"] == f"thrifty.dev/model-service={name}"
        assert status["observedGeneration"] == ready["metadata"]["generation"]
        assert (
            get(cluster, "service", f"{name}-engine", namespace)["spec"]["ports"][0]["port"] == 8000
        )
        assert get(cluster, "pdb", f"{name}-engine", namespace)["spec"]["maxUnavailable"] == 1

    budget = wait_until(
        lambda: _budget_spending(cluster, namespace, 12.45),
        timeout_seconds=WAIT_SECONDS,
        what="CostBudget team-a to sum its members' spend",
    )
    assert sorted(m["name"] for m in budget["status"]["members"]) == ["llama-70b", "llama-8b"]
    listed = cluster.kubectl("get", "costbudget", "team-a", "-n", namespace, "--no-headers").stdout
    assert listed.split()[-2] == "WithinBudget", f"the Status column is set: {listed}"
    reasons = _event_reasons(cluster, namespace, "llama-8b")
    assert "Placed" in reasons


def _deployments(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Deployments of ModelService ``name``, found by label as the operator finds them."""
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "deployments", "-n", namespace, "-l", f"thrifty.dev/model-service={name}"
    )["items"]
    return items


def _deployment_or_none(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def _budget_spending(cluster: Cluster, namespace: str, dollars: float) -> dict[str, Any] | None:
    budget = get(cluster, "costbudget", "team-a", namespace)
    spent = (budget.get("status") or {}).get("dollarsPerHour")
    return budget if spent is not None and abs(spent - dollars) < 1e-6 else None


def _event_reasons(cluster: Cluster, namespace: str, name: str) -> set[str]:
    events = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return {str(e.get("reason")) for e in events}


def small_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "hf://Qwen/Qwen3-0.6B"}, "pools": ["h100-spot"], **spec},
    }


def test_more_gpus_than_the_pool_has_is_capacity_limited_with_a_clear_message(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    operator_process(namespaces=[namespace])
    # The spot pool is one 8-GPU node with a quota of 8: two TP-8 replicas can never fit.
    apply(
        cluster,
        namespace,
        small_model(
            "big",
            engine={"tensorParallelSize": 8},
            scaling={"minReplicas": 2, "maxReplicas": 2},
        ),
    )
    body = wait_condition(cluster, "big", namespace, "CapacityLimited")
    message = condition(body, "CapacityLimited")["message"]  # type: ignore[index]
    assert "wants 2 replicas x 8 GPUs = 16 nvidia.com/gpu" in message
    assert "h100-spot: room for" in message
    assert condition(body, "Degraded")["status"] == "False"  # type: ignore[index]
    # The Event is posted right after the status write that the wait above saw: wait for it too.
    wait_until(
        lambda: True if "InsufficientGPUs" in _event_reasons(cluster, namespace, "big") else None,
        timeout_seconds=30,
        what="the InsufficientGPUs Event",
    )
    # Only the replica that got its GPUs is charged: 1 x 8 x $2.10, not the pending one.
    wait_until(
        lambda: (
            True
            if get(cluster, "modelservice", "big", namespace)["status"].get("dollarsPerHour")
            == pytest.approx(16.8)
            else None
        ),
        timeout_seconds=WAIT_SECONDS,
        what="$/hour of the one scheduled replica",
    )
    # Only what the pools hold is ordered: no pod waits Pending for GPUs that are not there.
    status = get(cluster, "modelservice", "big", namespace)["status"]
    assert (status["replicas"], status["desiredReplicas"]) == (1, 2)


def test_user_mistakes_the_schema_cannot_see_become_degraded_without_stopping_others(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 1)
    operator_process(namespaces=[namespace])
    apply(
        cluster,
        namespace,
        small_model("no-pool", pools=["does-not-exist"]),
        small_model("too-wide", engine={"tensorParallelSize": 16}, pools=["l4-on-demand"]),
        small_model("fine", pools=["h100-on-demand"]),
    )
    no_pool = condition(wait_condition(cluster, "no-pool", namespace, "Degraded"), "Degraded")
    assert no_pool is not None and no_pool["reason"] == "UnknownPool"
    assert "does-not-exist" in no_pool["message"]
    too_wide = condition(wait_condition(cluster, "too-wide", namespace, "Degraded"), "Degraded")
    assert too_wide is not None and too_wide["reason"] == "GPUsPerReplicaTooLarge"
    assert "16 GPUs on one node" in too_wide["message"]
    wait_condition(cluster, "fine", namespace, "Ready")
    assert "UnknownPool" in _event_reasons(cluster, namespace, "no-pool")
    assert _deployments(cluster, namespace, "no-pool") == []


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas must be less than"),
        ({"engine": {"tensorParallelSize": 3}}, "tensorParallelSize must be a power of two"),
        ({"engine": {"image": "vllm/vllm-openai:latest"}}, "image must pin a version"),
        ({"model": {"uri": "http://x/y"}}, "spec.model.uri"),
        ({"costTarget": {"maxDollarsPerHour": -1}}, "spec.costTarget.maxDollarsPerHour"),
        (
            {"scaling": {"minReplicas": 1, "scaleToZeroIdleSeconds": 60}},
            "scaleToZeroIdleSeconds requires minReplicas: 0",
        ),
        ({"engine": {"extraArgs": ["--port=9000"]}}, "would set a flag the operator manages"),
    ],
)
def test_invalid_objects_are_refused_by_kubectl_naming_the_field(
    cluster: Cluster, namespace: str, spec: dict[str, Any], words: str
) -> None:
    body = small_model("bad", **spec)
    if "model" in spec:
        body["spec"]["model"] = spec["model"]
    refused = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )
    assert refused.returncode != 0
    assert words in refused.stderr
    assert "spec" in refused.stderr


def test_scale_subresource_refuses_replicas_outside_the_bounds(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, small_model("scaled", scaling={"minReplicas": 1, "maxReplicas": 2}))
    cluster.kubectl("scale", "-n", namespace, "modelservice/scaled", "--replicas=2")
    assert get(cluster, "modelservice", "scaled", namespace)["spec"]["replicas"] == 2
    refused = cluster.kubectl(
        "scale", "-n", namespace, "modelservice/scaled", "--replicas=5", check=False
    )
    assert refused.returncode != 0 and "replicas must be within" in refused.stderr


def test_kubectl_explains_the_api_and_shows_the_columns(cluster: Cluster, namespace: str) -> None:
    explained = cluster.kubectl("explain", "modelservice.spec.scaling.scaleToZeroIdleSeconds")
    assert "needs minReplicas 0" in explained.stdout
    apply(cluster, namespace, small_model("shown"))
    table = cluster.kubectl("get", "ms", "-n", namespace).stdout.splitlines()[0].split()
    for column in ("POOLS", "READY", "DESIRED", "QUEUE", "$/HOUR", "$/1M", "AGE"):
        assert column in table
    listed = cluster.kubectl("get", "thrifty", "-n", namespace, "-o", "name").stdout
    assert "modelservice.thrifty.dev/shown" in listed


def test_pool_price_must_not_be_negative(cluster: Cluster) -> None:
    pool = example("gpupool-l4.yaml")
    pool["metadata"]["name"] = "negative-price"
    pool["spec"]["pricePerGpuHour"] = -1
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(pool), check=False)
    assert refused.returncode != 0 and "spec.pricePerGpuHour" in refused.stderr


def test_gpu_pool_status_counts_nodes_and_usage(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    operator_process(namespaces=[namespace])
    apply(cluster, namespace, small_model("user", pools=["l4-on-demand"]))
    wait_condition(cluster, "user", namespace, "Ready")

    def usage() -> dict[str, Any] | None:
        pool = cluster.kubectl_json("get", "gpupool", "l4-on-demand")
        status = pool.get("status") or {}
        mine = [u for u in status.get("usage", []) if u["namespace"] == namespace]
        return status if mine and mine[0]["gpus"] == 1 else None

    status = wait_until(usage, timeout_seconds=WAIT_SECONDS, what="l4 pool usage by the model")
    assert status["nodes"] == 1 and status["gpusAllocatable"] == 4
    assert (
        status["gpusUsed"] >= 1
        and status["gpusFree"] == status["gpusAllocatable"] - status["gpusUsed"]
    )


def test_deletion_cascades(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 1)
    operator_process(namespaces=[namespace])
    apply(cluster, namespace, small_model("gone", pools=["h100-on-demand"]))
    wait_condition(cluster, "gone", namespace, "Ready")
    cluster.kubectl("delete", "-n", namespace, "modelservice/gone", "--timeout=60s")

    def all_gone() -> bool | None:
        left = cluster.kubectl(
            "get",
            "deployment,service,pdb",
            "-n",
            namespace,
            "-l",
            "thrifty.dev/model-service=gone",
            "-o",
            "name",
        ).stdout.strip()
        return True if not left else None

    wait_until(all_gone, timeout_seconds=WAIT_SECONDS, what="owned objects to be deleted")


def test_only_the_served_namespaces_are_reconciled(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    other = f"{namespace}-other"
    wait_for_h100_on_demand(cluster, 1)
    cluster.kubectl("create", "namespace", other)
    try:
        operator_process(namespaces=[namespace])
        apply(cluster, other, small_model("ignored", pools=["h100-on-demand"]))
        apply(cluster, namespace, small_model("served", pools=["h100-on-demand"]))
        wait_condition(cluster, "served", namespace, "Ready")
        # By now the operator has listed and handled every object it serves; the other is untouched.
        ignored = get(cluster, "modelservice", "ignored", other)
        assert "status" not in ignored
        assert _deployments(cluster, other, "ignored") == []
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def _applied(cluster: Cluster, namespace: str, name: str) -> dict[str, tuple[int, str]]:
    """Per owned object: its generation and when field manager thrifty last changed it.

    Not the resourceVersion: controllers write the Deployment's and the PDB's status. A no-op
    server-side apply is not persisted, so the Apply time moves only when thrifty changed something.
    """
    found = {}
    children = {
        "deployment": render.deployment_name(name, "h100-on-demand"),
        "service": f"{name}-engine",
        "pdb": f"{name}-engine",
    }
    for kind, child in children.items():
        meta = cluster.kubectl_json("get", kind, child, "-n", namespace, "--show-managed-fields")[
            "metadata"
        ]
        times = [
            m["time"]
            for m in meta["managedFields"]
            if m["manager"] == "thrifty" and m["operation"] == "Apply"
        ]
        assert len(times) == 1, meta["managedFields"]
        found[kind] = (int(meta.get("generation", 0)), times[0])
    return found


def test_an_operator_restart_duplicates_and_churns_nothing(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 2)
    first = operator_process(namespaces=[namespace])
    apply(
        cluster,
        namespace,
        small_model(
            "steady", pools=["h100-on-demand"], scaling={"maxReplicas": 3, "mode": "Manual"}
        ),
    )
    before = wait_condition(cluster, "steady", namespace, "Ready")
    applied = _applied(cluster, namespace, "steady")
    steady = render.deployment_name("steady", "h100-on-demand")
    deployment = get(cluster, "deployment", steady, namespace)
    first.stop()

    operator_process(namespaces=[namespace])
    # A change after the restart: once it shows in status, the new process has handled the
    # object (its initial pass comes first, per object, in kopf's order of events).
    cluster.kubectl("scale", "-n", namespace, "modelservice/steady", "--replicas=2")

    def desired_two() -> dict[str, Any] | None:
        body = get(cluster, "modelservice", "steady", namespace)
        return body if (body.get("status") or {}).get("desiredReplicas") == 2 else None

    after = wait_until(desired_two, timeout_seconds=WAIT_SECONDS, what="desiredReplicas 2")
    now = _applied(cluster, namespace, "steady")
    assert now["service"] == applied["service"]
    assert now["pdb"] == applied["pdb"]
    scaled = get(cluster, "deployment", steady, namespace)
    assert scaled["metadata"]["generation"] == deployment["metadata"]["generation"] + 1
    assert scaled["spec"]["template"] == deployment["spec"]["template"]
    listing = cluster.kubectl_json(
        "get", "deployments,replicasets", "-n", namespace, "-l", "thrifty.dev/model-service=steady"
    )["items"]
    assert sorted(i["kind"] for i in listing) == ["Deployment", "ReplicaSet"]
    kept = condition(after, "Degraded")
    was = condition(before, "Degraded")
    assert kept is not None and was is not None
    assert kept["lastTransitionTime"] == was["lastTransitionTime"]


def test_resyncs_of_a_settled_service_write_nothing(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 1)
    operator = operator_process(namespaces=[namespace])
    apply(cluster, namespace, small_model("quiet", pools=["h100-on-demand"]))
    wait_condition(cluster, "quiet", namespace, "Ready")

    def resyncs() -> int:
        return operator.logs().count("ModelService resync pass:")

    def after_resyncs(count: int) -> None:
        target = resyncs() + count
        wait_until(
            lambda: True if resyncs() >= target else None,
            timeout_seconds=WAIT_SECONDS,
            what=f"{count} more resync passes",
        )

    def versions() -> dict[str, str]:
        return {
            kind: get(cluster, kind, name, namespace)["metadata"]["resourceVersion"]
            for kind, name in (
                ("modelservice", "quiet"),
                ("deployment", render.deployment_name("quiet", "h100-on-demand")),
                ("service", "quiet-engine"),
                ("pdb", "quiet-engine"),
            )
        }

    # The autoscaler's first pass writes its status once (a pass every 15 s, not every resync).
    wait_until(
        lambda: (
            (get(cluster, "modelservice", "quiet", namespace).get("status") or {})
            .get("autoscaler", {})
            .get("lastDecision")
        ),
        timeout_seconds=WAIT_SECONDS,
        what="the autoscaler's first decision",
    )
    # Let the writes that follow readiness land (slow on a busy machine): quiet for 3 passes.
    settled = versions()
    for _ in range(10):
        after_resyncs(3)
        if versions() == settled:
            break
        settled = versions()
    after_resyncs(6)
    if versions() != settled:  # say who wrote, and what
        written = cluster.kubectl(
            "get", "modelservice", "quiet", "-n", namespace, "-o", "yaml", "--show-managed-fields"
        ).stdout
        raise AssertionError(f"written during resyncs: {versions()} != {settled}\n{written}")


def test_the_documented_uninstall_deletes_model_services_without_the_operator(
    cluster: Cluster, namespace: str, operator_process: StartOperator
) -> None:
    wait_for_h100_on_demand(cluster, 1)
    operator = operator_process(namespaces=[namespace])
    apply(cluster, namespace, small_model("leaving", pools=["h100-on-demand"]))
    wait_condition(cluster, "leaving", namespace, "Ready")
    assert not get(cluster, "modelservice", "leaving", namespace)["metadata"].get("finalizers")
    operator.stop()  # helm uninstall: the operator is gone, the objects stay
    deleted = cluster.kubectl(
        "delete", "modelservice", "leaving", "-n", namespace, "--timeout=60s", check=False
    )
    assert deleted.returncode == 0, f"delete hung or failed: {deleted.stderr}"
