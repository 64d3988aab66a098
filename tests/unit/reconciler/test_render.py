"""Rendering: vLLM flags, GPU limits, pool placement, drain, and the labels that tie pods."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from thrifty.api import gpupool, modelservice
from thrifty.reconciler import render

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def target(spec: dict[str, Any] | None = None, replicas: int = 2) -> render.Target:
    body = spec or example("modelservice-llama-70b.yaml")["spec"]
    return render.Target(
        name="llama",
        namespace="team-a",
        uid="1234",
        spec=modelservice.ModelServiceSpec.model_validate(body),
        pool_name="h100-on-demand",
        pool=gpupool.GPUPoolSpec.model_validate(example("gpupool-h100-on-demand.yaml")["spec"]),
        replicas=replicas,
    )


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return found


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_engine_flags_follow_the_spec() -> None:
    args = container(render.deployment(target()))["args"]
    assert flag(args, "--model") == "meta-llama/Llama-3.3-70B-Instruct"
    assert flag(args, "--served-model-name") == "llama-3.3-70b"
    assert flag(args, "--tensor-parallel-size") == "4"
    assert flag(args, "--pipeline-parallel-size") == "1"
    assert flag(args, "--max-model-len") == "32768"
    assert flag(args, "--quantization") == "fp8"
    assert flag(args, "--kv-cache-dtype") == "fp8"
    assert flag(args, "--max-num-seqs") == "256"
    assert flag(args, "--port") == "8000"
    assert flag(args, "--shutdown-timeout") == "120"
    assert args[-1] == "--enable-prefix-caching"
    assert "--disable-log-requests" not in args
    assert "--gpu-memory-utilization" not in args  # absent in the spec: vLLM's own default


def test_gpu_limit_is_tensor_times_pipeline_parallel() -> None:
    body = example("modelservice-llama-70b.yaml")["spec"]
    body["engine"] = {**body["engine"], "tensorParallelSize": 2, "pipelineParallelSize": 2}
    resources = container(render.deployment(target(body)))["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "4"
    assert resources["requests"]["nvidia.com/gpu"] == "4"


def test_pods_land_on_the_pool_with_its_tolerations_and_labels() -> None:
    deployment = render.deployment(target())
    pod = deployment["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"thrifty.dev/pool": "h100-on-demand"}
    assert {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "spec"
    ]["tolerations"]
    labels = pod["metadata"]["labels"]
    assert labels["thrifty.dev/model-service"] == "llama"
    assert labels["thrifty.dev/pool"] == "h100-on-demand"
    assert labels["app.kubernetes.io/managed-by"] == "thrifty"
    assert set(deployment["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    # One Deployment per (ModelService, pool): its selector names both, so the Deployments of
    # one ModelService never claim each other's pods.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "thrifty.dev/model-service": "llama",
        "thrifty.dev/pool": "h100-on-demand",
    }
    assert deployment["metadata"]["labels"]["thrifty.dev/pool"] == "h100-on-demand"
    assert deployment["spec"]["replicas"] == 2


def test_pods_leave_a_lost_node_after_the_short_toleration_unless_the_pool_says_otherwise() -> None:
    """Kubernetes' 300 s default keeps a replica that serves nobody on a dead node."""
    short = dataclasses.replace(target(), node_loss_toleration_seconds=20)
    tolerations = render.deployment(short)["spec"]["template"]["spec"]["tolerations"]
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        assert {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 20,
        } in tolerations
    pool = gpupool.GPUPoolSpec.model_validate(
        {
            **example("gpupool-h100-on-demand.yaml")["spec"],
            "tolerations": [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                }
            ],
        }
    )
    own = render.deployment(dataclasses.replace(short, pool=pool))["spec"]["template"]["spec"]
    unreachable = [t for t in own["tolerations"] if t["key"] == "node.kubernetes.io/unreachable"]
    assert unreachable == [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    ]


