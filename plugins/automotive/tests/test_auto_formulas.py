"""The three formulas: reorder point, seasonal labor factors, maintenance schedule --
hand-computed examples and hypothesis properties."""

from __future__ import annotations

import datetime as dt
import decimal
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thorbis_automotive.inventory import (
    DemandStats,
    daily_demand,
    demand_stats,
    reorder_point,
    safety_stock,
)
from thorbis_automotive.labor import estimated_amount, seasonal_factors
from thorbis_automotive.maintenance import maintenance_schedule, mileage_rate
from thorbis_automotive.models import ServiceType

# --------------------------------------------------------------------------- reorder point


def test_reorder_point_by_hand() -> None:
    # mu = 2, sigma^2 = (0 + 4 + 4 + 0) / 4 = 2; L = 4, z = 1.65:
    # 2 * 4 + 1.65 * sqrt(2) * 2 = 8 + 4.667 = 12.667 -> 13.
    stats = demand_stats([2, 0, 4, 2])
    assert (stats.mean, stats.std, stats.days) == (2.0, math.sqrt(2), 4)
    assert safety_stock(stats, 4, 1.65) == pytest.approx(4.6669, abs=1e-4)
    assert reorder_point(stats, 4, 1.65) == 13
    # Steady demand needs no safety stock: 3 a day for 5 days is exactly 15.
    assert reorder_point(demand_stats([3] * 90), 5, 2.05) == 15
    # mu = 1/3 over 3 days is 1.0000000000000002 in floats; no extra unit for that.
    assert reorder_point(demand_stats([1, 0, 0] * 30), 3, 0) == 1
    assert reorder_point(demand_stats([0] * 90), 14, 1.65) == 0
    assert reorder_point(demand_stats([5] * 10), 0, 1.65) == 0


def test_daily_demand_window() -> None:
    as_of = dt.date(2024, 6, 1)
    day = dt.timedelta(days=1)
    series = daily_demand(
        [(as_of - day, 2), (as_of - day, 1), (as_of - 90 * day, 4), (as_of - 91 * day, 9),
         (as_of, 5)],
        as_of,
    )
    assert len(series) == 90
    assert series[-1] == 3
    assert series[0] == 4
    assert sum(series) == 7
    with pytest.raises(ValueError, match="units must be >= 0"):
        daily_demand([(as_of - day, -1)], as_of)
    with pytest.raises(ValueError, match="empty"):
        demand_stats([])
    with pytest.raises(ValueError, match=">= 0"):
        reorder_point(DemandStats(1, 1, 1), -1, 1.65)


demand = st.lists(st.integers(0, 50), min_size=1, max_size=120)
lead = st.integers(0, 60)
z = st.sampled_from([0.0, 1.28, 1.65, 2.05, 3.0])


@given(demand, lead, lead, z)
def test_rop_is_monotone_in_lead_time(daily: list[int], a: int, b: int, zz: float) -> None:
    stats = demand_stats(daily)
    lo, hi = sorted((a, b))
    assert 0 <= reorder_point(stats, lo, zz) <= reorder_point(stats, hi, zz)


@given(demand, lead, z, st.integers(0, 20))
def test_rop_grows_with_a_uniformly_higher_demand(
    daily: list[int], days: int, zz: float, extra: int
) -> None:
    base = demand_stats(daily)
    more = demand_stats([d + extra for d in daily])  # higher mean, same spread
    assert more.std == pytest.approx(base.std, abs=1e-9)
    assert reorder_point(base, days, zz) <= reorder_point(more, days, zz)


@given(demand, lead, z, st.integers(1, 5))
def test_rop_grows_with_scaled_demand(daily: list[int], days: int, zz: float, k: int) -> None:
    assert reorder_point(demand_stats(daily), days, zz) <= reorder_point(
        demand_stats([d * k for d in daily]), days, zz)


@given(demand, lead, z, z)
def test_rop_grows_with_the_service_level(daily: list[int], days: int, a: float, b: float) -> None:
    stats = demand_stats(daily)
    lo, hi = sorted((a, b))
    rop = reorder_point(stats, days, lo)
    assert rop <= reorder_point(stats, days, hi)
    # Never below the mean demand over the lead time.
    assert rop >= math.floor(stats.mean * days)


def test_rop_is_not_monotone_under_reshaping() -> None:
    # Documented: filling a quiet day steadies demand, and the safety stock falls more
    # than the mean rises.
    spiky, steadier = demand_stats([0, 10] * 45), demand_stats([1, 10] * 45)
    # L = 1, z = 3: 5 + 3 * 5 = 20 against 5.5 + 3 * 4.5 = 19.
    assert reorder_point(steadier, 1, 3.0) == 19 < reorder_point(spiky, 1, 3.0) == 20


# --------------------------------------------------------------------------- labor


def test_seasonal_factors_by_hand() -> None:
    # 20 jobs, 40 hours: mu = 2. July: 10 jobs, 30 h (raw 1.5) -> (15 + 10) / 20 = 1.25.
    # January: 10 jobs, 10 h (raw 0.5) -> (5 + 10) / 20 = 0.75. Other months: 1.
    factors = seasonal_factors({7: (10, 30.0), 1: (10, 10.0)})
    assert factors[6] == pytest.approx(1.25)
    assert factors[0] == pytest.approx(0.75)
    assert factors[1:6] == [1.0] * 5
    assert factors[7:] == [1.0] * 5
    assert seasonal_factors({}) == [1.0] * 12
    assert seasonal_factors({3: (4, 0.0)}) == [1.0] * 12
    assert estimated_amount(1.25 * 0.5, decimal.Decimal("120.00")) == decimal.Decimal("75.00")
    for bad in ({13: (1, 1.0)}, {1: (-1, 1.0)}, {1: (0, 2.0)}):
        with pytest.raises(ValueError, match="month"):
            seasonal_factors(bad)


