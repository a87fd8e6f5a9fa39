"""The seed's "popularity scores" and "dynamic pricing", as plain formulas over sales.

The seed called ``calculatePopularityScores`` and ``calculateDynamicPricing`` without
saying what they computed. Here both are deterministic functions of an item's daily
sales at a location (the ``rest.item_sales_daily`` view) and the day they are computed
for; nothing is random and nothing is a constant stand-in.

**Popularity** -- exponentially time-decayed units sold, half-life 7 days, over the
last 28 days::

    popularity(today) = sum over days d in [today - 27, today] of
                        quantity(d) * 2 ** (-(today - d) / 7)

A unit sold today counts 1, a week ago 0.5, two weeks ago 0.25; sales older than 28
days count 0 (they would weigh at most 1/16). Rounded to 4 decimals so cached values
compare exactly. Properties (tested): never negative; adding a sale never lowers it; a
sale counts more the more recent it is; independent of input order.

**Demand ratio** -- last week against the four weeks before, per week::

    recent   = units sold in days [today - 6, today]
    baseline = units sold in days [today - 34, today - 7] / 4
    ratio    = recent / baseline          (1.0 when baseline is 0: no history, no signal)

**Dynamic price** -- the list price moved by a bounded linear response to demand::

    multiplier = clamp(1 + K * (ratio - 1), FLOOR, CAP)      K = 0.25, FLOOR = 0.90, CAP = 1.20
    price      = round_half_even(base_price * multiplier, cents)

Double last month's weekly demand (ratio 2) is +25% before the cap clips it to +20%;
half of it (ratio 0.5) is -12.5%, clipped to -10%. Properties (tested): within
``[FLOOR * base, CAP * base]`` (to the cent); monotone non-decreasing in the ratio; the
list price at ratio 1.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable

__all__ = [
    "CAP",
    "FLOOR",
    "HALF_LIFE_DAYS",
    "POPULARITY_WINDOW_DAYS",
    "K",
    "demand_ratio",
    "dynamic_price",
    "multiplier",
    "popularity",
]

HALF_LIFE_DAYS = 7.0
POPULARITY_WINDOW_DAYS = 28
RECENT_DAYS = 7
BASELINE_WEEKS = 4
K = decimal.Decimal("0.25")
FLOOR = decimal.Decimal("0.90")
CAP = decimal.Decimal("1.20")
_CENT = decimal.Decimal("0.01")


def popularity(sales: Iterable[tuple[dt.date, int]], today: dt.date) -> float:
    """Decayed units sold (half-life :data:`HALF_LIFE_DAYS`, window 28 days).

    :param sales: ``(day, units)`` pairs, any order, days may repeat; days after
        ``today`` or before the window are ignored.
    :param today: the day the score is for.
    :raises ValueError: a negative quantity.
    """
    total = 0.0
    for day, quantity in sales:
        if quantity < 0:
            raise ValueError(f"quantity sold on {day} is negative: {quantity}")
        age = (today - day).days
        if 0 <= age < POPULARITY_WINDOW_DAYS:
            total += quantity * 2.0 ** (-age / HALF_LIFE_DAYS)
    return round(total, 4)


def demand_ratio(sales: Iterable[tuple[dt.date, int]], today: dt.date) -> float:
    """Units sold in the last 7 days over the weekly mean of the 4 weeks before.

    :returns: the ratio rounded to 4 decimals; 1.0 when the baseline weeks sold nothing.
    :raises ValueError: a negative quantity.
    """
    recent = 0
    earlier = 0
    for day, quantity in sales:
        if quantity < 0:
            raise ValueError(f"quantity sold on {day} is negative: {quantity}")
        age = (today - day).days
        if 0 <= age < RECENT_DAYS:
            recent += quantity
        elif RECENT_DAYS <= age < RECENT_DAYS * (BASELINE_WEEKS + 1):
            earlier += quantity
    if earlier == 0:
        return 1.0
    return round(recent * BASELINE_WEEKS / earlier, 4)


def multiplier(ratio: float) -> decimal.Decimal:
    """``clamp(1 + K * (ratio - 1), FLOOR, CAP)``, exact in decimal.

    :raises ValueError: a negative or non-finite ratio.
    """
    exact = decimal.Decimal(repr(float(ratio)))
    if not exact.is_finite() or exact < 0:
        raise ValueError(f"demand ratio must be a finite number >= 0, got {ratio!r}")
    return min(CAP, max(FLOOR, 1 + K * (exact - 1)))


def dynamic_price(base_price: decimal.Decimal, ratio: float) -> decimal.Decimal:
    """The list price times :func:`multiplier`, rounded half-even to the cent.

    :raises ValueError: a negative price, or a ratio :func:`multiplier` refuses.
    """
    if base_price < 0:
        raise ValueError(f"base price must be >= 0, got {base_price}")
    return (base_price * multiplier(ratio)).quantize(_CENT, rounding=decimal.ROUND_HALF_EVEN)
