"""The built-in policy registry: every name builds a policy that answers the contract."""

from __future__ import annotations

import pytest
from policy_builders import observation

from thrifty.policy import builtin, types


@pytest.mark.parametrize("name", sorted(builtin.BUILTIN_POLICIES))
def test_every_builtin_policy_decides(name: str) -> None:
    policy = builtin.builtin_policy(name)
    assert policy.name == name
    decision = policy.decide(observation(), {})
    assert isinstance(decision, types.Decision)
    assert decision.replicas >= 0


def test_parameters_reach_the_policy() -> None:
    policy = builtin.builtin_policy("static", replicas=7)
    assert policy.decide(observation(), {}).replicas == 7


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="built-in policies: hpa, kpa, static, thrifty"):
        builtin.builtin_policy("magic")
