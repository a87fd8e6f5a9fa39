"""Plugins whose declarations are valid but do not survive the database: SQL that fails
to apply, rules naming missing tables and columns, a view without a usable unique index,
an ``on_startup`` that raises, and a hook that never returns.
"""

from __future__ import annotations

import asyncio
from typing import Any

from thorbis_cache import (
    InvalidationRule,
    KeySchema,
    MaterializedView,
    PluginInfo,
    RuleTarget,
    SqlScript,
    hookimpl,
)


class BrokenSql:
    """Creates a schema and a table, then fails on an unknown type: all rolled back."""

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="bsql", hook_api_version=1)

    @hookimpl
    def register_sql() -> list[SqlScript]:
        return [SqlScript("bsql.tables", """
            CREATE SCHEMA IF NOT EXISTS bsql;
            CREATE TABLE IF NOT EXISTS bsql.kept (id int);
            CREATE TABLE bsql.bad (id nosuchtype, note text DEFAULT 'x;y');
        """)]


_COUNTS = MaterializedView(
    "brc.counts", "SELECT status, count(*) AS n FROM brc.orders GROUP BY status",
    unique_index=["status"], sources=["brc.orders", "brc.nowhere"])


class BadDbReferences:
    """Applies cleanly, but its rules and views do not match the schema it created."""

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="brc", hook_api_version=1)

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("brc.order", str, params={"order_id": int})]

    @hookimpl
    def register_sql() -> list[SqlScript]:
        return [SqlScript("brc.tables", """
            CREATE SCHEMA IF NOT EXISTS brc;
            CREATE TABLE IF NOT EXISTS brc.orders (tenant_id text, id int, status text)
                PARTITION BY LIST (tenant_id);
            CREATE MATERIALIZED VIEW IF NOT EXISTS brc.counts AS
                SELECT status, count(*) AS n FROM brc.orders GROUP BY status;
            -- Takes the name the view's unique index would get, without being unique,
            -- and marks the view as created from its declaration (so it is kept).
            CREATE INDEX IF NOT EXISTS counts_uniq ON brc.counts (status);
            COMMENT ON MATERIALIZED VIEW brc.counts IS '""" + _COUNTS.definition_id + """';
        """)]  # noqa: S608 -- the fingerprint is a constant of this module

    @hookimpl
    def register_materialized_views() -> list[MaterializedView]:
        return [_COUNTS]

    @hookimpl
    def register_invalidation_rules() -> list[InvalidationRule]:
        return [
            InvalidationRule("brc.missing_table", table="brc.missing", operations=["INSERT"],
                             targets=[RuleTarget(schema="brc.order", params={"order_id": "id"})]),
            InvalidationRule("brc.columns", table="brc.orders", operations=["UPDATE"],
                             tenant_column="tenant", significant_columns=["status", "state"],
                             targets=[RuleTarget(schema="brc.order",
                                                 params={"order_id": "order_no"})]),
        ]


class FailingStartup:
    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="fst", hook_api_version=1)

    @hookimpl
    async def on_startup(app: Any) -> None:
        raise ConnectionError("warm-up service unreachable")


class Hanging:
    """An ``async`` hook that does not return until :attr:`release` is set (never, by
    default): what a plugin awaiting an unreachable service looks like at load."""

    #: Set when the hook has started waiting.
    entered: asyncio.Event | None = None
    #: Set to let the hook return (a later load succeeds).
    release: asyncio.Event | None = None

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="hang", hook_api_version=1)

    @hookimpl
    async def register_key_schemas() -> list[KeySchema[Any]]:
        if Hanging.entered is not None:
            Hanging.entered.set()
        await (Hanging.release or asyncio.Event()).wait()
        return [KeySchema("hang.thing", int, params={"thing_id": int})]
