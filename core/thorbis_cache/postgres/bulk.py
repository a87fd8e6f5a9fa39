"""Writing a generated data set into a plugin's tables: COPY in one transaction, or plain
``INSERT`` statements for tools that take SQL text (the contract kit's ``seed_sql``).

The verticals' data generators describe a data set the same way: a PostgreSQL schema,
its tables in foreign-key order (parents first), the columns written per table, and the
rows of each table as tuples in column order. :class:`TableSet` is that description.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import asyncpg
import attrs

from thorbis_cache.postgres import connection

__all__ = [
    "GeneratedRows", "TableSet", "copy_rows", "insert_statements", "midnight_utc", "sql_literal",
]

Rows = Callable[[str], Sequence[tuple[Any, ...]]]


@attrs.frozen(slots=True)
class TableSet:
    """Tables of one schema, as a data generator writes them.

    :ivar schema: the PostgreSQL schema (``"auto"``).
    :ivar tables: table names in foreign-key order, parents first.
    :ivar columns: the columns written per table, in row-tuple order.
    """

    schema: str
    tables: tuple[str, ...]
    columns: Mapping[str, Sequence[str]]


def midnight_utc(when: dt.datetime | dt.date | None) -> dt.datetime:
    """The midnight (UTC) a generated data set is placed around: of ``when``'s UTC day,
    or of today's when None.

    :raises ValueError: ``when`` is a naive datetime.
    """
    if when is None:
        when = dt.datetime.now(dt.UTC)
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise ValueError(f"reference must be timezone-aware, got {when!r}")
        when = when.astimezone(dt.UTC).date()
    return dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC)


class GeneratedRows:
    """What a generated data set offers, for a class with one tuple of rows per table
    (a field named after each table of its :attr:`TABLE_SET`; override :meth:`rows` to
    keep them otherwise)."""

    __slots__ = ()

    #: The tables the data set fills.
    TABLE_SET: ClassVar[TableSet]

    def rows(self, table: str) -> tuple[tuple[Any, ...], ...]:
        """The rows of ``table``, as tuples in column order.

        :raises KeyError: not a table of :attr:`TABLE_SET` (the known ones are named).
        """
        if table not in self.TABLE_SET.columns:
            raise KeyError(f"unknown table {table!r}; tables: "
                           f"{', '.join(self.TABLE_SET.tables)}")
        found: tuple[tuple[Any, ...], ...] = getattr(self, table)
        return found

    def records(self, table: str) -> Iterator[dict[str, Any]]:
        """The rows of ``table`` as column -> value dicts."""
        columns = self.TABLE_SET.columns[table]
        for row in self.rows(table):
            yield dict(zip(columns, row))

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {t: len(self.rows(t)) for t in self.TABLE_SET.tables}

    @property
    def total(self) -> int:
        """Rows in all tables."""
        return sum(self.counts().values())


async def copy_rows(conn_or_dsn: Any, tables: TableSet, rows: Rows) -> None:
    """COPY every table's rows in one transaction (all rows are in, or none), then
    ``ANALYZE`` them so the planner knows the new sizes at once.

    :param conn_or_dsn: a PostgreSQL DSN, an ``asyncpg`` connection, or a pool.
    :param tables: what to write.
    :param rows: the rows of a table, as tuples in ``tables.columns`` order.
    :raises asyncpg.PostgresError: a row was refused (e.g. the tenant is already loaded).
    """
    if isinstance(conn_or_dsn, str):
        conn = await connection.connect(conn_or_dsn, writes="a bulk load")
        try:
            await _copy(conn, tables, rows)
        finally:
            await conn.close()
    elif isinstance(conn_or_dsn, asyncpg.Pool):
        async with conn_or_dsn.acquire() as conn:
            await _copy(conn, tables, rows)
    else:
        await _copy(conn_or_dsn, tables, rows)


async def _copy(conn: Any, tables: TableSet, rows: Rows) -> None:
    async with conn.transaction():
        for table in tables.tables:
            await conn.copy_records_to_table(table, records=rows(table),
                                             columns=tables.columns[table],
                                             schema_name=tables.schema)
    await conn.execute("ANALYZE " + ", ".join(f"{tables.schema}.{t}" for t in tables.tables))


def insert_statements(tables: TableSet, rows: Rows) -> list[str]:
    """The rows as plain ``INSERT`` statements, one per non-empty table, in foreign-key
    order, values rendered by :func:`sql_literal`."""
    statements = []
    for table in tables.tables:
        found = rows(table)
        if not found:
            continue
        values = ",\n".join("(" + ", ".join(map(sql_literal, row)) + ")" for row in found)
        statements.append(f"INSERT INTO {tables.schema}.{table} "
                          f"({', '.join(tables.columns[table])}) VALUES\n{values}")
    return statements


def sql_literal(value: object) -> str:
    """``value`` as an exact SQL literal (strings with ``''`` escaping, times as
    ``timestamptz``, lists of strings as ``text[]``).

    :raises TypeError: a type with no exact literal here.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | decimal.Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'::date"
    if isinstance(value, dt.time):
        return f"'{value.isoformat()}'::time"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(map(sql_literal, value)) + "]::text[]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")
