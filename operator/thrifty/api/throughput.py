"""Each pool's relative throughput for one ModelService, learned from its own replicas.

A GPUPool declares `relativeThroughput`, a prior from its GPU type: what one replica there
serves against a reference replica (an H100 = 1). How fast a replica really is depends on the
model and engine arguments too (an L4 is about 0.3 of an H100 for an 8B model, less for a
longer context), so thrifty measures it once a service runs on two pools or more:

1. Per pool, over the last `WINDOW_SECONDS`, the prefill seconds per prompt token of the
   requests that finished there (vLLM's `vllm:request_prefill_time_seconds` and
   `vllm:request_prompt_tokens` histograms, whose sums are observed together at each finish).
   Prefill is the replica's compute at work on the request's own tokens, the part of TTFT that
   is no queue, and it scales with the GPU's speed as the replica's capacity does.
2. Pools that served over the whole window (a replica Ready throughout: they all saw the same
   traffic, backlogs and lulls included) with at least `MIN_REQUESTS` such requests are compared
   with the one among them whose declared `relativeThroughput` is highest (the anchor, chosen
   by what is declared so that what is learned cannot pick it and feed on itself): a pool that
   takes twice the anchor's seconds per token is worth half of the anchor (its learned value,
   else its declared one; the anchor itself is not rewritten).
   One pool alone teaches nothing: its absolute speed is what the policy learns as capacity.
3. A measurement replaces the value in use (learned, else declared) only when it differs from
   it by more than `CHANGE`, so noise costs no status writes and no churn of the spread. It is
   kept while the pool has no replicas, and forgotten when the pool's GPU type or the service's
   model or engine arguments change (`basis`).

The autoscaler and the reconciler's spread both read it from status (`learned`), so they count
a replica in the same reference replicas; the simulator runs the same code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from thrifty.api import gpupool, modelservice

WINDOW_SECONDS = 600
"""How far back a measurement reaches: minutes of finished requests, not one burst."""
MIN_REQUESTS = 50
"""Finished requests a pool needs in the window to be measured (and the anchor too)."""
CHANGE = 0.10
"""A new measurement replaces the stored one only when it differs by more than this share."""
LOWEST, HIGHEST = 0.01, 100.0
"""The bounds of `relativeThroughput`, which a measurement stays inside."""


@dataclass(frozen=True)
class PoolPrefill:
    """What one pool's replicas of a service did over the window: sums over finished requests."""

    pool: str
    prefill_seconds: float
    prompt_tokens: float
    requests: float

    def seconds_per_token(self) -> float | None:
        if self.requests < MIN_REQUESTS or self.prompt_tokens <= 0 or self.prefill_seconds <= 0:
            return None
        return self.prefill_seconds / self.prompt_tokens


def engine_digest(spec: modelservice.ModelServiceSpec) -> str:
    """A short digest of the model and engine arguments: what a replica's speed depends on
    besides its GPUs."""
    engine = json.dumps(
        [spec.model.model_dump(mode="json"), spec.engine.model_dump(mode="json")],
        sort_keys=True,
    )
    return hashlib.sha256(engine.encode()).hexdigest()[:12]


def basis(pool: gpupool.GPUPoolSpec, spec: modelservice.ModelServiceSpec) -> str:
    """What a measurement holds for: the pool's GPU type and the service's model and engine."""
    return f"{pool.accelerator}/{pool.gpu_memory_gib}/{engine_digest(spec)}"


def learned(
    spec: modelservice.ModelServiceSpec,
    status: modelservice.ModelServiceStatus | None,
    pools: Mapping[str, gpupool.GPUPoolSpec],
) -> dict[str, float]:
    """The measured relative throughput of each pool that has one still valid for ``spec``."""
    block = status.autoscaler if status is not None else None
    found: dict[str, float] = {}
    for entry in block.pool_throughput if block is not None else ():
        pool = pools.get(entry.pool)
        if pool is not None and entry.pool in spec.pools and entry.basis == basis(pool, spec):
            found[entry.pool] = entry.relative_throughput
    return found


def in_use(
    spec: modelservice.ModelServiceSpec,
    status: modelservice.ModelServiceStatus | None,
    pools: Mapping[str, gpupool.GPUPoolSpec],
) -> dict[str, float]:
    """The relative throughput a pool is sized with for ``spec`` where it is not the pool's own
    (`GPUPoolSpec.speed`): what was learned there (`learned`), and for a service offered a
    single pool, that pool's declared value, else 1. A prior compares GPU types; a service on
    one pool counts in replicas of that pool, so that `replicas: 1` on an L4 pool stays one L4
    replica rather than the ten its datasheet prior against an H100 would make it."""
    found = learned(spec, status, pools)
    offered = [name for name in spec.pools if name in pools]
    if len(offered) == 1 and offered[0] not in found:
        declared = pools[offered[0]].relative_throughput
        found[offered[0]] = 1.0 if declared is None else declared
    return found


def measure(
    samples: Sequence[PoolPrefill], declared: Mapping[str, float], known: Mapping[str, float]
) -> dict[str, tuple[float, int]]:
    """(relative throughput, requests) of each measurable pool but the anchor (step 2); empty
    unless two pools or more are measurable. ``declared``: relativeThroughput by pool, in the
    service's order of preference (which breaks a tie for the anchor); ``known``: the anchor's
    value when it was learned."""
    rates = {
        one.pool: (rate, int(one.requests))
        for one in samples
        if one.pool in declared and (rate := one.seconds_per_token()) is not None
    }
    if len(rates) < 2:
        return {}
    order = list(declared)
    anchor = max(rates, key=lambda name: (declared[name], -order.index(name)))
    anchor_rate = rates[anchor][0]
    worth = known.get(anchor, declared[anchor])
    return {
        name: (min(max(worth * anchor_rate / rate, LOWEST), HIGHEST), requests)
        for name, (rate, requests) in rates.items()
        if name != anchor
    }


def update(
    spec: modelservice.ModelServiceSpec,
    status: modelservice.ModelServiceStatus | None,
    pools: Mapping[str, gpupool.GPUPoolSpec],
    samples: Sequence[PoolPrefill],
    served: Collection[str],
) -> list[modelservice.PoolThroughput]:
    """Status's `autoscaler.poolThroughput` after this window's samples (step 3); ``served``:
    the pools that served over the whole window (the others are not measured)."""
    offered = {name: pools[name] for name in spec.pools if name in pools}
    kept = learned(spec, status, offered)
    block = status.autoscaler if status is not None else None
    before = {e.pool: e for e in (block.pool_throughput if block is not None else ())}
    declared = {name: pool.speed for name, pool in offered.items()}
    fresh = measure([one for one in samples if one.pool in served], declared, kept)
    result = []
    for name, pool in offered.items():
        old = kept.get(name)
        if name in fresh:
            value, requests = fresh[name]
            now = declared[name] if old is None else old
            if abs(value - now) > CHANGE * now:
                result.append(
                    modelservice.PoolThroughput(
                        pool=name,
                        relative_throughput=round(value, 3),
                        requests=requests,
                        basis=basis(pool, spec),
                    )
                )
                continue
        if old is not None:
            result.append(before[name])
    return result
