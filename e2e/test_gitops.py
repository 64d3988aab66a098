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
from typing import Any

import pytest

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
