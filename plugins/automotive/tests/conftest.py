"""Fixtures of the automotive tests, on the core's real-server fixtures
(``thorbis_redis_url``, ``thorbis_standalone_redis_url``, ``thorbis_pg_dsn``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from auto_testing import PER_TENANT, TENANTS, LoadedDb, create_schema, registry, today
from thorbis_cache import Cache, KeyRing

from thorbis_automotive import datagen


@pytest.fixture
async def auto_cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    """A cache of the automotive schemas, once per topology."""
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=KeyRing.generate()) as c:
        yield c


@pytest.fixture
async def auto_standalone_cache(thorbis_standalone_redis_url: str) -> AsyncIterator[Cache]:
    """A cache of the automotive schemas on the single server only."""
    async with Cache.from_url(
        thorbis_standalone_redis_url, registry(), keyring=KeyRing.generate()
    ) as c:
        yield c


@pytest.fixture
async def auto_db(thorbis_pg_dsn: str) -> AsyncIterator[LoadedDb]:
    """Tables, views, and two tenants of generated data ending today (so the views'
    windows are populated); the views are refreshed."""
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        data = await datagen.load(conn, TENANTS, PER_TENANT, seed=7, reference=today())
        for name in ("parts_demand_weekly", "labor_monthly", "bay_utilisation_daily"):
            await conn.execute(f"REFRESH MATERIALIZED VIEW auto.{name}")
        yield LoadedDb(conn, data)
    finally:
        await conn.close()
