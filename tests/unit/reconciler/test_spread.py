"""Replicas per pool: reserved first, cheapest $/token, spill at once, replace a reclaim at
once, return one replica at a time with the new one ready before the old drains."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from thrifty import explain
from thrifty.api import gpupool
from thrifty.reconciler import spread

Capacity = gpupool.CapacityType


def offer(
    name: str, kind: Capacity, price: float, unit: float = 1.0, **more: object
) -> spread.Offer:
    base = spread.Offer(name, kind, price, 1, unit, room=8)
    return dataclasses.replace(base, **more)  # type: ignore[arg-type]


RESERVED = offer("h100-reserved", Capacity.RESERVED, 2.0, reserved=2, room=2)
SPOT = offer("h100-spot", Capacity.SPOT, 1.2, unit=0.85)
ON_DEMAND = offer("h100-on-demand", Capacity.ON_DEMAND, 4.0)
L4 = offer("l4", Capacity.ON_DEMAND, 0.8, unit=0.3)
FLEET = [ON_DEMAND, SPOT, L4, RESERVED]


def place(offers: list[spread.Offer], target: float, **more: object) -> spread.Spread:
    options: dict[str, object] = {
        "cheapest": True,
        "min_on_demand": 0,
        "cold_start_seconds": 120.0,
        **more,
    }
    return spread.spread(offers, target, **options)  # type: ignore[arg-type]


def now(
    offers: list[spread.Offer], counts: dict[str, int], ready: bool = True
) -> list[spread.Offer]:
    """The offers once ``counts`` were applied (and, if ``ready``, are serving)."""
    return [
        dataclasses.replace(o, current=counts[o.name], ready=counts[o.name] if ready else 0)
        for o in offers
    ]


def test_reserved_first_then_the_lowest_price_per_reference_replica() -> None:
    """Reserved is free up to its reservation; then spot ($1.2/0.85 = $1.41) before L4
    ($0.8/0.3 = $2.67) before on-demand H100 ($4)."""
    placed = place(FLEET, 6)
    assert placed.replicas == {"h100-on-demand": 0, "h100-spot": 5, "l4": 0, "h100-reserved": 2}
    assert not placed.capacity_limited


def test_ordered_fills_the_list_in_order_and_spills_to_the_next() -> None:
    placed = place([dataclasses.replace(ON_DEMAND, room=2), SPOT], 3, cheapest=False)
    assert placed.replicas == {"h100-on-demand": 2, "h100-spot": 2}  # 1 spot counts 0.85
    assert [m.reason for m in placed.moves] == [explain.SPILLED]
    assert "h100-on-demand full" in placed.moves[0].message


def test_a_full_cheapest_pool_spills_at_once_without_capacity_limited() -> None:
    offers = [dataclasses.replace(SPOT, room=1), L4, ON_DEMAND]
    placed = place(offers, 2)
    assert placed.replicas == {"h100-spot": 1, "l4": 4, "h100-on-demand": 0}
    assert not placed.capacity_limited
    assert [m.reason for m in placed.moves] == [explain.SPILLED]


def test_capacity_limited_only_when_every_pool_is_full() -> None:
    offers = [dataclasses.replace(o, room=1) for o in (SPOT, ON_DEMAND)]
    placed = place(offers, 3)
    assert placed.capacity_limited and placed.replicas == {"h100-spot": 1, "h100-on-demand": 1}
    assert "h100-spot: room for 1" in placed.message


def test_a_reclaimed_spot_pool_is_replaced_on_the_next_pool_at_once() -> None:
    before = now([SPOT, ON_DEMAND], {"h100-spot": 4, "h100-on-demand": 0})
    reclaimed = [dataclasses.replace(before[0], room=0), before[1]]
    placed = place(reclaimed, 3.4, previous_target=3.4)
    assert placed.replicas == {"h100-spot": 0, "h100-on-demand": 4}  # 4 x 1.0 >= 3.4
    assert placed.lost == {"h100-spot": 4}
    [move] = placed.moves
    assert move.reason == explain.CAPACITY_RECLAIMED
    assert "4 on h100-on-demand" in move.message and "120 s (cold start)" in move.message
    assert "+$11.20/h" in move.message  # 4 x $4.00 - 4 x $1.20


def test_min_on_demand_replicas_survive_any_reclaim() -> None:
    placed = place([SPOT, ON_DEMAND], 4, min_on_demand=1)
    assert placed.replicas == {"h100-spot": 4, "h100-on-demand": 1}


def test_spot_replicas_are_over_provisioned_by_what_a_reclaim_takes() -> None:
    """Published 0.2 a month: no extra replica. Reclaimed twice an hour with a 300 s cold start
    (270 s past the 30 s notice): each counts 0.86, so 4 reference replicas take 5."""
    pool = gpupool.GPUPoolSpec(
        accelerator="H100",
        gpu_memory_gib=80,
        gpus_per_node=8,
        node_selector={"p": "spot"},
        price_per_gpu_hour=1.2,
        capacity_type=Capacity.SPOT,
        interruption_rate=0.2,
        relative_throughput=1.0,
    )
    assert spread.unit(pool, 300.0) == 1.0
    calm = place([offer("spot", Capacity.SPOT, 1.2, unit=spread.unit(pool, 300.0))], 4)
    assert calm.replicas == {"spot": 4}
    assert spread.unit(pool, 300.0, observed_hazard=2.0) == 0.86
    stormy = offer("spot", Capacity.SPOT, 1.2, unit=spread.unit(pool, 300.0, 2.0))
    assert place([stormy], 4).replicas == {"spot": 5}


def test_return_is_one_replica_at_a_time_new_ready_before_old_drains() -> None:
    """Spot is back: one spot replica starts while the on-demand ones all keep serving; the
    on-demand one drains only once it is ready; then the next."""
    spot = dataclasses.replace(SPOT, unit=1.0)
    offers = now([spot, ON_DEMAND], {"h100-spot": 0, "h100-on-demand": 2})
    first = place(offers, 2, previous_target=2)
    assert first.replicas == {"h100-spot": 1, "h100-on-demand": 2}
    assert [m.reason for m in first.moves] == [explain.RETURNING]
    starting = [
        dataclasses.replace(o, current=first.replicas[o.name], ready=o.ready) for o in offers
    ]
    waiting = place(starting, 2, previous_target=2)
    assert waiting.replicas == first.replicas and not waiting.moves  # nothing drains yet
    drained = place(now(offers, first.replicas), 2, previous_target=2)
    assert drained.replicas == {"h100-spot": 1, "h100-on-demand": 1}
    assert [m.reason for m in drained.moves] == [explain.RETURNED]
    second = place(now(offers, drained.replicas), 2, previous_target=2)
    assert second.replicas == {"h100-spot": 2, "h100-on-demand": 1}


def test_a_slower_pool_replaces_one_replica_with_as_many_as_it_takes() -> None:
    offers = now([SPOT, ON_DEMAND], {"h100-spot": 0, "h100-on-demand": 2})
    first = place(offers, 2, previous_target=2)
    assert first.replicas == {"h100-spot": 2, "h100-on-demand": 2}  # 2 x 0.85 for 1 x 1.0


def test_a_pool_that_lost_replicas_is_not_returned_to_within_its_delay() -> None:
    offers = now(
        [dataclasses.replace(SPOT, returnable=False), ON_DEMAND],
        {"h100-spot": 0, "h100-on-demand": 2},
    )
    assert place(offers, 2, previous_target=2).replicas == {"h100-spot": 0, "h100-on-demand": 2}


def test_no_return_for_a_price_gap_under_the_margin() -> None:
    near = offer("near", Capacity.ON_DEMAND, 3.8)
    offers = now([near, ON_DEMAND], {"near": 0, "h100-on-demand": 2})
    assert place(offers, 2, previous_target=2).replicas == {"near": 0, "h100-on-demand": 2}


def test_scale_down_drops_the_dearest_first() -> None:
    offers = now([SPOT, ON_DEMAND], {"h100-spot": 2, "h100-on-demand": 2})
    assert place(offers, 1.7, previous_target=3.7).replicas == {"h100-spot": 2, "h100-on-demand": 0}


@given(
    target=st.integers(min_value=0, max_value=12),
    rooms=st.lists(st.integers(min_value=0, max_value=6), min_size=4, max_size=4),
    current=st.lists(st.integers(min_value=0, max_value=6), min_size=4, max_size=4),
    cheapest=st.booleans(),
)
def test_never_more_than_a_pool_holds_and_enough_whenever_the_pools_can(
    target: int, rooms: list[int], current: list[int], cheapest: bool
) -> None:
    offers = [
        dataclasses.replace(o, room=r, current=c, ready=c)
        for o, r, c in zip(FLEET, rooms, current, strict=True)
    ]
    placed = place(offers, target, cheapest=cheapest)
    for o in offers:
        assert 0 <= placed.replicas[o.name] <= o.room
    total = spread.units(offers, placed.replicas)
    can = spread.units(offers, {o.name: o.room for o in offers})
    assert total + 1e-9 >= min(target, can)
    assert placed.capacity_limited == (total + 1e-9 < target)


def test_replicas_on_a_tainted_node_serve_until_it_goes_while_replacements_start() -> None:
    """Reclaim notice: the node is tainted but still there. Its replicas keep serving (asked for
    as before) and count for nothing: the replacements are ordered at once."""
    before = now([SPOT, ON_DEMAND], {"h100-spot": 4, "h100-on-demand": 0})
    tainted = [dataclasses.replace(before[0], room=0, doomed=4), before[1]]
    placed = place(tainted, 3.4, previous_target=3.4)
    assert placed.replicas == {"h100-spot": 4, "h100-on-demand": 4}
    assert [m.reason for m in placed.moves] == [explain.CAPACITY_RECLAIMED]
    assert placed.lost == {"h100-spot": 4}
    # The next pass, same notice: the doomed are already replaced, not lost again.
    noticed = [
        dataclasses.replace(tainted[0], replaced=4),
        dataclasses.replace(tainted[1], current=4, ready=0),
    ]
    again = place(noticed, 3.4, previous_target=3.4)
    assert again.replicas == placed.replicas
    assert (again.moves, again.lost) == ([], {})
    gone = [dataclasses.replace(before[0], current=4, ready=4, room=0), before[1]]
    after = place([gone[0], dataclasses.replace(gone[1], current=4, ready=4)], 3.4)
    assert after.replicas == {"h100-spot": 0, "h100-on-demand": 4}
