"""The contract's check that a materialized view's unique index identifies its rows for
any data, not only for the seed.

A unique index that leaves out a ``GROUP BY`` column (or the source's key, for a view of
one row per source row) is created on an empty database, refreshes on a seed that
happens to hold one row per indexed value, and fails the first refresh in production
with ``could not create unique index``. PostgreSQL knows which columns determine a row
of the view; the check asks it with data: for each source table, copies of a seed row
are inserted, one differing from it only in its key (a new primary key) and one per
other column differing only in that column (another value the column holds, so
constraints keep holding, else ``+ 1`` or ``|| '~'``), and the view is refreshed after
each. A copy that makes the refresh fail on the unique index shows two view rows the
index cannot tell apart; nothing is committed.

A copy the table's own constraints refuse (a unique constraint, a check) is skipped: a
rule the database enforces is one the view may rely on. A rule only the application
keeps (one active subscription per member) is not enforced, and the check reports it:
declare it as a constraint, or index the view on columns that identify a row anyway.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from thorbis_cache.plugins.declarations import MaterializedView
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.postgres.catalog import quote_ident, quote_qualified
from thorbis_cache.testing.contract_checks import report
from thorbis_cache.testing.contract_data import INT_TYPES, TEXT_TYPES, Column, columns_of

__all__ = ["check_unique_indexes_identify_rows"]

#: How a primary key column gets a value no row has (per base type).
_FRESH = {
    **dict.fromkeys(INT_TYPES | {"numeric"},
                    "(SELECT coalesce(max({c}), 0) + 1000003 FROM {t})"),
    **dict.fromkeys(TEXT_TYPES, "{c} || '~copy'"),
    "uuid": "gen_random_uuid()",
    "date": "{c} + 36500",
}
_CHANGED = {
    **dict.fromkeys(INT_TYPES | {"numeric", "float4", "float8", "date"}, "{c} + 1"),
    **dict.fromkeys(TEXT_TYPES, "{c} || '~'"),
    "bool": "NOT {c}",
    "timestamp": "{c} + interval '1 second'",
    "timestamptz": "{c} + interval '1 second'",
    "uuid": "gen_random_uuid()",
}


async def _other_value(conn: Any, table: str, column: Column, ctid: Any) -> str | None:
    """A literal-free expression for another value ``column`` holds, or a change of the
    row's own value; None when there is neither."""
    t, c = quote_qualified(table), quote_ident(column.name)
    found = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL) d",  # noqa: S608
    )
    if found and found > 1:
        return (f"(SELECT {c} FROM {t} WHERE {c} IS NOT NULL AND {c} IS DISTINCT FROM "  # noqa: S608
                f"(SELECT {c} FROM {t} WHERE ctid = '{ctid_literal(ctid)}') LIMIT 1)")
    template = _CHANGED.get(column.base)
    return template.format(c=c) if template else None


def ctid_literal(ctid: Any) -> str:
    """A ``tid`` as PostgreSQL writes it: ``(block,offset)``."""
    block, offset = ctid
    return f"({int(block)},{int(offset)})"


async def _copies(conn: Any, table: str, ctid: Any,
                  tenant_columns: set[str]) -> list[tuple[str, str]]:
    """``(what differs, INSERT ... SELECT)`` of each copy of the row at ``ctid``."""
    columns = [c for c in await columns_of(conn, table) if not c.generated]
    t = quote_qualified(table)
    fresh = {c.name: _FRESH[c.base].format(c=quote_ident(c.name), t=t) for c in columns
             if c.in_pk and not c.in_fk and c.name not in tenant_columns and c.base in _FRESH}
    if any(c.in_pk and not c.in_fk and c.name not in tenant_columns and c.name not in fresh
           for c in columns):
        return []  # a key column of a type we cannot make a new value of
    variants: list[tuple[str, dict[str, str]]] = []
    if fresh:
        variants.append(("a new primary key only", dict(fresh)))
    for column in columns:
        if column.name in tenant_columns or column.name in fresh:
            continue
        other = await _other_value(conn, table, column, ctid)
        if other is not None:
            variants.append((f"a new primary key and only {column.name} changed"
                             if fresh else f"only {column.name} changed",
                             {**fresh, column.name: other}))
    names = ", ".join(quote_ident(c.name) for c in columns)
    out = []
    for what, change in variants:
        values = ", ".join(change.get(c.name, quote_ident(c.name)) for c in columns)
        out.append((what, f"INSERT INTO {t} ({names}) OVERRIDING SYSTEM VALUE "  # noqa: S608
                          f"SELECT {values} FROM {t} WHERE ctid = '{ctid_literal(ctid)}'"))
    return out


