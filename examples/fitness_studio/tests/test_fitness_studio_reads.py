"""fitness_studio's own reads, on the sample data: the warmers fill what they promise
under fill leases, and the patterns read through the cache when given ``fetch``.

The bodies are synchronous and run their async work with the contract kit's
:func:`~thorbis_cache.testing.contract.run_async`, so they pass whatever the project's
pytest-asyncio mode, like the contract itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from thorbis_fitness_studio import ACTIVE_MEMBERS, MEMBER, OCCUPANCY, STUDIO_LOCATIONS, WAITLIST
from thorbis_fitness_studio.models import Member, Occupancy, Plan
from thorbis_fitness_studio.plugin import (
    studios_near,
    waitlist_position,
    warm_members,
    warm_occupancy,
)
from thorbis_fitness_studio.sample_data import SEED_SQL

from thorbis_cache import Cache, KeyRing, MissingRow, WarmBatch, WarmContext, WarmOutcome, warm
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.testing.contract import ContractTarget, load_plugin, run_async
from thorbis_cache.testing.contract_db import applied
from thorbis_cache.testing.plugin_db import schema_registry

FetchRows = Callable[..., Awaitable[list[Mapping[str, Any]]]]
Body = Callable[[Cache, FetchRows], Awaitable[None]]

#: Riverside, acme's studio 1 (sample data).
RIVERSIDE = (-0.1276, 51.5072)


@pytest.fixture(scope="module")
def plugin() -> LoadedPlugin:
    return run_async(lambda: load_plugin(ContractTarget("fitness_studio")))


def on_sample_data(plugin: LoadedPlugin, dsn: str, redis_url: str, body: Body) -> None:
    """Run ``body`` with a cache of the plugin's schemas on ``redis_url`` and a fetch on
    a fresh database holding the plugin's tables and the sample data."""
    async def run() -> None:
        registry = schema_registry(plugin.schemas, owner=plugin.name)
        async with (
            Cache.from_url(redis_url, registry, keyring=KeyRing.generate()) as cache,
            applied(dsn, plugin, SEED_SQL) as conn,
        ):
            async def fetch(sql: str, *args: object) -> list[Mapping[str, Any]]:
                return [dict(row) for row in await conn.fetch(sql, *args)]

            await body(cache, fetch)

    run_async(run)


async def warm_all(cache: Cache, ctx: WarmContext, *producers: Any) -> WarmOutcome:
    outcome = WarmOutcome()
    for produce in producers:
        async for batch in produce(ctx):
            outcome += await warm(cache, batch)
    return outcome


async def never() -> Any:
    raise AssertionError("the loader was called for an entry that is cached")


def test_warmers_fill_active_members_their_list_and_recent_occupancy(
    plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_redis_url: str
) -> None:
    async def body(cache: Cache, fetch: FetchRows) -> None:
        ctx = WarmContext(cache=cache, tenant="acme", fetch=fetch)
        views = await fetch(
            "SELECT studio_id, day, sessions, capacity, booked, waitlisted"
            " FROM fit.studio_occupancy WHERE tenant_id = 'acme'"
        )
        outcome = await warm_all(cache, ctx, warm_members, warm_occupancy)
        # Ada and Ben (Cy is inactive), the active list, and each occupancy row.
        assert outcome == WarmOutcome(filled=3 + len(views))
        ada = await cache.hash(MEMBER.key("acme", member_id=1)).get()
        assert ada == Member(1, "Ada", "ada@example.com", Plan.UNLIMITED, True,
                             dt.date(2024, 1, 10), 0)
        assert await cache.hash(MEMBER.key("acme", member_id=3)).get() is None
        assert await cache.get(ACTIVE_MEMBERS.key("acme")) == [1, 2]
        assert views
        for row in views:
            key = OCCUPANCY.key("acme", studio_id=row["studio_id"], day=row["day"])
            assert await cache.get(key) == Occupancy(**row)
        # Everything is cached now: a second run loads nothing.
        again = await warm_all(cache, ctx, warm_members, warm_occupancy)
        assert again == WarmOutcome(cached=3 + len(views))

    on_sample_data(plugin, thorbis_pg_dsn, thorbis_redis_url, body)


def test_a_member_deleted_while_warming_is_cached_as_absent(
    plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_redis_url: str
) -> None:
    async def body(cache: Cache, fetch: FetchRows) -> None:
        produced = warm_members(WarmContext(cache=cache, tenant="acme", fetch=fetch))
        members = await anext(produced)
        assert isinstance(members, WarmBatch)
        # Ben leaves between the query of the ids and the load of the rows.
        await fetch("DELETE FROM fit.bookings WHERE tenant_id = 'acme' AND member_id = 2")
        await fetch("DELETE FROM fit.members WHERE tenant_id = 'acme' AND id = 2")
        assert await warm(cache, members) == WarmOutcome(filled=1, absent=1)
        await produced.aclose()
        # fit.member has a negative_ttl: the absence is cached, the loader not called.
        with pytest.raises(MissingRow):
            await cache.hash(MEMBER.key("acme", member_id=2)).get_or_load(never)

    on_sample_data(plugin, thorbis_pg_dsn, thorbis_redis_url, body)


def test_studios_near_reads_through_with_fetch_and_answers_from_the_cache_without(
    plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_redis_url: str
) -> None:
    lon, lat = RIVERSIDE

    async def body(cache: Cache, fetch: FetchRows) -> None:
        assert await studios_near(cache, "acme", longitude=lon, latitude=lat) == []
        found = await studios_near(cache, "acme", longitude=lon, latitude=lat, fetch=fetch)
        assert [studio for studio, _ in found] == [1, 2]  # Old Town is about 2.9 km away
        assert found[0][1] < 1
        assert 2500 < found[1][1] < 3500
        assert len(await cache.geo(STUDIO_LOCATIONS.key("acme")).get_or_load(never)) == 2
        cached = await studios_near(cache, "acme", longitude=lon, latitude=lat)
        assert [studio for studio, _ in cached] == [1, 2]
        # globex's index is its own, and was never loaded.
        assert await studios_near(cache, "globex", longitude=lon, latitude=lat) == []

    on_sample_data(plugin, thorbis_pg_dsn, thorbis_redis_url, body)


def test_waitlist_position_reads_through_with_fetch_and_answers_from_the_cache_without(
    plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_redis_url: str
) -> None:
    async def body(cache: Cache, fetch: FetchRows) -> None:
        where = {"session_id": 10}
        assert await waitlist_position(cache, "acme", member_id=3, **where) is None
        assert await waitlist_position(cache, "acme", member_id=3, fetch=fetch, **where) == 1
        # Ada is booked on the class, not waitlisted.
        assert await waitlist_position(cache, "acme", member_id=1, fetch=fetch, **where) is None
        assert await waitlist_position(cache, "acme", member_id=3, **where) == 1
        cached = await cache.zset(WAITLIST.key("acme", session_id=10)).get_or_load(never)
        assert [member for member, _ in cached] == [3]

    on_sample_data(plugin, thorbis_pg_dsn, thorbis_redis_url, body)
