"""A GPU type's prior relative throughput: from the product label, between its compute and its
bandwidth ratio, until the pool's replicas are measured."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thrifty.api import accelerators, gpupool, modelservice, throughput
from thrifty.reconciler import placement


def pool(**spec: Any) -> gpupool.GPUPoolSpec:
    return gpupool.GPUPoolSpec.model_validate(
        {
            "accelerator": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"p": "x"},
            "pricePerGpuHour": 1.0,
            **spec,
        }
    )


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("NVIDIA-H100-80GB-HBM3", 1.0),  # the reference
        ("NVIDIA-H100-PCIe", 0.68),
        ("NVIDIA-H200", 1.2),
        ("NVIDIA-A100-SXM4-80GB", 0.44),
        ("NVIDIA-A100-PCIE-40GB", 0.38),  # 40 GB: the slower HBM2, whatever the form factor
        ("NVIDIA-L40S", 0.31),
        ("NVIDIA-L4", 0.1),
        ("Tesla-T4", 0.08),
        ("NVIDIA-A10G", 0.11),
        ("AMD_Instinct_MI300X", 1.45),
    ],
)
def test_known_products_get_the_geometric_mean_of_their_ratios(
    product: str, expected: float
) -> None:
    assert accelerators.prior(product) == pytest.approx(expected)


def test_a_product_is_matched_by_whole_words_so_an_l40s_is_no_l4() -> None:
    assert accelerators.find("NVIDIA-L40S") == accelerators.find("nvidia l40s")
    found = accelerators.find("NVIDIA-L40S")
    assert found is not None and found.family == "L40S"
    assert accelerators.prior("NVIDIA-L40") != accelerators.prior("NVIDIA-L4")
    assert accelerators.prior("NVIDIA-A10") != accelerators.prior("NVIDIA-A10G")


@pytest.mark.parametrize("product", ["GPU", "NVIDIA-GH200-480GB", "L4X", "", "x" * 128])
def test_an_unknown_product_has_no_prior(product: str) -> None:
    assert accelerators.prior(product) is None


@given(st.sampled_from(accelerators.KNOWN))
def test_a_prior_lies_between_the_compute_and_the_bandwidth_ratio(
    gpu: accelerators.Accelerator,
) -> None:
    compute = gpu.tflops / accelerators.REFERENCE.tflops
    bandwidth = gpu.gb_per_second / accelerators.REFERENCE.gb_per_second
    assert min(compute, bandwidth) - 0.005 <= gpu.relative_throughput
    assert gpu.relative_throughput <= max(compute, bandwidth) + 0.005


def test_a_declared_throughput_wins_then_the_prior_then_the_reference() -> None:
    declared = pool(accelerator="NVIDIA-L4", relativeThroughput=0.3)
    assert (declared.speed, declared.speed_source) == (0.3, gpupool.SpeedSource.DECLARED)
    prior = pool(accelerator="NVIDIA-L4")
    assert (prior.speed, prior.speed_source) == (0.1, gpupool.SpeedSource.ACCELERATOR)
    unknown = pool(accelerator="ACME-9000")
    assert (unknown.speed, unknown.speed_source) == (1.0, gpupool.SpeedSource.DEFAULT)


def test_the_prior_sizes_a_replica_until_a_speed_is_learned() -> None:
    """Ten L4 replicas stand in for one H100 replica until the L4s are measured."""
    l4 = pool(accelerator="NVIDIA-L4")
    assert l4.planned_units(120.0) == pytest.approx(0.1)
    assert l4.planned_units(120.0, throughput=0.2) == pytest.approx(0.2)


def test_the_pool_status_says_what_speed_sizing_uses_and_where_it_comes_from() -> None:
    status = placement.pool_status("l4", pool(accelerator="NVIDIA-L4"), [], [])
    assert status.relative_throughput == pytest.approx(0.1)
    assert status.relative_throughput_source is gpupool.SpeedSource.ACCELERATOR
    shown = status.to_kube()
    assert shown["relativeThroughput"] == pytest.approx(0.1)
    assert shown["relativeThroughputSource"] == "Accelerator"


def _service(*pools: str) -> modelservice.ModelServiceSpec:
    return modelservice.ModelServiceSpec.model_validate(
        {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "pools": list(pools)}
    )


def test_a_prior_compares_pools_and_a_service_on_one_pool_counts_in_its_replicas() -> None:
    """`replicas: 1` on an L4-only service is one L4 replica, as before there were priors; beside
    an H100 pool the same L4 pool counts its prior, 0.10."""
    pools = {
        "h100": pool(),
        "l4": pool(accelerator="NVIDIA-L4", gpuMemoryGib=24),
        "l4-declared": pool(accelerator="NVIDIA-L4", gpuMemoryGib=24, relativeThroughput=0.3),
    }
    assert throughput.in_use(_service("l4"), None, pools) == {"l4": 1.0}
    assert throughput.in_use(_service("l4-declared"), None, pools) == {"l4-declared": 0.3}
    assert throughput.in_use(_service("h100", "l4"), None, pools) == {}
    units = {name: pools[name].planned_units(120.0) for name in ("h100", "l4")}
    assert units == pytest.approx({"h100": 1.0, "l4": 0.1})
