"""The host's migrations against change capture: what each capture reads, recorded by
table oid, and the event trigger that keeps a migration from breaking the host's writes.

The generated capture triggers name the columns their rules read, and PL/pgSQL binds
those names when a statement runs: a migration that renamed or dropped one of them made
every later write of the table fail. ``sql/core/007_capture_ddl.sql`` holds the
mechanism: ``thorbis.captured_tables``, ``thorbis.capture_ddl_check()`` and the stand-in
capture ``thorbis.capture_standin__<schema>__<table>()`` it makes. This module records
the captured tables when capture is installed and creates the event trigger
``thorbis_capture_ddl`` that runs the check after every ``ALTER TABLE``. Logical capture
reads the same records to follow a renamed table.

A partitioned table's partitions need capture of their own
(``sql/core/010_capture_partitions.sql``): a statement that names a partition fires
that partition's statement triggers, not the table's, and a partition's TRUNCATE is not
published as the table's. :func:`capture_partitions` gives each partition what it needs;
the event trigger ``thorbis_capture_partitions`` does it for partitions created or
attached later, and records rows that joined or left the table with a partition as a
change to every row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import asyncpg
import attrs

from thorbis_cache.plugins.declarations import Operation
from thorbis_cache.postgres.catalog import table_readable
from thorbis_cache.postgres.ddl_locks import bound_locks

__all__ = [
    "EVENT_BITS",
    "EVENT_TRIGGER",
    "PARTITIONS_TRIGGER",
    "SLOT_MADE",
    "TRIGGERS_LOCK",
    "TRUNCATE_BITS",
    "CaptureDrift",
    "capture_partitions",
    "captured_readable",
    "drifted_captures",
    "ensure_ddl_guard",
    "record_captured",
    "relid_of",
    "relids_of",
    "uncapture_others",
]

#: The comment a logical capture's publication carries once its slot was made: a
#: publication without its slot is a slot *lost* only then, not a setup that stopped
#: between the two (``LogicalCapture.lost_here``).
SLOT_MADE = "thorbis-cache: its replication slot was made"

#: The event trigger that checks every ALTER TABLE against the captured tables.
EVENT_TRIGGER = "thorbis_capture_ddl"

_RECORD = """
INSERT INTO thorbis.captured_tables
       (table_name, relid, tenant_column, columns, key_columns, operations, column_types,
        incomplete, retyped, changed_at, partitions, update_filter)
SELECT $1::text, r.relid, $2::text, $3::text[], $4::text[], $5::text[],
       CASE WHEN $7::bool THEN (SELECT jsonb_object_agg(a.attname, a.atttypid)
                                  FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = r.relid
                                   AND a.attname = ANY ($3::text[] || $4::text[])
                                   AND a.attnum > 0 AND NOT a.attisdropped) END,
       NULL, NULL, now(), thorbis.capture_partitions_of(r.relid), $8::text[]
  FROM (SELECT coalesce($6::oid, to_regclass($1)::oid) AS relid) AS r
ON CONFLICT (table_name) DO UPDATE SET
       relid = EXCLUDED.relid, tenant_column = EXCLUDED.tenant_column,
       columns = EXCLUDED.columns, key_columns = EXCLUDED.key_columns,
       operations = EXCLUDED.operations, column_types = EXCLUDED.column_types,
       incomplete = NULL, retyped = NULL, recreated = false, changed_at = now(),
       partitions = EXCLUDED.partitions, update_filter = EXCLUDED.update_filter
