"""Cost arithmetic: what replicas cost per hour and per million tokens, and how money is written.

Every decision states its cost, every status shows it and every budget is checked against it, so the
arithmetic lives in one pure module instead of being repeated (and rounded differently) at each
place.

Which tokens count for $/1M tokens: prompt plus generation tokens, everywhere in thrifty. A GPU
spends its time on both (prefill of long prompts dominates code completion, decode dominates chat),
so dividing by generation tokens alone would make a prompt-heavy service look many times dearer
than it is and would not compare across workloads; a total-token figure is what a blended API price
is compared with. The policy learns replica capacity in the same unit, so the cost and the capacity
of a replica are expressed per the same token.

Sums of money (a team's spend, a budget's remaining dollars) go through `Decimal` so that adding
many per-replica prices neither drifts nor flips a comparison against a cap by a rounding error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal

SECONDS_PER_HOUR = 3600.0
TOKENS_PER_MILLION = 1_000_000.0
UNLIMITED_REPLICAS = 2**31 - 1
"""What a cap allows when it cannot bind (a free replica, an astronomically large cap)."""


def replica_dollars_per_hour(gpus_per_replica: int, price_per_gpu_hour: float) -> float:
    """What one replica costs per hour."""
    return float(Decimal(gpus_per_replica) * _decimal(price_per_gpu_hour))


def dollars_per_hour(replicas: int, gpus_per_replica: int, price_per_gpu_hour: float) -> float:
    """What ``replicas`` replicas of ``gpus_per_replica`` GPUs cost per hour."""
    total = Decimal(replicas) * Decimal(gpus_per_replica) * _decimal(price_per_gpu_hour)
    return float(total)


def dollars_per_million_tokens(
    dollars_per_hour_spent: float, tokens_per_second: float
) -> float | None:
    """Cost of a million (prompt + generation) tokens at this spend and throughput.

    None when no tokens flow: the cost per token is then undefined, not infinite, and a cap on it
    cannot be met or missed.
    """
    if tokens_per_second <= 0.0 or not math.isfinite(tokens_per_second):
        return None
    tokens_per_hour = tokens_per_second * SECONDS_PER_HOUR
    return dollars_per_hour_spent * TOKENS_PER_MILLION / tokens_per_hour


def blended_reference_dollars_per_million_tokens(
    input_dollars_per_million: float,
    output_dollars_per_million: float,
    prompt_tokens_per_second: float,
    generation_tokens_per_second: float,
) -> float | None:
    """A reference price priced apart for input and output (as hosted APIs price them), blended
    into one $/1M (prompt + generation) tokens by the service's own token mix, so it compares with
    the realised $/1M tokens token for token.

    None when no tokens flow (no mix to blend by). A negative or non-finite rate counts as zero.
    """
    prompt = _rate(prompt_tokens_per_second)
    generation = _rate(generation_tokens_per_second)
    total = prompt + generation
    if total <= 0.0:
        return None
    return (input_dollars_per_million * prompt + output_dollars_per_million * generation) / total


def savings_fraction(realised: float | None, reference: float | None) -> float | None:
    """What self-hosting saves against the reference price, as a fraction of the reference:
    0.25 when a million tokens cost a quarter less than buying them, -1.0 when twice as much.

    None when either price is unknown, or the reference is free (no fraction of nothing).
    """
    if realised is None or reference is None or not math.isfinite(realised):
        return None
    if reference <= 0.0 or not math.isfinite(reference):
        return None
    return (reference - realised) / reference


def format_savings(fraction: float | None) -> str:
    """``saved 25 %`` or ``lost 100 %`` against the reference; ``no reference`` when unknown."""
    if fraction is None:
        return "no reference"
    verb = "lost" if round(fraction * 100) < 0 else "saved"
    return f"{verb} {abs(fraction) * 100:.0f} %"


def sum_dollars_per_hour(amounts: Iterable[float]) -> float:
    """Sums $/hour amounts exactly (as decimals of their shortest repr), then returns a float."""
    return float(sum((_decimal(amount) for amount in amounts), Decimal(0)))


def replicas_within_dollars_per_hour(cap_dollars_per_hour: float, replica_cost: float) -> int:
    """The most replicas whose spend stays at or under the cap (a free replica is unlimited)."""
    if replica_cost <= 0.0 or cap_dollars_per_hour / replica_cost >= UNLIMITED_REPLICAS:
        return UNLIMITED_REPLICAS
    if cap_dollars_per_hour <= 0.0:
        return 0
    return int(_decimal(cap_dollars_per_hour) // _decimal(replica_cost))


def replicas_within_dollars_per_million_tokens(
    cap_dollars_per_million_tokens: float, replica_cost: float, tokens_per_second: float
) -> int | None:
    """The most replicas whose projected $/1M tokens at this throughput stays at or under the cap.

    None when no tokens flow (the cap does not apply).
    """
    if tokens_per_second <= 0.0 or not math.isfinite(tokens_per_second):
        return None
    rough = (
        cap_dollars_per_million_tokens * tokens_per_second * SECONDS_PER_HOUR / TOKENS_PER_MILLION
    )
    if replica_cost <= 0.0 or rough / replica_cost >= UNLIMITED_REPLICAS:
        return UNLIMITED_REPLICAS
    affordable_dollars_per_hour = (
        _decimal(cap_dollars_per_million_tokens)
        * _decimal(tokens_per_second)
        * Decimal(int(SECONDS_PER_HOUR))
        / Decimal(int(TOKENS_PER_MILLION))
    )
    return max(int(affordable_dollars_per_hour // _decimal(replica_cost)), 0)


def format_dollars_per_hour(amount: float) -> str:
    """``$6.00/h``."""
    return f"${amount:,.2f}/h"


def format_dollars_per_hour_delta(delta: float) -> str:
    """A signed change of spend: ``+$6.00/h``, ``-$3.00/h``, ``+$0.00/h``."""
    sign = "-" if delta < 0 and round(abs(delta), 2) > 0 else "+"
    return f"{sign}${abs(delta):,.2f}/h"


def format_dollars_per_million_tokens(amount: float | None) -> str:
    """``$0.41/1M tokens``, or ``no tokens served`` when the cost per token is undefined."""
    if amount is None:
        return "no tokens served"
    return f"${amount:,.2f}/1M tokens"


def _rate(tokens_per_second: float) -> float:
    if not math.isfinite(tokens_per_second) or tokens_per_second < 0.0:
        return 0.0
    return tokens_per_second


def _decimal(value: float) -> Decimal:
    # Through repr, so 0.1 is 0.1 and not 0.1000000000000000055511151231257827.
    return Decimal(repr(float(value)))
