"""Cost arithmetic: dollars per hour, per million tokens, exact sums, caps and message formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thrifty import cost


@pytest.mark.parametrize(
    ("replicas", "gpus", "price", "expected"),
    [
        (0, 1, 3.0, 0.0),
        (1, 1, 3.0, 3.0),
        (2, 4, 2.5, 20.0),
        (3, 1, 0.1, 0.3),  # exact, not 0.30000000000000004
    ],
)
def test_dollars_per_hour(replicas: int, gpus: int, price: float, expected: float) -> None:
    assert cost.dollars_per_hour(replicas, gpus, price) == expected


def test_replica_dollars_per_hour() -> None:
    assert cost.replica_dollars_per_hour(4, 2.2) == 8.8


def test_dollars_per_million_tokens_matches_the_reference_sanity_check() -> None:
    # One H100 at $3/h producing 3,000 tok/s costs about $0.28 per 1M tokens.
    assert cost.dollars_per_million_tokens(3.0, 3000.0) == pytest.approx(0.2778, abs=1e-4)


@pytest.mark.parametrize("tokens_per_second", [0.0, -1.0, float("nan")])
def test_dollars_per_million_tokens_is_none_without_tokens(tokens_per_second: float) -> None:
    assert cost.dollars_per_million_tokens(3.0, tokens_per_second) is None


def test_sum_dollars_per_hour_is_exact() -> None:
    assert cost.sum_dollars_per_hour([0.1] * 10) == 1.0
    assert sum([0.1] * 10) != 1.0  # what the float sum would give instead
    assert cost.sum_dollars_per_hour([]) == 0.0


@pytest.mark.parametrize(
    ("cap", "replica_cost", "expected"),
    [
        (10.0, 3.0, 3),
        (9.0, 3.0, 3),  # the cap itself is allowed
        (0.3, 0.1, 3),  # no float floor error (0.3 / 0.1 = 2.9999999999999996)
        (2.99, 3.0, 0),
        (0.0, 3.0, 0),
        (-1.0, 3.0, 0),
    ],
)
def test_replicas_within_dollars_per_hour(cap: float, replica_cost: float, expected: int) -> None:
    assert cost.replicas_within_dollars_per_hour(cap, replica_cost) == expected


def test_replicas_within_dollars_per_million_tokens() -> None:
    # $3/h replicas, 3,000 tok/s demand: one replica costs $0.2778/1M, so a $0.60 cap allows 2.
    assert cost.replicas_within_dollars_per_million_tokens(0.6, 3.0, 3000.0) == 2
    assert cost.replicas_within_dollars_per_million_tokens(0.2, 3.0, 3000.0) == 0
    assert cost.replicas_within_dollars_per_million_tokens(0.6, 3.0, 0.0) is None


@given(
    cap=st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
    gpus=st.integers(min_value=1, max_value=8),
    price=st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
)
def test_replicas_within_a_cap_are_the_most_that_fit(cap: float, gpus: int, price: float) -> None:
    replica_cost = cost.replica_dollars_per_hour(gpus, price)
    replicas = cost.replicas_within_dollars_per_hour(cap, replica_cost)
    assert cost.dollars_per_hour(replicas, gpus, price) <= cap
    assert cost.dollars_per_hour(replicas + 1, gpus, price) > cap


@given(
    cap=st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
    price=st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
    tokens=st.floats(min_value=1.0, max_value=1e6, allow_nan=False),
)
def test_replicas_within_a_token_cap_keep_the_projection_under_it(
    cap: float, price: float, tokens: float
) -> None:
    replicas = cost.replicas_within_dollars_per_million_tokens(cap, price, tokens)
    assert replicas is not None
    projected = cost.dollars_per_million_tokens(cost.dollars_per_hour(replicas, 1, price), tokens)
    assert projected is not None
    assert projected <= cap * (1 + 1e-9)
    above = cost.dollars_per_million_tokens(cost.dollars_per_hour(replicas + 1, 1, price), tokens)
    assert above is not None
    assert above > cap * (1 - 1e-9)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (6.0, "+$6.00/h"),
        (-3.0, "-$3.00/h"),
        (0.0, "+$0.00/h"),
        (-0.001, "+$0.00/h"),
        (1234.5, "+$1,234.50/h"),
    ],
)
def test_format_dollars_per_hour_delta(delta: float, text: str) -> None:
    assert cost.format_dollars_per_hour_delta(delta) == text


def test_formats() -> None:
    assert cost.format_dollars_per_hour(9.0) == "$9.00/h"
    assert cost.format_dollars_per_million_tokens(0.4123) == "$0.41/1M tokens"
    assert cost.format_dollars_per_million_tokens(None) == "no tokens served"


def test_caps_that_cannot_bind_allow_unlimited_replicas() -> None:
    assert cost.replicas_within_dollars_per_hour(1e300, 1.0) == cost.UNLIMITED_REPLICAS
    assert cost.replicas_within_dollars_per_hour(10.0, 0.0) == cost.UNLIMITED_REPLICAS
    assert cost.replicas_within_dollars_per_million_tokens(1.0, 1.0, 1e200) == (
        cost.UNLIMITED_REPLICAS
    )


@pytest.mark.parametrize(
    ("prompt", "generation", "expected"),
    [
        (3000.0, 1000.0, 0.125),  # (0.10 x 3000 + 0.20 x 1000) / 4000
        (1000.0, 0.0, 0.10),  # only prompt tokens: the input price
        (0.0, 500.0, 0.20),  # only generated tokens: the output price
        (1000.0, float("nan"), 0.10),  # an unreadable rate counts as none
        (1000.0, -5.0, 0.10),
    ],
)
def test_the_reference_price_is_blended_by_the_services_own_token_mix(
    prompt: float, generation: float, expected: float
) -> None:
    blended = cost.blended_reference_dollars_per_million_tokens(0.10, 0.20, prompt, generation)
    assert blended == pytest.approx(expected)


@pytest.mark.parametrize(("prompt", "generation"), [(0.0, 0.0), (float("nan"), -1.0)])
def test_no_reference_blend_without_tokens(prompt: float, generation: float) -> None:
    assert cost.blended_reference_dollars_per_million_tokens(0.1, 0.2, prompt, generation) is None


@pytest.mark.parametrize(
    ("realised", "reference", "expected"),
    [
        (0.10, 0.125, 0.2),  # a fifth cheaper than buying
        (0.25, 0.125, -1.0),  # twice the price: lost the whole reference again
        (0.125, 0.125, 0.0),
        (0.0, 0.125, 1.0),  # free tokens (a free pool) save everything
    ],
)
def test_savings_against_the_reference(realised: float, reference: float, expected: float) -> None:
    assert cost.savings_fraction(realised, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("realised", "reference"),
    [(None, 0.125), (0.1, None), (None, None), (0.1, 0.0), (float("nan"), 0.125)],
)
def test_no_savings_figure_without_both_prices(
    realised: float | None, reference: float | None
) -> None:
    assert cost.savings_fraction(realised, reference) is None


def test_savings_are_written_as_saved_or_lost_percent() -> None:
    assert cost.format_savings(0.2) == "saved 20 %"
    assert cost.format_savings(-1.0) == "lost 100 %"
    assert cost.format_savings(-0.001) == "saved 0 %"  # no "lost 0 %"
    assert cost.format_savings(None) == "no reference"
