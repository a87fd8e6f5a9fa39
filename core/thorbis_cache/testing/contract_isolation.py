"""The contract's checks that warmers cache each tenant's own rows, and valid entries.

* :func:`check_warmers_isolate_tenants`: warm the first tenant, then give another
  tenant rows with the same ids but different data, and warm again: every key must hold
  what it held. A warmer whose query forgets ``tenant_id = $1`` caches the other
  tenant's rows under this tenant's keys (or more members in its lists).
(What is wrong with a sorted-set or geo entry a warmer's loader returned is
:func:`~thorbis_cache.testing.contract_checks.member_entry_problem`.)

Like the other contract checks they raise :class:`AssertionError` listing every problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.cache.settings import CacheSettings
from thorbis_cache.plugins.declarations import WarmContext, Warmer
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.postgres.catalog import quote_ident, quote_qualified
from thorbis_cache.testing.contract_checks import report
from thorbis_cache.testing.contract_data import (
    INT_TYPES,
    TEXT_TYPES,
    columns_of,
    read_entry,
    tables_of_schema,
)
from thorbis_cache.testing.plugin_db import schema_registry
from thorbis_cache.warming import WarmBatch, warm

__all__ = ["DECOY_TENANT", "check_warmers_isolate_tenants"]

#: The tenant given copies of the first tenant's rows (same ids, other data).
DECOY_TENANT = "decoy"


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- tenants


async def _warm_snapshot(conn: Any, redis_url: str, plugin: LoadedPlugin, warmer: Warmer,
                         tenant: str, keyring: KeyRing, run: int) -> dict[str, Any]:
    """Run ``warmer`` for ``tenant`` into an empty key space (a prefix of its own) and
    read back every key it filled: ``key body -> entry``."""
    lock = asyncio.Lock()

    async def fetch(query: str, *args: object) -> list[Mapping[str, Any]]:
        async with lock:
            return [dict(row) for row in await conn.fetch(query, *args)]

    registry = schema_registry(plugin.schemas, plugin.name)
    settings = CacheSettings(prefix=f"tci{run}")
    keys: list[CacheKey[Any]] = []
    async with Cache.from_url(redis_url, registry, keyring=keyring, settings=settings) as cache:
        await _clear(cache, settings.prefix)
        produced: Any = warmer.produce(WarmContext(cache=cache, tenant=tenant, fetch=fetch))
        async for batch in produced:
            if isinstance(batch, WarmBatch):
                keys += batch.keys
                await warm(cache, batch)
        snapshot = {key.body: await read_entry(cache, key) for key in keys}
        await _clear(cache, settings.prefix)
    return snapshot


async def _clear(cache: Cache, prefix: str) -> None:
    """Delete every key of ``prefix`` (a standalone Redis: SCAN is fine here)."""
    cursor: Any = 0
    while True:
        cursor, found = await cache.store.command("SCAN", cursor, "MATCH", f"{prefix}:*",
                                                  "COUNT", 1000)
        if found:
            await cache.store.command("DEL", *found)
        if int(cursor) == 0:
            return


async def _copy_tenant(conn: Any, plugin: LoadedPlugin, tenant: str, decoy: str) -> list[str]:
    """Copy ``tenant``'s rows of every table of the plugin's schema to ``decoy``: same
    keys (primary and foreign key columns kept), other data (other text and number
    columns changed, where constraints allow). Returns the tables copied."""
    tenant_columns = {"tenant_id"} | {r.tenant_column for r in plugin.rules}
    pending = await tables_of_schema(conn, plugin.info.namespace)
    copied: list[str] = []
    while pending:
        progress = False
        for table in list(pending):
            columns = [c for c in await columns_of(conn, table) if not c.generated]
            tenant_column = next((c.name for c in columns if c.name in tenant_columns), None)
            if tenant_column is None:
                pending.remove(table)  # shared reference data: not a tenant's
                continue
            plain = [c for c in columns if not (c.in_pk or c.in_fk) and c.name != tenant_column]
            changes = [
                {c.name: f"{quote_ident(c.name)} || '~'" for c in plain if c.base in TEXT_TYPES}
                | {c.name: f"{quote_ident(c.name)} + 1" for c in plain
                   if c.base in INT_TYPES | {"numeric", "float4", "float8"}},
                {c.name: f"{quote_ident(c.name)} || '~'" for c in plain if c.base in TEXT_TYPES},
                {},
            ]
            names = ", ".join(quote_ident(c.name) for c in columns)
            for change in changes:
                values = ", ".join(
                    "$2" if c.name == tenant_column else change.get(c.name, quote_ident(c.name))
                    for c in columns)
                try:
                    async with conn.transaction():
                        await conn.execute(
                            f"INSERT INTO {quote_qualified(table)} ({names}) "  # noqa: S608
                            f"OVERRIDING SYSTEM VALUE SELECT {values} FROM "
                            f"{quote_qualified(table)} WHERE {quote_ident(tenant_column)} = $1",
                            tenant, decoy)
                except asyncpg.PostgresError:
                    continue
                pending.remove(table)
                copied.append(table)
                progress = True
                break
        if not progress:
            break  # what is left references rows that cannot be copied
    return copied


async def _move_rows_last(conn: Any, tables: Sequence[str], tenant: str,
                          tenant_column: str) -> bool:
    """New versions of ``tenant``'s rows (a no-op UPDATE, the tables' triggers off so
    nothing else changes), which a scan then reads after the decoy's: a loader keeping
    the first or the last row of an id sees both orders. False when triggers cannot be
    turned off (``session_replication_role`` needs a superuser)."""
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for table in tables:
                columns = {c.name for c in await columns_of(conn, table)}
                column = tenant_column if tenant_column in columns else "tenant_id"
                if column in columns:
                    await conn.execute(
                        f"UPDATE {quote_qualified(table)} SET {quote_ident(column)} = "  # noqa: S608
                        f"{quote_ident(column)} WHERE {quote_ident(column)} = $1", tenant)
            await conn.execute("SET LOCAL session_replication_role = origin")
    except asyncpg.PostgresError:
        return False
    return True


async def check_warmers_isolate_tenants(conn: Any, redis_url: str, plugin: LoadedPlugin,
                                        tenant: str) -> None:
    """Each warmer, run for ``tenant`` on the seeded database, caches the same entries
    once another tenant (:data:`DECOY_TENANT`) holds copies of ``tenant``'s rows -- the
    same ids, other names and amounts -- whichever of the two rows of an id a scan
    reads first. The copies are rolled back afterwards.

    :param conn: a connection to the seeded database (not in a transaction).
    :param redis_url: a standalone Redis (its keys under ``tci*:`` are used and cleared).
    :raises AssertionError: naming the warmer, the tenant, the key and both entries.
    """
    __tracebackhide__ = True
    keyring = KeyRing.generate()
    problems: list[str] = []
    warmers = [w for w in plugin.warmers if callable(w.produce)]
    before: dict[str, dict[str, Any]] = {}
    for warmer in warmers:
        try:
            before[warmer.name] = await _warm_snapshot(conn, redis_url, plugin, warmer,
                                                       tenant, keyring, 0)
        except Exception:  # noqa: S112 -- check_warmers reports what a warmer raises
            continue
    if not any(before.values()):
        return  # nothing warmed from the seed: nothing to compare
    transaction = conn.transaction()
    await transaction.start()
    try:
        tables = await _copy_tenant(conn, plugin, tenant, DECOY_TENANT)
        tenant_column = next((r.tenant_column for r in plugin.rules), "tenant_id")
        for order in ("the decoy's rows last", "the decoy's rows first"):
            if order.endswith("first") and not await _move_rows_last(
                    conn, tables, tenant, tenant_column):
                break
            for warmer in warmers:
                if not before.get(warmer.name):
                    continue
                try:
                    after = await _warm_snapshot(conn, redis_url, plugin, warmer, tenant,
                                                 keyring, 1)
                except Exception as exc:
                    problems.append(f"warmer {warmer.name!r} for tenant {tenant!r}, once "
                                    f"tenant {DECOY_TENANT!r} has rows with the same ids: "
                                    f"raised {type(exc).__name__}: {exc}")
                    continue
                problems += _compare(warmer, tenant, before[warmer.name], after, order)
    finally:
        await transaction.rollback()
    report(plugin.name, "warmers and tenants", list(dict.fromkeys(problems))[:20])


def _compare(warmer: Warmer, tenant: str, alone: Mapping[str, Any],
             mixed: Mapping[str, Any], order: str) -> list[str]:
    where = (f"warmer {warmer.name!r} for tenant {tenant!r}, once tenant {DECOY_TENANT!r} "
             f"has rows with the same ids and other data ({order})")
    hint = ("it reads rows of other tenants: filter every query by the tenant "
            "(`WHERE tenant_id = $1`, ctx.tenant)")
    problems = []
    for body in sorted(mixed.keys() - alone.keys())[:3]:
        problems.append(f"{where}: key {body!r} appeared: {hint}")
    for body in sorted(alone.keys() & mixed.keys()):
        if alone[body] != mixed[body]:
            problems.append(f"{where}: key {body!r} holds {_short(mixed[body])}, not "
                            f"{_short(alone[body])} as with this tenant's rows alone: {hint}")
    return problems
