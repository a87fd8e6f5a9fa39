"""Change capture from the WAL (logical decoding): no trigger on the write path.

::

    capture = LogicalCapture("main", rules, views)
    await capture.ensure(conn)               # publication, identity, slot (idempotent)
    batch = await capture.peek(conn, 1000)   # whole transactions, in commit order
    ...                                      # apply batch.rows, Redis acknowledges
    await capture.advance(conn, batch.end_lsn)

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
of a table's significant columns is dropped, as the trigger drops it.

**At least once.** :meth:`LogicalCapture.peek` does not consume: the slot moves only on
:meth:`LogicalCapture.advance`, which the worker calls after Redis acknowledged the
batch and its database transaction committed. A worker killed before that re-reads the
same transactions; the effects (deletes, tag invalidations) are idempotent.

**One reader per slot.** PostgreSQL refuses a second session on an active slot
("replication slot ... is active for PID"): a second worker on the same name fails its
batch and retries; give each worker group its own name.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import attrs

from thorbis_cache.declarations import InvalidationRule, MaterializedView
from thorbis_cache.errors import ConfigurationError
from thorbis_cache.postgres import pgoutput
from thorbis_cache.postgres.catalog import PK_COLUMNS, quote_ident
from thorbis_cache.postgres.outbox import OutboxRow
from thorbis_cache.postgres.triggers import TablePlan, plan_tables

__all__ = ["LogicalBatch", "LogicalCapture", "SlotLostError", "lsn_text", "parse_lsn"]

log = logging.getLogger(__name__)

_COLUMNS = """
SELECT a.attname::text, a.attgenerated = 's' AS generated,
       pg_get_expr(d.adbin, d.adrelid) AS expression
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""

_PEEK = """
SELECT lsn::text, data
FROM pg_logical_slot_peek_binary_changes($1, NULL, $2,
     'proto_version', '1', 'publication_names', $3)
"""


