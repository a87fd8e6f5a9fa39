"""The fitness_studio plugin: every hook a thorbis-cache vertical can implement.

The host loads this module through the ``thorbis_cache.plugins`` entry point
``fitness_studio`` (see ``pyproject.toml``). Each ``register_*`` hook returns plain
declarations; nothing here connects to anything at import.

Every fill of the cache reads the database *under the entry's fill lease*, so a change
that commits during the read is never overwritten by the row read before it: the
warmers yield :class:`~thorbis_cache.warming.WarmBatch` es (the keys first, from a
cheap query of ids; their rows read by the batch's ``load``, which the runner calls
once it holds the leases), and the patterns read through the cache with the loaders
of :mod:`thorbis_fitness_studio.loaders` when given a ``fetch``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib.resources import files
from typing import Any

from thorbis_cache import (
    Cache,
    CacheKey,
    CachePattern,
    InvalidationRule,
    KeySchema,
    MaterializedView,
    Permission,
    PluginInfo,
    RefreshPolicy,
    RuleTarget,
    SchemaKind,
    SqlScript,
    WarmBatch,
    WarmContext,
    Warmer,
    hookimpl,
)
from thorbis_cache.plugins.declarations import Fetch
from thorbis_fitness_studio import loaders
from thorbis_fitness_studio.models import ClassSession, Member, Occupancy

__all__ = [
    "ACTIVE_MEMBERS",
    "MEMBER",
    "NAMESPACE",
    "OCCUPANCY",
    "SCHEDULE",
    "STUDIO_LOCATIONS",
    "WAITLIST",
]

#: Prefix of every name this plugin declares, and its PostgreSQL schema.
NAMESPACE = "fit"


def _sql(name: str) -> str:
    return files("thorbis_fitness_studio").joinpath("sql", name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- key schemas

#: A member as an entity hash (partial updates, optimistic version); personal data, so
#: encrypted with the tenant's key. A member id that does not exist (a stale link, a
#: mistyped check-in code) is cached as absent for a minute rather than queried on every
#: scan: the ``fit.member`` rule fires on INSERT too, so a member who joins under that
#: id is never hidden by the cached absence.
MEMBER: KeySchema[Member] = KeySchema(
    "fit.member", Member, params={"member_id": int}, kind=SchemaKind.HASH,
    sensitive=True, ttl=3600, ttl_jitter=0.1, negative_ttl=60,
    description="a member (hash with version)",
)
#: Ids of the tenant's active members; dropped when a member's plan or status changes.
ACTIVE_MEMBERS: KeySchema[list[int]] = KeySchema(
    "fit.active_members", list[int], ttl=600, tags=("fit.member_lists",),
    description="ids of active members",
)
#: A studio's classes on one day, in start order.
SCHEDULE: KeySchema[list[ClassSession]] = KeySchema(
    "fit.schedule", list[ClassSession], params={"studio_id": int, "day": dt.date},
    ttl=900, tags=("fit.schedule",),
    description="classes of a studio on a day",
)
#: Waitlisted member ids of a class, scored by when they joined the list (first first).
WAITLIST: KeySchema[int] = KeySchema(
    "fit.waitlist", int, params={"session_id": int}, kind=SchemaKind.ZSET, ttl=3600,
    description="waitlist of a class (sorted set by join time)",
)
#: Geo index of the tenant's studios, for "studios near me".
STUDIO_LOCATIONS: KeySchema[int] = KeySchema(
    "fit.studio_locations", int, kind=SchemaKind.GEO, ttl=86400, tags=("fit.studios",),
    description="studio positions (geo index)",
)
#: A row of the ``fit.studio_occupancy`` materialized view. It mirrors the view, not
#: the tables behind it: a booking changes it only once the view is refreshed, so the
#: view's refresh (tag ``fit.occupancy``, which only this schema carries) drops it and
#: no rule targets it -- a rule on ``fit.bookings`` would only make readers reload the
#: same unrefreshed row.
OCCUPANCY: KeySchema[Occupancy] = KeySchema(
    "fit.occupancy", Occupancy, params={"studio_id": int, "day": dt.date}, ttl=3600,
    tags=("fit.occupancy",), mirrors="fit.studio_occupancy",
    description="class occupancy of a studio on a day",
)


# --------------------------------------------------------------------------- patterns


async def studios_near(
    cache: Cache, tenant: str, *, longitude: float, latitude: float,
    radius_m: float = 5000.0, count: int = 10, fetch: Fetch | None = None,
) -> list[tuple[int, float]]:
    """Studio ids within ``radius_m`` of a point, nearest first, with distances (m).

    :param fetch: read through the cache: when the tenant's geo index is not cached,
        load every studio's position with this query function and cache the whole
        index under its fill lease. Without it, answer from the cache only (no studio
        when the index is not cached).
    """
    index = cache.geo(STUDIO_LOCATIONS.key(tenant))
    if fetch is None:
        return await index.within(longitude, latitude, radius_m, count=count)

    async def load() -> dict[int, tuple[float, float]]:
        return await loaders.studio_positions(fetch, tenant)

    return await index.within(longitude, latitude, radius_m, count=count, loader=load)


async def waitlist_position(
    cache: Cache, tenant: str, *, session_id: int, member_id: int,
    fetch: Fetch | None = None,
) -> int | None:
    """1-based position of a member on a class's waitlist, or None if not on it.

    :param fetch: read through the cache: when the waitlist is not cached, load the
        whole list with this query function and cache it under its fill lease. Without
        it, answer from the cache only (None when the list is not cached).
    """
    waitlist = cache.zset(WAITLIST.key(tenant, session_id=session_id))
    if fetch is None:
        members = await waitlist.range_by_score()
    else:
        async def load() -> dict[int, float]:
            return await loaders.waitlist(fetch, tenant, session_id)

        members = await waitlist.get_or_load(load)
    for position, (member, _) in enumerate(members, 1):
        if member == member_id:
            return position
    return None


# --------------------------------------------------------------------------- warmers


async def warm_members(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    """Active members as entity hashes, then the list of their ids (entities before the
    list that points at them, so a reader of the list finds them cached)."""
    tenant, fetch = ctx.tenant, ctx.fetch
    # Ids only: the rows are read by the batch's load, once the leases are held.
    ids = await loaders.active_member_ids(fetch, tenant)
    keys = {MEMBER.key(tenant, member_id=i): i for i in ids}

    async def load_members(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        found = await loaders.members(fetch, tenant, [keys[k] for k in leased])
        # A member deleted since the ids were read is left out: an absent row.
        return {k: found[keys[k]] for k in leased if keys[k] in found}

    if keys:
        yield WarmBatch(keys, load_members, description="active members")
    active = ACTIVE_MEMBERS.key(tenant)

    async def load_active(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        # Read again under the lease: the ids above may have changed since.
        return {active: await loaders.active_member_ids(fetch, tenant)}

    yield WarmBatch([active], load_active, description="ids of active members")


async def warm_occupancy(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    """The last 14 days of occupancy per studio, from the materialized view."""
    tenant, fetch = ctx.tenant, ctx.fetch
    rows = await fetch(
        "SELECT studio_id, day FROM fit.studio_occupancy"
        " WHERE tenant_id = $1 AND day >= (now() AT TIME ZONE 'UTC')::date - 14",
        tenant,
    )
    keys = {
        OCCUPANCY.key(tenant, studio_id=r["studio_id"], day=r["day"]): (r["studio_id"], r["day"])
        for r in rows
    }

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        found = await loaders.occupancy(fetch, tenant, [keys[k] for k in leased])
        return {k: found[keys[k]] for k in leased if keys[k] in found}

    if keys:
        yield WarmBatch(keys, load, description="occupancy of the last 14 days")


# --------------------------------------------------------------------------- hooks


@hookimpl
def register_plugin_info() -> PluginInfo:
    """fitness_studio, namespace ``fit``, written against hook API version 1."""
    return PluginInfo(
        namespace=NAMESPACE, hook_api_version=1, title="Fitness studio",
        description="members, class schedules, waitlists, studio locations, occupancy",
    )


@hookimpl
def register_key_schemas() -> Sequence[KeySchema[Any]]:
    """One schema of each kind: hash, value, sorted set, geo index."""
    return [MEMBER, ACTIVE_MEMBERS, SCHEDULE, WAITLIST, STUDIO_LOCATIONS, OCCUPANCY]


@hookimpl
def register_cache_patterns() -> Sequence[CachePattern]:
    """Studios near a point; a member's place on a waitlist."""
    return [
        CachePattern("fit.studios_near", studios_near, schemas=["fit.studio_locations"],
                     description="studios within a radius, nearest first"),
        CachePattern("fit.waitlist_position", waitlist_position, schemas=["fit.waitlist"],
                     description="a member's 1-based place on a class waitlist"),
    ]


