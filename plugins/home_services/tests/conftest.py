"""Fixtures of the home-services tests, on the core's real-server fixtures.

``thorbis_redis_url`` (standalone and cluster), ``thorbis_standalone_redis_url`` and
``thorbis_pg_dsn`` (a fresh database per test) come from thorbis-cache's pytest plugin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hs_testing import PER_TENANT, TENANTS, LoadedDb, registry
from thorbis_cache import Cache, KeyRing

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
