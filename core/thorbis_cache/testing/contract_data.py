"""What the contract kit's data-driven checks share: columns of a plugin's tables, a
minimal value of a schema, changing one column of one row, and reading an entry back.

Used by :mod:`~thorbis_cache.testing.contract_rules` (rules end to end, column types),
:mod:`~thorbis_cache.testing.contract_isolation` (warmers and tenants) and the unique
index check of :mod:`~thorbis_cache.testing.contract_db`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.geo import geohash_position
from thorbis_cache.cache.keys import CacheKey, KeySchema, SchemaKind
from thorbis_cache.postgres.catalog import quote_ident, quote_qualified
from thorbis_cache.testing.strategies import param_value, params_for, values_of

__all__ = [
    "ABSENT",
    "Column",
    "cache_entry",
    "change_column",
    "columns_of",
    "minimal",
    "read_entry",
    "tables_of_schema",
]

_COLUMNS = """
SELECT a.attname::text AS name,
       coalesce(bt.typname, t.typname)::text AS base,
       coalesce(bt.typtype, t.typtype)::text AS typtype,
       format_type(a.atttypid, a.atttypmod) AS shown,
       a.attgenerated::text AS generated,
       a.attidentity::text AS identity,
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = a.attrelid
               AND c.contype = 'p' AND a.attnum = ANY (c.conkey)) AS in_pk,
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = a.attrelid
               AND c.contype = 'f' AND a.attnum = ANY (c.conkey)) AS in_fk
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_TABLES = """
SELECT n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
  AND NOT c.relispartition
ORDER BY c.oid
"""

INT_TYPES = frozenset({"int2", "int4", "int8"})
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "citext"})
#: How a column of each base type is changed when no other existing value fits.
_CHANGED = {
    **dict.fromkeys(INT_TYPES | {"numeric", "float4", "float8", "date"}, "{c} + 1"),
    **dict.fromkeys(TEXT_TYPES, "{c} || '~'"),
    "bool": "NOT {c}",
    "timestamp": "{c} + interval '1 second'",
    "timestamptz": "{c} + interval '1 second'",
    "uuid": "gen_random_uuid()",
}


@attrs.frozen
class Column:
    """One column of a table, as the checks need it.

    :ivar base: the type's name (a domain's base type): ``int8``, ``text``...
    :ivar typtype: ``b`` base, ``e`` enum, ``c`` composite...
    :ivar shown: the type as PostgreSQL writes it (``character varying(20)``).
    """

    name: str
    base: str
    typtype: str
    shown: str
    generated: bool
    identity: str
    in_pk: bool
    in_fk: bool


async def columns_of(conn: Any, table: str) -> list[Column]:
    """The columns of ``table`` (``schema.table``), in order; empty when it is absent."""
    rows = await conn.fetch(_COLUMNS, quote_qualified(table))
    return [Column(r["name"], r["base"], r["typtype"], r["shown"], bool(r["generated"]),
                   r["identity"], r["in_pk"], r["in_fk"]) for r in rows]


async def tables_of_schema(conn: Any, schema: str) -> list[str]:
    """The tables (not partitions) of a PostgreSQL schema, oldest first."""
    return [r[0] for r in await conn.fetch(_TABLES, schema)]


def minimal(schema: KeySchema[Any], what: str = "value") -> Any:
    """One value (``"value"``), parameters (``"params"``) or member (``"member"``) of
    ``schema``, drawn by hypothesis once, derandomized (the same every run) and not
    shrunk (shrinking a rich value takes seconds)."""
    strategy: SearchStrategy[Any]
    if what == "params":
        strategy = params_for(schema)
    elif what == "member":
        strategy = param_value(schema.member_param)
    else:
        strategy = values_of(schema)
    drawn: list[Any] = []

    @settings(max_examples=1, phases=[Phase.generate], derandomize=True, database=None,
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value: Any) -> None:
        drawn.append(value)

    draw()
    return drawn[0]


