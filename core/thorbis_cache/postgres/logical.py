"""Change capture from the WAL (logical decoding): no trigger on the write path.

::

    capture = LogicalCapture("main", rules, views)
    await capture.ensure(conn)               # publication, identity, slot (idempotent)
    stream = await capture.stream(dsn, conn) # START_REPLICATION from the confirmed LSN
    batch = await stream.read(conn, 1000, until=flush_lsn)  # whole transactions, in order
    ...                                      # apply batch.rows, Redis acknowledges
    stream.confirm(batch.end_lsn)

**What is created.** A publication ``thorbis_<name>`` of the ruled tables and of the
views' sources (the tables :func:`~thorbis_cache.postgres.triggers.plan_tables` names,
so both capture paths watch the same tables), and a logical replication slot
``thorbis_<name>`` on the built-in ``pgoutput`` plugin. The server needs
``wal_level=logical`` and a free slot.

**REPLICA IDENTITY FULL** is set only on a table where a rule reads a non-key column
of the OLD row (a significant column, a target parameter): by default the WAL carries
the old row's key only, and a work order moved to another technician must invalidate the
old technician's schedule too. FULL writes the whole old row into the WAL on each UPDATE
and DELETE of that table (the cost is measured in ``bench/logical_capture.py``).

**Rows.** Each change becomes an :class:`~thorbis_cache.postgres.outbox.OutboxRow` of
the shape the trigger writes -- the tenant, the primary key and the old/new values of
the columns the rules read, as JSON built by PostgreSQL's own ``jsonb_build_object``
from the decoded text values (one query per table per batch), so a rule sees the same
values whichever path captured the change. Stored generated columns (which ``pgoutput``
does not send) are computed there from their generation expression. The row's ``id`` is
the change's LSN; ``attempts`` is what the caller counted. An UPDATE that changes none
of a table's significant columns is dropped, as the trigger drops it
(:mod:`thorbis_cache.postgres.logical_rows`).

**At least once.** :meth:`LogicalStream.read` does not consume: the slot moves only on
:meth:`LogicalStream.confirm`, which the worker calls after Redis acknowledged the
batch and its database transaction committed. A worker killed (or a stream closed)
before that is sent the same transactions again by the next stream; the effects
(deletes, tag invalidations) are idempotent.

**One reader per slot.** PostgreSQL refuses a second session on an active slot
("replication slot ... is active for PID"): :meth:`LogicalCapture.stream` raises
:class:`SlotInUseError` naming the session that reads it (each worker's replication
session is named ``thorbis-cache <host>:<pid>``), and a second worker stands by until
the slot is free (:class:`~thorbis_cache.invalidation.slot_reader.SlotReader`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable

import asyncpg
import attrs

from thorbis_cache.errors import ConfigurationError, ThorbisCacheError
from thorbis_cache.plugins.declarations import InvalidationRule, MaterializedView
from thorbis_cache.postgres.capture_ddl import SLOT_MADE, record_captured, relid_of
from thorbis_cache.postgres.catalog import PK_COLUMNS, quote_ident
from thorbis_cache.postgres.connection import POOLER_PARAMETER, target_of
from thorbis_cache.postgres.ddl_locks import bound_locks
from thorbis_cache.postgres.logical_rows import (
    MAX_HELD,
    TransactionDecoder,
    WatchedTable,
    rows_of,
)
from thorbis_cache.postgres.outbox import OutboxRow
from thorbis_cache.postgres.replication import ReplicationError, ReplicationStream
from thorbis_cache.postgres.triggers import plan_tables

__all__ = [
    "SYNC_CANDIDATE",
    "LogicalBatch",
    "LogicalCapture",
    "LogicalStream",
    "SlotInUseError",
    "SlotLostError",
    "logical_unavailable",
    "lsn_text",
    "no_free_slot",
    "parse_lsn",
    "sync_standby_risk",
    "sync_standby_wildcard",
]

log = logging.getLogger(__name__)

_COLUMNS = """
SELECT a.attname::text, a.attgenerated = 's' AS generated,
       pg_get_expr(d.adbin, d.adrelid) AS expression
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
"""

#: A partitioned table's changes are published as the table's own (by default each
#: partition publishes under its own name, which no rule names: a host that partitioned
#: a watched table, or rebuilt it partitioned, would have had its changes dropped).
_PUBLICATION_OPTIONS = "publish_via_partition_root = true"

#: The tables the publication has (by oid).
_PUBLISHED_HERE = """
SELECT r.prrelid FROM pg_catalog.pg_publication_rel r
JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
WHERE p.pubname = $1
"""

#: The other sessions whose transaction holds an xid, and the prepared transactions:
#: what a new slot waits for.
_XID_HOLDERS = """
SELECT 'PID ' || pid AS who, coalesce(nullif(application_name, ''), 'no application_name')
       || ', ' || state AS what, left(query, 120) AS query,
       to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since
