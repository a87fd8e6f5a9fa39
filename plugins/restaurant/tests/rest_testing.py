"""Helpers shared by the restaurant tests (a uniquely named module, so it cannot clash
with another test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import attrs
from thorbis_cache import CacheApp, SchemaRegistry
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.declarations import Fetch
from thorbis_cache.testing import plugin_db
from thorbis_cache.testing.plugin_db import create_plugin_schema, schema_registry

from thorbis_restaurant import datagen
from thorbis_restaurant.schemas import ALL_SCHEMAS
from thorbis_restaurant.sqlfiles import script
from thorbis_restaurant.views import ALL_VIEWS

TENANTS = ("acme", "globex")
LOCATIONS = 2


def registry() -> SchemaRegistry:
    """A registry of every restaurant schema."""
    return schema_registry(ALL_SCHEMAS, owner="restaurant")


async def create_schema(conn: Any) -> None:
    """Apply the tables script and create every view with its indexes."""
    await create_plugin_schema(conn, [script("tables")], ALL_VIEWS)


async def refresh_views(conn: Any) -> None:
    """Refresh every view (plain: the data was just loaded)."""
    await plugin_db.refresh_views(conn, ALL_VIEWS)


#: A database with the schema, the generated data of two tenants, and views.
LoadedDb = plugin_db.LoadedDb[datagen.Dataset]


@attrs.define
class CountingFetch:
    """A :data:`~thorbis_cache.plugins.declarations.Fetch` that counts the queries it runs: a
    read-through that hits runs none, one that loads runs at least one."""

    fetch: Fetch
    calls: int = 0

    async def __call__(self, sql: str, *args: object) -> Sequence[Mapping[str, Any]]:
        self.calls += 1
        return await self.fetch(sql, *args)


@attrs.frozen
class Live:
    """A database as ``thorbis-cache db init --plugin restaurant`` leaves it (core schema,
    plugin SQL and views, capture triggers), loaded with data, and an app on Redis that
    loaded the restaurant plugin only."""

    dsn: str
    conn: asyncpg.Connection
    app: CacheApp
    data: datagen.Dataset

    def worker(self) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn)