class SlotLostError(ConfigurationError):
    """The replication slot is missing or was invalidated: changes may have been lost.

    :ivar tables: the tables the slot watched (whose changes may be lost).
    """

    def __init__(self, message: str, tables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tables = tables


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` to an integer."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(lsn: int) -> str:
    """An integer LSN as PostgreSQL writes it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@attrs.frozen(slots=True)
class _Table:
    """What the capture reads from one table: the trigger's plan plus the catalog."""

    plan: TablePlan
    pk: tuple[str, ...]
    generated: dict[str, str]  # column -> generation expression
    full_identity: bool

    def image_sql(self) -> str:
        # The decoded text values go through the table's row type (each value's input
        # function), then jsonb_build_object, as in the trigger: identical JSON.
        schema, relation = self.plan.table.split(".", 1)
        table = f"{quote_ident(schema)}.{quote_ident(relation)}"
        wanted = sorted(set(self.plan.columns) | set(self.pk))
        pairs = ", ".join(
            "'" + c.replace("'", "''") + "', "
            + (f"({self.generated[c]})" if c in self.generated else quote_ident(c))
            for c in wanted
        )
        return (f"SELECT jsonb_build_object({pairs})::text "  # noqa: S608 -- quoted above
                f"FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY "
                f"AS _thorbis_e(_thorbis_v, _thorbis_i), "
                f"LATERAL jsonb_populate_record(NULL::{table}, _thorbis_e._thorbis_v) "
                f"ORDER BY _thorbis_e._thorbis_i")


@attrs.frozen(slots=True)
class LogicalBatch:
    """What one :meth:`LogicalCapture.peek` read.

    :ivar rows: the changes the rules watch, in commit order.
    :ivar end_lsn: where to :meth:`~LogicalCapture.advance` the slot once ``rows`` are
        applied (past the last whole transaction read); None when nothing was read.
    :ivar transactions: transactions read (some may hold no watched change).
    :ivar truncated: tables truncated in these transactions (no row images: the
        capture cannot tell which entries they made stale).
    """

    rows: tuple[OutboxRow, ...] = ()
    end_lsn: int | None = None
    transactions: int = 0
    truncated: tuple[str, ...] = ()


@attrs.define(slots=True)
class _Pending:
    table: _Table
    change: pgoutput.Change
    lsn: int
    xid: int
    committed_at: dt.datetime
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None


class LogicalCapture:
    """The publication and slot of one worker group, and reading changes from them.

    :param name: names the publication and the slot, ``thorbis_<name>`` (letters,
        digits and underscores).
    :param rules: the invalidation rules (``app.plugins.all_rules()``).
    :param views: the materialized views whose sources' changes are counted.
    """

    def __init__(self, name: str, rules: Iterable[InvalidationRule],
                 views: Iterable[MaterializedView] = ()) -> None:
        if not name.replace("_", "").isalnum() or not name.isascii():
            raise ConfigurationError(f"logical capture name {name!r}: use letters, digits "
                                     "and underscores")
        self.name = f"thorbis_{name}".lower()
        self.plans = {p.table: p for p in plan_tables(rules, views)}
        self._tables: dict[str, _Table] = {}

    @property
    def slot(self) -> str:
        """The replication slot's name."""
        return self.name

    @property
    def publication(self) -> str:
        """The publication's name."""
        return self.name

    # ----------------------------------------------------------------- setup

    async def ensure(self, conn: asyncpg.Connection) -> list[str]:
        """Create or update the publication, the replica identities and the slot.

        Idempotent. Creating the slot waits for transactions already running to end
        (PostgreSQL needs a consistent starting point); changes committed after it are
        captured.

        :param conn: a connection not inside a transaction.
        :returns: the tables set to REPLICA IDENTITY FULL by this call.
        :raises ConfigurationError: a table is missing, has no primary key or lacks a
            column the rules name; or the server's ``wal_level`` is not ``logical``.
        """
        level = await conn.fetchval("SHOW wal_level")
        if level != "logical":
            raise ConfigurationError(f"logical capture needs wal_level=logical; the server "
                                     f"runs wal_level={level}")
        changed: list[str] = []
        await self._load(conn)
        for table in self._tables.values():
            identity = await conn.fetchval(
                "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)",
                table.plan.table)
            if table.full_identity and identity != "f":
                await conn.execute(f"ALTER TABLE {self._ident(table.plan.table)} "
                                   "REPLICA IDENTITY FULL")
                changed.append(table.plan.table)
        tables = ", ".join(self._ident(t) for t in sorted(self._tables))
        exists = await conn.fetchval("SELECT true FROM pg_publication WHERE pubname = $1",
                                     self.publication)
        pub = quote_ident(self.publication)
        if exists:
            await conn.execute(f"ALTER PUBLICATION {pub} SET TABLE {tables}")
        else:
            await conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {tables}")
        if not await self.slot_exists(conn):
            await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                               self.slot)
            log.info("logical capture: created slot %s", self.slot)
        return changed

    async def slot_exists(self, conn: asyncpg.Connection) -> bool:
        """Whether the slot exists (in any database)."""
        return bool(await conn.fetchval(
            "SELECT true FROM pg_replication_slots WHERE slot_name = $1", self.slot))

    async def drop(self, conn: asyncpg.Connection) -> None:
        """Drop the slot and the publication (the replica identities stay)."""
        if await self.slot_exists(conn):
            await conn.execute("SELECT pg_drop_replication_slot($1)", self.slot)
        await conn.execute(f"DROP PUBLICATION IF EXISTS {quote_ident(self.publication)}")

    @staticmethod
    def _ident(table: str) -> str:
        schema, relation = table.split(".", 1)
        return f"{quote_ident(schema)}.{quote_ident(relation)}"

    async def _load(self, conn: asyncpg.Connection) -> None:
        tables: dict[str, _Table] = {}
        for plan in self.plans.values():
            if await conn.fetchval("SELECT to_regclass($1)", plan.table) is None:
                raise ConfigurationError(f"logical capture: table {plan.table!r} does not exist")
            columns = await conn.fetch(_COLUMNS, plan.table)
            have = {r[0] for r in columns}
            missing = [c for c in plan.columns if c not in have]
            if missing:
                raise ConfigurationError(f"logical capture on {plan.table!r}: the rules name "
                                         f"columns it does not have: {', '.join(missing)}")
            pk = tuple(r[0] for r in await conn.fetch(PK_COLUMNS, plan.table))
            if not pk:
                raise ConfigurationError(f"logical capture on {plan.table!r}: it has no "
                                         "primary key")
            generated = {r[0]: r[2] for r in columns if r[1]}
            # The WAL's old row holds the key only, unless FULL: needed exactly when a
            # rule reads some other column of the old row.
            full = bool(set(plan.columns) - set(pk))
            tables[plan.table] = _Table(plan, pk, generated, full)
        self._tables = tables

    # ----------------------------------------------------------------- reading

    async def peek(self, conn: asyncpg.Connection, limit: int,
                   attempts: dict[int, tuple[int, str]] | None = None) -> LogicalBatch:
        """Read whole transactions from the slot, without consuming them.

        :param conn: a connection (not inside a transaction that wrote).
        :param limit: decoding stops at the first commit after this many messages
            (begin, relation, change and commit messages all count).
        :param attempts: failed attempts so far by row id (LSN): ``(count, last error)``.
        :returns: the watched changes in commit order and where to advance to.
        """
        if not self._tables:
            await self._load(conn)
        try:
            records = await conn.fetch(_PEEK, self.slot, limit, self.publication)
        except (asyncpg.UndefinedObjectError,
                asyncpg.ObjectNotInPrerequisiteStateError) as exc:
            # Dropped, or invalidated past max_slot_wal_keep_size: the changes since the
            # last confirmed position are gone, and nothing here can prove which cached
            # entries they made stale. Not recreated silently: that would hide the gap.
            raise SlotLostError(
                f"logical capture slot {self.slot!r} cannot be read ({exc}): changes to "
                f"{', '.join(sorted(self._tables))} since its last confirmed position are "
                "lost; entries built from these tables may be stale until they expire or "
                "are flushed. Recreate the slot with LogicalCapture.ensure",
                tuple(sorted(self._tables)),
            ) from exc
        relations: dict[int, pgoutput.Relation] = {}
        pending: list[_Pending] = []
        current: list[_Pending] = []
        truncated: list[str] = []
        begin: pgoutput.Begin | None = None
        end_lsn: int | None = None
        transactions = 0
        for record in records:
            message = pgoutput.parse(record["data"], relations)
            if isinstance(message, pgoutput.Begin):
                begin, current = message, []
            elif isinstance(message, pgoutput.Change):
                table = self._tables.get(relations[message.relation_oid].table)
                if table is not None and begin is not None:
                    current.append(_Pending(table, message, parse_lsn(record["lsn"]),
                                            begin.xid, begin.committed_at))
            elif isinstance(message, pgoutput.Truncate):
                truncated.extend(relations[o].table for o in message.relation_oids
                                 if o in relations)
            elif isinstance(message, pgoutput.Commit):
                for item in current:
                    item.committed_at = message.committed_at
                pending.extend(current)
                current, begin = [], None
                end_lsn = message.end_lsn
                transactions += 1
        rows = await self._rows(conn, pending, attempts or {})
        return LogicalBatch(tuple(rows), end_lsn, transactions, tuple(truncated))

    async def advance(self, conn: asyncpg.Connection, lsn: int) -> None:
        """Confirm everything before ``lsn``: the slot will not return it again and
        PostgreSQL may recycle its WAL."""
        await conn.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                           self.slot, lsn_text(lsn))

    async def backlog_bytes(self, conn: asyncpg.Connection) -> int | None:
        """WAL bytes between the slot's confirmed position and now (a health figure);
        None when the slot does not exist."""
        value = await conn.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = $1", self.slot)
        return None if value is None else int(value)

    async def _rows(self, conn: asyncpg.Connection, pending: Sequence[_Pending],
                    attempts: dict[int, tuple[int, str]]) -> list[OutboxRow]:
        by_table: dict[str, list[tuple[_Pending, str, dict[str, Any]]]] = {}
        for item in pending:
            old, new = self._tuples(item)
            for which, values in (("old", old), ("new", new)):
                if values is not None:
                    by_table.setdefault(item.table.plan.table, []).append((item, which, values))
        for table_name, entries in by_table.items():
            sql = self._tables[table_name].image_sql()
            images = await conn.fetch(sql, json.dumps([v for _, _, v in entries]))
            for (item, which, _), image in zip(entries, images, strict=True):
                setattr(item, which, json.loads(image[0]))
        rows: list[OutboxRow] = []
        now = dt.datetime.now(dt.UTC)
        for item in pending:
            plan = item.table.plan
            op = item.change.operation
            if (op == "UPDATE" and plan.update_filter and item.old is not None
                    and item.new is not None
                    and all(item.old.get(c) == item.new.get(c) for c in plan.update_filter)):
                continue  # as the trigger: no significant column changed
            if op not in {o.value for o in plan.operations}:
                continue
            source = item.new if item.new is not None else item.old
            assert source is not None  # every change has one image
            tenant = item.change.new if item.change.new is not None else item.change.old
            tenant_value = None if tenant is None else tenant.get(plan.tenant_column)
            count, error = attempts.get(item.lsn, (0, None))
            rows.append(OutboxRow(
                id=item.lsn, txid=str(item.xid), created_at=item.committed_at,
                table_name=plan.table, operation=op,
                tenant_id=tenant_value if isinstance(tenant_value, str) else None,
                pk=json.dumps({c: source.get(c) for c in item.table.pk}),
                old=None if item.old is None else json.dumps(
                    {c: item.old.get(c) for c in plan.columns}),
                new=None if item.new is None else json.dumps(
                    {c: item.new.get(c) for c in plan.columns}),
                attempts=count, last_error=error,
                age=(now - item.committed_at).total_seconds(),
            ))
        return rows

    @staticmethod
    def _tuples(item: _Pending) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The old and new text values to build images from: an unchanged TOASTed value
        is taken from the old row; an UPDATE that kept its key and sent no old row (no
        FULL identity, so no rule reads an old non-key value) uses the new row."""
        change = item.change
        old = None if change.old is None else dict(change.old)
        new = None if change.new is None else dict(change.new)
        if change.operation == "UPDATE" and old is None:
            old = dict(new or {})
        if new is not None and old is not None:
            for column, value in list(new.items()):
                if value is pgoutput.UNCHANGED:
                    new[column] = old.get(column)
        for image in (old, new):
            if image is not None:
                for column in [c for c, v in image.items() if v is pgoutput.UNCHANGED]:
                    del image[column]  # no value to give: the column reads as NULL
        return old, new
