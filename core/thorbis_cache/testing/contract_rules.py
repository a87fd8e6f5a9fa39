"""The contract's checks that invalidation rules work at run time, not only on paper.

* :func:`check_rule_column_types`: every column a schema target reads a key parameter
  from has a type the parameter can be built from (a ``text`` column feeding an ``int``
  parameter dead-letters every change in production).
* :func:`check_rules_end_to_end`: what ``thorbis-cache db init`` does (core migrations,
  the plugin's SQL, the capture triggers), the seed, then for every rule: cache an entry
  for each of its targets, commit a change of a seed row that fires the rule, run the
  outbox worker, and require every entry gone and no dead letter.

Like the other contract checks they raise :class:`AssertionError` listing every problem.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.cache.keys import CacheKey, KeySchema
from thorbis_cache.errors import PluginLoadError, ThorbisCacheError
from thorbis_cache.invalidation import CacheTagInvalidator
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.declarations import InvalidationRule, Operation
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.postgres.catalog import quote_ident, quote_qualified
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.sql_apply import apply_and_check
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.contract_checks import report
from thorbis_cache.testing.contract_data import (
    ABSENT,
    INT_TYPES,
    TEXT_TYPES,
    Column,
    cache_entry,
    change_column,
    columns_of,
    minimal,
    read_entry,
)
from thorbis_cache.testing.contract_db import seed
from thorbis_cache.testing.plugin_db import schema_registry

__all__ = ["check_rule_column_types", "check_rules_end_to_end", "column_fits"]


def column_fits(param_type: Any, column: Column) -> bool:
    """Whether every value of ``column`` builds a parameter of ``param_type`` the way
    the outbox worker converts a changed row's columns."""
    base = column.base
    if isinstance(param_type, type) and issubclass(param_type, enum.Enum):
        values = [m.value for m in param_type]
        if all(isinstance(v, int) for v in values):
            return base in INT_TYPES
        return base in TEXT_TYPES or column.typtype == "e"
    if param_type is bool:
        return base == "bool"
    if param_type is int:
        return base in INT_TYPES
    if param_type is str:
        return base in TEXT_TYPES | INT_TYPES | {"uuid"} or column.typtype == "e"
    if param_type is uuid.UUID:
        return base == "uuid"
    return base == "date"  # datetime.date: the only other parameter type


def _kind_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp)


async def check_rule_column_types(conn: Any, plugin: LoadedPlugin) -> None:
    """Every column a rule's schema target reads a key parameter from is of a type that
    parameter can be built from (``int`` <- ``smallint/integer/bigint``; ``str`` <- text
    types, integers, ``uuid``, enums; ``uuid.UUID`` <- ``uuid``; ``date`` <- ``date``;
    ``bool`` <- ``boolean``; an ``Enum`` <- its values' type). Run on a database holding
    the plugin's SQL; missing tables and columns are :func:`contract_db.check_rules`'s.

    :raises AssertionError: naming plugin, rule, target, parameter, column and both types.
    """
    __tracebackhide__ = True
    schemas = {s.name: s for s in plugin.schemas}
    problems: list[str] = []
    for rule in plugin.rules:
        columns = {c.name: c for c in await columns_of(conn, rule.table)}
        for index, target in enumerate(rule.targets):
            schema = schemas.get(target.schema or "")
            if schema is None:
                continue
            for param in schema.params:
                column = columns.get(target.params.get(param.name, ""))
                if column is not None and not column_fits(param.type, column):
                    problems.append(
                        f"invalidation rule {rule.name!r}, target {index} ({schema.name!r}): "
                        f"parameter {param.name!r} is {_kind_name(param.type)}, but column "
                        f"{rule.table}.{column.name} is {column.shown}: every change would be "
                        "dead-lettered (map the parameter to a column of its type)")
    report(plugin.name, "invalidation rule column types", problems)


# --------------------------------------------------------------------------- end to end


def _param(tp: Any, value: object) -> object:
    """A row's value as the worker turns it into a parameter (int ids of str params)."""
    if tp is str and isinstance(value, int | uuid.UUID) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            return value
    return value


async def _targets(plugin: LoadedPlugin, rule: InvalidationRule, row: Any,
                   tenant: str) -> tuple[list[CacheKey[Any]], list[str]]:
    """The entries the change of ``row`` must invalidate: the key of each schema target,
    and for each tag target a key of the first schema carrying the tag."""
    schemas = {s.name: s for s in plugin.schemas}
    keys: list[CacheKey[Any]] = []
    problems: list[str] = []
    for index, target in enumerate(rule.targets):
        where = f"invalidation rule {rule.name!r}, target {index}"
        schema: KeySchema[Any] | None
        if target.schema is not None:
            schema = schemas.get(target.schema)
            if schema is None:
                continue
            params = {p.name: _param(p.type, row[target.params[p.name]]) for p in schema.params}
        else:
            schema = next((s for s in plugin.schemas if target.tag in s.tags), None)
            if schema is None:
                continue
            params = minimal(schema, "params")
        try:
            keys.append(schema.key(tenant, **params))
        except (ThorbisCacheError, ValueError, TypeError) as exc:
            problems.append(f"{where}: the seed row's columns build no key of "
                            f"{schema.name!r}: {exc}")
    return keys, problems


