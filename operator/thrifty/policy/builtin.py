"""The policies thrifty ships, by name, so a command line or a benchmark can pick one by a word.

Typing each factory as returning `ScalingPolicy` also makes mypy check that every built-in policy
really fulfils the contract in `thrifty.policy.types`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from thrifty.policy import hpa, kpa, planner, static, types


def _thrifty(**params: Any) -> types.ScalingPolicy:
    return planner.ThriftyPolicy(**params)


def _hpa(**params: Any) -> types.ScalingPolicy:
    return hpa.HpaPolicy(**params)


def _kpa(**params: Any) -> types.ScalingPolicy:
    return kpa.KpaPolicy(**params)


def _static(**params: Any) -> types.ScalingPolicy:
    return static.StaticPolicy(**params)


BUILTIN_POLICIES: Mapping[str, Callable[..., types.ScalingPolicy]] = {
    "thrifty": _thrifty,
    "hpa": _hpa,
    "kpa": _kpa,
    "static": _static,
}
"""Name -> factory taking the policy's constructor parameters as keywords."""


BUILTIN_CLASSES: Mapping[str, type] = {
    "thrifty": planner.ThriftyPolicy,
    "hpa": hpa.HpaPolicy,
    "kpa": kpa.KpaPolicy,
    "static": static.StaticPolicy,
}
"""Name -> class, for callers that look at the constructor's fields (ModelService parameters)."""


def builtin_policy(name: str, **params: Any) -> types.ScalingPolicy:
    """A built-in policy by name, e.g. ``builtin_policy("hpa", target_per_replica=5.0)``."""
    try:
        factory = BUILTIN_POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_POLICIES))
        raise ValueError(f"unknown policy {name!r}; built-in policies: {known}") from None
    return factory(**params)
