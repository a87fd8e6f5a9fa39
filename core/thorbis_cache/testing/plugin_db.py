"""Helpers for a plugin's own tests against real PostgreSQL and Redis (ours use them too).

::

    from thorbis_cache.testing.plugin_db import LoadedDb, create_plugin_schema, schema_registry

    registry = schema_registry(ALL_SCHEMAS, owner="automotive")
    await create_plugin_schema(conn, [script("tables")], ALL_VIEWS)
    db = LoadedDb(conn, await datagen.load(conn, TENANTS, 12))
    rows = await db.fetch("SELECT ...", tenant)     # WarmContext.fetch-shaped
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.plugins.declarations import MaterializedView
from thorbis_cache.postgres.catalog import quote_qualified

__all__ = ["LoadedDb", "create_plugin_schema", "refresh_views", "schema_registry"]

_D = TypeVar("_D")


def schema_registry(schemas: Iterable[KeySchema[Any]], owner: str) -> SchemaRegistry:
    """A registry holding ``schemas``, registered for ``owner`` (the plugin's name)."""
    registry = SchemaRegistry()
    for schema in schemas:
        registry.register(schema, owner=owner)
    return registry


async def create_plugin_schema(conn: Any, scripts: Iterable[str],
                               views: Iterable[MaterializedView]) -> None:
    """Run the plugin's SQL scripts, then create each view with its indexes
    (:meth:`MaterializedView.create_sql`), as ``thorbis-cache db init`` does."""
    for sql in scripts:
        await conn.execute(sql)
    for view in views:
        for statement in view.create_sql():
            await conn.execute(statement)


async def refresh_views(conn: Any, views: Iterable[MaterializedView]) -> None:
    """Refresh each view plainly (nothing reads them yet, and plain is cheaper)."""
    for view in views:
        await conn.execute(f"REFRESH MATERIALIZED VIEW {quote_qualified(view.name)}")


@attrs.frozen
class LoadedDb(Generic[_D]):
    """A connection to a database holding a plugin's tables and a generated data set.

    :ivar conn: the ``asyncpg`` connection.
    :ivar data: what the plugin's data generator wrote.
    """

    conn: Any
    data: _D

    async def fetch(self, sql: str, *args: object) -> list[Mapping[str, Any]]:
        """Rows as dicts: the shape of :attr:`WarmContext.fetch
        <thorbis_cache.plugins.declarations.WarmContext.fetch>`."""
        return [dict(r) for r in await self.conn.fetch(sql, *args)]
