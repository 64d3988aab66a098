"""The user policy of docs/policy.md runs as documented, so the worked example stays correct."""

from __future__ import annotations

import re
import sys
import types as pytypes
from collections.abc import Iterator
from pathlib import Path

import pytest
from policy_builders import observation, signals

from thrifty.policy import types

DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"


@pytest.fixture
def mypolicies() -> Iterator[pytypes.ModuleType]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Writing your own policy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/policy.md lost its example policy"
    module = pytypes.ModuleType("mypolicies")
    sys.modules["mypolicies"] = module  # dataclasses look their module up while being made
    exec(compile(match.group(1), str(DOC), "exec"), module.__dict__)
    yield module
    del sys.modules["mypolicies"]


def test_example_policy_sizes_on_the_queue(mypolicies: pytypes.ModuleType) -> None:
    policy = mypolicies.QueueFloorPolicy()
    decision = policy.decide(observation(sig=signals(requests_waiting=40.0), desired=2), {})
    assert decision.replicas == 5  # ceil(40 / 8)
    assert decision.reason == types.Reason.SCALE_UP
    assert decision.message.startswith("+3 replicas: 40 waiting / 8 per replica; +$9.00/h")


def test_example_policy_takes_command_line_parameters(mypolicies: pytypes.ModuleType) -> None:
    # What `--policy mypolicies:QueueFloorPolicy,target_per_replica=4,floor=2` constructs.
    policy = mypolicies.QueueFloorPolicy(
        target_per_replica=4, floor=2, name="mypolicies:QueueFloorPolicy,target_per_replica=4"
    )
    assert (
        policy.decide(observation(sig=signals(requests_waiting=0.0), desired=1), {}).replicas == 2
    )
    held = policy.decide(observation(missing=True, desired=3), {})
    assert held.replicas == 3
    assert held.reason == types.Reason.METRICS_UNAVAILABLE
