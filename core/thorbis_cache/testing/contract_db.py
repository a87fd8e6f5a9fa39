"""The PostgreSQL checks of the plugin contract, as plain functions.

Like :mod:`thorbis_cache.testing.contract_checks`, each raises :class:`AssertionError`
listing every problem found. They run against a fresh database (the ``thorbis_pg_dsn``
fixture): the plugin's SQL is applied with
:func:`~thorbis_cache.postgres.sql_apply.apply_plugin_sql`, the way a host applies it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from thorbis_cache.errors import PluginLoadError
from thorbis_cache.plugins.declarations import is_qualified
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.postgres.catalog import USABLE_UNIQUE_INDEX, quote_ident, quote_qualified
from thorbis_cache.postgres.sql_apply import apply_plugin_sql, check_rules_against_db
from thorbis_cache.testing.contract_checks import report

__all__ = [
    "applied",
    "check_materialized_views",
    "check_rules",
    "check_sql_idempotent",
    "database_snapshot",
    "seed",
]


async def _apply(dsn: str, plugin: LoadedPlugin, attempt: str) -> list[str]:
    try:
        await apply_plugin_sql(dsn, [plugin])
    except PluginLoadError as exc:
        return [f"{attempt} application failed: {p}" for p in exc.problems]
    return []


@contextlib.asynccontextmanager
async def applied(
    dsn: str, plugin: LoadedPlugin, seed_sql: Sequence[str] = ()
) -> AsyncIterator[Any]:
    """Apply the plugin's SQL to ``dsn``, run ``seed_sql`` (see :func:`seed`), and
    yield an asyncpg connection to the database; closed on exit.

    :raises AssertionError: the SQL or the seed failed (statement and PostgreSQL's
        message).
    """
    __tracebackhide__ = True
    report(plugin.name, "SQL does not apply to a fresh database",
            await _apply(dsn, plugin, "the"))
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        if seed_sql:
            await seed(conn, plugin, seed_sql)
        yield conn
    finally:
        await conn.close()


async def seed(conn: Any, plugin: LoadedPlugin, seed_sql: Sequence[str]) -> None:
    """Run ``seed_sql`` in order, then refresh the plugin's views so they see the rows.

    :raises AssertionError: naming the failing statement or view.
    """
    __tracebackhide__ = True
    problems: list[str] = []
    for index, statement in enumerate(seed_sql):
        try:
            await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            problems.append(f"seed_sql[{index}] failed: {type(exc).__name__}: {exc}\n"
                            f"    {statement.strip()[:300]}")
            break
    for view in plugin.views if not problems else ():
        try:
            await conn.execute(f"REFRESH MATERIALIZED VIEW {quote_qualified(view.name)}")
        except asyncpg.PostgresError as exc:
            problems.append(f"materialized view {view.name!r} does not refresh on the seed "
                            f"data: {type(exc).__name__}: {exc}")
    report(plugin.name, "seeding", problems)




#: The unique indexes of a relation, and whether REFRESH ... CONCURRENTLY can use each.
_UNIQUE_INDEXES = (
    "SELECT i.indexrelid::regclass::text AS name, "  # noqa: S608 -- constant fragment
    f"{USABLE_UNIQUE_INDEX} AS usable "
    "FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique"
)

_SNAPSHOT_QUERIES = {
    "relation": """
        SELECT n.nspname || '.' || c.relname, c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {user_schema}""",
    "column": """
        SELECT n.nspname || '.' || c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull
               THEN ' not null' ELSE '' END || coalesce(' default ' ||
               pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND {user_schema}""",
    "index": """
        SELECT n.nspname || '.' || c.relname, pg_get_indexdef(c.oid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user_schema}""",
    "constraint": """
        SELECT co.conrelid::regclass::text || '.' || co.conname, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
        WHERE {user_schema}""",
    "view": """
        SELECT n.nspname || '.' || c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {user_schema}""",
    "trigger": """
        SELECT t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {user_schema}""",
    "function": """
        SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind IN ('f', 'p') AND {user_schema}""",
}
_TABLES = """
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm', 'p') AND {user_schema}"""
_USER_SCHEMA = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'")


async def database_snapshot(conn: Any) -> dict[str, str]:
    """What the database holds outside the system catalogs: relations, columns,
    indexes, constraints, view definitions, triggers, functions, and each table's and
    materialized view's row count, as ``"<kind> <name>" -> definition`` (for comparing
    two states)."""
    state: dict[str, str] = {}
    for kind, query in _SNAPSHOT_QUERIES.items():
        for name, detail in await conn.fetch(query.format(user_schema=_USER_SCHEMA)):
            state[f"{kind} {name}"] = str(detail)
    for schema, relation in await conn.fetch(_TABLES.format(user_schema=_USER_SCHEMA)):
        quoted = f"{quote_ident(schema)}.{quote_ident(relation)}"
        count = await conn.fetchval(f"SELECT count(*) FROM {quoted}")  # noqa: S608
        state[f"rows of {schema}.{relation}"] = str(count)
    return state


def _differences(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    out = [f"{key}: {before[key]!r} became {after[key]!r}"
           for key in sorted(before.keys() & after.keys()) if before[key] != after[key]]
    out += [f"{key} appeared: {after[key]!r}" for key in sorted(after.keys() - before.keys())]
    out += [f"{key} disappeared" for key in sorted(before.keys() - after.keys())]
    return out


async def check_sql_idempotent(dsn: str, plugin: LoadedPlugin) -> None:
    """The plugin's SQL applies to a fresh database, applies again, and the second
    application changes nothing :func:`database_snapshot` sees.

    :raises AssertionError: the failing application's statement and PostgreSQL's
        message, or what the second application added and removed.
    """
    __tracebackhide__ = True
    report(plugin.name, "SQL does not apply to a fresh database",
            await _apply(dsn, plugin, "first"))
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        before = await database_snapshot(conn)
        report(plugin.name, "SQL is not idempotent", await _apply(dsn, plugin, "second"))
        after = await database_snapshot(conn)
    finally:
        await conn.close()
    changes = [f"second application: {change}" for change in _differences(before, after)]
    report(plugin.name, "SQL is not idempotent (use CREATE ... IF NOT EXISTS, "
            "CREATE OR REPLACE, INSERT ... ON CONFLICT DO NOTHING)", changes[:40])


async def check_materialized_views(conn: Any, plugin: LoadedPlugin) -> None:
    """Every view and its sources exist and it refreshes; a view asking for concurrent
    refresh has a unique index on plain columns (no expression, no WHERE) and refreshes
    with ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` after a plain refresh.

    :raises AssertionError: naming each view and PostgreSQL's message.
    """
    __tracebackhide__ = True
    # Sources that do not exist; existence and indexes are checked below, by trying.
    problems = [str(p) for p in await check_rules_against_db(conn, [plugin])
                if p.hook == "register_materialized_views" and ": source " in p.message]
    for view in plugin.views:
        what = f"materialized view {view.name!r}"
        if not is_qualified(view.name):
            problems.append(f"{what}: not a qualified '<schema>.<view>' name")
            continue
        oid = await conn.fetchval(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'm'",
            view.schema, view.relation,
        )
        if oid is None:
            problems.append(f"{what} does not exist after the plugin's SQL was applied")
            continue
        name = quote_qualified(view.name)
        try:
            await conn.execute(f"REFRESH MATERIALIZED VIEW {name}")
        except asyncpg.PostgresError as exc:
            problems.append(f"{what}: REFRESH failed: {type(exc).__name__}: {exc}")
            continue
        if not view.refresh.concurrently:
            continue
        indexes = await conn.fetch(_UNIQUE_INDEXES, oid)
        if not any(row["usable"] for row in indexes):
            found = ", ".join(row["name"] for row in indexes) or "none"
            problems.append(
                f"{what} asks for concurrent refresh but has no unique index on plain "
                f"columns (unique indexes: {found}); declare unique_index=(<columns that "
                "identify a row>) or set RefreshPolicy(concurrently=False)"
            )
            continue
        try:
            await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {name}")
        except asyncpg.PostgresError as exc:
            problems.append(f"{what}: REFRESH MATERIALIZED VIEW CONCURRENTLY failed: "
                            f"{type(exc).__name__}: {exc}")
    report(plugin.name, "materialized views", problems)


async def check_rules(conn: Any, plugin: LoadedPlugin) -> None:
    """Every rule's table exists, as do its tenant column, significant columns and the
    columns its schema targets read parameters from
    (:func:`~thorbis_cache.postgres.sql_apply.check_rules_against_db`); its targets are
    this plugin's own schemas and tags.

    :raises AssertionError: naming each rule and what it references in vain.
    """
    __tracebackhide__ = True
    problems = [str(p) for p in await check_rules_against_db(conn, [plugin])
                if p.hook == "register_invalidation_rules"]
    tags = {t for s in plugin.schemas for t in s.tags}
    schemas = {s.name for s in plugin.schemas}
    for rule in plugin.rules:
        what = f"invalidation rule {rule.name!r}"
        for target in rule.targets:
            if target.schema is not None and target.schema not in schemas:
                problems.append(f"{what} targets key schema {target.schema!r}, which this "
                                "plugin does not declare")
            if target.tag is not None and target.tag not in tags:
                problems.append(f"{what} targets tag {target.tag!r}, which no key schema of "
                                "this plugin carries")
    report(plugin.name, "invalidation rules", problems)
