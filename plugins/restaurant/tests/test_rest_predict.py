"""The documented formulas: popularity, demand ratio, dynamic price, kitchen priority and
the availability summary -- hand-computed examples and hypothesis properties."""

from __future__ import annotations

import datetime as dt
import decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thorbis_restaurant import availability
from thorbis_restaurant.models import DiningTable, OrderPriority
from thorbis_restaurant.predict import (
    CAP,
    FLOOR,
    demand_ratio,
    dynamic_price,
    multiplier,
    popularity,
)
from thorbis_restaurant.scoring import HEAD_START, kitchen_score

TODAY = dt.date(2024, 6, 30)
D = decimal.Decimal
days_ago = st.integers(min_value=0, max_value=60)
sales = st.lists(st.tuples(days_ago, st.integers(min_value=0, max_value=50)), max_size=30)


def _dated(pairs: list[tuple[int, int]]) -> list[tuple[dt.date, int]]:
    return [(TODAY - dt.timedelta(days=a), q) for a, q in pairs]


def test_popularity_by_hand() -> None:
    # 4 today (4), 2 a week ago (2 * 0.5 = 1), 8 two weeks ago (8 * 0.25 = 2),
    # 100 on day 28 (outside the window), 5 tomorrow (ignored).
    assert popularity(_dated([(0, 4), (7, 2), (14, 8), (28, 100), (-1, 5)]), TODAY) == 7.0
    assert popularity([], TODAY) == 0.0
    assert popularity(_dated([(1, 1)]), TODAY) == round(2 ** (-1 / 7), 4)
    with pytest.raises(ValueError, match="negative"):
        popularity(_dated([(0, -1)]), TODAY)


def test_demand_ratio_and_price_by_hand() -> None:
    # Last 7 days: 14 units; the 4 weeks before: 28 units, 7 a week: ratio 2.
    history = _dated([(0, 10), (6, 4), (7, 20), (34, 8), (35, 1000)])
    assert demand_ratio(history, TODAY) == 2.0
    assert demand_ratio(_dated([(0, 9)]), TODAY) == 1.0  # no baseline: no signal
    assert demand_ratio(_dated([(10, 8)]), TODAY) == 0.0
    # ratio 2: 1 + 0.25 = 1.25, capped at 1.20; 12.50 * 1.20 = 15.00.
    assert dynamic_price(D("12.50"), 2.0) == D("15.00")
    # ratio 1.2: 1.05; 9.99 * 1.05 = 10.4895 -> 10.49.
    assert dynamic_price(D("9.99"), 1.2) == D("10.49")
    # ratio 0.8: 0.95; 10.10 * 0.95 = 9.595 -> 9.60 (half-even on an exact half: 9.60).
    assert dynamic_price(D("10.10"), 0.8) == D("9.60")
    # ratio 0: floor 0.90.
    assert dynamic_price(D("20.00"), 0.0) == D("18.00")
    assert dynamic_price(D("7.25"), 1.0) == D("7.25")
    with pytest.raises(ValueError, match="finite number >= 0"):
        multiplier(-0.1)
    with pytest.raises(ValueError, match="finite number >= 0"):
        multiplier(float("nan"))


@given(sales, st.integers(min_value=0, max_value=27), st.integers(min_value=1, max_value=9))
def test_popularity_grows_with_sales_and_recency(pairs: list[tuple[int, int]], age: int,
                                                 extra: int) -> None:
    base = popularity(_dated(pairs), TODAY)
    assert base >= 0
    assert popularity(_dated(pairs), TODAY) == popularity(_dated(list(reversed(pairs))), TODAY)
    more = popularity(_dated([*pairs, (age, extra)]), TODAY)
    assert more > base - 1e-4
    if age > 0:
        newer = popularity(_dated([*pairs, (age - 1, extra)]), TODAY)
        assert newer >= more - 1e-4


prices = st.decimals(min_value=D("0.00"), max_value=D("500.00"), places=2)
ratios = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(prices, ratios, ratios)
def test_dynamic_price_is_bounded_and_monotone(base: D, r1: float, r2: float) -> None:
    low, high = sorted((r1, r2))
    p_low, p_high = dynamic_price(base, low), dynamic_price(base, high)
    cent = D("0.005")
    for p in (p_low, p_high):
        assert base * FLOOR - cent <= p <= base * CAP + cent
        assert p == p.quantize(D("0.01"))
    assert p_low <= p_high
    assert FLOOR <= multiplier(low) <= multiplier(high) <= CAP


NOW = dt.datetime(2024, 6, 30, 19, 0, tzinfo=dt.UTC)
priorities = st.sampled_from(list(OrderPriority))
offsets = st.integers(min_value=-7200, max_value=7200)


def test_kitchen_score_by_hand() -> None:
    assert kitchen_score(OrderPriority.NORMAL, NOW) == NOW.timestamp()
    assert kitchen_score(OrderPriority.RUSH, NOW) == NOW.timestamp() - 900
    with pytest.raises(ValueError, match="aware"):
        kitchen_score(OrderPriority.VIP, NOW.replace(tzinfo=None))


@given(priorities, priorities, offsets, st.integers(min_value=0, max_value=3600))
def test_kitchen_order_is_fifo_with_bounded_head_starts(p: OrderPriority, q: OrderPriority,
                                                        offset: int, d: int) -> None:
    t = NOW + dt.timedelta(seconds=offset)
    later = t + dt.timedelta(seconds=d)
    # FIFO within a class.
    assert kitchen_score(p, t) <= kitchen_score(p, later)
    # p placed d seconds after q comes first exactly when d < its head start over q.
    overtakes = kitchen_score(p, later) < kitchen_score(q, t)
    assert overtakes is (d < HEAD_START[p] - HEAD_START[q])


TABLES = [DiningTable(1, 2), DiningTable(2, 4), DiningTable(3, 6)]
SLOTS = ["18:00", "18:30", "19:00"]


def test_summary_by_hand() -> None:
    grid = availability.build(1, TODAY, TABLES, [("18:30", 1), ("18:30", 3), ("19:00", 2),
                                                 ("19:00", 9), ("23:00", 1)], SLOTS)
    assert grid.booked == {"18:30": [1, 3], "19:00": [2]}
    assert (grid.total_table_slots, grid.booked_table_slots, grid.free_table_slots,
            grid.busiest_slot) == (9, 3, 6, "18:30")
    assert availability.free_tables(grid, "18:30") == [2]
    assert availability.free_tables(grid, "18:00", party_size=3) == [2, 3]
    with pytest.raises(ValueError, match="already booked"):
        availability.with_booking(grid, "18:30", 1, booked=True)


bookings = st.lists(st.tuples(st.sampled_from(SLOTS), st.sampled_from([1, 2, 3]),
                              st.booleans()), max_size=20)


@given(bookings)
def test_summary_stays_consistent_under_any_bookings(ops: list[tuple[str, int, bool]]) -> None:
    grid = availability.build(1, TODAY, TABLES, [], SLOTS)
    taken: set[tuple[str, int]] = set()
    for slot, table, book in ops:
        if book and (slot, table) in taken:
            continue
        changes = availability.with_booking(grid, slot, table, booked=book)
        grid = attrs.evolve(grid, **changes)  # type: ignore[arg-type]
        (taken.add if book else taken.discard)((slot, table))
        assert grid == availability.build(1, TODAY, TABLES, sorted(taken), SLOTS)
        assert grid.booked_table_slots + grid.free_table_slots == grid.total_table_slots == 9