months = st.dictionaries(
    st.integers(1, 12),
    st.tuples(st.integers(1, 400), st.floats(0.1, 8.0)).map(lambda t: (t[0], t[0] * t[1])),
    max_size=12,
)


@given(months)
def test_factors_lie_between_one_and_the_raw_ratio(monthly: dict[int, tuple[int, float]]) -> None:
    factors = seasonal_factors(monthly)
    assert len(factors) == 12
    total = sum(n for n, _ in monthly.values())
    mean = sum(h for _, h in monthly.values()) / total if total else 0
    for month in range(1, 13):
        if month not in monthly:
            assert factors[month - 1] == pytest.approx(1.0)
            continue
        n, h = monthly[month]
        raw = (h / n) / mean
        lo, hi = sorted((1.0, raw))
        assert lo - 1e-9 <= factors[month - 1] <= hi + 1e-9


@given(months, st.floats(0.1, 10))
def test_factors_ignore_the_unit_of_hours(monthly: dict[int, tuple[int, float]], k: float) -> None:
    scaled = {m: (n, h * k) for m, (n, h) in monthly.items()}
    assert seasonal_factors(scaled) == pytest.approx(seasonal_factors(monthly))


@given(st.floats(0.2, 5), st.integers(1, 50), st.integers(2, 10))
def test_more_evidence_moves_toward_the_raw_ratio(ratio: float, n: int, times: int) -> None:
    # July at `ratio` times every other month's mean, with n jobs a month, then with
    # `times` as many jobs at the same means.
    def factor(jobs: int) -> float:
        monthly = {m: (jobs, jobs * (ratio if m == 7 else 1.0)) for m in range(1, 13)}
        return seasonal_factors(monthly)[6]

    raw = ratio / ((11 + ratio) / 12)
    assert abs(factor(n * times) - raw) <= abs(factor(n) - raw) + 1e-12


# --------------------------------------------------------------------------- maintenance

OIL = ServiceType("oil", "Oil change", 5_000, 180, 0.5, decimal.Decimal("100"))
BRAKES = ServiceType("brakes", "Brakes", 30_000, 730, 2.0, decimal.Decimal("100"))


def test_schedule_by_hand() -> None:
    # 5,000 miles in 100 days: 50 miles a day.
    readings = [(dt.date(2024, 1, 1), 10_000, "oil"), (dt.date(2024, 4, 10), 15_000, None)]
    rate, schedule = maintenance_schedule(readings, [BRAKES, OIL])
    assert rate == 50.0
    oil, brakes = schedule
    # Oil: due at 15,000 miles -- reached on the last reading -- or 180 days after Jan 1.
    assert (oil.service_type, oil.last_done_on, oil.due_miles) == ("oil", dt.date(2024, 1, 1),
                                                                    15_000)
    assert (oil.due_by_time, oil.due_by_mileage, oil.due_on) == (
        dt.date(2024, 6, 29), dt.date(2024, 4, 10), dt.date(2024, 4, 10))
    # Brakes never done here: from the first reading, 40,000 miles = 500 days after Apr 10.
    assert (brakes.last_done_on, brakes.due_miles) == (None, 40_000)
    assert (brakes.due_by_time, brakes.due_by_mileage, brakes.due_on) == (
        dt.date(2025, 12, 31), dt.date(2025, 8, 23), dt.date(2025, 8, 23))


def test_schedule_without_rate_and_without_readings() -> None:
    assert maintenance_schedule([], [OIL]) == (None, [])
    one = [(dt.date(2024, 1, 1), 10_000, "oil")]
    rate, (oil,) = maintenance_schedule(one, [OIL])
    assert rate is None
    assert oil.due_by_mileage is None
    assert oil.due_on == dt.date(2024, 6, 29)
    # A replaced cluster (odometer went down) gives no rate.
    assert mileage_rate([(dt.date(2024, 1, 1), 90_000, None),
                         (dt.date(2024, 3, 1), 100, None)]) is None


day = st.dates(dt.date(2015, 1, 1), dt.date(2030, 1, 1))
reading = st.tuples(day, st.integers(0, 300_000), st.sampled_from([None, "oil", "brakes"]))


@given(st.lists(reading, min_size=1, max_size=12), st.randoms())
def test_schedule_properties(readings: list[tuple[dt.date, int, str | None]], rnd: object) -> None:
    rate, schedule = maintenance_schedule(readings, [OIL, BRAKES])
    shuffled = list(readings)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert maintenance_schedule(shuffled, [OIL, BRAKES]) == (rate, schedule)
    assert {s.service_type for s in schedule} == {"oil", "brakes"}
    assert [s.due_on for s in schedule] == sorted(s.due_on for s in schedule)
    for s in schedule:
        assert s.due_on <= s.due_by_time
        assert (s.due_by_mileage is None) == (rate is None or rate == 0)


@given(day, st.integers(0, 100_000), st.integers(1, 700), st.integers(0, 30_000),
       st.integers(0, 30_000))
def test_a_higher_mileage_never_makes_a_service_due_later(
    first: dt.date, miles: int, days: int, a: int, b: int
) -> None:
    last = first + dt.timedelta(days=days)
    lo, hi = sorted((a, b))
    slow = [(first, miles, "oil"), (last, miles + lo, None)]
    fast = [(first, miles, "oil"), (last, miles + hi, None)]
    for s, f in zip(maintenance_schedule(slow, [OIL, BRAKES])[1],
                    maintenance_schedule(fast, [OIL, BRAKES])[1], strict=True):
        assert f.due_on <= s.due_on