def test_drain_outlasts_shutdown_timeout_and_probes_cover_a_cold_start() -> None:
    deployment = render.deployment(target())
    pod = deployment["spec"]["template"]["spec"]
    engine = container(deployment)
    assert pod["terminationGracePeriodSeconds"] > 120 + render.PRE_STOP_SLEEP_SECONDS
    hook = engine["lifecycle"]["preStop"]["exec"]["command"]
    # The hook sleeps while endpoints go, then waits at most the shutdown timeout for the engine.
    assert hook[:3] == ["python3", "-c", render.DRAIN_HOOK]
    assert hook[3:] == [str(render.PRE_STOP_SLEEP_SECONDS), "120", "http://127.0.0.1:8000/metrics"]
    startup = engine["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    assert engine["readinessProbe"]["periodSeconds"] == 5
    assert engine["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["enableServiceLinks"] is False


def test_without_a_drain_the_pre_stop_is_a_native_sleep() -> None:
    spec = target().spec
    engine = spec.engine.model_copy(update={"shutdown_timeout_seconds": 0})
    abort = render.pre_stop(spec.model_copy(update={"engine": engine}))
    assert abort == {"sleep": {"seconds": render.PRE_STOP_SLEEP_SECONDS}}


def test_volumes_shm_cache_and_token() -> None:
    deployment = render.deployment(target())
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["model-cache"]["emptyDir"]["sizeLimit"] == "400Gi"
    env = {e["name"]: e for e in container(deployment)["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}


@pytest.mark.parametrize(
    ("uri", "expected_model", "extra"),
    [
        ("pvc://weights/llama", "/models/weights/llama", None),
        ("s3://bucket/llama", "s3://bucket/llama", ("--load-format", "runai_streamer")),
    ],
)
def test_model_sources(uri: str, expected_model: str, extra: tuple[str, str] | None) -> None:
    body = {"model": {"uri": uri}, "pools": ["h100-on-demand"]}
    deployment = render.deployment(target(body))
    args = container(deployment)["args"]
    assert flag(args, "--model") == expected_model
    if extra:
        assert flag(args, extra[0]) == extra[1]
    if uri.startswith("pvc://"):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["model"]["persistentVolumeClaim"] == {
            "claimName": "weights",
            "readOnly": True,
        }


def test_shared_memory_default_grows_with_parallelism() -> None:
    single = {"model": {"uri": "hf://a/b"}, "pools": ["p"]}
    assert render.shared_memory(modelservice.ModelServiceSpec.model_validate(single)) == "2Gi"
    tp2 = {**single, "engine": {"tensorParallelSize": 2}}
    assert render.shared_memory(modelservice.ModelServiceSpec.model_validate(tp2)) == "8Gi"


def test_service_pdb_and_owner_references() -> None:
    manifests = render.manifests([target()])
    assert [m["kind"] for m in manifests] == ["Deployment", "PodDisruptionBudget", "Service"]
    for manifest in manifests:
        expected = "llama-engine"
        if manifest["kind"] == "Deployment":
            expected = render.deployment_name("llama", "h100-on-demand")
        assert manifest["metadata"]["name"] == expected
        assert manifest["metadata"]["name"] != "vllm"
        owner = manifest["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ModelService" and owner["uid"] == "1234" and owner["controller"]
    service = manifests[2]
    assert service["spec"]["ports"][0]["port"] == 8000
    # Headless: a ModelService takes no ClusterIP from the cluster's finite Service range.
    assert service["spec"]["clusterIP"] == "None"
    assert manifests[1]["spec"]["maxUnavailable"] == 1


@given(tp=st.sampled_from([1, 2, 4, 8]), pp=st.integers(min_value=1, max_value=4))
def test_rendering_is_deterministic(tp: int, pp: int) -> None:
    body = {"model": {"uri": "hf://a/b"}, "pools": ["p"], "engine": {"tensorParallelSize": tp}}
    body["engine"]["pipelineParallelSize"] = pp  # type: ignore[index]
    first = render.manifests([target(body)])
    assert first == render.manifests([target(body)])
    assert container(first[0])["resources"]["limits"]["nvidia.com/gpu"] == str(tp * pp)


_DNS_1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"


@pytest.mark.parametrize(
    "name",
    [
        "llama-3.1-8b",
        "qwen2.5-7b",
        "x.y",
        "7b-chat",
        "0",
        "a" * 63,
        "a.b" + "c" * 60,
    ],
)
def test_child_names_are_service_names_for_any_model_service_name(name: str) -> None:
    child = render.engine_name(name)
    assert re.fullmatch(_DNS_1035, child) and len(child) <= 63, child
    assert render.engine_name(name) == child  # stable


def test_a_name_that_is_already_valid_keeps_its_child_names() -> None:
    assert render.engine_name("llama-8b") == "llama-8b-engine"
    assert render.engine_name("a" * 56) == "a" * 56 + "-engine"


def test_names_that_shorten_alike_get_distinct_children() -> None:
    long_a, long_b = "a" * 62 + "x", "a" * 62 + "y"
    assert render.engine_name(long_a) != render.engine_name(long_b)
    assert render.engine_name("x.y") != render.engine_name("x-y")
    # The plain form always ends in -engine, the derived one in hex: they never meet.
    derived = render.engine_name("a.b")
    assert render.engine_name(derived.removesuffix("-engine")) != derived


@given(
    names=st.lists(
        st.from_regex(r"[a-z0-9]([-.a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
        min_size=2,
        max_size=2,
        unique=True,
    )
)
def test_distinct_names_never_share_children(names: list[str]) -> None:
    first, second = (render.engine_name(n) for n in names)
    assert first != second
    for child in (first, second):
        assert re.fullmatch(_DNS_1035, child) and len(child) <= 63, child


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z0-9]([-.a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
            st.from_regex(r"[a-z0-9]([-.a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
        ),
        min_size=2,
        max_size=2,
        unique=True,
    )
)
def test_distinct_service_and_pool_pairs_never_share_a_deployment(
    pairs: list[tuple[str, str]],
) -> None:
    first, second = (render.deployment_name(name, pool) for name, pool in pairs)
    assert first != second
    for child in (first, second):
        assert re.fullmatch(_DNS_1035, child) and len(child) <= 63, child
    assert render.deployment_name("a", "b-c") != render.deployment_name("a-b", "c")


def test_children_of_a_dotted_name_are_found_by_its_label() -> None:
    placed = dataclasses.replace(target(), name="llama-3.1-8b")
    for manifest in render.manifests([placed]):
        expected = render.engine_name("llama-3.1-8b")
        if manifest["kind"] == "Deployment":
            expected = render.deployment_name("llama-3.1-8b", placed.pool_name)
        assert manifest["metadata"]["name"] == expected
        assert manifest["metadata"]["labels"]["thrifty.dev/model-service"] == "llama-3.1-8b"
    assert render.selector_string("llama-3.1-8b") == "thrifty.dev/model-service=llama-3.1-8b"
