"""Which policy decides for a ModelService: `spec.scaling.policy` (and `advisoryPolicy`) resolved.

Built-in policies (thrifty, hpa, kpa, static) are always there; an importable `module:ClassName`
only when its module is named in THRIFTY_POLICY_MODULES, since importing a module runs its code
inside the operator. A policy that cannot be had (module not allowed or missing, bad parameters)
never stops a pass: thrifty's own policy decides, and the decision's message says why, so status
and Events show the mistake. Instances are cached per (name, parameters): policies are
deterministic and keep their memory in the state the pass carries, not in the instance.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thrifty.api import modelservice
from thrifty.policy import builtin, types

CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return CAMEL.sub("_", name).lower()


def _arguments(factory: Any, parameters: Mapping[str, float]) -> dict[str, Any]:
    """Parameters as the constructor wants them: snake_case, whole numbers for int fields."""
    ints = set()
    if dataclasses.is_dataclass(factory):
        ints = {f.name for f in dataclasses.fields(factory) if str(f.type) in ("int", "int | None")}
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        name = _snake(key)
        out[name] = int(value) if name in ints and float(value).is_integer() else value
    return out


@dataclass
class Registry:
    """Resolves PolicyRefs to policies (`thrifty.autoscaler.plan.PolicyChooser`)."""

    allowed_modules: frozenset[str] = frozenset()
    default: types.ScalingPolicy = field(default_factory=lambda: builtin.builtin_policy("thrifty"))
    cache: dict[tuple[str, tuple[tuple[str, float], ...]], types.ScalingPolicy | str] = field(
        default_factory=dict
    )

    def policy_for(self, ms: modelservice.ModelService) -> tuple[types.ScalingPolicy, str]:
        ref = ms.spec.scaling.policy
        if ref.name == "thrifty" and not ref.parameters:
            return self.default, ""
        found = self.resolve(ref)
        if isinstance(found, str):
            return self.default, f"policy {ref.name} unavailable ({found}); thrifty decided"
        return found, ""

    def advisory_for(self, ms: modelservice.ModelService) -> types.ScalingPolicy | str | None:
        ref = ms.spec.scaling.advisory_policy
        return None if ref is None else self.resolve(ref)

    def resolve(self, ref: modelservice.PolicyRef) -> types.ScalingPolicy | str:
        """The policy, or why it cannot be had."""
        key = (ref.name, tuple(sorted(ref.parameters.items())))
        if key not in self.cache:
            self.cache[key] = self._build(ref)
        return self.cache[key]

    def _build(self, ref: modelservice.PolicyRef) -> types.ScalingPolicy | str:
        factory: Any
        if ref.name in builtin.BUILTIN_CLASSES:
            factory = builtin.BUILTIN_CLASSES[ref.name]
        else:
            module_name, _, class_name = ref.name.partition(":")
            if module_name not in self.allowed_modules:
                return f"module {module_name} is not in THRIFTY_POLICY_MODULES"
            try:
                factory = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError) as error:
                return f"cannot load {ref.name}: {error}"
        try:
            policy = factory(**_arguments(factory, ref.parameters))
        except (TypeError, ValueError) as error:
            return f"bad parameters: {error}"
        if not callable(getattr(policy, "decide", None)):
            return f"{ref.name} has no decide(observation, state)"
        if not isinstance(getattr(policy, "name", None), str):
            return f"{ref.name} has no name"
        chosen: types.ScalingPolicy = policy
        return chosen
