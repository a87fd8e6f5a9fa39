"""A tiny, complete in-process plugin (namespace ``tst``): one key schema of each kind,
a cache pattern, SQL with a schema, a table and a dollar-quoted function, a materialized
view with a unique index, a plain and a conditional invalidation rule, a warmer,
permissions, and an ``on_startup`` hook that records the app it was given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs

from thorbis_cache import (
    Cache,
    CacheKey,
    CachePattern,
    InvalidationRule,
    KeySchema,
    MaterializedView,
    Permission,
    PluginInfo,
    RefreshPolicy,
    RuleTarget,
    SchemaKind,
    SqlScript,
    WarmBatch,
    WarmContext,
    Warmer,
    hookimpl,
)


@attrs.frozen
class Item:
    id: int
    name: str
    status: str


ITEM = KeySchema("tst.item", Item, params={"item_id": int}, ttl=300, sensitive=True)
ITEM_HASH = KeySchema("tst.item_hash", Item, params={"item_id": int}, kind=SchemaKind.HASH)
BY_STATUS = KeySchema("tst.items_by_status", int, params={"status": str},
                      kind=SchemaKind.ZSET, tags=["tst.lists"])
NEAR = KeySchema("tst.items_near", int, kind=SchemaKind.GEO, tags=["tst.lists"])

SQL = """
-- The plugin's schema and its one table.
CREATE SCHEMA IF NOT EXISTS tst;
CREATE TABLE IF NOT EXISTS tst.items (
    tenant_id text NOT NULL,
    id bigint NOT NULL,
    name text NOT NULL DEFAULT 'unnamed; really',   -- a ';' inside a string
    status text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
/* A function whose body holds semicolons: dollar-quoted. */
CREATE OR REPLACE FUNCTION tst.label(i tst.items) RETURNS text LANGUAGE sql AS $body$
    SELECT i.name || ';' || i.status;
$body$;
"""

COUNTS = MaterializedView(
    "tst.item_counts",
    "SELECT tenant_id, status, count(*) AS n FROM tst.items GROUP BY tenant_id, status",
    unique_index=["tenant_id", "status"],
    sources=["tst.items"],
    refresh=RefreshPolicy(cron="*/5 * * * *", concurrently=True),
    tags=["tst.lists"],
)

#: Every app whose start called on_startup.
started: list[Any] = []


async def item_or_none(cache: Cache, tenant: str, *, item_id: int) -> Item | None:
    """The pattern: one cached item."""
    return await cache.get(ITEM.key(tenant, item_id=item_id))


async def warm_items(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    """The tenant's items: their ids first, then one batch whose load reads the rows of
    the keys it is handed (after the runner took their fill leases)."""
    ids = await ctx.fetch("SELECT id FROM tst.items WHERE tenant_id = $1", ctx.tenant)
    keys = {ITEM.key(ctx.tenant, item_id=row["id"]): row["id"] for row in ids}

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        rows = await ctx.fetch(
            "SELECT id, name, status FROM tst.items WHERE tenant_id = $1 AND id = ANY($2)",
            ctx.tenant, [keys[k] for k in leased],
        )
        return {ITEM.key(ctx.tenant, item_id=row["id"]): Item(**row) for row in rows}

    if keys:
        yield WarmBatch(keys, load, description="items")


@hookimpl
def register_plugin_info() -> PluginInfo:
    return PluginInfo(namespace="tst", hook_api_version=1, title="Test plugin",
                      description="Everything a plugin can declare, small.")


@hookimpl
def register_key_schemas() -> list[KeySchema[Any]]:
    return [ITEM, ITEM_HASH, BY_STATUS, NEAR]


@hookimpl
def register_cache_patterns() -> Any:
    # A zero-argument callable: the manager calls it.
    return lambda: [CachePattern("tst.item_or_none", item_or_none, schemas=["tst.item"])]


@hookimpl
async def register_sql() -> list[SqlScript]:
    # An awaitable: the manager awaits it.
    return [SqlScript("tst.tables", SQL)]


@hookimpl
def register_materialized_views() -> list[MaterializedView]:
    return [COUNTS]


@hookimpl
def register_invalidation_rules() -> list[InvalidationRule]:
    return [
        InvalidationRule("tst.item", table="tst.items", operations=["INSERT", "UPDATE", "DELETE"],
                         targets=[RuleTarget(schema="tst.item", params={"item_id": "id"})]),
        InvalidationRule("tst.lists", table="tst.items", operations=["UPDATE"],
                         significant_columns=["status"], targets=[RuleTarget(tag="tst.lists")]),
    ]


@hookimpl
def register_warmers() -> list[Warmer]:
    return [Warmer("tst.items", warm_items, schemas=["tst.item"])]


@hookimpl
def register_permissions() -> tuple[Permission, ...]:
    return (Permission("tst.items.read"), Permission("tst.items.write", "edit items"))


@hookimpl
async def on_startup(app: Any) -> None:
    started.append(app)
