"""Baseline: static provisioning, a fixed replica count whatever the traffic.

What a team does without an autoscaler: provision for the peak. It bounds the comparison from the
other side (no scaling delay, maximum idle cost), and a sweep of its one knob traces the
cost-versus-SLO curve of never scaling.
"""

from __future__ import annotations

from dataclasses import dataclass

from thrifty.policy import common, types


@dataclass
class StaticPolicy:
    """Always ``replicas`` replicas; neither the spec's bounds nor the metrics move it."""

    replicas: int = 1
    name: str = "static"

    def decide(self, observation: types.Observation, state: types.PolicyState) -> types.Decision:
        signals = common.usable_signals(observation)
        tokens = common.served_tokens_per_second(signals) if signals is not None else 0.0
        current = observation.replicas.desired
        return common.decision(
            observation,
            self.replicas,
            common.movement_reason(current, self.replicas),
            types.Bound.NONE,
            f"static: {self.replicas} replicas provisioned",
            tokens,
            state,
        )
