"""Which endpoint takes a request: the power of two choices on requests in flight.

Two endpoints drawn at random, the one with fewer requests in flight through this gateway wins
(ties: the first drawn). As good as least-loaded at spreading load (Mitzenmacher), without every
gateway replica herding onto the same least-loaded endpoint from a stale view, and O(1) per pick.
Endpoints already tried for this request (a refused connection, a draining engine) are skipped.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from thrifty_runtime.gateway.catalog import Endpoint


def pick(
    endpoints: Sequence[Endpoint], tried: Collection[Endpoint], rng: random.Random
) -> Endpoint | None:
    candidates = [e for e in endpoints if e not in tried] if tried else endpoints
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.sample(candidates, 2)
    return first if first.in_flight <= second.in_flight else second