async def _fire(conn: Any, rule: InvalidationRule, row: Any, tenant: str) -> str | None:
    """Commit a change of ``row`` that fires ``rule``; None when done, else why not."""
    table = quote_qualified(rule.table)
    if Operation.UPDATE in rule.operations:
        columns = {c.name: c for c in await columns_of(conn, rule.table)}
        if not rule.significant_columns:
            # Every UPDATE fires the rule: one that changes nothing will do.
            col = quote_ident(rule.tenant_column)
            status = await conn.execute(
                f"UPDATE {table} SET {col} = {col} WHERE ctid = $1", row["ctid"])  # noqa: S608
            return None if status == "UPDATE 1" else f"{status} (no row changed)"
        reasons = []
        for name in rule.significant_columns:
            if name not in columns:
                continue  # reported by check_rules
            why = await change_column(conn, rule.table, columns[name], row["ctid"],
                                      rule.tenant_column, tenant)
            if why is None:
                return None
            reasons.append(f"{name}: {why}")
        return "; ".join(reasons)
    # INSERT and DELETE only: delete the row and insert it back, in one statement
    # (references are checked at its end, so they hold).
    try:
        await conn.execute(
            f"WITH gone AS (DELETE FROM {table} WHERE ctid = $1 RETURNING *) "  # noqa: S608
            f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM gone", row["ctid"])
    except asyncpg.PostgresError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _check_rule(conn: Any, cache: Cache, worker: OutboxWorker, plugin: LoadedPlugin,
                      rule: InvalidationRule, tenants: Sequence[str]) -> list[str]:
    where = f"invalidation rule {rule.name!r} ({rule.table})"
    schemas = {s.name: s for s in plugin.schemas}
    needed = sorted({c for t in rule.targets if t.schema in schemas for c in t.params.values()})
    not_null = "".join(f" AND {quote_ident(c)} IS NOT NULL" for c in needed)
    tenant_col = quote_ident(rule.tenant_column)
    row = await conn.fetchrow(
        f"SELECT ctid, * FROM {quote_qualified(rule.table)} "  # noqa: S608
        f"WHERE {tenant_col} = ANY($1::text[]){not_null} "
        f"ORDER BY array_position($1::text[], {tenant_col}::text) LIMIT 1", list(tenants))
    if row is None:
        return [f"{where}: the seed has no row of {rule.table} for tenants "
                f"{', '.join(tenants)}{' with ' + ', '.join(needed) + ' set' if needed else ''}; "
                "add one to seed_sql so the rule can be checked end to end"]
    tenant = str(row[rule.tenant_column])
    keys, problems = await _targets(plugin, rule, row, tenant)
    for key in keys:
        await cache_entry(cache, key)
        if await read_entry(cache, key) is ABSENT:
            problems.append(f"{where}: key {key.body!r} does not read back once cached")
    why = await _fire(conn, rule, row, tenant)
    if why is not None:
        return [*problems, f"{where}: could not commit a change that fires the rule ({why})"]
    results = await worker.drain()
    change = "an UPDATE" if Operation.UPDATE in rule.operations else "a DELETE and INSERT"
    for result in results:
        problems += [f"{where}: {change} of a seed row was dead-lettered by the worker: "
                     f"{reason}" for _, reason in result.dead_letters]
    for key in keys:
        if await read_entry(cache, key) is not ABSENT:
            problems.append(f"{where}: after {change} of a seed row of tenant {tenant!r} and "
                            f"the worker's drain, key {key.body!r} ({key.schema.kind.value} "
                            "of a target) is still cached")
    return problems


async def check_rules_end_to_end(dsn: str, redis_url: str, plugin: LoadedPlugin,
                                 seed_sql: Sequence[str], tenants: Sequence[str]) -> None:
    """Prepare ``dsn`` as ``thorbis-cache db init`` does (core migrations, the plugin's
    SQL checked against the database, capture triggers), run ``seed_sql``, let the worker
    apply the seed's own changes (none may be dead-lettered), then for each rule: cache
    an entry for every target (the key a schema target names from a seed row; a key of
    a schema carrying a tag target's tag), commit a change of that row (an UPDATE of a
    significant column; any UPDATE when the rule has none; a DELETE and re-INSERT when
    it fires on INSERT or DELETE only), drain the worker, and require every entry gone
    and no dead letter.

    :param dsn: a fresh database.
    :param redis_url: a Redis the entries are written to (standalone).
    :param seed_sql: statements inserting rows of every rule's table for ``tenants``.
    :raises AssertionError: naming plugin, rule, table and what stayed or was
        dead-lettered (the worker's reason: rule, target, parameter, column, value).
    """
    __tracebackhide__ = True
    await migrate(dsn)
    try:
        await apply_and_check(dsn, [plugin])
    except PluginLoadError as exc:
        report(plugin.name, "SQL and rules do not apply", [str(p) for p in exc.problems])
    conn = await asyncpg.connect(dsn, timeout=30)
    problems: list[str] = []
    try:
        await install_triggers(conn, plugin.rules, plugin.views)
        await seed(conn, plugin, seed_sql)
        registry = schema_registry(plugin.schemas, plugin.name)
        async with Cache.from_url(redis_url, registry, keyring=KeyRing.generate()) as cache:
            worker = OutboxWorker(dsn, cache, plugin.rules,
                                  invalidate_tags=CacheTagInvalidator(cache),
                                  plugins=(plugin.name,), replay_window=None)
            try:
                for result in await worker.drain():
                    problems += [f"seed_sql: a change was dead-lettered by the worker: {reason}"
                                 for _, reason in result.dead_letters]
                for rule in plugin.rules:
                    problems += await _check_rule(conn, cache, worker, plugin, rule, tenants)
            finally:
                await worker.aclose()
    finally:
        await conn.close()
    report(plugin.name, "invalidation rules end to end", problems[:40])