"""

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('thorbis_cache.capture_ddl'))"

#: ``pg_trigger.tgtype`` bits (PostgreSQL's ``catalog/pg_trigger.h``) of the events a
#: trigger fires on; a statement-level AFTER trigger sets no other bit.
EVENT_BITS = {Operation.INSERT: 4, Operation.DELETE: 8, Operation.UPDATE: 16}
TRUNCATE_BITS = 32

#: Held by every transaction that makes or drops capture triggers (``triggers.py``,
#: the partitions' here): processes setting up one database at once take turns, so
#: none fails on a trigger another one made.
TRIGGERS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('thorbis_cache.triggers'))"

#: The event trigger that keeps the partitions of each captured table captured (core
#: 010): it fires after :data:`EVENT_TRIGGER` (event triggers fire in name order).
PARTITIONS_TRIGGER = "thorbis_capture_partitions"

_CREATE = {
    EVENT_TRIGGER: (f"CREATE EVENT TRIGGER {EVENT_TRIGGER} ON ddl_command_end "
                    "WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE TABLE AS', "
                    "'SELECT INTO') EXECUTE FUNCTION thorbis.capture_ddl_check()"),
    PARTITIONS_TRIGGER: (f"CREATE EVENT TRIGGER {PARTITIONS_TRIGGER} ON ddl_command_end "
                         "WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'DROP TABLE') "
                         "EXECUTE FUNCTION thorbis.capture_partitions_ddl()"),
}


async def record_captured(conn: asyncpg.Connection, table: str, *, tenant_column: str,
                          columns: Sequence[str], key_columns: Sequence[str],
                          operations: Collection[str], relid: int | None = None,
                          track_types: bool = False,
                          update_filter: Sequence[str] | None = None) -> None:
    """Record what the capture of ``table`` (``schema.table``, as the rules name it)
    reads, complete again: the capture just installed matches the table.

    :param operations: ``INSERT``, ``UPDATE``, ``DELETE``: those captured.
    :param relid: the table's oid, when its name no longer finds it.
    :param track_types: record the columns' types now, which the capture triggers
        were generated for (a migration that changes one is caught); not for logical
        capture, which reads each change's types from the WAL.
    :param update_filter: the capture triggers': the columns whose change makes an
        UPDATE recorded, empty for every UPDATE (None: logical capture, which reads
        every UPDATE); :mod:`~thorbis_cache.postgres.capture_check` checks a process's
        rules against it.
    """
    order = ("INSERT", "UPDATE", "DELETE")
    await conn.execute(_RECORD, table, tenant_column, list(columns), list(key_columns),
                       [op for op in order if op in operations], relid, track_types,
                       None if update_filter is None else list(update_filter))


async def capture_partitions(conn: asyncpg.Connection, tables: Sequence[str]) -> int:
    """Give every partition of the captured ``tables`` (recorded by
    :func:`record_captured`) the capture it needs: the table's own capture triggers, or
    under logical capture a TRUNCATE trigger; returns how many triggers were made."""
    async with conn.transaction():
        await conn.execute(TRIGGERS_LOCK)
        await bound_locks(conn)
        return int(await conn.fetchval(
            "SELECT coalesce(sum(thorbis.capture_partition_triggers(c)), 0) "
            "FROM thorbis.captured_tables c WHERE c.table_name = ANY ($1::text[])",
            list(tables)))


# The capture triggers (functions of the thorbis schema) of each captured table not in
# $1, and of its partitions.
_OTHERS_TRIGGERS = """
SELECT quote_ident(t.tgname), t.tgrelid::regclass::text
FROM thorbis.captured_tables c
CROSS JOIN LATERAL (SELECT c.relid UNION
                    SELECT p.relid FROM pg_catalog.pg_partition_tree(c.relid) AS p) AS r(relid)
JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.relid AND NOT t.tgisinternal
JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace AND n.nspname = 'thorbis'
WHERE NOT c.table_name = ANY ($1::text[])
ORDER BY 2, 1
"""


async def uncapture_others(conn: asyncpg.Connection, keep: Sequence[str]) -> list[str]:
    """Take the capture off every captured table not in ``keep`` (``db init --prune``:
    no loaded plugin's rule or view reads it any more), in one transaction: its
    capture triggers and its partitions' go, a REPLICA IDENTITY FULL that logical
    capture set goes back to DEFAULT, and it leaves ``thorbis.captured_tables``.
    Without this a removed rule's table kept its triggers: every write of the host
    paid for an outbox row that no rule reads. Returns the tables, by name."""
    async with conn.transaction():
        await conn.execute(TRIGGERS_LOCK)
        await bound_locks(conn)
        for name, table in await conn.fetch(_OTHERS_TRIGGERS, list(keep)):
            await conn.execute(f"DROP TRIGGER {name} ON {table}")
        gone = await conn.fetch(
            "DELETE FROM thorbis.captured_tables WHERE NOT table_name = ANY ($1::text[]) "
            "RETURNING table_name, relid, replica_identity_set", list(keep))
        for row in gone:
            current = await conn.fetchval("SELECT $1::oid::regclass::text", row["relid"]) \
                if row["replica_identity_set"] else None
            if current is not None and await conn.fetchval(
                    "SELECT relreplident = 'f' FROM pg_catalog.pg_class WHERE oid = $1",
                    row["relid"]):
                await conn.execute(f"ALTER TABLE {current} REPLICA IDENTITY DEFAULT")
    return sorted(row["table_name"] for row in gone)


async def captured_readable(conn: asyncpg.Connection) -> bool:
    """Whether the database keeps the capture's record (a database set up by an
    earlier release has none) and this role may read it (a host application's role
    with rights on its own tables only may not: its checks do without)."""
    return bool(await table_readable(conn, "thorbis", "captured_tables"))


async def ensure_ddl_guard(conn: asyncpg.Connection) -> str | None:
    """Create the event trigger that checks each ALTER TABLE and CREATE TABLE against the
    captured tables, unless it exists; returns why it could not be created (the role is not a
    superuser, nor ``rds_superuser`` on RDS), or None."""
    try:
        async with conn.transaction():
            # Host processes run db init's steps at once when they start together: one
            # of them creates it (the others would fail on a duplicate).
            await conn.execute(_LOCK)
            for name, create in _CREATE.items():
                enabled = await conn.fetchval(
                    "SELECT evtenabled FROM pg_event_trigger WHERE evtname = $1", name)
                if enabled is None:
                    await conn.execute(create)
                if enabled != "A":
                    # A migration run in a replica session (session_replication_role)
                    # is checked too, as the capture triggers fire there (core 009).
                    await conn.execute(f"ALTER EVENT TRIGGER {name} ENABLE ALWAYS")
    except asyncpg.InsufficientPrivilegeError as exc:
        role = await conn.fetchval("SELECT current_user")
        return (f"the event trigger {EVENT_TRIGGER} was not created ({exc}; role "
                f"{role!r}): a migration that renames or drops a column an invalidation "
                "rule reads will make every write of that table fail until `thorbis-cache "
                "db init` runs with matching rules, and a partition created, attached, "
                "detached or dropped later goes uncaptured; run `thorbis-cache db init` "
                "once as a superuser (rds_superuser on RDS) to install it")
    return None


@attrs.frozen(slots=True)
class CaptureDrift:
    """A captured table a migration changed under its rules: with capture triggers, its
    triggers were replaced by the stand-in (``thorbis.capture_standin__<schema>__<table>``,
    naming the columns it has); under logical capture, only recorded.

    :ivar table: as the rules name it.
    :ivar gone: columns the rules read that the table no longer has (its changes are
        applied conservatively until the rules match it).
    :ivar retyped: such columns whose type changed (capture triggers: exact, only
        slower, until ``db init`` generates the triggers for the new types).
    :ivar recreated: the table was dropped and created again: its capture was put back
        (a stand-in of the triggers, or the publication) until ``db init``.
    """

    table: str
    gone: tuple[str, ...]
    retyped: tuple[str, ...]
    recreated: bool = False


async def drifted_captures(conn: asyncpg.Connection) -> list[CaptureDrift]:
    """The captured tables a migration changed under their rules, by name; empty when
    none (or on a database set up by an earlier release)."""
    if not await captured_readable(conn):
        return []
    rows = await conn.fetch(
        "SELECT table_name, incomplete, retyped, recreated FROM thorbis.captured_tables "
        "WHERE incomplete IS NOT NULL OR retyped IS NOT NULL OR recreated "
        "ORDER BY table_name")
    return [CaptureDrift(r["table_name"], tuple(r["incomplete"] or ()),
                         tuple(r["retyped"] or ()), r["recreated"]) for r in rows]


async def relids_of(conn: asyncpg.Connection, tables: Sequence[str]
                    ) -> dict[str, int | None]:
    """The oid of each table the rules name: by its name, else by the capture's record
    of it (a table renamed since), None when neither finds it (dropped, or never
    captured under that name)."""
    found: dict[str, int | None] = {
        r[0]: r[1] for r in await conn.fetch(
            "SELECT t, to_regclass(t)::oid FROM unnest($1::text[]) AS t", list(tables))}
    missing = [t for t, oid in found.items() if oid is None]
    if missing and await captured_readable(conn):
        found.update((r[0], r[1]) for r in await conn.fetch(
            "SELECT c.table_name, c.relid FROM thorbis.captured_tables c "
            "JOIN pg_catalog.pg_class r ON r.oid = c.relid WHERE c.table_name = ANY ($1)",
            missing))
    return found


async def relid_of(conn: asyncpg.Connection, table: str) -> int | None:
    """:func:`relids_of` for one table."""
    return (await relids_of(conn, [table]))[table]
