"""The maintenance schedule of a vehicle: the seed's ``generateMaintenanceSchedule``, as
a formula over the vehicle's service history and the shop's service intervals.

Inputs: the vehicle's completed services ``(date, odometer, type)`` and, per service
type, an interval in miles ``I_miles`` and in days ``I_days`` (whichever comes first,
as in an owner's manual)::

    mileage rate r = (o_last - o_first) / (t_last - t_first)   miles per day
        from the first and last readings (completed services, and the vehicle's current
        odometer if given with its date); None when the readings span no day or the
        odometer went backwards (a replaced cluster)

    for each service type s:
      anchor (t_a, o_a) = the last completed service of type s, else the vehicle's first
                          known reading (a type never done here counts from then)
      due_miles         = o_a + I_miles
      due_by_time       = t_a + I_days
      due_by_mileage    = t_last + floor((due_miles - o_last) / r) days   (r > 0 only)
      due_on            = min(due_by_time, due_by_mileage)
                          (due_by_mileage is kept within 100 years of t_last)

    schedule = every type, by (due_on, service type)

Endpoints rather than a regression: two readings suffice, and one mistyped reading in
between cannot bend the rate. Properties (tested): ``due_on`` is never after
``due_by_time``; a higher mileage rate never makes a service due later; the order the
history is given in does not matter; with no readings there is no schedule.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence

from thorbis_automotive.models import ScheduledService, ServiceType

__all__ = ["Reading", "maintenance_schedule", "mileage_rate"]

#: Bound (days) of a mileage-based due date from the last reading, either way.
_HORIZON = 36_500

#: ``(day, odometer miles, service type code or None)``: one odometer reading.
Reading = tuple[dt.date, int, str | None]


def mileage_rate(readings: Iterable[Reading]) -> float | None:
    """Miles per day between the first and the last reading (by date, then odometer);
    None when they are on the same day or the odometer went down."""
    ordered = sorted((day, miles) for day, miles, _ in readings)
    if len(ordered) < 2:
        return None
    (t0, o0), (t1, o1) = ordered[0], ordered[-1]
    days = (t1 - t0).days
    if days <= 0 or o1 < o0:
        return None
    return (o1 - o0) / days


def maintenance_schedule(
    readings: Iterable[Reading], service_types: Sequence[ServiceType]
) -> tuple[float | None, list[ScheduledService]]:
    """The mileage rate and the schedule (see the module docstring).

    :param readings: completed services as ``(day, odometer, type)`` and optionally the
        current odometer as ``(day, odometer, None)``; any order.
    :param service_types: the shop's service types.
    :returns: ``(miles per day or None, schedule)``; an empty schedule without readings.
    """
    ordered = sorted(readings, key=lambda r: (r[0], r[1], r[2] or ""))
    if not ordered:
        return None, []
    rate = mileage_rate(ordered)
    first_day, first_miles, _ = ordered[0]
    last_day, last_miles, _ = ordered[-1]
    last_of: dict[str, tuple[dt.date, int]] = {}
    for day, miles, code in ordered:
        if code is not None:
            last_of[code] = (day, miles)
    schedule = []
    for st in service_types:
        done = last_of.get(st.code)
        anchor_day, anchor_miles = done if done is not None else (first_day, first_miles)
        due_miles = anchor_miles + st.interval_miles
        by_time = anchor_day + dt.timedelta(days=st.interval_days)
        by_mileage = None
        if rate is not None and rate > 0:
            days = math.floor((due_miles - last_miles) / rate)
            # A crawling rate (a stored car) would date the mileage centuries away.
            by_mileage = last_day + dt.timedelta(days=max(-_HORIZON, min(_HORIZON, days)))
        due_on = by_time if by_mileage is None else min(by_time, by_mileage)
        schedule.append(ScheduledService(
            st.code, st.name, None if done is None else done[0], due_miles, by_time,
            by_mileage, due_on,
        ))
    schedule.sort(key=lambda s: (s.due_on, s.service_type))
    return rate, schedule