async def _check_view(conn: Any, view: MaterializedView, tenant_columns: set[str]) -> str | None:
    index = ", ".join(view.unique_index)
    for source in view.sources:
        ctid = await conn.fetchval(f"SELECT ctid FROM {quote_qualified(source)} LIMIT 1")  # noqa: S608
        if ctid is None:
            continue
        for what, insert in await _copies(conn, source, ctid, tenant_columns):
            transaction = conn.transaction()
            await transaction.start()
            try:
                try:
                    await conn.execute(insert)
                except asyncpg.PostgresError:
                    continue  # the table's constraints refuse such a row
                try:
                    await conn.execute(f"REFRESH MATERIALIZED VIEW {quote_qualified(view.name)}")
                except asyncpg.UniqueViolationError as exc:
                    return (f"materialized view {view.name!r}: its unique index ({index}) does "
                            f"not identify a row: a copy of a row of {source} with {what} "
                            f"gives two rows of the view with the same ({index}), and REFRESH "
                            f"fails: {exc}{f' ({exc.detail})' if exc.detail else ''}; "
                            "declare every column that tells two rows apart (every GROUP BY "
                            "column the view exposes, or the source's key)")
                except asyncpg.PostgresError:
                    continue  # a refresh failing for another reason is not this check's
            finally:
                await transaction.rollback()
    return None


# The tables a view's query reads, as PostgreSQL recorded them (its rewrite rule's
# dependencies): ordinary and partitioned tables, not other views.
_READS = """
SELECT DISTINCT format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
 AND d.refclassid = 'pg_catalog.pg_class'::regclass
JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE r.ev_class = to_regclass($1) AND c.relkind IN ('r', 'p')
ORDER BY 1
"""


async def check_sources_are_what_views_read(conn: Any, plugin: LoadedPlugin) -> None:
    """Every table a view reads is among its declared ``sources``: the changes that
    count toward its smart refresh (``RefreshPolicy.min_changes``), and the tables the
    unique-index check copies rows of. Found as a plugin author would: a view whose
    ``sources`` left a table out (or were empty) passed, its smart refresh never came,
    and the unique-index check had nothing to try.

    :raises AssertionError: naming the view, the tables it reads and those left out.
    """
    __tracebackhide__ = True
    problems = []
    for view in plugin.views:
        reads = [r[0] for r in await conn.fetch(_READS, view.name)]
        declared = {s.replace('"', "") for s in view.sources}
        missing = [t for t in reads if t.replace('"', "") not in declared]
        if missing:
            problems.append(
                f"materialized view {view.name!r} reads {', '.join(missing)}, which its "
                f"sources ({', '.join(view.sources) or 'none'}) leave out: changes there "
                "do not count toward its smart refresh; declare every table it reads")
    report(plugin.name, "materialized view sources", problems)


async def check_unique_indexes_identify_rows(conn: Any, plugin: LoadedPlugin) -> None:
    """Every view that declares a ``unique_index`` keeps it unique when a source row is
    copied with a new key, or with one other column changed (see the module). Run on
    a seeded database (a source without rows is not tried); nothing is committed.

    :raises AssertionError: naming the view, its index, the source and the column whose
        change gives two rows the index cannot tell apart.
    """
    __tracebackhide__ = True
    tenant_columns = {"tenant_id"} | {r.tenant_column for r in plugin.rules}
    problems = []
    for view in plugin.views:
        if view.unique_index:
            problem = await _check_view(conn, view, tenant_columns)
            if problem is not None:
                problems.append(problem)
    report(plugin.name, "materialized view unique indexes", problems)
