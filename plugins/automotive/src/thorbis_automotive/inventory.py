"""Reorder points from stock-movement history: the seed's "demand forecast" and
"reorder point", as a documented formula.

The classic continuous-review reorder point with normally distributed daily demand::

    d_1 .. d_W   units issued on each of the W complete UTC days before the as-of day
                 (a day without issues counts as 0; W = DEMAND_WINDOW_DAYS = 90)
    mu    = (d_1 + ... + d_W) / W                          mean daily demand
    sigma = sqrt((sum (d_t - mu)^2) / W)                   its standard deviation
    L     = the part's lead time in days (parts.lead_time_days)
    z     = the part's service-level factor (parts.service_level_z; 1.65 ~ 95% of
            replenishment cycles without a stock-out)

    safety stock  SS  = z * sigma * sqrt(L)
    reorder point ROP = ceil(mu * L + SS)                  (whole units)
    forecast for the next 7 days = 7 * mu

Demand is what was *issued* to jobs (movements of reason ``issue``); receipts, returns
and adjustments change the stock on hand but are not demand. ``ceil`` is taken after
rounding to 6 decimals, so floating-point noise (``10.000000000002``) never adds a unit.

Properties (tested): ROP >= 0; non-decreasing in the lead time and in z; adding the
same amount to every day's demand (a higher mean at the same variability) never lowers
it, nor does scaling every day's demand by a factor >= 1. It is *not* monotone under
any increase of one day's demand: filling a quiet day makes demand steadier, which
rightly lowers the safety stock.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

__all__ = [
    "DEMAND_WINDOW_DAYS",
    "DemandStats",
    "daily_demand",
    "demand_stats",
    "reorder_point",
    "safety_stock",
    "stats_by_part",
]

#: Days of history the statistics are computed over.
DEMAND_WINDOW_DAYS = 90


@attrs.frozen(slots=True)
class DemandStats:
    """Mean and standard deviation of daily demand over a window.

    :ivar mean: units per day.
    :ivar std: population standard deviation of the daily units.
    :ivar days: the window length.
    """

    mean: float
    std: float
    days: int


def daily_demand(
    issues: Iterable[tuple[dt.date, int]], as_of: dt.date, days: int = DEMAND_WINDOW_DAYS
) -> list[int]:
    """The units issued on each of the ``days`` UTC days before ``as_of`` (oldest first;
    ``as_of`` itself is excluded, it is not complete).

    :param issues: ``(day, units)`` pairs, several per day allowed; units > 0; days
        outside the window are ignored.
    :raises ValueError: ``days`` < 1 or negative units.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    start = as_of - dt.timedelta(days=days)
    out = [0] * days
    for day, units in issues:
        if units < 0:
            raise ValueError(f"issued units must be >= 0, got {units} on {day}")
        offset = (day - start).days
        if 0 <= offset < days:
            out[offset] += units
    return out


def demand_stats(daily: Sequence[int | float]) -> DemandStats:
    """Mean and population standard deviation of a daily demand series.

    :raises ValueError: the series is empty.
    """
    n = len(daily)
    if n == 0:
        raise ValueError("an empty demand series has no statistics")
    mean = math.fsum(daily) / n
    variance = math.fsum((d - mean) ** 2 for d in daily) / n
    return DemandStats(mean, math.sqrt(variance), n)


def safety_stock(stats: DemandStats, lead_time_days: float, z: float) -> float:
    """``z * sigma * sqrt(L)``.

    :raises ValueError: a negative lead time or z.
    """
    if lead_time_days < 0 or z < 0:
        raise ValueError(f"lead time and z must be >= 0, got {lead_time_days} and {z}")
    return z * stats.std * math.sqrt(lead_time_days)


def reorder_point(stats: DemandStats, lead_time_days: float, z: float) -> int:
    """``ceil(mu * L + z * sigma * sqrt(L))`` in whole units (see the module docstring).

    :raises ValueError: a negative lead time or z.
    """
    exact = stats.mean * lead_time_days + safety_stock(stats, lead_time_days, z)
    return max(0, math.ceil(round(exact, 6)))


def stats_by_part(
    issues: Iterable[tuple[str, dt.date, int]], parts: Iterable[str], as_of: dt.date,
    days: int = DEMAND_WINDOW_DAYS,
) -> Mapping[str, DemandStats]:
    """Demand statistics of several parts from ``(part_number, day, units)`` rows; a part
    without issues has mean and deviation 0."""
    grouped: dict[str, list[tuple[dt.date, int]]] = {p: [] for p in parts}
    for part, day, units in issues:
        grouped.setdefault(part, []).append((day, units))
    return {p: demand_stats(daily_demand(rows, as_of, days)) for p, rows in grouped.items()}
