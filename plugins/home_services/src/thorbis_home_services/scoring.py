"""The seed's work-order score: the sorted-set score of ``hs.work_orders_by_status``.

Reproduced exactly from the seed's ``calculateWorkOrderScore``::

    score = PRIORITY_WEIGHT[priority] + scheduled_at (Unix seconds)

    emergency 1_000_000 · urgent 100_000 · high 10_000 · standard 1_000 · low 100

Lists are read highest score first (the seed's ``ZREVRANGE``). Because the weight is added
to a time in seconds, it acts as a *time shift*: an emergency ranks as if it were
scheduled 1,000,000 s (11.6 days) later than it is, an urgent order 100,000 s (27.8 h),
a high one 10,000 s (2.8 h), a standard one 1,000 s (16.7 min), a low one 100 s. So:

* at equal scheduled times, a higher priority always ranks first;
* at equal priority, the later-scheduled order ranks first;
* an order of priority *p* outranks one of priority *q* < *p* scheduled ``d`` seconds
  later exactly when ``d < weight(p) - weight(q)`` (e.g. an emergency beats an urgent order
  unless the urgent one is scheduled more than 900,000 s, 10.4 days, later).

That is the seed's behaviour and we keep it, so cached lists rank exactly as the seed's.
Scores stay exact in a double: Unix seconds with microseconds (< 2**31 · 10**6) plus a
weight fit in 53 bits of mantissa to within a microsecond.
"""

from __future__ import annotations

import datetime as dt
from types import MappingProxyType

from thorbis_home_services.models import Priority, WorkOrder

__all__ = ["DEFAULT_WEIGHT", "PRIORITY_WEIGHTS", "score_of", "work_order_score"]

#: The seed's ``priorityScores``.
PRIORITY_WEIGHTS = MappingProxyType(
    {
        Priority.EMERGENCY: 1_000_000.0,
        Priority.URGENT: 100_000.0,
        Priority.HIGH: 10_000.0,
        Priority.STANDARD: 1_000.0,
        Priority.LOW: 100.0,
    }
)
#: The seed's fallback (``|| 1000``) for a priority it does not know.
DEFAULT_WEIGHT = 1_000.0


def work_order_score(priority: Priority | str, scheduled_at: dt.datetime) -> float:
    """The seed's score: priority weight plus the scheduled time in Unix seconds.

    :param priority: a :class:`Priority`, or its value; an unknown value weighs
        :data:`DEFAULT_WEIGHT`, as in the seed.
    :param scheduled_at: an aware datetime (a naive one would be read in local time,
        making the score depend on the host's time zone).
    :returns: the score.
    :raises ValueError: ``scheduled_at`` is naive.
    """
    if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
        raise ValueError(f"scheduled_at must be timezone-aware, got {scheduled_at!r}")
    if isinstance(priority, str):
        try:
            priority = Priority(priority)
        except ValueError:
            return DEFAULT_WEIGHT + scheduled_at.timestamp()
    return PRIORITY_WEIGHTS.get(priority, DEFAULT_WEIGHT) + scheduled_at.timestamp()


def score_of(order: WorkOrder) -> float:
    """:func:`work_order_score` of a work order."""
    return work_order_score(order.priority, order.scheduled_at)
