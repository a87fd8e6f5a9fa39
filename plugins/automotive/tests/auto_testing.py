"""Helpers shared by the automotive tests (a uniquely named module, so it cannot clash
with another test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import attrs
from thorbis_cache import SchemaRegistry

from thorbis_automotive import datagen
from thorbis_automotive.schemas import ALL_SCHEMAS
from thorbis_automotive.sqlfiles import script
from thorbis_automotive.views import ALL_VIEWS

TENANTS = ("acme", "globex")
PER_TENANT = 12


def registry() -> SchemaRegistry:
    """A registry of every automotive schema."""
    reg = SchemaRegistry()
    for schema in ALL_SCHEMAS:
        reg.register(schema, owner="automotive")
    return reg


async def create_schema(conn: Any) -> None:
    """Apply the tables script and create every view with its indexes."""
    await conn.execute(script("tables"))
    for view in ALL_VIEWS:
        for statement in view.create_sql():
            await conn.execute(statement)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@attrs.frozen
class LoadedDb:
    """A database with the schema, the generated data of two tenants, and views."""

    conn: Any
    data: datagen.Dataset

    async def fetch(self, sql: str, *args: object) -> list[Mapping[str, Any]]:
        """:attr:`WarmContext.fetch`-shaped access."""
        return [dict(r) for r in await self.conn.fetch(sql, *args)]
