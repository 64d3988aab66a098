"""What thrifty's policy remembers between ticks: typed, frozen, versioned, bounded.

The operator keeps it in memory and writes it to status (`Decision.state` is its JSON form), so a
restarted operator goes on where the last one stopped. Reading it never raises: status may hold an
older version, a hand edit or nothing, and each bad field just counts as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from thrifty.policy import types

VERSION = 2
MAX_HISTORY = 64
"""Samples kept per series: a 15-minute window at a 15-s cadence fits; a tighter cadence keeps the
newest. Status and memory stay bounded whatever the window."""


class Source:
    """Where the capacity estimate comes from. Only saturated replicas (or the user's prior) show
    what a replica *can* do; throughput below saturation only shows what it did."""

    PRIOR = "prior"
    SATURATED = "saturated"
    LOWER_BOUND = "lower-bound"


Series = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class State:
    version: int = VERSION
    shape: str = ""
    """The replica shape (`PolicySpec.replica_shape`) the learned values belong to."""
    capacity: float | None = None
    """Saturated throughput of one replica, prompt + generated tokens/s."""
    capacity_source: str = ""
    batch_capacity: float | None = None
    """Where the running batch's slowdown with load says a replica saturates (`batching`)."""
    batch_error: float | None = None
    """The relative standard error of ``batch_capacity``."""
    served_max: float | None = None
    """The most one replica was seen to serve (decaying slowly): capacity is never below it."""
    saturated_batch: float | None = None
    """Requests running per replica in the fullest batches a saturated window showed (decaying
    slowly): a queue with batches far lighter sits on a few replicas (`estimate`)."""
    base_ttft: float | None = None
    """Time to first token at the target percentile with no load (prefill alone), seconds."""
    queue_scale: float | None = None
    """Seconds the load adds to that percentile per unit of ``u / (1 - u)`` at utilisation u:
    the queueing the traffic's burstiness causes (see `plan`)."""
    tokens_per_request: float | None = None
    headroom: float = 0.0
    """The feedback term: how much more (> 0) or less (< 0, down to none) burst headroom than the
    percentile's z the measured attainment asks for. Bounded; see `estimate.feedback`."""
    first_token_rate: float | None = None
    """First tokens per second, averaged over the feedback's horizon: weighs each tick's error."""
    late_token_rate: float | None = None
    """First tokens per second over the target, averaged alike: the promise as kept lately."""
    demand: Series = ()
    """(time, tokens/s demanded) over the forecast window."""
    arrivals: Series = ()
    """(time, prompt tokens/s demanded) over the forecast window: the same demand as the
    requests' arrival shows it, before their generated tokens follow (`forecast`)."""
    needs: Series = ()
    """(time, replicas needed) over the scale-down window."""
    speed: Series = ()
    """(served tokens/s per replica, generated tokens/s per running sequence) of the newest
    settled ticks: the samples `batching.fit` draws its line through."""
    ready: int = -1
    ready_since: float | None = None
    grew_at: float | None = None
    """When the ready count last rose: first tokens measured up to a window (and their TTFT)
    later include requests that queued for the smaller fleet."""
    fell_at: float | None = None
    """When the ready count last fell: a rate over a window it fell in counts what the removed
    replicas served as the rest's."""
    last_seen: float | None = None
    waiting: float | None = None
    queue_growth: float = 0.0
    saturated_at: float | None = None
    """When the window last showed a material queue (or full batches): first tokens measured
    within a TTFT window of it still carry its waits."""
    missed_replicas: int | None = None
    """The most ready replicas that missed the target lately, at ``missed_demand`` tok/s: the
    fleet goes back to that count only once demand is clearly lower."""
    missed_demand: float | None = None
    missed_at: float | None = None
    below_since: float | None = None
    idle_since: float | None = None
    last_scale_up: float | None = None
    last_scale_down: float | None = None

    def to_json(self) -> dict[str, types.JSONValue]:
        out: dict[str, types.JSONValue] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = [[at, number] for at, number in value]
            out[item.name] = value
        return out


def load(raw: Mapping[str, Any]) -> State:
    """The state from its JSON form; anything unreadable counts as unknown (never raises)."""
    if raw.get("version") != VERSION:
        return _migrated(raw)
    values: dict[str, Any] = {}
    for item in fields(State):
        value = raw.get(item.name)
        if item.name in ("demand", "arrivals", "needs", "speed"):
            values[item.name] = _series(value)
        elif item.name in ("shape", "capacity_source"):
            values[item.name] = value if isinstance(value, str) else ""
        elif item.name == "missed_replicas":
            number = _number(value)
            values[item.name] = int(number) if number is not None and number >= 0 else None
        elif item.name in ("version", "ready"):
            number = _number(value)
            values[item.name] = int(number) if number is not None else getattr(State(), item.name)
        elif item.name == "headroom" or item.name == "queue_growth":
            values[item.name] = _number(value) or 0.0
        else:
            values[item.name] = _number(value)
    state = State(**values)
    if state.capacity is not None and state.capacity <= 0.0:
        state = replace(state, capacity=None, capacity_source="")
    return state


def _migrated(raw: Mapping[str, Any]) -> State:
    """Version 1 (before the planner) kept a capacity and tokens per request worth carrying over."""
    capacity = _number(raw.get("capacity_tokens_per_second_per_replica"))
    source = raw.get("capacity_source")
    if capacity is None or capacity <= 0.0 or source not in (Source.PRIOR, Source.SATURATED):
        return State()
    return State(
        capacity=capacity,
        capacity_source=str(source),
        tokens_per_request=_number(raw.get("tokens_per_request")),
    )


def trimmed(series: Sequence[tuple[float, float]], now: float, window: float) -> Series:
    """The samples of the last ``window`` seconds (never from the future), at most MAX_HISTORY."""
    kept = [(at, value) for at, value in series if 0.0 <= now - at < window]
    return tuple(kept[-MAX_HISTORY:])


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _series(value: object) -> Series:
    if not isinstance(value, list):
        return ()
    pairs: list[tuple[float, float]] = []
    for item in value[-MAX_HISTORY:]:
        if isinstance(item, list) and len(item) == 2:
            at, number = _number(item[0]), _number(item[1])
            if at is not None and number is not None:
                pairs.append((at, number))
    return tuple(pairs)
