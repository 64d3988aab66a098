"""A GPU type's prior relative throughput, from its datasheet, until thrifty learns the real one.

A serving replica spends its time in prefill, bound by the GPU's dense 16-bit tensor throughput,
and in decode, bound by its memory bandwidth; the traffic's mix of prompt and output tokens
decides the share of each. Against the reference (an H100 SXM: 989 TFLOPS, 3,350 GB/s) a GPU's
ratio therefore lies between its compute ratio and its bandwidth ratio. The prior is their
geometric mean, which is off by at most the square root of their quotient either way (for an L4,
0.12 and 0.09: the prior 0.10 is within 17 % of both). It is a prior only: what a replica
serves also depends on the model, its precision and the engine arguments, and
`thrifty.api.throughput` replaces it with what the pool's replicas are measured to serve.

Figures are the vendors' datasheet peaks without sparsity (FP16 where a GPU has no BF16).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    family: str
    """The product token as `nvidia.com/gpu.product` spells it (H100, L40S, MI300X)."""
    variant: frozenset[str]
    """Further tokens that must all appear (PCIE, NVL, 40GB); empty for the family's default."""
    tflops: float
    """Dense 16-bit tensor TFLOPS."""
    gb_per_second: float
    """Memory bandwidth."""

    def matches(self, tokens: frozenset[str]) -> bool:
        return self.family in tokens and self.variant <= tokens

    @property
    def relative_throughput(self) -> float:
        compute = self.tflops / REFERENCE.tflops
        bandwidth = self.gb_per_second / REFERENCE.gb_per_second
        return round(math.sqrt(compute * bandwidth), 2)


def _gpu(family: str, tflops: float, gb_per_second: float, *variant: str) -> Accelerator:
    return Accelerator(family, frozenset(variant), tflops, gb_per_second)


REFERENCE = _gpu("H100", 989.0, 3350.0)

# Most specific first: the first entry whose tokens all appear wins.
KNOWN: tuple[Accelerator, ...] = (
    _gpu("H100", 756.0, 2000.0, "PCIE"),
    _gpu("H100", 835.0, 3900.0, "NVL"),
    REFERENCE,
    _gpu("H200", 989.0, 4800.0),
    _gpu("B200", 2250.0, 8000.0),
    _gpu("A100", 312.0, 1555.0, "40GB"),
    _gpu("A100", 312.0, 1935.0, "PCIE"),
    _gpu("A100", 312.0, 2039.0),
    _gpu("L40S", 362.0, 864.0),
    _gpu("L40", 181.0, 864.0),
    _gpu("L4", 121.0, 300.0),
    _gpu("A10G", 70.0, 600.0),
    _gpu("A10", 125.0, 600.0),
    _gpu("T4", 65.0, 320.0),
    _gpu("V100", 125.0, 900.0),
    _gpu("MI300X", 1307.0, 5300.0),
)


def tokens(product: str) -> frozenset[str]:
    """The words of a product label: NVIDIA-A100-SXM4-40GB is {NVIDIA, A100, SXM4, 40GB}. Whole
    words, so that an L4 is never read out of an L40S."""
    return frozenset(word for word in re.split(r"[^A-Z0-9]+", product.upper()) if word)


def find(product: str) -> Accelerator | None:
    words = tokens(product)
    return next((gpu for gpu in KNOWN if gpu.matches(words)), None)


def prior(product: str) -> float | None:
    """The prior relative throughput of a GPU labelled ``product``; None if it is not known."""
    gpu = find(product)
    return None if gpu is None else gpu.relative_throughput