@hookimpl
def register_sql() -> Sequence[SqlScript]:
    """The ``fit`` schema and its tables (idempotent)."""
    return [SqlScript("fit.tables", _sql("tables.sql"))]


@hookimpl
def register_materialized_views() -> Sequence[MaterializedView]:
    """Studio occupancy per day, refreshed concurrently (it has a unique index)."""
    return [
        MaterializedView(
            "fit.studio_occupancy",
            _sql("studio_occupancy.sql"),
            unique_index=("tenant_id", "studio_id", "day"),
            indexes=[("tenant_id", "day")],
            sources=("fit.class_sessions", "fit.bookings"),
            refresh=RefreshPolicy(cron="*/10 * * * *", max_staleness=900, min_changes=200),
            tags=("fit.occupancy",),
        )
    ]


@hookimpl
def register_invalidation_rules() -> Sequence[InvalidationRule]:
    """Which cache entries each table change makes stale."""
    return [
        # INSERT too: it drops an absence cached for that id (fit.member's negative_ttl).
        InvalidationRule(
            "fit.member", table="fit.members", operations=["INSERT", "UPDATE", "DELETE"],
            targets=[RuleTarget(schema="fit.member", params={"member_id": "id"})],
        ),
        # The member list only changes when a member joins, leaves, or changes plan or
        # status: an email change does not touch it.
        InvalidationRule(
            "fit.member_lists", table="fit.members", operations=["INSERT", "UPDATE", "DELETE"],
            significant_columns=["plan", "active"],
            targets=[RuleTarget(tag="fit.member_lists")],
        ),
        InvalidationRule(
            "fit.schedule", table="fit.class_sessions",
            operations=["INSERT", "UPDATE", "DELETE"],
            targets=[RuleTarget(tag="fit.schedule")],
        ),
        # booked_at is the waitlist score (when the member joined the list).
        InvalidationRule(
            "fit.waitlist", table="fit.bookings", operations=["INSERT", "UPDATE", "DELETE"],
            significant_columns=["status", "booked_at"],
            targets=[RuleTarget(schema="fit.waitlist", params={"session_id": "session_id"})],
        ),
        InvalidationRule(
            "fit.studios", table="fit.studios", operations=["INSERT", "UPDATE", "DELETE"],
            significant_columns=["longitude", "latitude"],
            targets=[RuleTarget(tag="fit.studios")],
        ),
    ]


@hookimpl
def register_warmers() -> Sequence[Warmer]:
    """Members (and the active list), and recent occupancy."""
    return [
        Warmer("fit.members", warm_members, schemas=["fit.member", "fit.active_members"],
               description="active members and their ids"),
        Warmer("fit.occupancy", warm_occupancy, schemas=["fit.occupancy"],
               description="the last 14 days of occupancy"),
    ]


@hookimpl
def register_permissions() -> Sequence[Permission]:
    """Permission names of the vertical."""
    return [
        Permission("fit.members.read", "see member profiles"),
        Permission("fit.members.write", "edit member profiles and plans"),
        Permission("fit.classes.book", "book or cancel a class for a member"),
        Permission("fit.classes.manage", "create, move and cancel classes"),
        Permission("fit.reports.view", "see occupancy reports"),
    ]
