"""Fixtures of the home-services tests, on the core's real-server fixtures.

``thorbis_redis_url`` (standalone and cluster), ``thorbis_standalone_redis_url`` and
``thorbis_pg_dsn`` (a fresh database per test) come from thorbis-cache's pytest plugin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hs_testing import PER_TENANT, TENANTS, HsApp, LoadedDb, registry
from thorbis_cache import Cache, CacheApp, KeyRing
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.plugin_db import refresh_views

from thorbis_home_services import datagen
from thorbis_home_services.sqlfiles import script
from thorbis_home_services.views import ALL_VIEWS


@pytest.fixture
async def hs_cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    """A cache of the home-services schemas, once per topology."""
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=KeyRing.generate()) as c:
        yield c


@pytest.fixture
async def hs_standalone_cache(thorbis_standalone_redis_url: str) -> AsyncIterator[Cache]:
    """A cache of the home-services schemas on the single server only."""
    async with Cache.from_url(
        thorbis_standalone_redis_url, registry(), keyring=KeyRing.generate()
    ) as c:
        yield c


@pytest.fixture
async def hs_db(thorbis_pg_dsn: str) -> AsyncIterator[LoadedDb]:
    """Tables, two tenants of generated data (placed around today, so the views'
    90-day windows and today's schedules are populated), and the views."""
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await conn.execute(script("tables"))
        today = dt.datetime.now(dt.UTC).date()
        data = await datagen.load(conn, TENANTS, PER_TENANT, seed=7, reference=today)
        for view in ALL_VIEWS:
            for statement in view.create_sql():
                await conn.execute(statement)
        yield LoadedDb(conn, data)
    finally:
        await conn.close()


@pytest.fixture
async def hs_app(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[HsApp]:
    """What ``thorbis-cache db init`` and a host do: the core schema, the plugin's SQL and
    views, the capture triggers of its rules; then the generated data of two tenants,
    the views refreshed, and the load's own changes applied (so each test starts with
    an empty outbox)."""
    await migrate(thorbis_pg_dsn)
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(),
                         postgres_dsn=thorbis_pg_dsn).start(["home_services"], apply_sql=True,
                                                            capture="triggers")
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await install_triggers(conn, app.plugins.all_rules())
        today = dt.datetime.now(dt.UTC).date()
        await datagen.load(conn, TENANTS, PER_TENANT, seed=7, reference=today)
        await refresh_views(conn, ALL_VIEWS)
        env = HsApp(thorbis_pg_dsn, conn, app)
        await env.apply_changes()
        yield env
    finally:
        await conn.close()
        await app.aclose()


@pytest.fixture
async def hs_pool(hs_db: LoadedDb, thorbis_pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``hs_db``'s database: a ``fetch`` that may be called concurrently, as
    the patterns call it when they read several entries through."""
    pool = await asyncpg.create_pool(thorbis_pg_dsn, min_size=1, max_size=8)
    try:
        yield pool
    finally:
        await pool.close()
