"""GitOps behaviour: a GitOps tool and the operator never fight over `replicas`, and the shipped
Argo CD health check reads the status conditions the way docs/gitops.md says.

The apply test plays the GitOps tool with kubectl's server-side apply under Argo CD's field manager,
exactly the request Argo CD sends with `ServerSideApply=true`, against a real API server with the
operator running and scaling through the scale subresource.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import Cluster
from harness.cluster import wait_until

if TYPE_CHECKING:
    from operator_process import StartOperator
pytest_plugins = ["operator_process"]  # the `operator_process` fixture

REPO = Path(__file__).resolve().parents[1]
HEALTH_LUA = REPO / "gitops" / "argocd-health.lua"


# --- The Argo CD health check --------------------------------------------------------------------


def lua_literal(value: Any) -> str:
    """A Python value (JSON-shaped) as a Lua table constructor."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid Lua string literal here
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no Lua literal for {value!r}")


def lua_interpreter() -> str:
    for name in ("lua5.4", "lua5.3", "lua5.1", "lua"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Lua interpreter: scripts/bootstrap.sh installs lua5.4", pytrace=False)


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Runs gitops/argocd-health.lua as Argo CD does: `obj` global, the script returns `hs`."""
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({json.dumps(str(HEALTH_LUA))})\n"
        'io.write(hs.status, "\\n", hs.message)\n'
    )
    result = subprocess.run(
        [lua_interpreter(), "-"], input=program, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\n")
    return status, message


def model_service(
    conditions: list[dict[str, str]] | None, generation: int = 3, observed: int | None = 3
) -> dict[str, Any]:
    status: dict[str, Any] | None = None
    if conditions is not None or observed is not None:
        status = {"conditions": conditions} if conditions is not None else {}
        if observed is not None:
            status["observedGeneration"] = observed
    obj: dict[str, Any] = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "llama-8b", "namespace": "team-a", "generation": generation},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("obj", "expected_status", "expected_message"),
    [
        pytest.param(
            model_service(None, observed=None), "Progressing", "report status", id="no-status"
        ),
        pytest.param(
            model_service([cond("Ready", "True", "Available")], generation=4, observed=3),
            "Progressing",
            "observe generation 4",
            id="stale-generation",
        ),
        pytest.param(
            model_service(
                [
                    cond("Ready", "False", "UnknownPool", "pool h100-x does not exist"),
                    cond("Progressing", "False", "UnknownPool"),
                    cond("Degraded", "True", "UnknownPool", "pool h100-x does not exist"),
                ]
            ),
            "Degraded",
            "pool h100-x does not exist",
            id="degraded",
        ),
        pytest.param(
            model_service(
                [
                    cond("Ready", "False", "ReplicasStarting", "1 of 2 replicas ready"),
                    cond("Progressing", "True", "ReplicasStarting", "1 of 2 replicas ready"),
                    cond("Degraded", "False", "AsExpected"),
                ]
            ),
            "Progressing",
            "1 of 2 replicas ready",
            id="ready-false-progressing",
        ),
        pytest.param(
            model_service(
                [
                    cond("Ready", "True", "Available", "all desired replicas are ready"),
                    cond("Progressing", "False", "RolledOut"),
                    cond("Degraded", "False", "AsExpected"),
                    cond("CapacityLimited", "False", "EnoughCapacity"),
                ]
            ),
            "Healthy",
            "all desired replicas are ready",
            id="ready",
        ),
        pytest.param(
            model_service([cond("Ready", "True", "Available")]),
            "Healthy",
            "Available",
            id="ready-reason-as-message",
        ),
        pytest.param(
            model_service([cond("Ready", "False", "NoNodes", "no node matches the selector")]),
            "Degraded",
            "no node matches the selector",
            id="not-ready-not-progressing",
        ),
        pytest.param(model_service([]), "Healthy", "Status observed", id="no-ready-condition"),
    ],
)
def test_argocd_health_check(
    obj: dict[str, Any], expected_status: str, expected_message: str
) -> None:
    status, message = argocd_health(obj)
    assert status == expected_status
    assert expected_message in message


def test_docs_show_the_shipped_health_check() -> None:
    docs = (REPO / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"```lua\n(.*?)```", docs, flags=re.DOTALL)
    assert blocks == [HEALTH_LUA.read_text()], "docs/gitops.md's Lua block differs from the file"


# --- On the cluster: the GitOps tool and the autoscaler share a ModelService ---------------------

ARGOCD = "argocd-controller"
AUTOSCALER = "thrifty-autoscaler"
WAIT_SECONDS = 120.0


def gitops_manifest(name: str, min_replicas: int, replicas: int | None = None) -> dict[str, Any]:
    """A ModelService as a team keeps it in Git (no budget, no replicas unless asked)."""
    spec: dict[str, Any] = {
        "model": {"uri": "hf://Qwen/Qwen3-0.6B"},
        "pools": ["h100-on-demand"],
        "scaling": {"minReplicas": min_replicas, "maxReplicas": 4, "mode": "Auto"},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": spec,
    }


def gitops_apply(
    cluster: Cluster, namespace: str, manifest: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """What Argo CD sends with ServerSideApply=true: an apply under its own field manager."""
    return cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={ARGOCD}",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(manifest),
        check=False,
    )


def live(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.kubectl_json(
        "get", "modelservice", name, "-n", namespace, "--show-managed-fields"
    )


def replicas_owners(body: dict[str, Any]) -> set[str]:
    owners = set()
    for entry in body["metadata"].get("managedFields", []):
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            owners.add(str(entry["manager"]))
    return owners


def wait_replicas(cluster: Cluster, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = live(cluster, namespace, name)
        return body if body["spec"].get("replicas") == replicas else None

    return wait_until(
        probe, timeout_seconds=WAIT_SECONDS, what=f"the operator to scale {name} to {replicas}"
    )


@pytest.fixture
def gitops_operator(cluster: Cluster, namespace: str, operator_process: StartOperator) -> None:
    for pool in ("gpupool-h100-on-demand.yaml", "gpupool-h100-spot.yaml"):
        cluster.kubectl("apply", "-f", str(REPO / "examples" / pool))
    operator_process(
        namespaces=[namespace],
        env={
            "THRIFTY_PROMETHEUS_URL": cluster.prometheus_url,
            "THRIFTY_DECISION_INTERVAL_SECONDS": "2",
            "THRIFTY_METRICS_PORT": "0",
            "THRIFTY_LEADER_ELECTION": "false",
        },
    )


def test_gitops_apply_without_replicas_never_fights_the_autoscaler(
    cluster: Cluster, namespace: str, gitops_operator: None
) -> None:
    manifest = gitops_manifest("chat", min_replicas=1)
    assert gitops_apply(cluster, namespace, manifest).returncode == 0
    # The operator sets the replica count through /scale (here: up to the lower bound).
    body = wait_replicas(cluster, namespace, "chat", 1)
    assert replicas_owners(body) == {AUTOSCALER}

    # A change in Git that makes the operator scale again: the bound goes up.
    manifest = gitops_manifest("chat", min_replicas=2)
    assert gitops_apply(cluster, namespace, manifest).returncode == 0
    body = wait_replicas(cluster, namespace, "chat", 2)
    assert replicas_owners(body) == {AUTOSCALER}
    generation = body["metadata"]["generation"]

    # The GitOps tool re-syncs the same manifest: no conflict, nothing changes.
    result = gitops_apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr
    after = live(cluster, namespace, "chat")
    assert after["spec"]["replicas"] == 2
    assert after["metadata"]["generation"] == generation
    assert replicas_owners(after) == {AUTOSCALER}

    # Had the manifest carried replicas, a plain apply would have to take the field from the
    # autoscaler: the API server refuses, naming the field and its owner.
    conflict = gitops_apply(cluster, namespace, gitops_manifest("chat", 2, replicas=1))
    assert conflict.returncode != 0
    assert ".spec.replicas" in conflict.stderr and AUTOSCALER in conflict.stderr
    assert live(cluster, namespace, "chat")["spec"]["replicas"] == 2


def test_gitops_manifest_with_replicas_makes_the_autoscaler_only_advise(
    cluster: Cluster, namespace: str, gitops_operator: None
) -> None:
    manifest = gitops_manifest("pinned", min_replicas=1, replicas=3)
    assert gitops_apply(cluster, namespace, manifest).returncode == 0

    def advised() -> dict[str, Any] | None:
        body = live(cluster, namespace, "pinned")
        decision = ((body.get("status") or {}).get("autoscaler") or {}).get("lastDecision") or {}
        return body if ARGOCD in str(decision.get("message", "")) else None

    body = wait_until(
        advised, timeout_seconds=WAIT_SECONDS, what="an Advisory decision naming Argo CD"
    )
    assert body["status"]["autoscaler"]["lastDecision"]["message"].startswith("Advisory")
    assert body["spec"]["replicas"] == 3
    assert replicas_owners(body) == {ARGOCD}
    result = gitops_apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr
    assert live(cluster, namespace, "pinned")["spec"]["replicas"] == 3


def test_argocd_health_of_a_live_model_service(
    cluster: Cluster, namespace: str, gitops_operator: None
) -> None:
    """The Lua check on what the operator really writes: Progressing or Healthy, then Healthy."""
    assert gitops_apply(cluster, namespace, gitops_manifest("health", 1)).returncode == 0

    def healthy() -> tuple[str, str] | None:
        verdict = argocd_health(live(cluster, namespace, "health"))
        assert verdict[0] in ("Progressing", "Healthy"), verdict
        return verdict if verdict[0] == "Healthy" else None

    wait_until(healthy, timeout_seconds=WAIT_SECONDS, what="Argo CD health Healthy")
    broken = gitops_manifest("broken", 1)
    broken["spec"]["pools"] = ["no-such-pool"]
    assert gitops_apply(cluster, namespace, broken).returncode == 0

    def degraded() -> tuple[str, str] | None:
        verdict = argocd_health(live(cluster, namespace, "broken"))
        return verdict if verdict[0] == "Degraded" else None

    _, message = wait_until(degraded, timeout_seconds=WAIT_SECONDS, what="Argo CD health Degraded")
    assert "no-such-pool" in message
