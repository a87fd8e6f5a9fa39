"""Helpers shared by the automotive tests (a uniquely named module, so it cannot clash
with another test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from thorbis_cache import SchemaRegistry
from thorbis_cache.testing import plugin_db
from thorbis_cache.testing.plugin_db import create_plugin_schema, schema_registry

from thorbis_automotive import datagen
from thorbis_automotive.schemas import ALL_SCHEMAS
from thorbis_automotive.sqlfiles import script
from thorbis_automotive.views import ALL_VIEWS

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
