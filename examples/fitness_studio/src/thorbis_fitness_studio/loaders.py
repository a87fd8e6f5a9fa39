"""The reads behind every fitness_studio cache entry, one function per cached shape.

Each takes a :data:`~thorbis_cache.plugins.declarations.Fetch` (``async (sql, *args) -> rows``)
and the tenant, and returns the entries in the shape their key schema caches: members
as entities, the active list as ids, a waitlist as member -> score, the studios as
member -> ``(longitude, latitude)``, occupancy rows as values. The warmers call them
inside a :class:`~thorbis_cache.warming.WarmBatch`'s ``load`` and the patterns as
read-through loaders, so both run *after* the fill leases are taken: a change that
commits meanwhile revokes the lease, and the row read before it is never cached.

Batched reads (:func:`members`, :func:`occupancy`) return only the rows that exist; a
caller maps a missing one to an absent row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from thorbis_cache.plugins.declarations import Fetch
from thorbis_fitness_studio.models import Member, Occupancy, Plan

__all__ = ["active_member_ids", "members", "occupancy", "studio_positions", "waitlist"]


async def members(fetch: Fetch, tenant: str, ids: Sequence[int]) -> dict[int, Member]:
    """The members of ``ids`` that exist (active or not), by id: one query."""
    rows = await fetch(
        "SELECT id, name, email, plan, active, joined_on, credits FROM fit.members"
        " WHERE tenant_id = $1 AND id = ANY($2::bigint[])",
        tenant, list(ids),
    )
    return {row["id"]: _member(row) for row in rows}


async def active_member_ids(fetch: Fetch, tenant: str) -> list[int]:
    """Ids of the tenant's active members, ascending (at most 5000)."""
    rows = await fetch(
        "SELECT id FROM fit.members WHERE tenant_id = $1 AND active ORDER BY id LIMIT 5000",
        tenant,
    )
    return [row["id"] for row in rows]


async def waitlist(fetch: Fetch, tenant: str, session_id: int) -> dict[int, float]:
    """The whole waitlist of a class: member id -> when the member joined it (epoch
    seconds), so the earliest has the lowest score. An unknown class has an empty
    waitlist, cached as such."""
    rows = await fetch(
        "SELECT member_id, extract(epoch FROM booked_at)::float8 AS joined"
        " FROM fit.bookings"
        " WHERE tenant_id = $1 AND session_id = $2 AND status = 'waitlisted'",
        tenant, session_id,
    )
    return {row["member_id"]: row["joined"] for row in rows}


async def studio_positions(fetch: Fetch, tenant: str) -> dict[int, tuple[float, float]]:
    """Every studio of the tenant at its ``(longitude, latitude)``: the whole geo index."""
    rows = await fetch(
        "SELECT id, longitude, latitude FROM fit.studios WHERE tenant_id = $1", tenant
    )
    return {row["id"]: (row["longitude"], row["latitude"]) for row in rows}


async def occupancy(
    fetch: Fetch, tenant: str, wanted: Sequence[tuple[int, dt.date]]
) -> dict[tuple[int, dt.date], Occupancy]:
    """The rows of the ``fit.studio_occupancy`` view for ``(studio_id, day)`` pairs that
    exist, by pair: one query."""
    rows = await fetch(
        "SELECT studio_id, day, sessions, capacity, booked, waitlisted"
        " FROM fit.studio_occupancy"
        " WHERE tenant_id = $1"
        " AND (studio_id, day) IN (SELECT * FROM unnest($2::bigint[], $3::date[]))",
        tenant, [studio for studio, _ in wanted], [day for _, day in wanted],
    )
    return {(row["studio_id"], row["day"]): Occupancy(**row) for row in rows}


def _member(row: Mapping[str, Any]) -> Member:
    return Member(
        id=row["id"], name=row["name"], email=row["email"], plan=Plan(row["plan"]),
        active=row["active"], joined_on=row["joined_on"], credits=row["credits"],
    )
