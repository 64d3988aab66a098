"""The shape of a `/metrics` scrape: what must match between real vLLM and the simulator.

Values differ between any two engines; what queries and dashboards depend on is the shape: which
metric families exist, their types, their label names and their histogram buckets. This module
reduces a scrape to that shape (with prometheus_client's own parser) and lists the differences, so
the contract test and the unit tests compare engines the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class FamilyShape:
    name: str
    """The family name as the parser reports it (counters without `_total`)."""
    type: str
    label_names: frozenset[str]
    """Label names of its samples, `le` and `quantile` excluded."""
    buckets: tuple[float, ...]
    """Histogram upper bounds (without +Inf); empty for other types."""
    sample_names: frozenset[str]
    """Names on the wire: `vllm:prompt_tokens_total`, `..._bucket`, `..._created`..."""


def scrape_shape(text: str) -> dict[str, FamilyShape]:
    """Parses a Prometheus text exposition into one `FamilyShape` per family."""
    shapes: dict[str, FamilyShape] = {}
    for family in text_string_to_metric_families(text):
        labels: set[str] = set()
        bounds: set[float] = set()
        sample_names: set[str] = set()
        for sample in family.samples:
            sample_names.add(sample.name)
            labels.update(k for k in sample.labels if k not in {"le", "quantile"})
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                bound = float(sample.labels["le"])
                if bound != float("inf"):
                    bounds.add(bound)
        shapes[family.name] = FamilyShape(
            name=family.name,
            type=family.type,
            label_names=frozenset(labels),
            buckets=tuple(sorted(bounds)),
            sample_names=frozenset(sample_names),
        )
    return shapes


def family_of(series_name: str, shapes: dict[str, FamilyShape]) -> FamilyShape | None:
    """The family a wire name belongs to: `vllm:prompt_tokens_total` -> `vllm:prompt_tokens`."""
    for shape in shapes.values():
        if series_name == shape.name or series_name in shape.sample_names:
            return shape
    return None


def shape_differences(
    reference: dict[str, FamilyShape],
    candidate: dict[str, FamilyShape],
    names: Iterable[str],
) -> list[str]:
    """Human-readable differences of `candidate` from `reference` for the given series names
    (family or wire names). Empty when they match."""
    problems: list[str] = []
    for name in sorted(set(names)):
        want = family_of(name, reference)
        if want is None:
            problems.append(f"{name}: not in the reference scrape")
            continue
        have = family_of(name, candidate)
        if have is None:
            problems.append(f"{name}: missing")
            continue
        if have.type != want.type:
            problems.append(f"{name}: type {have.type}, expected {want.type}")
        if have.label_names != want.label_names:
            problems.append(
                f"{name}: labels {sorted(have.label_names)}, expected {sorted(want.label_names)}"
            )
        if have.buckets != want.buckets:
            problems.append(f"{name}: buckets {have.buckets}, expected {want.buckets}")
        if have.sample_names != want.sample_names:
            problems.append(
                f"{name}: series {sorted(have.sample_names)}, expected {sorted(want.sample_names)}"
            )
    return problems
