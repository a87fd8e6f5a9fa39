"""Fixtures of the restaurant tests, on the core's real-server fixtures.

``thorbis_redis_url`` (standalone and cluster), ``thorbis_standalone_redis_url`` and
``thorbis_pg_dsn`` (a fresh database per test) come from thorbis-cache's pytest plugin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from rest_testing import LOCATIONS, TENANTS, Live, LoadedDb, create_schema, refresh_views, registry
from thorbis_cache import Cache, CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import apply_and_check
from thorbis_cache.postgres.connection import connect
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers

from thorbis_restaurant import datagen


@pytest.fixture
async def rest_cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    """A cache of the restaurant schemas, once per topology."""
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=KeyRing.generate()) as c:
        yield c


@pytest.fixture
async def rest_standalone_cache(thorbis_standalone_redis_url: str) -> AsyncIterator[Cache]:
    """A cache of the restaurant schemas on the single server only."""
    async with Cache.from_url(
        thorbis_standalone_redis_url, registry(), keyring=KeyRing.generate()
    ) as c:
        yield c


@pytest.fixture
async def rest_db(thorbis_pg_dsn: str) -> AsyncIterator[LoadedDb]:
    """Tables, two tenants of generated data placed around today, refreshed views."""
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        today = dt.datetime.now(dt.UTC).date()
        data = await datagen.load(conn, TENANTS, LOCATIONS, seed=7, reference=today)
        await refresh_views(conn)
        yield LoadedDb(conn, data)
    finally:
        await conn.close()


@pytest.fixture
async def rest_live(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[Live]:
    await migrate(thorbis_pg_dsn)
    manager = PluginManager()
    loaded = await manager.load(["restaurant"])
    await apply_and_check(thorbis_pg_dsn, loaded)
    trigger_conn = await connect(thorbis_pg_dsn)
    try:
        await install_triggers(trigger_conn, manager.all_rules())
    finally:
        await trigger_conn.close()
    conn = await asyncpg.connect(thorbis_pg_dsn)
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate()).start(
        ["restaurant"])
    try:
        data = await datagen.load(conn, TENANTS, 1, seed=3)
        await refresh_views(conn)
        # The load's own outbox rows: applied now, so each test starts from a clean outbox.
        async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
            await worker.drain()
        yield Live(thorbis_pg_dsn, conn, app, data)
    finally:
        await app.aclose()
        await conn.close()