async def cache_entry(cache: Cache, key: CacheKey[Any]) -> None:
    """Write a minimal entry of the key's schema at ``key``, by its kind."""
    schema = key.schema
    if schema.kind is SchemaKind.VALUE:
        await cache.set(key, minimal(schema))
    elif schema.kind is SchemaKind.HASH:
        await cache.hash(key).replace(minimal(schema))
    elif schema.kind is SchemaKind.ZSET:
        await cache.zset(key).add({minimal(schema, "member"): 1.0}, replace=True)
    else:
        await cache.geo(key).add({minimal(schema, "member"): (2.35, 48.85)}, replace=True)


#: What :func:`read_entry` answers for a key holding nothing.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


async def read_entry(cache: Cache, key: CacheKey[Any]) -> Any:
    """What ``key`` holds, read through the cache by its kind: the value or entity, or
    the members (sorted set: ``(member, score)``; geo: ``(member, (longitude,
    latitude))`` at geohash precision, rounded to 6 decimals); :data:`ABSENT` when
    nothing is cached (a value of None reads as absent).
    """
    schema = key.schema
    held: Any
    if schema.kind is SchemaKind.VALUE:
        held = await cache.get(key)
    elif schema.kind is SchemaKind.HASH:
        held = await cache.hash(key).get()
    elif schema.kind is SchemaKind.ZSET:
        held = list(await cache.zset(key).range_by_score()) or None
    else:
        raw = await cache.store.command("ZRANGE", cache.redis_key(key), 0, -1, "WITHSCORES")
        flat = [x for pair in raw for x in pair] if raw and isinstance(
            raw[0], list | tuple) else list(raw or [])
        member = schema.member_param
        held = [(member.decode(m.decode()),
                 tuple(round(c, 6) for c in geohash_position(int(float(s)))))
                for m, s in zip(flat[::2], flat[1::2], strict=True)] or None
    return ABSENT if held is None else held


async def change_column(conn: Any, table: str, column: Column, ctid: Any,
                        tenant_column: str, tenant: str) -> str | None:
    """Commit an UPDATE of one row's ``column`` to a different value: another value the
    column already holds (one of the same tenant first, so constraints and references
    keep holding), else one derived from the current value (``+ 1``, ``|| '~'``...).

    :returns: None when the row was changed, else why not (PostgreSQL's messages).
    """
    table_q, col = quote_qualified(table), quote_ident(column.name)
    errors: list[str] = []
    other = await conn.fetchrow(
        f"SELECT {col} AS v FROM {table_q} WHERE {col} IS NOT NULL "  # noqa: S608
        f"AND {col} IS DISTINCT FROM (SELECT {col} FROM {table_q} WHERE ctid = $1) "
        f"ORDER BY ({quote_ident(tenant_column)} = $2) DESC NULLS LAST LIMIT 1",
        ctid, tenant)
    attempts: list[tuple[str, Sequence[Any]]] = []
    if other is not None:
        attempts.append((f"UPDATE {table_q} SET {col} = $2 WHERE ctid = $1",  # noqa: S608
                         (ctid, other["v"])))
    if column.base in _CHANGED:
        attempts.append((f"UPDATE {table_q} SET {col} = "  # noqa: S608
                         f"{_CHANGED[column.base].format(c=col)} WHERE ctid = $1", (ctid,)))
    before = await conn.fetchval(f"SELECT {col} FROM {table_q} WHERE ctid = $1", ctid)  # noqa: S608
    for statement, args in attempts:
        try:
            async with conn.transaction():
                after = await conn.fetch(f"{statement} RETURNING {col}", *args)
                if len(after) != 1 or after[0][0] == before:
                    # A trigger of the table may set the column back: that is no change.
                    raise _Unchanged(f"{len(after)} row(s) updated, {column.name} "
                                     f"{'unchanged' if after else 'not found'}")
        except (asyncpg.PostgresError, _Unchanged) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        return None
    return "; ".join(errors) or f"no way to change a {column.shown} column"


class _Unchanged(Exception):
    """An UPDATE that left the column as it was (rolled back)."""
