"""Least privilege in effect: the operator's token, impersonated, cannot do more than render.

RBAC lets the operator create and patch Deployments, Services and PDBs wherever it serves; the
chart's ValidatingAdmissionPolicy narrows that to what `thrifty.reconciler.render` produces. Each
request here is made as the chart's ServiceAccount (`kubectl --as=system:serviceaccount:NS:NAME`),
as a stolen token would be used; `--dry-run=server` runs admission without keeping the object.
The issue's escalations (a Deployment in kube-system running as a cluster-admin ServiceAccount
with a Secret volume; a foreign Deployment's image patched) are refused, the renderer's own
objects are admitted, and an image outside the allowlist is refused as Invalid.
`test_helm.py::test_operator_with_only_the_charts_permissions_reconciles_to_ready` runs the real
operator as that ServiceAccount with the policy installed.
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

from harness import Cluster
from harness.cluster import wait_until
from test_helm import Release, of_kind, release
from test_helm import render as helm_template
from thrifty.api import gpupool, modelservice
from thrifty.reconciler import render

__all__ = ["release"]  # the fixture, re-exported for pytest

ALLOWED_IMAGE = "vllm/vllm-openai:"
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"


def test_the_policy_is_on_by_default_where_the_api_serves_it_and_binds_to_deny() -> None:
    (policy,) = of_kind(helm_template("--api-versions", VAP_API), "ValidatingAdmissionPolicy")
    (binding,) = of_kind(
        helm_template("--api-versions", VAP_API), "ValidatingAdmissionPolicyBinding"
    )
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    (match,) = policy["spec"]["matchConditions"]
    assert match["expression"] == (
        'request.userInfo.username == "system:serviceaccount:thrifty-system:thrifty"'
    )
    assert policy["spec"]["failurePolicy"] == "Fail"
    # An API server without it (before 1.30), or an administrator who turns it off: not rendered.
    assert not of_kind(helm_template(), "ValidatingAdmissionPolicy")
    off = helm_template("--api-versions", VAP_API, "--set", "admissionPolicy.enabled=false")
    assert not of_kind(off, "ValidatingAdmissionPolicy")


def as_operator(
    cluster: Cluster, release: Release, *args: str, manifest: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        *args,
        f"--as={release.subject}",
        "--dry-run=server",
        input=None if manifest is None else json.dumps(manifest),
        check=False,
    )


def apply_as_operator(
    cluster: Cluster, release: Release, manifest: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return as_operator(
        cluster,
        release,
        "apply",
        "--server-side",
        "--field-manager=thrifty",
        "--force-conflicts",
        "-f",
        "-",
        manifest=manifest,
    )


def rendered(namespace: str, uid: str, image: str = "vllm/vllm-openai:v0.19.0") -> list[Any]:
    spec = modelservice.ModelServiceSpec.model_validate(
        {
            "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "engine": {"image": image, "tensorParallelSize": 1},
            "pools": ["h100"],
        }
    )
    pool = gpupool.GPUPoolSpec.model_validate(
        {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"thrifty.dev/pool": "h100"},
            "pricePerGpuHour": 2.5,
        }
    )
    target = render.Target("chat", namespace, uid, spec, "h100", pool, replicas=1)
    return render.manifests([target])


def escalation(namespace: str, thrifty_like: bool) -> dict[str, Any]:
    """The issue's Deployment: cluster-admin's ServiceAccount and a Secret mounted."""
    metadata: dict[str, Any] = {"name": "escalate", "namespace": namespace}
    if thrifty_like:  # dressed as thrifty's: labels and a ModelService owner
        metadata["labels"] = render.labels("chat")
        metadata["ownerReferences"] = [
            {
                "apiVersion": "thrifty.dev/v1alpha1",
                "kind": "ModelService",
                "name": "chat",
                "uid": "00000000-0000-0000-0000-000000000000",
                "controller": True,
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"thrifty.dev/model-service": "chat"}},
            "template": {
                "metadata": {"labels": render.labels("chat")},
                "spec": {
                    "serviceAccountName": "cluster-admin-sa",
                    "containers": [{"name": "x", "image": "vllm/vllm-openai:v0.19.0"}],
                    "volumes": [{"name": "s", "secret": {"secretName": "anything"}}],
                },
            },
        },
    }


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, f"admitted:\n{result.stdout}"
    message = result.stderr
    assert "ValidatingAdmissionPolicy" in message, message
    for word in words:
        assert word in message, (word, message)
    return message


def test_the_operators_token_writes_only_what_the_renderer_produces(
    cluster: Cluster, release: Release, namespace: str
) -> None:
    release.install("--set", f"admissionPolicy.allowedImages={{{ALLOWED_IMAGE}}}")
    policy = f"{release.name}-writes"
    cluster.kubectl("get", "validatingadmissionpolicy", policy)
    cluster.kubectl("get", "validatingadmissionpolicybinding", policy)
    # RBAC alone allows all of the below: the policy is what refuses.
    assert release.can("create", "deployments.apps", "-n", "kube-system")
    assert release.can("patch", "deployments.apps", "-n", namespace)

    # The policy is picked up by the API server within a second or two.
    wait_until(
        lambda: (
            True
            if as_operator(
                cluster, release, "create", "-f", "-", manifest=escalation("kube-system", False)
            ).returncode
            != 0
            else None
        ),
        timeout_seconds=30,
        what=f"ValidatingAdmissionPolicy {policy} in effect",
    )
    refused(
        as_operator(
            cluster, release, "create", "-f", "-", manifest=escalation("kube-system", True)
        ),
        "system namespaces",
    )
    # In a served namespace, dressed as thrifty's: the ServiceAccount and the Secret volume.
    # (The API server names the first rule an object breaks: one change at a time.)
    dressed = escalation(namespace, True)
    refused(as_operator(cluster, release, "create", "-f", "-", manifest=dressed))
    only_sa = copy.deepcopy(dressed)
    del only_sa["spec"]["template"]["spec"]["volumes"]
    refused(
        as_operator(cluster, release, "create", "-f", "-", manifest=only_sa), "cluster-admin-sa"
    )
    without_sa = copy.deepcopy(dressed)
    del without_sa["spec"]["template"]["spec"]["serviceAccountName"]
    refused(
        as_operator(cluster, release, "create", "-f", "-", manifest=without_sa),
        "emptyDir and PersistentVolumeClaim",
    )
    host = copy.deepcopy(without_sa)
    pod = host["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    refused(as_operator(cluster, release, "create", "-f", "-", manifest=host), "hostPath")
    pod["volumes"] = []
    pod["hostNetwork"] = True
    refused(as_operator(cluster, release, "create", "-f", "-", manifest=host), "host network")
    pod["hostNetwork"] = False
    pod["containers"][0]["securityContext"] = {"privileged": True}
    refused(as_operator(cluster, release, "create", "-f", "-", manifest=host), "privileged")

    # Someone else's Deployment: its image cannot be patched with the operator's token.
    foreign = escalation(namespace, False)
    foreign["metadata"]["name"] = "foreign"
    foreign["spec"]["selector"] = {"matchLabels": {"app": "foreign"}}
    foreign["spec"]["template"] = {
        "metadata": {"labels": {"app": "foreign"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(foreign))
    refused(
        as_operator(
            cluster,
            release,
            "patch",
            "deployment",
            "foreign",
            "-n",
            namespace,
            "--type=strategic",
            "-p",
            json.dumps(
                {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil"}]}}}}
            ),
        ),
        "labelled app.kubernetes.io/managed-by=thrifty",
    )

    # thrifty's own objects, as the renderer makes them for a ModelService that exists: admitted.
    owner = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {"model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"}, "pools": ["h100"]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(owner))
    uid = cluster.kubectl_json("get", "modelservice", "chat", "-n", namespace)["metadata"]["uid"]
    for manifest in rendered(namespace, uid):
        result = apply_as_operator(cluster, release, manifest)
        assert result.returncode == 0, (manifest["kind"], result.stderr)
    # An engine image outside the administrator's allowlist: Invalid (the operator's ApplyFailed).
    deployment = rendered(namespace, uid, image="evil/miner:v1")[0]
    message = refused(apply_as_operator(cluster, release, deployment), "evil/miner:v1")
    assert "Invalid" in message or "invalid" in message, message
