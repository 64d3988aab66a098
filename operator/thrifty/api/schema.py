"""Turn a pydantic JSON Schema into a Kubernetes structural schema (OpenAPI v3 subset).

pydantic emits JSON Schema 2020-12 with ``$ref``s, ``anyOf`` for optional fields and numeric
``exclusiveMinimum``; the API server wants every type inlined, no nulls, booleans for exclusive
bounds and no ``additionalProperties`` next to ``properties``. Doing the translation here, once,
keeps the models readable and the CRDs structural.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

JsonSchema = dict[str, Any]

_DROPPED_KEYS = frozenset({"title", "$defs", "examples"})


def structural(schema: Mapping[str, Any]) -> JsonSchema:
    """The structural equivalent of a pydantic model's ``model_json_schema()``."""
    defs: Mapping[str, Any] = schema.get("$defs", {})
    return _convert(schema, defs)


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> JsonSchema:
    """Inline a ``$ref`` (keys beside it, like a field's description, win over the target's)."""
    ref = node.get("$ref")
    if ref is None:
        return dict(node)
    target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
    merged = _resolve(target, defs)
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _without_null(node: Mapping[str, Any]) -> JsonSchema:
    """``anyOf: [X, null]`` (an optional field) becomes X; absence means None on the wire."""
    branches = node.get("anyOf")
    if branches is None:
        return dict(node)
    concrete = [b for b in branches if b.get("type") != "null"]
    if len(concrete) != 1:
        raise ValueError(f"cannot express a union of {len(concrete)} types structurally: {node}")
    merged = dict(concrete[0])
    merged.update({k: v for k, v in node.items() if k != "anyOf"})
    return merged


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any]) -> JsonSchema:
    out = _without_null(_resolve(_without_null(node), defs))
    out = _resolve(out, defs)
    for key in _DROPPED_KEYS:
        out.pop(key, None)
    if out.get("default", 0) is None:
        del out["default"]
    _fix_exclusive_bounds(out)
    _fractional_bounds_in_cel(out)
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
        out["type"] = "object"
        if "properties" in out:  # known fields of an object that keeps the rest as written
            out["properties"] = {k: _convert(v, defs) for k, v in out["properties"].items()}
        return out
    if "properties" in out:
        out.pop("additionalProperties", None)
        out["properties"] = {k: _convert(v, defs) for k, v in out["properties"].items()}
        _default_lists_to_empty(out)
    elif isinstance(out.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _convert(out["additionalProperties"], defs)
    if isinstance(out.get("items"), Mapping):
        out["items"] = _convert(out["items"], defs)
    return out


def _default_lists_to_empty(out: JsonSchema) -> None:
    """An optional list defaults to []: what the models assume, and CEL rules can iterate it."""
    required = set(out.get("required", []))
    for name, prop in out["properties"].items():
        if name not in required and prop.get("type") == "array" and "default" not in prop:
            prop["default"] = []


def _fix_exclusive_bounds(out: JsonSchema) -> None:
    """JSON Schema's numeric exclusive bounds become OpenAPI v3's boolean flags."""
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound] = value
            out[exclusive] = True


def _fractional_bounds_in_cel(out: JsonSchema) -> None:
    """A number's fractional bound is also a CEL rule: the API server checks a whole-number value
    (0, 1e9) against ``minimum``/``maximum`` truncated to an integer, so ``minimum: 0.01`` alone
    lets 0 through. CEL compares doubles."""
    if out.get("type") != "number":
        return
    rules = []
    for bound, exclusive, strict, loose in (
        ("minimum", "exclusiveMinimum", ">", ">="),
        ("maximum", "exclusiveMaximum", "<", "<="),
    ):
        value = out.get(bound)
        if isinstance(value, float) and not value.is_integer():
            operator = strict if out.get(exclusive) else loose
            rules.append(
                {"rule": f"self {operator} {value!r}", "message": f"must be {operator} {value!r}"}
            )
    if rules:
        out.setdefault("x-kubernetes-validations", []).extend(rules)


def walk(node: Mapping[str, Any], path: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    """Every schema node with its dotted path; used by tests and checks over the whole schema."""
    found: list[tuple[str, Mapping[str, Any]]] = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found.extend(walk(child, f"{path}.{name}"))
    items = node.get("items")
    if isinstance(items, Mapping):
        found.extend(walk(items, f"{path}[]"))
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        found.extend(walk(extra, f"{path}{{}}"))
    return found
