"""What Flux's health checks make of live ModelServices: the real kstatus library, not a copy.

`e2e/kstatus` is a small Go program around sigs.k8s.io/cli-utils' `status.Compute` (what Flux's
`--wait` and `healthChecks` run); `e2e/build.sh` builds it into the binary cache. Each case puts a
ModelService into one state on the live cluster, runs the library on what `kubectl get` returns,
and checks the result against the row of the table in docs/gitops.md that describes that state:
the docs say what the library does, and this test fails when either changes.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import Cluster
from harness.cluster import wait_until
from operator_process import StartOperator, operator_process
from test_reconcile import apply, crds_and_pools, wait_condition, wait_for_h100_on_demand

__all__ = ["crds_and_pools", "operator_process"]  # fixtures, re-exported for pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GITOPS_DOC = REPO_ROOT / "docs" / "gitops.md"


@pytest.fixture(scope="module")
def kstatus(cluster: Cluster) -> Path:
    """The probe binary; built by e2e/build.sh (seconds: only cli-utils and apimachinery)."""
    binary = cluster.bin_dir / "kstatus"
    if not binary.exists():
        subprocess.run(["bash", str(REPO_ROOT / "e2e" / "build.sh")], check=True, timeout=900)
    return binary


def computed(cluster: Cluster, kstatus: Path, name: str, namespace: str) -> dict[str, Any]:
    body = cluster.kubectl("get", "modelservice", name, "-n", namespace, "-o", "json").stdout
    out = subprocess.run(
        [str(kstatus)], input=body, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[0])
    return result


def _once(
    cluster: Cluster, kstatus: Path, name: str, namespace: str, expected: str
) -> dict[str, Any] | None:
    found = computed(cluster, kstatus, name, namespace)
    return found if found["status"] == expected else None


def documented(state: str, status: str) -> None:
    """The docs' table has a row for `state` that states kstatus's `status`."""
    row = f"| {state} | `{status}` |"
    assert row in GITOPS_DOC.read_text(), f"docs/gitops.md has no row starting {row!r}"


def model_service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "engine": {"tensorParallelSize": 1},
            "resources": {"cpu": "1", "memory": "4Gi"},
            "pools": ["h100-on-demand"],
            "replicas": 1,
            "scaling": {"minReplicas": 1, "maxReplicas": 2, "mode": "Manual"},
            **spec,
        },
    }


def test_kstatus_on_live_model_services_is_what_the_docs_say(
    cluster: Cluster, namespace: str, operator_process: StartOperator, kstatus: Path
) -> None:
    wait_for_h100_on_demand(cluster, 2)
    # Before any operator has written status: nothing tells kstatus to wait.
    apply(cluster, namespace, model_service("early"))
    early = computed(cluster, kstatus, "early", namespace)
    assert early["status"] == "Current", early
    documented("no status yet (no operator has seen it)", "Current")

    operator_process(namespaces=[namespace])
    apply(
        cluster,
        namespace,
        model_service("serving"),
        model_service("no-pool", pools=["no-such-pool"]),
        model_service("too-big", engine={"tensorParallelSize": 16}),
        model_service("over-cap", costTarget={"maxDollarsPerHour": 1, "enforcement": "Hard"}),
    )
    cases = [
        ("serving", "Ready", "True", "`Ready=True`", "Current"),
        ("no-pool", "Degraded", "True", "`Degraded=True` `UnknownPool`", "InProgress"),
        (
            "too-big",
            "Stalled",
            "True",
            "`Degraded=True` `GPUsPerReplicaTooLarge` (`Stalled=True`)",
            "Failed",
        ),
        (
            "over-cap",
            "Stalled",
            "True",
            "`Degraded=True` `CostCapBelowMinimum` (`Stalled=True`)",
            "Failed",
        ),
    ]
    for name, type_, status, state, expected in cases:
        wait_condition(cluster, name, namespace, type_, status)
        result = wait_until(
            functools.partial(_once, cluster, kstatus, name, namespace, expected),
            timeout_seconds=30,
            what=f"kstatus {expected} for {name}",
        )
        assert result["status"] == expected, (name, result)
        documented(state, expected)
    # The Failed message is the operator's own: Flux prints it.
    too_big = computed(cluster, kstatus, "too-big", namespace)
    assert "GPU" in too_big["message"], too_big

    # A fixed spec clears Stalled: the next sync waits for Ready again, then passes.
    cluster.kubectl(
        "patch",
        "modelservice",
        "too-big",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"engine": {"tensorParallelSize": 1}}}),
    )
    wait_condition(cluster, "too-big", namespace, "Stalled", "False")
    wait_condition(cluster, "too-big", namespace, "Ready", "True")
    assert computed(cluster, kstatus, "too-big", namespace)["status"] == "Current"
