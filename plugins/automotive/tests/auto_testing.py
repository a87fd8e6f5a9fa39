"""Helpers shared by the automotive tests (a uniquely named module, so it cannot clash
with another test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from thorbis_cache import Cache, SchemaRegistry
from thorbis_cache.plugins.declarations import WarmContext, Warmer
from thorbis_cache.testing import plugin_db
from thorbis_cache.testing.plugin_db import create_plugin_schema, schema_registry
from thorbis_cache.warming import WarmOutcome, warm

from thorbis_automotive import datagen
from thorbis_automotive.schemas import ALL_SCHEMAS
from thorbis_automotive.sqlfiles import script
from thorbis_automotive.views import ALL_VIEWS
from thorbis_automotive.warmers import default_warmers

TENANTS = ("acme", "globex")
PER_TENANT = 12


def registry() -> SchemaRegistry:
    """A registry of every automotive schema."""
    return schema_registry(ALL_SCHEMAS, owner="automotive")


async def create_schema(conn: Any) -> None:
    """Apply the tables script and create every view with its indexes."""
    await create_plugin_schema(conn, [script("tables")], ALL_VIEWS)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


#: A database with the schema, the generated data of two tenants, and views.
LoadedDb = plugin_db.LoadedDb[datagen.Dataset]

#: ``async (sql, *args) -> rows`` as :class:`WarmContext` takes it.
RowsFetch = Callable[..., Awaitable[list[Mapping[str, Any]]]]


class CountingFetch:
    """A ``fetch`` that counts its queries (a read that reached PostgreSQL moved it),
    and runs them one at a time: one asyncpg connection serves one query at a time,
    where a host's pool would run concurrent loads side by side."""

    def __init__(self, fetch: RowsFetch) -> None:
        self._fetch = fetch
        self._lock = asyncio.Lock()
        self.calls = 0

    async def __call__(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        self.calls += 1
        async with self._lock:
            return await self._fetch(sql, *args)


async def warm_tenant(cache: Cache, fetch: RowsFetch, tenant: str,
                      warmers: Sequence[Warmer] | None = None) -> WarmOutcome:
    """Run the warmers (default: the plugin's) for ``tenant`` the way the core does:
    each batch they yield through :func:`thorbis_cache.warming.warm`, in order."""
    total = WarmOutcome()
    context = WarmContext(cache=cache, tenant=tenant, fetch=fetch)
    for warmer in default_warmers() if warmers is None else warmers:
        async for batch in warmer.produce(context):
            total += await warm(cache, batch)
    return total
