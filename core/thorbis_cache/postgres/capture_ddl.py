"""The host's migrations against change capture: what each capture reads, recorded by
table oid, and the event trigger that keeps a migration from breaking the host's writes.

The generated capture triggers name the columns their rules read, and PL/pgSQL binds
those names when a statement runs: a migration that renamed or dropped one of them made
every later write of the table fail. ``sql/core/007_capture_ddl.sql`` holds the
mechanism (``thorbis.captured_tables``, ``thorbis.capture_ddl_check()``, the generic
``thorbis.capture_incomplete()``); this module records the captured tables when capture
is installed and creates the event trigger ``thorbis_capture_ddl`` that runs the check
after every ``ALTER TABLE``. Logical capture reads the same records to follow a
renamed table.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import asyncpg

__all__ = ["EVENT_TRIGGER", "ensure_ddl_guard", "incomplete_captures", "record_captured",
           "relid_of", "relids_of"]

#: The event trigger that checks every ALTER TABLE against the captured tables.
EVENT_TRIGGER = "thorbis_capture_ddl"

_RECORD = """
INSERT INTO thorbis.captured_tables
       (table_name, relid, tenant_column, columns, key_columns, operations, incomplete,
        changed_at)
VALUES ($1, coalesce($6::oid, to_regclass($1)::oid), $2, $3, $4, $5, NULL, now())
ON CONFLICT (table_name) DO UPDATE SET
       relid = EXCLUDED.relid, tenant_column = EXCLUDED.tenant_column,
       columns = EXCLUDED.columns, key_columns = EXCLUDED.key_columns,
       operations = EXCLUDED.operations, incomplete = NULL, changed_at = now()
"""

_CREATE = (f"CREATE EVENT TRIGGER {EVENT_TRIGGER} ON ddl_command_end "
           "WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION thorbis.capture_ddl_check()")


async def record_captured(conn: asyncpg.Connection, table: str, *, tenant_column: str,
                          columns: Sequence[str], key_columns: Sequence[str],
                          operations: Collection[str], relid: int | None = None) -> None:
    """Record what the capture of ``table`` (``schema.table``, as the rules name it)
    reads, complete again: the capture just installed matches the table.

    :param operations: ``INSERT``, ``UPDATE``, ``DELETE``: those captured.
    :param relid: the table's oid, when its name no longer finds it.
    """
    order = ("INSERT", "UPDATE", "DELETE")
    await conn.execute(_RECORD, table, tenant_column, list(columns), list(key_columns),
                       [op for op in order if op in operations], relid)


async def ensure_ddl_guard(conn: asyncpg.Connection) -> str | None:
    """Create the event trigger that checks each ALTER TABLE against the captured
    tables, unless it exists; returns why it could not be created (the role is not a
    superuser, nor ``rds_superuser`` on RDS), or None."""
    if await conn.fetchval("SELECT true FROM pg_event_trigger WHERE evtname = $1",
                           EVENT_TRIGGER):
        return None
    try:
        async with conn.transaction():
            await conn.execute(_CREATE)
    except asyncpg.InsufficientPrivilegeError as exc:
        role = await conn.fetchval("SELECT current_user")
        return (f"the event trigger {EVENT_TRIGGER} was not created ({exc}; role "
                f"{role!r}): a migration that renames or drops a column an invalidation "
                "rule reads will make every write of that table fail until `thorbis-cache "
                "db init` runs with matching rules; run `thorbis-cache db init` once as a "
                "superuser (rds_superuser on RDS) to install it")
    return None


async def incomplete_captures(conn: asyncpg.Connection) -> list[tuple[str, tuple[str, ...]]]:
    """The captured tables a migration took columns from, with those columns: their
    capture reads rows by name and their changes are applied conservatively until
    ``thorbis-cache db init`` runs with matching rules."""
    rows = await conn.fetch("SELECT table_name, incomplete FROM thorbis.captured_tables "
                            "WHERE incomplete IS NOT NULL ORDER BY table_name")
    return [(r["table_name"], tuple(r["incomplete"])) for r in rows]


async def relids_of(conn: asyncpg.Connection, tables: Sequence[str]
                    ) -> dict[str, int | None]:
    """The oid of each table the rules name: by its name, else by the capture's record
    of it (a table renamed since), None when neither finds it (dropped, or never
    captured under that name)."""
    found: dict[str, int | None] = {
        r[0]: r[1] for r in await conn.fetch(
            "SELECT t, to_regclass(t)::oid FROM unnest($1::text[]) AS t", list(tables))}
    missing = [t for t, oid in found.items() if oid is None]
    # A database set up by an earlier release has no record yet.
    if missing and await conn.fetchval("SELECT to_regclass('thorbis.captured_tables')"):
        found.update((r[0], r[1]) for r in await conn.fetch(
            "SELECT c.table_name, c.relid FROM thorbis.captured_tables c "
            "JOIN pg_catalog.pg_class r ON r.oid = c.relid WHERE c.table_name = ANY ($1)",
            missing))
    return found


async def relid_of(conn: asyncpg.Connection, table: str) -> int | None:
    """:func:`relids_of` for one table."""
    return (await relids_of(conn, [table]))[table]