FROM pg_catalog.pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
UNION ALL
SELECT 'prepared transaction ' || quote_literal(gid), 'COMMIT PREPARED or ROLLBACK PREPARED '
       || quote_literal(gid) || ' ends it', '',
       to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
FROM pg_catalog.pg_prepared_xacts WHERE database = current_database()
ORDER BY since
"""

# Held by the transaction that makes or changes a logical capture's publication.
_PUBLICATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('thorbis_cache.publication'))"

#: Whether this capture set the table's REPLICA IDENTITY FULL (core 011).
_IDENTITY_SET = """
SELECT replica_identity_set FROM thorbis.captured_tables WHERE table_name = $1
"""

_REPLICATION_ALLOWED = """
SELECT current_user AS role, r.rolsuper OR r.rolreplication
       OR coalesce((SELECT pg_has_role(current_user, g.oid, 'MEMBER')
                      FROM pg_roles g WHERE g.rolname = 'rds_replication'), false) AS allowed
  FROM pg_roles r WHERE r.rolname = current_user
"""


async def replication_refused(conn: asyncpg.Connection) -> str | None:
    """Why the connected role may not use replication slots, or None when it may.

    PostgreSQL lets a superuser or a role with the REPLICATION attribute (its own, not
    inherited) create, read and drop slots; Amazon RDS and Aurora grant it through
    membership of ``rds_replication`` instead. An application's own role, which owns
    its tables, usually has neither.
    """
    row = await conn.fetchrow(_REPLICATION_ALLOWED)
    if row is None or row["allowed"]:
        return None
    return f"role {row['role']!r} may not use replication slots (neither superuser nor REPLICATION)"


def replication_fix(conn_role: str | None = None) -> str:
    """What an administrator runs so that a role may use replication slots."""
    role = "ROLE" if not conn_role else conn_role if re.fullmatch(
        r"[a-z_][a-z0-9_]*", conn_role) else quote_ident(conn_role)
    return (f"an administrator runs ALTER ROLE {role} REPLICATION (Amazon RDS and Aurora: "
            f"GRANT rds_replication TO {role}; others: docs/architecture.md, 'Managed "
            "services'), or capture with triggers: db init --capture triggers")


#: Seconds creating a slot may wait for the transactions running then to end.
SLOT_CREATE_TIMEOUT = 3600.0

#: ``pg_stat_replication.sync_state`` of a session that synchronous replication may
#: wait for.
SYNC_CANDIDATE = frozenset({"sync", "potential", "quorum"})

_SYNC_MEMBER = re.compile(r'"((?:[^"]|"")*)"|([^\s,()"]+)')


def sync_standby_wildcard(setting: str) -> bool:
    """Whether ``synchronous_standby_names`` lists ``*`` (bare or quoted) among its
    standbys: then every replication session, a worker's included, is a synchronous
    standby candidate (``FIRST n (...)``, ``ANY n (...)``, ``n (...)`` or a plain
    list)."""
    members = [bare if quoted is None else quoted.replace('""', '"')
               for quoted, bare in (m.groups() for m in _SYNC_MEMBER.finditer(setting))]
    return "*" in members


async def sync_standby_risk(conn: asyncpg.Connection) -> str | None:
    """Why a logical capture worker would hold the host's commits under the server's
    ``synchronous_standby_names``, or None."""
    setting = await conn.fetchval("SHOW synchronous_standby_names")
    if not sync_standby_wildcard(setting):
        return None
    return (f"synchronous_standby_names lists * ({setting}): the worker's replication "
            "session would be a synchronous standby candidate, and when no standby "
            "answers, every commit of the host would wait for the cache's invalidations "
            "(and hang while the worker is paused); name the standbys there instead, e.g. "
            "FIRST 1 (standby1, standby2)")


async def logical_unavailable(conn: asyncpg.Connection, dsn: str | None = None
                              ) -> str | None:
    """Why logical capture should not run on this server, or None when it can.

    ``auto`` capture asks this: logical decoding needs ``wal_level=logical`` and the
    ``logical`` extra (psycopg); and a server with ``max_slot_wal_keep_size=-1`` (the
    default) would let the slot of a stopped worker keep WAL until the disk is full,
    so it gets triggers until an operator sets a bound. With ``dsn``, a replication
    connection must open there too (:meth:`LogicalCapture.connection_refused`).
    """
    level = await conn.fetchval("SHOW wal_level")
    if level != "logical":
        return f"wal_level is {level}, not logical"
    refused = await replication_refused(conn)
    if refused is not None:
        return refused
    keep = await conn.fetchval("SHOW max_slot_wal_keep_size")
    if str(keep).strip() == "-1":
        return ("max_slot_wal_keep_size is -1: the slot of a stopped worker would keep WAL "
                "without bound; set it (docs/architecture.md, 'Faults of a slot')")
    risk = await sync_standby_risk(conn)
    if risk is not None:
        return risk
    full = await no_free_slot(conn)
    if full is not None:
        return full
    try:
        import psycopg  # noqa: F401 -- only whether the logical extra is installed
    except ImportError:
        return "psycopg is not installed: pip install 'thorbis-cache[logical]'"
    if dsn is not None:
        return await _replication_refused_at(dsn)
    return None


_SLOTS_USED = """
SELECT current_setting('max_replication_slots')::int AS most, count(s.*)::int AS used,
       string_agg(s.slot_name || ' (' || s.slot_type
                  || CASE WHEN s.active THEN ', read' ELSE ', not read' END
                  || coalesce(', database ' || s.database, '') || ')', ', '
                  ORDER BY s.slot_name) AS slots
