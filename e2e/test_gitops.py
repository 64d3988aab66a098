"""GitOps behaviour: a GitOps tool and the operator never fight over `replicas`, and the shipped
Argo CD health check reads the status conditions the way docs/gitops.md says.

The apply test plays the GitOps tool with kubectl's server-side apply under Argo CD's field manager,
exactly the request Argo CD sends with `ServerSideApply=true`, against a real API server with the
operator running and scaling through the scale subresource.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import fleet_process
from harness import Cluster
from harness import prometheus as prometheus_process
from harness.cluster import wait_until
from harness.ports import free_port

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
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "servedModelName": name,
        "pools": ["h100-on-demand"],
        "scaling": {
            "minReplicas": min_replicas,
            "maxReplicas": 4,
            "scaleDownDelaySeconds": 10,
            "mode": "Auto",
        },
    }
    if min_replicas == 0:
        spec["scaling"]["scaleToZeroIdleSeconds"] = 10
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": spec,
    }


def gitops_apply(
    cluster: Cluster, namespace: str, manifest: dict[str, Any], *, force: bool = False
) -> subprocess.CompletedProcess[str]:
    """What Argo CD sends with ServerSideApply=true: an apply under its own field manager."""
    return cluster.kubectl(
        "apply",
        "--server-side",
        *(["--force-conflicts"] if force else []),
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


def applied_spec_by(body: dict[str, Any], manager: str) -> bool:
    """Whether `manager` owns any spec field: its apply is recorded, so a check that it does not
    own spec.replicas is about a real entry, not an empty list."""
    return any(
        entry.get("manager") == manager and "f:spec" in (entry.get("fieldsV1") or {})
        for entry in body["metadata"].get("managedFields", [])
    )


def wait_replicas(cluster: Cluster, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = live(cluster, namespace, name)
        return body if body["spec"].get("replicas") == replicas else None

    return wait_until(
        probe, timeout_seconds=WAIT_SECONDS, what=f"the operator to scale {name} to {replicas}"
    )


@pytest.fixture
def gitops_operator_env(cluster: Cluster) -> dict[str, str]:
    """The CRDs and pools in place; the operator's settings for these tests."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in ("modelservices", "gpupools", "costbudgets"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.thrifty.dev", "--timeout=60s"
        )
    for pool in ("gpupool-h100-on-demand.yaml", "gpupool-h100-spot.yaml"):
        cluster.kubectl("apply", "-f", str(REPO / "examples" / pool))
    return {
        "THRIFTY_PROMETHEUS_URL": cluster.prometheus_url,
        "THRIFTY_DECISION_INTERVAL_SECONDS": "2",
        "THRIFTY_COLD_START_SECONDS": "10",
        "THRIFTY_METRICS_STALENESS_SECONDS": "20",
        "THRIFTY_METRICS_PORT": "0",
        "THRIFTY_LEADER_ELECTION": "false",
    }


@pytest.fixture
def gitops_operator(
    namespace: str, gitops_operator_env: dict[str, str], operator_process: StartOperator
) -> None:
    operator_process(namespaces=[namespace], env=gitops_operator_env)


@pytest.fixture
def scaling_world(
    cluster: Cluster,
    namespace: str,
    gitops_operator_env: dict[str, str],
    tmp_path: Path,
    operator_process: StartOperator,
) -> Iterator[None]:
    """What makes the autoscaler really scale: a private Prometheus scraping simulated vLLM
    engines that the fleet mirror serves for the namespace's Running pods, and the operator."""
    prom = prometheus_process.start(tmp_path, free_port())
    mirror = fleet_process.start_fleet_mirror(
        cluster.kubeconfig,
        namespace,
        prom.sd_dir / "fleet.json",
        tmp_path / "fleet.json",
        tmp_path / "mirror.log",
    )
    try:
        operator_process(
            namespaces=[namespace],
            env={**gitops_operator_env, "THRIFTY_PROMETHEUS_URL": prom.url},
        )
        yield
    finally:
        fleet_process.stop(mirror)
        with contextlib.suppress(ProcessLookupError):
            os.kill(prom.pid, signal.SIGTERM)


def condition_status(body: dict[str, Any], type_: str) -> str | None:
    for found in (body.get("status") or {}).get("conditions", []):
        if found["type"] == type_:
            return str(found["status"])
    return None


def test_gitops_apply_without_replicas_never_fights_the_autoscaler(
    cluster: Cluster, namespace: str, scaling_world: None
) -> None:
    manifest = gitops_manifest("chat", min_replicas=0)
    assert gitops_apply(cluster, namespace, manifest).returncode == 0
    wait_until(
        lambda: (
            condition_status(live(cluster, namespace, "chat"), "MetricsAvailable") == "True" or None
        ),
        timeout_seconds=WAIT_SECONDS,
        what="vLLM metrics of the first replica",
    )
    # Idle: the autoscaler scales to zero through /scale. (Kubernetes does not record a field
    # manager for /scale writes to custom resources, kubernetes/kubernetes#131892; when it does,
    # the owner is the autoscaler. Either way it is never the GitOps tool.)
    body = wait_replicas(cluster, namespace, "chat", 0)
    assert applied_spec_by(body, ARGOCD), "the GitOps tool's apply is recorded"
    assert ARGOCD not in replicas_owners(body)
    assert replicas_owners(body) <= {AUTOSCALER}
    generation = body["metadata"]["generation"]

    # The GitOps tool re-syncs the same manifest: no conflict, nothing changes.
    result = gitops_apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr
    after = live(cluster, namespace, "chat")
    assert after["spec"]["replicas"] == 0
    assert after["metadata"]["generation"] == generation
    assert replicas_owners(after) <= {AUTOSCALER}

    # Git starts carrying replicas (forced, as GitOps tools apply): the tool now owns the field,
    # and the autoscaler steps back to advising instead of writing it back: still no fight.
    forced = gitops_apply(cluster, namespace, gitops_manifest("chat", 0, replicas=1), force=True)
    assert forced.returncode == 0, forced.stderr
    advising = wait_until(
        lambda: advised_by_owner(cluster, namespace, "chat"),
        timeout_seconds=WAIT_SECONDS,
        what="an Advisory decision naming the GitOps field manager",
    )
    assert advising["spec"]["replicas"] == 1
    assert ARGOCD in replicas_owners(advising)


def advised_by_owner(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    body = live(cluster, namespace, name)
    decision = ((body.get("status") or {}).get("autoscaler") or {}).get("lastDecision") or {}
    message = str(decision.get("message", ""))
    return body if message.startswith("Advisory") and ARGOCD in message else None


def test_gitops_manifest_with_replicas_makes_the_autoscaler_only_advise(
    cluster: Cluster, namespace: str, gitops_operator: None
) -> None:
    manifest = gitops_manifest("pinned", min_replicas=1, replicas=3)
    assert gitops_apply(cluster, namespace, manifest).returncode == 0

    body = wait_until(
        lambda: advised_by_owner(cluster, namespace, "pinned"),
        timeout_seconds=WAIT_SECONDS,
        what="an Advisory decision naming Argo CD",
    )
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
