"""Table availability of a location and day: the booking grid and its summary.

The seed wrote one hash per table plus a separate summary key, in separate commands, so
a reader could see a summary that disagreed with the tables. Here one hash per
(location, day) (``rest.table_availability``) holds the grid and the summary, and the
summary is always :func:`summarize` of the grid: writers compute both from one versioned
read and write them in one atomic update (see :mod:`thorbis_restaurant.writers`).

Summary (``T`` tables, ``S`` slots):

* ``total_table_slots = T * S``;
* ``booked_table_slots`` = number of (slot, table) pairs taken;
* ``free_table_slots = total - booked``;
* ``busiest_slot``: the slot with most tables taken (earliest on a tie); None when
  nothing is booked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from thorbis_restaurant.models import DiningTable, TableAvailability

__all__ = ["DEFAULT_SLOTS", "build", "free_tables", "summarize", "with_booking"]

#: Seating slots of a day (location time): lunch 11:30-13:30, dinner 17:00-21:30.
DEFAULT_SLOTS: tuple[str, ...] = (
    "11:30", "12:00", "12:30", "13:00", "13:30",
    "17:00", "17:30", "18:00", "18:30", "19:00", "19:30", "20:00", "20:30", "21:00", "21:30",
)  # fmt: skip


def summarize(
    slots: Sequence[str], tables: Sequence[DiningTable], booked: Mapping[str, Sequence[int]]
) -> tuple[int, int, int, str | None]:
    """``(total, booked, free, busiest slot)`` of a grid (see the module doc).

    Only known slots and tables count, each (slot, table) once.
    """
    known = {t.table_id for t in tables}
    total = len(slots) * len(known)
    taken = {s: len(set(booked.get(s, ())) & known) for s in slots}
    booked_count = sum(taken.values())
    busiest = max(slots, key=lambda s: (taken[s], -slots.index(s)), default=None)
    if busiest is not None and taken[busiest] == 0:
        busiest = None
    return total, booked_count, total - booked_count, busiest


def build(
    location_id: int,
    day: dt.date,
    tables: Iterable[DiningTable],
    bookings: Iterable[tuple[str, int]],
    slots: Sequence[str] = DEFAULT_SLOTS,
) -> TableAvailability:
    """A consistent availability record from tables and ``(slot, table id)`` bookings
    (bookings of unknown slots or tables are ignored)."""
    table_list = sorted(tables, key=lambda t: t.table_id)
    known = {t.table_id for t in table_list}
    grid: dict[str, set[int]] = {s: set() for s in slots}
    for slot, table_id in bookings:
        if slot in grid and table_id in known:
            grid[slot].add(table_id)
    booked = {s: sorted(ids) for s, ids in grid.items() if ids}
    total, taken, free, busiest = summarize(slots, table_list, booked)
    return TableAvailability(location_id, day, list(slots), table_list, booked, total, taken,
                             free, busiest)


def with_booking(current: TableAvailability, slot: str, table_id: int, *,
                 booked: bool) -> dict[str, object]:
    """The field changes that book (or free) ``table_id`` in ``slot``: the new grid and
    the new summary, to be written together.

    :raises ValueError: an unknown slot or table, or booking a taken table.
    """
    if slot not in current.slots:
        raise ValueError(f"unknown slot {slot!r} (slots: {', '.join(current.slots)})")
    if table_id not in {t.table_id for t in current.tables}:
        raise ValueError(f"unknown table {table_id} at location {current.location_id}")
    grid = {s: list(ids) for s, ids in current.booked.items()}
    ids = set(grid.get(slot, ()))
    if booked and table_id in ids:
        raise ValueError(f"table {table_id} is already booked at {slot} on {current.day}")
    ids = ids | {table_id} if booked else ids - {table_id}
    if ids:
        grid[slot] = sorted(ids)
    else:
        grid.pop(slot, None)
    total, taken, free, busiest = summarize(current.slots, current.tables, grid)
    return {"booked": grid, "total_table_slots": total, "booked_table_slots": taken,
            "free_table_slots": free, "busiest_slot": busiest}


def free_tables(availability: TableAvailability, slot: str, party_size: int = 1) -> list[int]:
    """Ids of the tables free in ``slot`` with at least ``party_size`` seats, smallest
    fitting table first (then by id)."""
    taken = set(availability.booked.get(slot, ()))
    fitting = [t for t in availability.tables if t.table_id not in taken and t.seats >= party_size]
    return [t.table_id for t in sorted(fitting, key=lambda t: (t.seats, t.table_id))]
