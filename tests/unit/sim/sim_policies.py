"""Small policies for the simulator's tests (the real ones live in thrifty.policy)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from thrifty.policy.types import Bound, Decision, Observation, PolicyState, Reason


def _decision(replicas: int, state: PolicyState) -> Decision:
    return Decision(replicas, Reason.STEADY, f"{replicas} replicas", Bound.NONE, 0.0, None, state)


@dataclass
class FixedPolicy:
    """Always asks for the same number of replicas."""

    replicas: int = 1
    name: str = "fixed"

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        return _decision(self.replicas, state)


@dataclass
class ScheduledPolicy:
    """Asks for replicas by time: [(from_seconds, replicas), ...]; records what it saw."""

    schedule: list[tuple[float, int]]
    name: str = "scheduled"
    seen: list[Observation] = field(default_factory=list)

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        self.seen.append(observation)
        replicas = self.schedule[0][1]
        for start, count in self.schedule:
            if observation.now_seconds >= start:
                replicas = count
        return _decision(replicas, state)


@dataclass
class QueuePolicy:
    """Requests in the system over a per-replica target: enough to exercise scaling both ways."""

    name: str = "queue"

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        signals = observation.signals
        if signals is None:
            return _decision(observation.replicas.desired, state)
        load = signals.requests_waiting + signals.requests_running
        wanted = math.ceil(load / observation.spec.queue_target_per_replica)
        spec = observation.spec
        return _decision(min(spec.max_replicas, max(spec.min_replicas, wanted)), state)