FROM pg_catalog.pg_replication_slots s
"""


async def no_free_slot(conn: asyncpg.Connection) -> str | None:
    """Why no replication slot can be created on this server (every one of
    ``max_replication_slots`` is taken, naming them), or None. Found as a user would:
    ``db init`` on a server whose slots its standbys and other tools had taken ended in
    PostgreSQL's traceback, after it had changed the replica identities and made the
    publication."""
    row = await conn.fetchrow(_SLOTS_USED)
    if row["used"] < row["most"]:
        return None
    if row["most"] == 0:
        return ("max_replication_slots is 0: set it above the number of slots the server's "
                "standbys and tools use (a restart)")
    return (f"all {row['most']} replication slots are in use (max_replication_slots = "
            f"{row['most']}): {row['slots']}; drop one that nothing needs (SELECT "
            "pg_drop_replication_slot('<name>')) or raise max_replication_slots (a restart)")


async def _replication_refused_at(dsn: str) -> str | None:
    """Why no replication connection can be read at ``dsn``, or None."""
    if target_of(dsn).pooled:
        return (f"the DSN goes through a transaction pooler ({POOLER_PARAMETER}=true), "
                "which cannot carry the replication connection a slot is read on")
    refused = await ReplicationStream.refused(dsn)
    if refused is not None:
        return (f"a replication connection was refused ({refused}): a pooler in front of "
                "PostgreSQL (PgBouncer before 1.23 and most others) cannot carry one, and "
                "pg_hba.conf needs a `replication` line for the role")
    return None


_MARKED = """
SELECT obj_description(oid, 'pg_publication') = $2 FROM pg_catalog.pg_publication
WHERE pubname = $1
"""


class SlotLostError(ConfigurationError):
    """The replication slot is missing, was invalidated, or can no longer be read past
    a change: changes may have been lost.

    :ivar tables: the tables the slot watched (whose changes may be lost).
    :ivar unreadable: the slot still exists but cannot be read on (its publication was
        dropped: :meth:`LogicalCapture.unreadable`): it is dropped before a new one is
        made.
    """

    def __init__(self, message: str, tables: tuple[str, ...] = (),
                 unreadable: bool = False) -> None:
        super().__init__(message)
        self.tables = tables
        self.unreadable = unreadable


class SlotInUseError(ReplicationError, ThorbisCacheError):
    """Another session reads the replication slot (PostgreSQL lets one at a time):
    usually another worker of the same slot, which applies its changes.

    :ivar reader: that session as ``pg_stat_replication`` shows it (its PID, name,
        address and start), or ``"another session"`` when it is gone already.
    """

    def __init__(self, message: str, reader: str) -> None:
        super().__init__(message, "55006")
        self.reader = reader


#: The session reading a slot, as far as this role may see it.
_READER = """
SELECT s.active_pid, r.application_name, host(r.client_addr),
       to_char(r.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
       r.sync_state
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_name = $1 AND s.active_pid IS NOT NULL
"""


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` to an integer."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(lsn: int) -> str:
    """An integer LSN as PostgreSQL writes it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


#: Messages decoded between two turns of the event loop.
YIELD_EVERY = 512


@attrs.frozen(slots=True)
class LogicalBatch:
    """What one :meth:`LogicalStream.read` read.

    :ivar rows: the changes the rules watch, in commit order.
    :ivar end_lsn: where to :meth:`~LogicalStream.confirm` the slot once ``rows`` are
        applied (past the last whole transaction read); None when nothing was read.
    :ivar transactions: transactions read (some may hold no watched change).
    :ivar caught_up: everything committed before the position asked for was read
        (False when no position was asked for).
    :ivar bulk_transactions: transactions among them held by tenant, past the capture's
        ``max_transaction_changes``.
    """

    rows: tuple[OutboxRow, ...] = ()
    end_lsn: int | None = None
    transactions: int = 0
    caught_up: bool = True
    bulk_transactions: int = 0


class LogicalCapture:
    """The publication and slot of one worker group, and reading changes from them.

    :param name: names the publication and the slot, ``thorbis_<name>`` (letters,
        digits and underscores).
    :param rules: the invalidation rules (``app.plugins.all_rules()``).
    :param views: the materialized views whose sources' changes are counted.
    :param max_transaction_changes: the watched changes of one transaction held for its
        commit, at most; a bigger transaction is applied by tenant (every tag its
        tables' rules reach, for each tenant it changed) instead of by row, so that
        the worker's memory stays bounded
        (:data:`~thorbis_cache.postgres.logical_rows.MAX_HELD`).
    """

    def __init__(self, name: str, rules: Iterable[InvalidationRule],
                 views: Iterable[MaterializedView] = (), *,
                 max_transaction_changes: int = MAX_HELD) -> None:
        if not name.replace("_", "").isalnum() or not name.isascii():
            raise ConfigurationError(f"logical capture name {name!r}: use letters, digits "
                                     "and underscores")
        if max_transaction_changes < 1:
            raise ConfigurationError("logical capture: max_transaction_changes must be at "
                                     f"least 1, got {max_transaction_changes}")
        self.max_transaction_changes = max_transaction_changes
        self.name = f"thorbis_{name}".lower()
        self._views = tuple(views)
        self.plans = {p.table: p for p in plan_tables(rules, self._views)}
        self._tables: dict[str, WatchedTable] = {}

    def watch(self, rules: Iterable[InvalidationRule]) -> None:
        """Read the changes ``rules`` need from the next stream on (a worker that found
        rules recorded that it lacks: :mod:`~thorbis_cache.postgres.rules_record`)."""
        self.plans = {p.table: p for p in plan_tables(rules, self._views)}
        self._tables = {}

    @property
    def slot(self) -> str:
        """The replication slot's name."""
        return self.name

    @property
    def publication(self) -> str:
        """The publication's name."""
        return self.name

    # ----------------------------------------------------------------- setup

    async def ensure(self, conn: asyncpg.Connection, *, strict: bool = True,
                     prune: bool = False, create_slot: bool = True) -> list[str]:
        """Create or update the publication, the replica identities and the slot, and
        record the watched tables (``thorbis.captured_tables``: a table renamed later
        is still found by its oid).

        Without ``prune`` the publication only gains tables: another process of the
        same database (an earlier or later release in a rolling deploy, each starting
        with ``apply_sql=True``; a worker recreating a lost slot with its own rules)
        never takes a table away that the others' rules watch. With ``prune``
        (``db init --prune``) it is exactly these rules' tables, and a table this
        capture set to REPLICA IDENTITY FULL that no rule needs so any more is set back
        to DEFAULT.

        Idempotent. Creating the slot waits for transactions already running to end
        (PostgreSQL needs a consistent starting point); changes committed after it are
        captured.

        :param conn: a connection not inside a transaction.
        :param strict: refuse tables that lack a column the rules name, or that are
            found only under another name (``db init``); when False (a lost slot
            recreated by the worker), say so and go on: such changes are applied
            conservatively (:class:`~thorbis_cache.invalidation.planning.RulePlanner`).
        :param create_slot: when False, a missing slot is left missing (``db init``
            finding one :meth:`lost_here`: the worker makes it again, after flushing
            what the changes lost with it may have made stale).
        :returns: the tables set to REPLICA IDENTITY FULL by this call.
        :raises ConfigurationError: a table is missing, has no primary key or (strict)
            lacks a column the rules name; the server's ``wal_level`` is not
            ``logical``; or the role may not use replication slots (checked before
            anything is changed).
        """
        level = await conn.fetchval("SHOW wal_level")
        if level != "logical":
            raise ConfigurationError(f"logical capture needs wal_level=logical; the server "
                                     f"runs wal_level={level}")
        await self.check_role(conn)  # before anything is changed
        if create_slot and not await self.slot_here(conn):
            full = await no_free_slot(conn)
            if full is not None:
                raise ConfigurationError(f"logical capture {self.slot} needs a replication "
                                         f"slot: {full}")
        changed: list[str] = []
        await self._load(conn, strict=strict)
        for table in self._tables.values():
            identity = await conn.fetchval(
                "SELECT relreplident::text FROM pg_class WHERE oid = $1", table.relid)
            await record_captured(conn, table.plan.table,
                                  tenant_column=table.plan.tenant_column,
                                  columns=table.plan.columns, key_columns=table.pk,
                                  operations=table.operation_names, relid=table.relid)
            if table.full_identity and identity != "f":
                await self._set_identity(conn, table, "FULL")
                changed.append(table.plan.table)
            elif prune and not table.full_identity and identity == "f" and \
                    await conn.fetchval(_IDENTITY_SET, table.plan.table):
                await self._set_identity(conn, table, "DEFAULT")
        tables = ", ".join(self._tables[t].current for t in sorted(self._tables))
        pub = quote_ident(self.publication)
        async with conn.transaction():
            # Host processes starting together on a fresh database each found no
            # publication and made one: all but one failed ("already exists", "tuple
            # concurrently updated"). Looked for under a lock of this transaction (a
            # session's would not survive a transaction pooler).
            await conn.execute(_PUBLICATION_LOCK)
            exists = await conn.fetchval(
                "SELECT true FROM pg_publication WHERE pubname = $1", self.publication)
            # A publication's tables take a lock that writers pass, but that waits
            # behind a host's migration (and queues its own kind behind it).
            await bound_locks(conn)
            if exists and prune:
                await conn.execute(f"ALTER PUBLICATION {pub} SET TABLE {tables}")
                await conn.execute(f"ALTER PUBLICATION {pub} SET ({_PUBLICATION_OPTIONS})")
            elif exists:
                published = {r[0] for r in await conn.fetch(_PUBLISHED_HERE,
                                                             self.publication)}
                missing = [t.current for t in self._tables.values()
                           if t.relid not in published]
                if missing:
                    await conn.execute(
                        f"ALTER PUBLICATION {pub} ADD TABLE {', '.join(missing)}")
                await conn.execute(f"ALTER PUBLICATION {pub} SET ({_PUBLICATION_OPTIONS})")
            else:
                await conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {tables} "
                                   f"WITH ({_PUBLICATION_OPTIONS})")
        slot = ("SELECT database, plugin, current_database() AS here FROM pg_replication_slots "
                "WHERE slot_name = $1")
        found = await conn.fetchrow(slot, self.slot)
        if found is None and create_slot:
            await self._create_slot(conn)
            found = await conn.fetchrow(slot, self.slot)  # or another process's, meanwhile
        if found is not None and \
                (found["database"], found["plugin"]) != (found["here"], "pgoutput"):
            # Slots are per server: another database's capture (or another tool) owns it.
            raise ConfigurationError(
                f"replication slot {self.slot!r} exists for database {found['database']!r} "
                f"(plugin {found['plugin']!r}), not for {found['here']!r} with pgoutput: give "
                "this database's capture another name (db init --slot NAME)")
        if found is not None and not await conn.fetchval(_MARKED, self.publication,
                                                         SLOT_MADE):
            try:
                await conn.execute(f"COMMENT ON PUBLICATION {pub} IS '{SLOT_MADE}'")
            except asyncpg.InsufficientPrivilegeError as exc:
                # Not this role's publication: capture works; only a slot lost later
                # would not be told from a setup that stopped before making it.
                log.warning("logical capture %s: could not mark its publication as "
                            "having its slot (%s): run `thorbis-cache db init` as the "
                            "publication's owner", self.slot, exc)
        return changed

    async def _set_identity(self, conn: asyncpg.Connection, table: WatchedTable,
                            identity: str) -> None:
        """``REPLICA IDENTITY FULL`` (recorded as this capture's doing) or back to
        ``DEFAULT``: a lock that queues even the table's readers, so bounded."""
        async with conn.transaction():
            await bound_locks(conn)
            await conn.execute(f"ALTER TABLE {table.current} REPLICA IDENTITY {identity}")
            await conn.execute("UPDATE thorbis.captured_tables SET replica_identity_set = $2 "
                               "WHERE table_name = $1", table.plan.table, identity == "FULL")

    async def _create_slot(self, conn: asyncpg.Connection) -> None:
        """Create the slot. It waits for every transaction that holds an xid now to end
        (a consistent start), however long that takes: past the worker's statement
        deadline, and past a ``statement_timeout`` that a DBA set on the database or
        the role (found as a user would: ``db init`` died with "canceling statement due
        to statement timeout" beside a transaction left open), up to
        :data:`SLOT_CREATE_TIMEOUT`, which names the transactions it waits for."""
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('statement_timeout', '0', true)")
                await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                                   self.slot, timeout=SLOT_CREATE_TIMEOUT)
        except asyncpg.DuplicateObjectError:
            # Another process starting at the same time made it first: the caller
            # checks it is this database's.
            log.info("logical capture %s: the slot was made by another process meanwhile",
                     self.slot)
        except TimeoutError:
            waits = await conn.fetch(_XID_HOLDERS)
            raise ConfigurationError(
                f"logical capture {self.slot}: the slot was not created within "
                f"{SLOT_CREATE_TIMEOUT:g} s: it waits for the transactions that were "
                "running when it started to end: "
                + ("; ".join(f"{r['who']} ({r['what']}, since {r['since']} UTC"
                             + (f": {r['query']!r})" if r["query"] else ")")
                             for r in waits) or "they have ended since")
                + ". End them, or run it again") from None
        log.info("logical capture: created slot %s", self.slot)

    async def check_connection(self, dsn: str) -> None:
        """Refuse a DSN where no replication connection can be read: one that goes
        through a transaction pooler (``pgbouncer=true``), or where the replication
        connection is refused (a pooler, ``pg_hba.conf``).

        :raises ConfigurationError: naming the slot, the cause and what to give instead.
        """
        refused = await _replication_refused_at(dsn)
        if refused is not None:
            raise ConfigurationError(
                f"logical capture {self.slot}: {refused}; give it the PostgreSQL server's "
                "own address (or use --capture triggers)")

    async def check_role(self, conn: asyncpg.Connection) -> None:
        """Refuse a role that may not use this capture's slot.

        :raises ConfigurationError: naming the role, the slot and the grant it lacks.
        """
        refused = await replication_refused(conn)
        if refused is not None:
            role = await conn.fetchval("SELECT current_user")
            raise ConfigurationError(f"logical capture {self.slot}: {refused}: "
                                     f"{replication_fix(role)}")

    async def slot_exists(self, conn: asyncpg.Connection) -> bool:
        """Whether the slot exists (in any database)."""
        return bool(await conn.fetchval(
            "SELECT true FROM pg_replication_slots WHERE slot_name = $1", self.slot))

    async def reader(self, conn: asyncpg.Connection) -> str | None:
        """The session that reads the slot now (``PID 123, 'thorbis-cache host:456'
        from 10.0.0.5 since 2026-12-05 06:40:01 UTC``: what this role may see of it),
        None when none does or the slot does not exist."""
        row = await conn.fetchrow(_READER, self.slot)
        if row is None:
            return None
        pid, name, address, since, _ = row
        said = [f"PID {pid}"]
        if name:
            said.append(repr(name))
        if address:
            said.append(f"from {address}")
        if since:
            said.append(f"since {since}")
        return " ".join(said)

    async def reader_sync_state(self, conn: asyncpg.Connection) -> str | None:
        """The ``pg_stat_replication.sync_state`` of the session reading the slot
        (:data:`SYNC_CANDIDATE`: synchronous replication may wait for it), None when
        none does or this role may not see it."""
        row = await conn.fetchrow(_READER, self.slot)
        return None if row is None else row[4]

    def in_use(self, reader: str) -> SlotInUseError:
        """The error that says ``reader`` (:meth:`reader`) reads this slot."""
        return SlotInUseError(
            f"logical capture slot {self.slot!r} is read by another worker ({reader}), "
            "which applies its changes: PostgreSQL lets one session read a slot", reader)

    async def slot_here(self, conn: asyncpg.Connection) -> bool:
        """Whether the slot exists for this database (lost or not): logical capture
        was set up here."""
        return bool(await conn.fetchval(
            "SELECT true FROM pg_replication_slots WHERE slot_name = $1 "
            "AND database = current_database()", self.slot))

    async def publication_here(self, conn: asyncpg.Connection) -> bool:
        """Whether the capture's publication exists in this database."""
        return bool(await conn.fetchval(
            "SELECT true FROM pg_publication WHERE pubname = $1", self.publication))

    async def lost_here(self, conn: asyncpg.Connection) -> bool:
        """Whether the slot is gone from this database while its publication is still
        here, marked as having had it (:data:`SLOT_MADE`): logical capture was set up,
        and the slot lost (dropped by hand while no worker ran, or not carried over by
        a failover: PostgreSQL 15 does not copy slots to standbys). The changes since it
        was last read are lost: a worker flushes what they may have made stale before
        it makes the slot again. A publication left by a setup that stopped before its
        slot was made is not a loss."""
        return not await self.slot_here(conn) and bool(
            await conn.fetchval(_MARKED, self.publication, SLOT_MADE))

    async def set_up_here(self, conn: asyncpg.Connection) -> bool:
        """Whether logical capture was set up in this database: its slot is here, lost
        or not, or :meth:`lost_here`."""
        return await self.slot_here(conn) or await self.lost_here(conn)

    def unreadable(self, exc: ReplicationError) -> SlotLostError | None:
        """The loss that a stream's error says, if it says one: the publication was
        dropped (by hand, or by a tool) while changes were being captured. PostgreSQL
        decodes each change under the catalog of its own time, so the changes committed
        while the publication did not exist can never be read from this slot, even
        after the publication is made again: every stream fails on the first of them.
        None for any other error."""
        text = str(exc)
        if exc.sqlstate == "42704" and "publication" in text:
            return self.lost(f"its publication {self.publication!r} was dropped while it "
                             f"captured changes, which can no longer be decoded: {text}",
                             unreadable=True)
        return None

    async def slot_lost(self, conn: asyncpg.Connection) -> bool:
        """Whether the slot is gone or invalidated (its WAL removed past
        ``max_slot_wal_keep_size``): either way changes were lost."""
        status = await conn.fetchval(
            "SELECT coalesce(wal_status, '') FROM pg_replication_slots "
            "WHERE slot_name = $1", self.slot)
        return status is None or status == "lost"

    async def drop(self, conn: asyncpg.Connection, *, max_wait: float = 10.0) -> None:
        """Drop the slot and the publication (the replica identities stay), ending the
        session that reads the slot first (a worker's stream then finds it lost)."""
        if await self.publication_here(conn):
            # Unmarked first: stopped midway, what is left is not taken for a lost slot.
            await conn.execute(
                f"COMMENT ON PUBLICATION {quote_ident(self.publication)} IS NULL")
        await self._drop_slot(conn, max_wait)
        await conn.execute(f"DROP PUBLICATION IF EXISTS {quote_ident(self.publication)}")

    async def replace_lost_slot(self, conn: asyncpg.Connection, lost: SlotLostError
                                ) -> None:
        """After ``lost`` was handled: drop what is left of the slot (an invalidated
        slot still exists, and can never be read again; so does one
        :attr:`~SlotLostError.unreadable` past a dropped publication) and
        :meth:`ensure` a new one, with its publication."""
        if lost.unreadable or await self.slot_lost(conn):
            await self._drop_slot(conn, 10.0)
        await self.ensure(conn, strict=False)

    async def _drop_slot(self, conn: asyncpg.Connection, max_wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while await self.slot_exists(conn):
            await conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = $1 AND active_pid IS NOT NULL", self.slot)
            try:
                await conn.execute("SELECT pg_drop_replication_slot($1)", self.slot)
            except asyncpg.ObjectInUseError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.01)  # the terminated session is still exiting

    async def _load(self, conn: asyncpg.Connection, *, strict: bool) -> None:
        tables: dict[str, WatchedTable] = {}
        for plan in self.plans.values():
            relid = await (conn.fetchval("SELECT to_regclass($1)::oid", plan.table)
                           if strict else relid_of(conn, plan.table))
            if relid is None:
                raise ConfigurationError(f"logical capture: table {plan.table!r} does not exist")
            # Its name now, qualified and quoted (a migration may have renamed it).
            current = await conn.fetchval(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1", relid)
            columns = await conn.fetch(_COLUMNS, relid)
            have = {r[0] for r in columns}
            missing = [c for c in plan.columns if c not in have]
            if missing and strict:
                raise ConfigurationError(f"logical capture on {plan.table!r}: the rules name "
                                         f"columns it does not have: {', '.join(missing)}")
            if missing:
                log.error("logical capture: %s (%s to the rules) no longer has column(s) %s "
                          "that its invalidation rules read: its changes are applied "
                          "conservatively until the rules match the table; update them, "
                          "then run `thorbis-cache db init`", current, plan.table,
                          ", ".join(missing))
            pk = tuple(r[0] for r in await conn.fetch(PK_COLUMNS, current))
            if not pk:
                raise ConfigurationError(f"logical capture on {plan.table!r}: it has no "
                                         "primary key")
            generated = {r[0]: r[2] for r in columns if r[1]}
            # The WAL's old row holds the key only, unless FULL: needed exactly when a
            # rule reads some other column of the old row.
            full = bool(set(plan.columns) - set(pk))
            tables[plan.table] = WatchedTable(plan, pk, generated, full, relid, current)
        self._tables = tables

    # ----------------------------------------------------------------- reading

    async def stream(self, dsn: str, conn: asyncpg.Connection, *,
                     sender_timeout: float | None = None) -> LogicalStream:
        """Start streaming the slot from its confirmed position.

        :param dsn: the database, as a libpq connection string or URI; the stream's
            connection is a replication connection (``replication=database``: the role
            needs the REPLICATION attribute and ``pg_hba.conf`` must allow it).
        :param conn: a connection to the same database, to read the tables' catalog.
        :param sender_timeout: the stream's ``wal_sender_timeout`` (seconds; None: the
            server's): a reader that hangs loses the slot after it, to another.
        :raises SlotLostError: the slot does not exist or was invalidated.
        :raises ConfigurationError: the role may not use replication slots.
        :raises SlotInUseError: another session reads the slot.
        :raises ReplicationError: any other refusal (no permission, the server is down).
        """
        if target_of(dsn).pooled:
            await self.check_connection(dsn)  # raises, naming why
        await self.check_role(conn)
        try:
            options = {"proto_version": "1", "publication_names": self.publication}
            if conn.get_server_version().major >= 14:
                # The capture's own messages (rows that joined or left a table with a
                # partition, core 010); PostgreSQL 13 has no such option.
                options["messages"] = "true"
            stream = await ReplicationStream.start(dsn, self.slot, options,
                                                   sender_timeout=sender_timeout)
        except ReplicationError as exc:
            # No such slot (42704), or invalidated past max_slot_wal_keep_size (55000):
            # the changes since its last confirmed position are gone, and nothing here
            # can prove which cached entries they made stale. Not recreated silently:
            # that would hide the gap.
            unreadable = self.unreadable(exc)
            if unreadable is not None:
                raise unreadable from exc
            # The server's own words name the slot (our prefix says "slot '...'" of
            # every error): another error of these codes is not a lost slot.
            if exc.sqlstate in {"42704", "55000"} and "replication slot" in str(exc):
                raise self.lost(str(exc)) from exc
            if exc.sqlstate == "55006":
                raise self.in_use(await self.reader(conn) or "another session") from exc
            raise
        if not self._tables:
            try:
                await self._load(conn, strict=False)
            except BaseException:
                await stream.close()
                raise
        return LogicalStream(self, stream)

    def lost(self, cause: str, *, unreadable: bool = False) -> SlotLostError:
        """The error that says this slot lost changes, and which tables' (``cause``:
        what was found; ``unreadable``: see :class:`SlotLostError`)."""
        return SlotLostError(
            f"logical capture slot {self.slot!r} cannot be read ({cause}): changes to "
            f"{', '.join(sorted(self.plans))} since its last confirmed position are "
            "lost; entries built from these tables may be stale until they expire or "
            "are flushed. Recreate the slot with LogicalCapture.ensure",
            tuple(sorted(self.plans)), unreadable,
        )

    async def backlog_bytes(self, conn: asyncpg.Connection) -> int | None:
        """WAL bytes between the slot's confirmed position and now (a health figure);
        None when the slot does not exist."""
        value = await conn.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = $1", self.slot)
        return None if value is None else int(value)

class LogicalStream:
    """The worker's reader of a :class:`LogicalCapture`'s slot: a
    :class:`~thorbis_cache.postgres.replication.ReplicationStream` decoded into whole
    transactions of watched changes, confirmed only as far as the caller says.

    A transaction read but not confirmed is sent again by the next stream on the slot:
    after any failure, :meth:`close` this one and open another.
    """

    def __init__(self, capture: LogicalCapture, stream: ReplicationStream) -> None:
        self.capture = capture
        self.replication = stream
        self._decoder = TransactionDecoder(capture._tables, capture.max_transaction_changes)
        # The end of the last whole transaction fed: with the server's keepalive
        # position, how far this stream is known to have received everything.
        self._received = 0
        #: messages received so far (with :attr:`position`, whether the stream moves)
        self.messages = 0

    @property
    def position(self) -> int:
        """Everything committed before this LSN has been received (and is held, or was
        returned by :meth:`read`), unless a transaction is open."""
        return max(self._received, self.replication.server_lsn, self.replication.confirmed)

    async def read(self, conn: asyncpg.Connection, limit: int,
                   attempts: dict[int, tuple[int, str]] | None = None, *,
                   until: int | None = None, max_wait: float = 5.0) -> LogicalBatch:
        """Whole transactions from the stream, in commit order.

        Reads what has arrived; with ``until``, until everything committed before that
        LSN has arrived (the server's flush position when the caller asked, say) or
        ``max_wait`` seconds passed. Stops early at the commit that brings the watched
        changes held to ``limit``. Never consumes anything (see :meth:`confirm`).

        :param conn: a connection to build the row images on.
        :param attempts: failed attempts so far by row id (LSN): ``(count, last error)``.
        :raises ReplicationError: the stream broke (close it and open another).
        """
        stream, decoder = self.replication, self._decoder
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        caught_up = False
        while True:
            message = stream.read()
            if message is not None:
                self.messages += 1
                if not self.messages % YIELD_EVERY:
                    # A server streams a big transaction faster than it is decoded:
                    # without a turn of the loop now and then, it held the worker's
                    # loop for seconds (its /metrics and /health unanswered).
                    await asyncio.sleep(0)
                if decoder.feed(*message):
                    self._received = max(self._received, decoder.end_lsn or 0)
                    if len(decoder.done) >= limit:
                        break
                continue
            if until is None:
                break
            if not decoder.in_transaction and self.position >= until:
                caught_up = True
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Nothing buffered: ask the server where it is (a keepalive answers),
            # and wait for that or for data.
            stream.request_position()
            await stream.readable(remaining)
        pending, end_lsn, transactions, bulk = decoder.take()
        rows = await rows_of(conn, self.capture._tables, pending, attempts or {})
        return LogicalBatch(tuple(rows), end_lsn, transactions, caught_up, bulk)

    def confirm(self, lsn: int | None = None) -> None:
        """Confirm the slot up to ``lsn`` (the ``end_lsn`` of an applied batch); with
        no argument, up to :attr:`position` when no transaction is held open and the
        caller applied every batch read (an idle stream's keepalives move the slot
        past transactions no rule watches)."""
        if lsn is None:
            if self._decoder.in_transaction or self._decoder.done:
                return
            lsn = self.position
        self.replication.confirm(lsn)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the server sends something; returns the undo."""
        return self.replication.watch(callback)

    async def close(self) -> None:
        """End the stream; what was not confirmed is sent again to the next one."""
        await self.replication.close()
