"""The kitchen queue priority: which order a station cooks next.

The seed scored station queues with an unspecified ``calculateOrderPriority``. Here a
station queue (``rest.kitchen_queue``) is a sorted set read lowest score first, and

    score = placed_at in Unix seconds - HEAD_START[priority]
    HEAD_START: rush 900 s (15 min) · vip 300 s (5 min) · normal 0

So orders are served first come, first served, except that a higher class is served as
if it had been placed its head start earlier. Consequences (property-tested):

* at equal priority, the older order comes first (FIFO);
* at equal placement time, rush before vip before normal;
* an order of class ``p`` overtakes one of class ``q`` placed ``d`` seconds before it
  exactly when ``d < HEAD_START[p] - HEAD_START[q]``: no order waits behind more than
  15 minutes of later arrivals (bounded starvation, unlike a pure class-first order).

A naive ``placed_at`` is refused: its Unix time would depend on the host's time zone.
"""

from __future__ import annotations

import datetime as dt
import types

from thorbis_restaurant.models import KitchenTicket, OrderPriority

__all__ = ["HEAD_START", "kitchen_score", "ticket_score"]

HEAD_START: types.MappingProxyType[OrderPriority, int] = types.MappingProxyType({
    OrderPriority.RUSH: 900,
    OrderPriority.VIP: 300,
    OrderPriority.NORMAL: 0,
})


def kitchen_score(priority: OrderPriority, placed_at: dt.datetime) -> float:
    """The queue score of an order (lower is cooked sooner).

    :raises ValueError: ``placed_at`` is naive.
    """
    if placed_at.tzinfo is None or placed_at.utcoffset() is None:
        raise ValueError(f"placed_at must be timezone-aware, got {placed_at!r}")
    return placed_at.timestamp() - HEAD_START[priority]


def ticket_score(ticket: KitchenTicket) -> float:
    """:func:`kitchen_score` of a ticket."""
    return kitchen_score(ticket.priority, ticket.placed_at)
