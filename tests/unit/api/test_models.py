"""The models accept what the docs promise and refuse, naming the field, what the CRD refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from thrifty.api import costbudget, gpupool, modelservice
from thrifty.policy import types as policy_types


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "pools": ["a"],
    }
    body.update(overrides)
    return body


def test_defaults_fill_a_minimal_model_service() -> None:
    parsed = modelservice.ModelServiceSpec.model_validate(spec())
    assert parsed.engine.tensor_parallel_size == 1
    assert parsed.engine.gpus_per_replica == 1
    assert parsed.scaling.mode is policy_types.ScalingMode.AUTO
    assert parsed.cost_target.enforcement is policy_types.Enforcement.HARD
    assert parsed.replicas is None
    assert not parsed.engine.image.endswith(":latest")


def test_camel_case_round_trip_drops_absent_fields() -> None:
    parsed = modelservice.ModelServiceSpec.model_validate(
        spec(engine={"tensorParallelSize": 4, "maxModelLen": 8192}, replicas=1)
    )
    wire = parsed.to_kube()
    assert wire["engine"]["tensorParallelSize"] == 4  # type: ignore[index]
    assert "servedModelName" not in wire
    assert modelservice.ModelServiceSpec.model_validate(wire) == parsed


@pytest.mark.parametrize(
    ("overrides", "field_words"),
    [
        ({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas"),
        ({"scaling": {"minReplicas": 1, "scaleToZeroIdleSeconds": 60}}, "scaleToZeroIdleSeconds"),
        ({"engine": {"tensorParallelSize": 3}}, "tensorParallelSize"),
        ({"engine": {"image": "vllm/vllm-openai:latest"}}, "image"),
        ({"engine": {"image": "vllm/vllm-openai"}}, "image"),
        ({"engine": {"extraArgs": ["--port=9000"]}}, "--port"),
        ({"engine": {"extraArgs": ["--disable-log-requests"]}}, "--disable-log-requests"),
        ({"model": {"uri": "http://example.com/model"}}, "uri"),
        ({"model": {"uri": "pvc://weights", "revision": "main"}}, "revision"),
        ({"replicas": 5, "scaling": {"maxReplicas": 4}}, "replicas"),
        ({"costTarget": {"maxDollarsPerHour": -1}}, "maxDollarsPerHour"),
        ({"pools": []}, "pools"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(
    overrides: dict[str, Any], field_words: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        modelservice.ModelServiceSpec.model_validate(spec(**overrides))
    assert field_words in str(raised.value)


@pytest.mark.parametrize(
    "uri", ["hf://Qwen/Qwen3-0.6B", "pvc://weights/llama-70b", "s3://my-bucket/models/llama"]
)
def test_every_documented_model_source_is_accepted(uri: str) -> None:
    assert modelservice.ModelServiceSpec.model_validate(spec(model={"uri": uri})).model.uri == uri


@given(
    low=st.integers(min_value=0, max_value=50),
    high=st.integers(min_value=1, max_value=50),
    replicas=st.integers(min_value=0, max_value=60),
)
def test_replicas_are_accepted_exactly_within_the_bounds(
    low: int, high: int, replicas: int
) -> None:
    body = spec(scaling={"minReplicas": low, "maxReplicas": high}, replicas=replicas)
    valid = low <= high and low <= replicas <= high
    try:
        modelservice.ModelServiceSpec.model_validate(body)
    except ValidationError:
        assert not valid
    else:
        assert valid


def test_gpus_per_replica_is_tensor_times_pipeline_parallel() -> None:
    engine = modelservice.Engine(tensor_parallel_size=4, pipeline_parallel_size=2)
    assert engine.gpus_per_replica == 8


def test_gpu_pool_refuses_negative_prices_and_empty_selectors() -> None:
    good = {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"thrifty.dev/pool": "h100"},
        "pricePerGpuHour": 2.5,
    }
    assert gpupool.GPUPoolSpec.model_validate(good).capacity_type is gpupool.CapacityType.ON_DEMAND
    with pytest.raises(ValidationError, match="pricePerGpuHour"):
        gpupool.GPUPoolSpec.model_validate({**good, "pricePerGpuHour": -0.01})
    with pytest.raises(ValidationError, match="nodeSelector"):
        gpupool.GPUPoolSpec.model_validate({**good, "nodeSelector": {}})


def test_cost_budget_needs_at_least_one_limit() -> None:
    with pytest.raises(ValidationError, match="maxDollarsPerHour"):
        costbudget.CostBudgetSpec.model_validate({})
    assert (
        costbudget.CostBudgetSpec.model_validate({"maxDollarsPerHour": 40}).max_dollars_per_hour
        == 40
    )


@pytest.mark.parametrize(
    "latency",
    [
        {"timeToFirstTokenSeconds": 1.0, "timeToFirstTokenP95Seconds": 1.0},
        {"timeToFirstTokenP95Seconds": 1.0, "percentile": "p99"},
        {"timeToFirstTokenSeconds": 1.0, "percentile": "p80"},
    ],
)
def test_a_latency_target_has_one_meaning(latency: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        modelservice.ModelServiceSpec.model_validate(spec(latencyTarget=latency))
    assert "timeToFirstToken" in str(raised.value) or "percentile" in str(raised.value)


def test_status_ignores_fields_it_does_not_know() -> None:
    status = modelservice.ModelServiceStatus.model_validate({"replicas": 2, "futureField": 1})
    assert status.replicas == 2


_MAX_INT64 = 2**63 - 1
POOL = {
    "accelerator": "NVIDIA-H100-80GB-HBM3",
    "gpuMemoryGib": 80,
    "gpusPerNode": 8,
    "nodeSelector": {"thrifty.dev/pool": "h100"},
    "pricePerGpuHour": 2.5,
}


@pytest.mark.parametrize(
    ("overrides", "field_words"),
    [
        ({"engine": {"maxModelLen": _MAX_INT64}}, "maxModelLen"),
        ({"engine": {"maxNumSeqs": _MAX_INT64}}, "maxNumSeqs"),
        ({"scaling": {"scaleDownDelaySeconds": _MAX_INT64}}, "scaleDownDelaySeconds"),
        (
            {"scaling": {"minReplicas": 0, "scaleToZeroIdleSeconds": _MAX_INT64}},
            "scaleToZeroIdleSeconds",
        ),
        ({"scaling": {"queueDepthTargetPerReplica": 1e-320}}, "queueDepthTargetPerReplica"),
        ({"scaling": {"queueDepthTargetPerReplica": 1e308}}, "queueDepthTargetPerReplica"),
        ({"latencyTarget": {"timeToFirstTokenP95Seconds": 1e308}}, "timeToFirstTokenP95Seconds"),
        ({"resources": {"cpu": "99999999999999999999999"}}, "cpu"),
        ({"resources": {"memory": "99999999999999999999Gi"}}, "memory"),
        ({"resources": {"memory": "32K"}}, "memory"),
        ({"costTarget": {"maxDollarsPerHour": 1.7e308}}, "maxDollarsPerHour"),
        ({"costTarget": {"maxDollarsPerMillionTokens": 1.7e308}}, "maxDollarsPerMillionTokens"),
        ({"replicas": _MAX_INT64, "scaling": {"maxReplicas": 1000}}, "replicas"),
        ({"model": {"uri": "pvc://claim/../../etc"}}, "'..'"),
        ({"model": {"uri": "s3://bucket/a/./b"}}, "'.'"),
        ({"model": {"uri": "hf://org/a..b"}}, "'..'"),
        ({"model": {"uri": "pvc://claim/a b"}}, "uri"),
        ({"model": {"uri": "hf://org/m", "revision": "a/../b"}}, "revision"),
        ({"pools": ["a", "b", "a"]}, "twice"),
        ({"engine": {"env": [{"name": "X", "value": "v" * 40000}]}}, "value"),
    ],
)
def test_unbounded_values_are_refused_with_the_field_named(
    overrides: dict[str, Any], field_words: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        modelservice.ModelServiceSpec.model_validate(spec(**overrides))
    assert field_words in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "field_words"),
    [
        ({"pricePerGpuHour": 1.7e308}, "pricePerGpuHour"),
        ({"pricePerGpuHour": 1000}, "pricePerGpuHour"),
        ({"gpuMemoryGib": 1e-300}, "gpuMemoryGib"),
        ({"maxGpus": _MAX_INT64}, "maxGpus"),
        ({"nodeSelector": {"k": "v" * 64}}, "nodeSelector"),
    ],
)
def test_gpu_pool_bounds(overrides: dict[str, Any], field_words: str) -> None:
    with pytest.raises(ValidationError, match=field_words):
        gpupool.GPUPoolSpec.model_validate({**POOL, **overrides})
    assert gpupool.GPUPoolSpec.model_validate({**POOL, "pricePerGpuHour": 999.99})


def test_cost_budget_bounds() -> None:
    with pytest.raises(ValidationError, match="maxDollarsPerHour"):
        costbudget.CostBudgetSpec.model_validate({"maxDollarsPerHour": 1.7e308})


@pytest.mark.parametrize(
    "overrides",
    [
        {"resources": {"cpu": "7500m", "memory": "64Gi", "sharedMemory": "8Gi"}},
        {"resources": {"cpu": "0.5", "memory": "34359738368"}},
        {"scaling": {"scaleDownDelaySeconds": 7 * 24 * 3600}},
        {"engine": {"maxModelLen": 10_000_000}},
        {"model": {"uri": "s3://my-bucket/models/llama/"}},
        {"model": {"uri": "pvc://weights/llama-3.1-8b/v1.0"}},
    ],
)
def test_realistic_values_at_the_edges_are_accepted(overrides: dict[str, Any]) -> None:
    modelservice.ModelServiceSpec.model_validate(spec(**overrides))


def test_policy_parameters_are_bounded() -> None:
    too_big = {"scaling": {"policy": {"name": "hpa", "parameters": {"targetPerReplica": 1e308}}}}
    with pytest.raises(ValidationError, match="parameters"):
        modelservice.ModelServiceSpec.model_validate(spec(**too_big))
