"""The exposure model: a spot replica counts what a reclaim is expected to leave of it within the
window between the notice and its replacement serving."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from thrifty.api import gpupool, spot


def pool(**spec: Any) -> gpupool.GPUPoolSpec:
    return gpupool.GPUPoolSpec.model_validate(
        {
            "accelerator": "H100",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"p": "spot"},
            "pricePerGpuHour": 1.0,
            "capacityType": "Spot",
            **spec,
        }
    )


def test_a_monthly_fraction_is_a_per_node_hazard() -> None:
    # 15 % a month: 85 % of the nodes survive 730 hours at a constant hazard.
    hazard = spot.hazard_from_monthly(0.15)
    assert hazard == pytest.approx(-math.log(0.85) / 730)
    assert math.exp(-hazard * 730) == pytest.approx(0.85)
    assert spot.hazard_from_monthly(0.0) == 0.0
    assert math.isinf(spot.hazard_from_monthly(1.0))


def test_a_published_rate_is_almost_no_discount() -> None:
    """H100 at 0.15 a month, 8B cold start 120 s, 30 s notice: 90 s exposed, 2.2e-4 per hour x
    0.025 h: the replica keeps 0.999994, which counts 1 to the percent, not the 0.85 a monthly
    fraction used as a discount gave."""
    h100 = pool(interruptionRate=0.15)
    assert h100.exposure_seconds(120.0) == 90.0
    kept = math.exp(-h100.hazard_per_hour() * 90.0 / 3600)
    assert 0.99999 < kept < 1.0
    assert h100.planned_units(120.0) == 1.0
    assert math.ceil(10 / h100.planned_units(120.0)) == 10  # not 11 (nor 12 at 0.85)


def test_a_high_observed_rate_is_a_real_discount() -> None:
    """Reclaimed twice an hour, 70B cold start 300 s, 30 s notice: exp(-2 x 270 / 3600)."""
    h100 = pool(interruptionRate=0.15)
    units = h100.planned_units(300.0, observed_hazard=2.0)
    assert units == 0.86  # exp(-0.15) = 0.861, to the percent
    assert math.ceil(4 / units) == 5
    # The larger of published and observed: an observed rate below the published one is not
    # an excuse to plan on less.
    published = h100.hazard_per_hour()
    assert h100.hazard_per_hour(observed=published / 10) == published
    # A pool that loses more than half its time to reclaims still counts half (no 0 unit).
    assert h100.planned_units(300.0, observed_hazard=math.inf) == spot.MIN_SURVIVAL


def test_no_exposure_when_the_notice_covers_the_cold_start() -> None:
    aws = pool(interruptionRate=0.15, interruptionNoticeSeconds=120)
    assert aws.exposure_seconds(90.0) == 0.0
    assert aws.planned_units(90.0, observed_hazard=100.0) == 1.0
    assert aws.exposure_seconds(300.0) == 180.0


def test_an_autoscaled_pools_replacement_waits_for_its_node_too() -> None:
    autoscaled = pool(provisioning={"mode": "Autoscaled", "maxNodes": 4, "nodeStartSeconds": 200})
    assert autoscaled.exposure_seconds(120.0) == 120.0 + 200.0 - 30.0


def test_only_spot_pools_are_discounted() -> None:
    on_demand = pool(capacityType="OnDemand", relativeThroughput=0.3)
    assert on_demand.hazard_per_hour(observed=5.0) == 0.0
    assert on_demand.planned_units(300.0, observed_hazard=5.0) == 0.3


def test_the_observed_hazard_is_reclaims_over_node_hours() -> None:
    assert spot.observed_hazard(0, 0.0) == 0.0
    assert spot.observed_hazard(3, 1.5) == 2.0
    # A first reclaim after a few node-minutes: two an hour, not one every few minutes.
    assert spot.observed_hazard(1, 0.05) == 2.0
    assert spot.observed_hazard(1, 0.0) == 2.0


@pytest.mark.parametrize("notice", [-1, 3601])
def test_the_notice_is_bounded(notice: int) -> None:
    with pytest.raises(ValidationError, match="interruptionNoticeSeconds"):
        pool(interruptionNoticeSeconds=notice)
