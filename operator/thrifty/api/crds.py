"""The three CustomResourceDefinitions, built from the models (pure: no files, no cluster).

Names, short names, printer columns and subresources live here next to the schema they describe;
``crdgen`` only writes the result to ``crds/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from thrifty.api import GROUP, VERSION, costbudget, gpupool, modelservice, schema


@dataclass(frozen=True)
class Kind:
    """How one resource kind is named and shown."""

    model: type[BaseModel]
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    printer_columns: tuple[dict[str, Any], ...]
    scale: dict[str, str] | None = None


def _column(name: str, json_path: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "jsonPath": json_path, **extra}


_AGE = _column("Age", ".metadata.creationTimestamp", "date")
_READY = _column("Status", '.status.conditions[?(@.type=="Ready")].reason')

MODEL_SERVICE = Kind(
    model=modelservice.ModelService,
    kind="ModelService",
    plural="modelservices",
    singular="modelservice",
    short_names=("ms", "msvc"),
    namespaced=True,
    printer_columns=(
        _column("Pools", ".status.placement"),
        _column("Ready", ".status.readyReplicas", "integer"),
        _column("Desired", ".status.desiredReplicas", "integer"),
        _column("Queue", ".status.queueDepth", "number"),
        _column("$/Hour", ".status.dollarsPerHour", "number"),
        _column("$/1M Tokens", ".status.dollarsPerMillionTokens", "number"),
        _column("Ref $/1M", ".status.referenceDollarsPerMillionTokens", "number", priority=1),
        _READY,
        _column("Model", ".spec.model.uri", priority=1),
        _column("GPUs/Replica", ".status.gpusPerReplica", "integer", priority=1),
        _column("Mode", ".spec.scaling.mode", priority=1),
        _AGE,
    ),
    scale={
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
)

GPU_POOL = Kind(
    model=gpupool.GPUPool,
    kind="GPUPool",
    plural="gpupools",
    singular="gpupool",
    short_names=("gpool", "gp"),
    namespaced=False,
    printer_columns=(
        _column("Accelerator", ".spec.accelerator"),
        _column("Capacity", ".spec.capacityType"),
        _column("$/GPU-Hour", ".spec.pricePerGpuHour", "number"),
        _column("Speed", ".status.relativeThroughput", "number", priority=1),
        _column("Nodes", ".status.nodes", "integer"),
        _column("Allocatable", ".status.gpusAllocatable", "integer"),
        _column("Used", ".status.gpusUsed", "integer"),
        _column("Free", ".status.gpusFree", "integer"),
        _AGE,
    ),
)

COST_BUDGET = Kind(
    model=costbudget.CostBudget,
    kind="CostBudget",
    plural="costbudgets",
    singular="costbudget",
    short_names=("cb",),
    namespaced=True,
    printer_columns=(
        _column("Max $/Hour", ".spec.maxDollarsPerHour", "number"),
        _column("$/Hour", ".status.dollarsPerHour", "number"),
        _column("Remaining", ".status.remainingDollarsPerHour", "number"),
        _column("Enforcement", ".spec.enforcement"),
        _READY,
        _AGE,
    ),
)

KINDS = (MODEL_SERVICE, GPU_POOL, COST_BUDGET)


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, ready to serialise."""
    body = schema.structural(kind.model.model_json_schema(by_alias=True, mode="validation"))
    body["properties"] = {
        "apiVersion": {"type": "string", "description": "thrifty.dev/v1alpha1"},
        "kind": {"type": "string", "description": kind.kind},
        "metadata": {"type": "object"},
        **body["properties"],
    }
    subresources: dict[str, Any] = {"status": {}}
    if kind.scale is not None:
        subresources["scale"] = dict(kind.scale)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "thrifty"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["thrifty"],
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": body},
                    "subresources": subresources,
                    "additionalPrinterColumns": [dict(c) for c in kind.printer_columns],
                }
            ],
        },
    }


def file_name(kind: Kind) -> str:
    return f"{GROUP}_{kind.plural}.yaml"
