"""Helpers shared by the restaurant tests (a uniquely named module, so it cannot clash
with another test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from thorbis_cache import SchemaRegistry

from thorbis_restaurant import datagen
from thorbis_restaurant.schemas import ALL_SCHEMAS
from thorbis_restaurant.sqlfiles import script
from thorbis_restaurant.views import ALL_VIEWS

TENANTS = ("acme", "globex")
LOCATIONS = 2


def registry() -> SchemaRegistry:
    """A registry of every restaurant schema."""
    reg = SchemaRegistry()
    for schema in ALL_SCHEMAS:
        reg.register(schema, owner="restaurant")
    return reg


async def create_schema(conn: Any) -> None:
    """Apply the tables script and create every view with its indexes."""
    await conn.execute(script("tables"))
    for view in ALL_VIEWS:
        for statement in view.create_sql():
            await conn.execute(statement)


async def refresh_views(conn: Any) -> None:
    """Refresh every view (plain: the data was just loaded)."""
    for view in ALL_VIEWS:
        await conn.execute(f"REFRESH MATERIALIZED VIEW {view.name}")


@attrs.frozen
class LoadedDb:
    """A database with the schema, generated data of two tenants, and refreshed views."""

    conn: Any
    data: datagen.Dataset

    async def fetch(self, sql: str, *args: object) -> list[Mapping[str, Any]]:
        """:attr:`WarmContext.fetch`-shaped access."""
        return [dict(r) for r in await self.conn.fetch(sql, *args)]
