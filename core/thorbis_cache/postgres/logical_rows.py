"""Logical capture's decoding: ``pgoutput`` messages to the watched changes of whole
transactions (:class:`TransactionDecoder`), and those changes to outbox rows of the shape
the capture trigger writes (:func:`rows_of`), with the per-table facts both need
(:class:`WatchedTable`). :mod:`thorbis_cache.postgres.logical` sets the capture up and
streams it; this module does not talk to the replication protocol.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import attrs

from thorbis_cache.postgres import pgoutput
from thorbis_cache.postgres.catalog import quote_ident
from thorbis_cache.postgres.outbox import OutboxRow
from thorbis_cache.postgres.row_images import Unsupported, as_text, converter
from thorbis_cache.postgres.triggers import TablePlan

__all__ = ["CHUNK", "MAX_HELD", "MAX_SPREAD_TENANTS", "MESSAGE_PREFIX", "PendingChange",
           "TransactionDecoder", "WatchedTable", "rows_of"]

log = logging.getLogger(__name__)

#: The watched changes of one transaction held until its commit, at most: past this, the
#: transaction is applied by tenant (every tag its tables' rules reach, for each tenant
#: whose rows it changed) instead of by row. A transaction is applied whole, after its
#: commit: held row by row, a 200,000-row UPDATE took 455 MB of the worker (2.3 KB a
#: change), and a backfill of millions of rows killed it on every restart.
MAX_HELD = 50_000
#: Changes turned into rows between two turns of the event loop: a batch of tens of
#: thousands of changes is CPU work that otherwise held the loop for most of a second
#: (the worker's /metrics and /health went unanswered meanwhile).
CHUNK = 2048
#: Tenants of one table named by a transaction past :data:`MAX_HELD`, at most: past this,
#: that table's tags are invalidated for every tenant.
MAX_SPREAD_TENANTS = 1_000

#: The prefix of the logical-decoding messages the capture writes itself
#: (``sql/core/010_capture_partitions.sql``): ``{"table": ..., "operation": "TRUNCATE"}``
#: for rows that joined or left a table without a row change (a partition detached,
#: dropped or attached with rows; a partition truncated).
MESSAGE_PREFIX = "thorbis_cache"


@attrs.frozen(slots=True)
class WatchedTable:
    """What the capture reads from one table: the trigger's plan plus the catalog.

    :ivar relid: the table's oid (changes are matched to it by oid: a table renamed by a
        migration is still watched under the name its rules give it).
    :ivar current: the table's name now, qualified and quoted.
    """

    plan: TablePlan
    pk: tuple[str, ...]
    generated: dict[str, str]  # column -> generation expression
    full_identity: bool
    relid: int
    current: str
    # Worked out once per table, not per change.
    #: the columns an image holds: those the rules read, and the primary key
    wanted: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    #: images can be built in Python: no wanted column is generated (``pgoutput`` does
    #: not send those; PostgreSQL computes them from their expression)
    python_images: bool = attrs.field(init=False, eq=False, repr=False)
    #: the captured operations' names (``INSERT``...)
    operation_names: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    #: a Python-built image holds exactly the row's ``old``/``new`` (same columns,
    #: same order): the pk is among the columns the rules read
    image_is_row: bool = attrs.field(init=False, eq=False, repr=False)

    @wanted.default
    def _wanted_default(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.plan.columns) | set(self.pk)))

    @python_images.default
    def _python_images_default(self) -> bool:
        return not set(self.wanted) & set(self.generated)

    @operation_names.default
    def _operation_names_default(self) -> frozenset[str]:
        return frozenset(o.value for o in self.plan.operations)

    @image_is_row.default
    def _image_is_row_default(self) -> bool:
        return self.wanted == tuple(self.plan.columns)

    def images(self, entries: Sequence[tuple[PendingChange, str, dict[str, Any]]]
               ) -> list[dict[str, Any]] | None:
        """The JSON images of decoded rows, as ``jsonb_build_object`` makes them, or
        None when a column's type or value needs PostgreSQL to say
        (:mod:`~thorbis_cache.postgres.row_images`). A wanted column the row does not
        hold (the table no longer has it, or an unchanged TOASTed value) is left out of
        its image, so that planning treats it as unknown rather than NULL."""
        wanted = self.wanted
        # One converter list per relation description (the same dict for every change
        # of a table until its Relation message is sent again).
        # A text column's value is its text: no converter called (None stands for it).
        converters: dict[int, list[tuple[str, Callable[[str], Any] | None]]] = {}
        images: list[dict[str, Any]] = []
        try:
            for item, _, values in entries:
                columns = converters.get(id(item.types))
                if columns is None:
                    columns = converters[id(item.types)] = [
                        (c, None if (f := converter(item.types[c])) is as_text else f)
                        for c in wanted if c in item.types]
                images.append({c: text if (text := values[c]) is None or convert is None
                               else convert(text) for c, convert in columns if c in values})
        except Unsupported:
            return None
        return images

    def image_sql(self, *, generated: bool = True) -> str:
        """The query that turns decoded text rows (``$1``, a JSON array of objects)
        into JSON objects through the table's row type (each value's input function,
        then ``to_jsonb``: what ``jsonb_build_object`` writes in the trigger), the
        wanted generated columns computed from their expressions (``generated``)."""
        # The whole record: a column of the change that the table no longer has (a
        # migration after the change, read later) is simply absent, never an error;
        # the caller keeps the wanted columns the change held.
        schema, relation = self.plan.table.split(".", 1)
        table = f"{quote_ident(schema)}.{quote_ident(relation)}"
        pairs = ", ".join("'" + c.replace("'", "''") + f"', ({self.generated[c]})"
                          for c in self.wanted if c in self.generated)
        image = "to_jsonb(_thorbis_r)"
        if generated and pairs:
            image += f" || jsonb_build_object({pairs})"
        return (f"SELECT ({image})::text "  # noqa: S608 -- quoted above
                f"FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY "
                f"AS _thorbis_e(_thorbis_v, _thorbis_i), "
                f"LATERAL jsonb_populate_record(NULL::{table}, _thorbis_e._thorbis_v) "
                f"AS _thorbis_r ORDER BY _thorbis_e._thorbis_i")

    async def images_by_sql(self, conn: asyncpg.Connection,
                            entries: Sequence[tuple[PendingChange, str, dict[str, Any]]]
                            ) -> list[dict[str, Any]]:
        """The images of ``entries`` built by PostgreSQL (:meth:`image_sql`): the wanted
        columns each row held, and the wanted generated columns (left out when their
        expression names a column the table no longer has)."""
        rows = json.dumps([v for _, _, v in entries])
        try:
            records = await conn.fetch(self.image_sql(), rows)
            computed = frozenset(self.generated)
        except asyncpg.UndefinedColumnError:
            records = await conn.fetch(self.image_sql(generated=False), rows)
            computed = frozenset()
        wanted = self.wanted
        images = []
        for (_, _, values), record in zip(entries, records, strict=True):
            full = json.loads(record[0])
            images.append({c: full[c] for c in wanted
                           if c in full and (c in values or c in computed)})
        return images


@attrs.define(slots=True)
class PendingChange:
    table: WatchedTable
    change: pgoutput.Change
    lsn: int
    xid: int
    committed_at: dt.datetime
    types: dict[str, int]  # column -> type oid, from the Relation message
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None


class TransactionDecoder:
    """``pgoutput`` messages, in order, to the watched changes of whole transactions.

    One per decoding session: a stream describes each relation once per session, so the
    relations seen are kept for the session's life; a transaction whose commit has not
    arrived yet is held until it does. A transaction with more than ``max_held`` watched
    changes is held as the tenants it touched per table instead (a bulk transaction:
    see :data:`MAX_HELD`), and comes out as one tenant-wide change per table and tenant.
    """

    def __init__(self, tables: dict[str, WatchedTable], max_held: int = MAX_HELD) -> None:
        if max_held < 1:
            raise ValueError(f"max_held must be at least 1, got {max_held}")
        self.tables = tables
        self.max_held = max_held
        # The open transaction once past max_held: per table, the LSN of its first
        # change and, per tenant, the LSN of that tenant's first (which name the changes
        # it comes out as); None for every tenant (a TRUNCATE, an unknown tenant, or
        # more than MAX_SPREAD_TENANTS).
        self.spread: dict[str, tuple[int, dict[str, int] | None]] | None = None
        self.spread_changes = 0
        # Transactions held by tenant (past max_held) among those done.
        self.bulk_transactions = 0
        self.relations: dict[int, pgoutput.Relation] = {}
        self.types: dict[int, dict[str, int]] = {}
        self.keep: dict[int, frozenset[str]] = {}
        # The watched table of each relation described (None: not watched), so that a
        # change is matched by its oid rather than by its relation's name.
        self.watched: dict[int, WatchedTable | None] = {}
        self.by_oid = {t.relid: t for t in tables.values()}
        self.begin: pgoutput.Begin | None = None
        self.current: list[PendingChange] = []
        self.done: list[PendingChange] = []
        self.end_lsn: int | None = None
        self.transactions = 0

    @property
    def in_transaction(self) -> bool:
        """A transaction began and its commit has not been fed yet."""
        return self.begin is not None

    def feed(self, lsn: int, data: bytes) -> bool:
        """Decode one message; True when it ended a transaction."""
        message = pgoutput.parse(data, self.relations, self.keep)
        if type(message) is pgoutput.Change:
            # Described (parse refuses a change of a relation it has not seen), so
            # watched holds its oid.
            oid = message.relation_oid
            table = self.watched[oid]
            begin = self.begin
            if table is not None and begin is not None:
                self._hold(table, message, lsn, begin)
        elif type(message) is pgoutput.Begin:
            self.begin, self.current, self.spread = message, [], None
        elif type(message) is pgoutput.Relation:
            self.types[message.oid] = {c.name: c.type_oid for c in message.columns}
            # By oid first: a migration may have renamed the table since its rules were
            # written (the publication follows it, and so does the capture).
            table = self.watched[message.oid] = (self.by_oid.get(message.oid)
                                                 or self.tables.get(message.table))
            # Only the columns an image holds are decoded; all of them where
            # PostgreSQL computes a generated column from the others. (A change of an
            # unwatched table is decoded in full, then dropped: rare, since the
            # publication names the watched tables only.)
            if table is not None and table.python_images:
                self.keep[message.oid] = frozenset(table.wanted) | {table.plan.tenant_column}
        elif type(message) is pgoutput.Truncate:
            # Every row of each table gone: a change of its own (no images), in its
            # transaction's order; the LSN plus its position names each one.
            begin = self.begin
            for i, oid in enumerate(message.relation_oids):
                table = self.watched.get(oid)
                if table is not None and begin is not None:
                    self._hold(table, pgoutput.Change(oid, "TRUNCATE", None, False, None),
                               lsn + i, begin)
        elif type(message) is pgoutput.LogicalMessage:
            begin = self.begin
            if message.transactional and message.prefix == MESSAGE_PREFIX and begin:
                table = self._message_table(message.content)
                if table is not None:  # planned as a TRUNCATE of the table
                    self._hold(table, pgoutput.Change(table.relid, "TRUNCATE", None, False,
                                                      None), lsn, begin)
        elif type(message) is pgoutput.Commit:
            if self.spread is not None:
                self.current = self._tenant_wide(self.spread)
                self.spread = None
            for item in self.current:
                item.committed_at = message.committed_at
            self.done.extend(self.current)
            self.current, self.begin = [], None
            self.end_lsn = message.end_lsn
            self.transactions += 1
            return True
        return False

    def _hold(self, table: WatchedTable, change: pgoutput.Change, lsn: int,
              begin: pgoutput.Begin) -> None:
        """Hold a watched change of the open transaction until its commit (by tenant
        once the transaction is past ``max_held``)."""
        if self.spread is not None:
            self._spread(table, change, lsn)
            return
        self.current.append(PendingChange(table, change, lsn, begin.xid, begin.committed_at,
                                          self.types.get(change.relation_oid, {})))
        if len(self.current) > self.max_held:
            self._hold_by_tenant()

    def _hold_by_tenant(self) -> None:
        """The open transaction passed ``max_held`` changes: keep the tenants of those
        held, and of the changes to come, instead of the changes."""
        held, self.current, self.spread = self.current, [], {}
        self.spread_changes = 0
        for item in held:
            self._spread(item.table, item.change, item.lsn)

    def _spread(self, table: WatchedTable, change: pgoutput.Change, lsn: int) -> None:
        """Count ``change`` by its table and tenant (a TRUNCATE, which has no image,
        names no tenant: every tenant's)."""
        assert self.spread is not None
        self.spread_changes += 1
        name = table.plan.table
        first, tenants = self.spread.setdefault(name, (lsn, {}))
        if tenants is None:
            return
        image = change.new if change.new is not None else change.old
        tenant = None if image is None else image.get(table.plan.tenant_column)
        if not isinstance(tenant, str) or (tenant not in tenants
                                           and len(tenants) >= MAX_SPREAD_TENANTS):
            self.spread[name] = (first, None)
        else:
            tenants.setdefault(tenant, lsn)

    def _tenant_wide(self, spread: dict[str, tuple[int, dict[str, int] | None]]
                     ) -> list[PendingChange]:
        """The changes a transaction held by tenant comes out as: per table, a TRUNCATE
        of each tenant's rows, or of every row (named by the LSN of its first change)."""
        begin = self.begin
        assert begin is not None
        self.bulk_transactions += 1
        out = []
        for name, (first, tenants) in sorted(spread.items()):
            table = self.tables[name]
            column = table.plan.tenant_column
            named = [(None, first)] if tenants is None else sorted(tenants.items())
            for tenant, lsn in named:
                new: pgoutput.Tuple | None = None if tenant is None else {column: tenant}
                out.append(PendingChange(
                    table, pgoutput.Change(table.relid, "TRUNCATE", None, False, new), lsn,
                    begin.xid, begin.committed_at, self.types.get(table.relid, {})))
        log.warning(
            "transaction %d changed %d rows of watched tables, more than the %d a "
            "transaction's changes are held for: invalidated by tenant instead of by row "
            "(every tag the rules of %s reach, for %s)", begin.xid, self.spread_changes,
            self.max_held, ", ".join(sorted(spread)),
            "; ".join(f"{name}: " + ("every tenant" if tenants is None
                                     else f"{len(tenants)} tenant(s)")
                      for name, (_, tenants) in sorted(spread.items())))
        return out

    def _message_table(self, content: bytes) -> WatchedTable | None:
        """The watched table a capture message names (None: not one of ours)."""
        try:
            body = json.loads(content)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("operation") != "TRUNCATE":
            return None
        name = body.get("table")
        return self.tables.get(name) if isinstance(name, str) else None

    def take(self) -> tuple[list[PendingChange], int | None, int, int]:
        """The changes of the whole transactions fed so far, where they end, how many
        transactions, and how many of them were held by tenant; then forget them (not
        the one open)."""
        taken = (self.done, self.end_lsn, self.transactions, self.bulk_transactions)
        self.done, self.end_lsn, self.transactions, self.bulk_transactions = [], None, 0, 0
        return taken


async def rows_of(conn: asyncpg.Connection, tables: dict[str, WatchedTable],
                  pending: Sequence[PendingChange], attempts: dict[int, tuple[int, str]]
                  ) -> list[OutboxRow]:
    """The outbox rows of the watched changes ``pending`` (whole transactions, in commit
    order): their images built in Python, or by PostgreSQL where a column needs it (one
    query per table and :data:`CHUNK` changes); an UPDATE of no significant column and an
    operation not captured are dropped, as the trigger drops them. ``attempts``: failed
    attempts by LSN. The event loop runs between chunks."""
    rows: list[OutboxRow] = []
    for start in range(0, len(pending), CHUNK):
        if start:
            await asyncio.sleep(0)
        rows += await _rows_of(conn, tables, pending[start:start + CHUNK], attempts)
    return rows


async def _rows_of(conn: asyncpg.Connection, tables: dict[str, WatchedTable],
                   pending: Sequence[PendingChange], attempts: dict[int, tuple[int, str]]
                   ) -> list[OutboxRow]:
    """:func:`rows_of` for one chunk."""
    by_table: dict[str, list[tuple[PendingChange, str, dict[str, Any]]]] = {}
    for item in pending:
        old, new = _text_images(item)
        entries = by_table.get(item.table.plan.table)
        if entries is None:
            entries = by_table[item.table.plan.table] = []
        if old is not None:
            entries.append((item, "old", old))
        if new is not None:
            entries.append((item, "new", new))
    # Tables whose images this batch are exactly the rows' old/new (built in Python,
    # holding the rules' columns in order): used as they are, not copied.
    as_rows: set[str] = set()
    for table_name, entries in by_table.items():
        if not entries:
            continue  # a TRUNCATE's table: no image to build
        table = tables[table_name]
        images = table.images(entries) if table.python_images else None
        if images is None:
            images = await table.images_by_sql(conn, entries)
        elif table.image_is_row:
            as_rows.add(table_name)
        for (item, which, _), image in zip(entries, images, strict=True):
            if which == "old":
                item.old = image
            else:
                item.new = image
    rows: list[OutboxRow] = []
    now = dt.datetime.now(dt.UTC)
    no_attempt = (0, None)
    for item in pending:
        table = item.table
        plan = table.plan
        change = item.change
        op = change.operation
        count, error = attempts.get(item.lsn, no_attempt) if attempts else no_attempt
        if op == "TRUNCATE":
            # Every row of the table, or of one tenant (a bulk transaction's): planned
            # for every tenant, or for that one (RulePlanner).
            named = None if change.new is None else change.new.get(plan.tenant_column)
            rows.append(OutboxRow(
                id=item.lsn, txid=str(item.xid), created_at=item.committed_at,
                table_name=plan.table, operation=op,
                tenant_id=named if isinstance(named, str) else None, pk={}, old=None,
                new=None, attempts=count, last_error=error,
                age=(now - item.committed_at).total_seconds()))
            continue
        old, new = item.old, item.new
        if (op == "UPDATE" and plan.update_filter and old is not None
                and new is not None
                and all(c in old and c in new and old[c] == new[c]
                        for c in plan.update_filter)):
            continue  # as the trigger: no significant column changed (a missing one
            # cannot be shown unchanged)
        if op not in table.operation_names:
            continue
        source = new if new is not None else old
        assert source is not None  # every change has one image
        tenant = change.new if change.new is not None else change.old
        tenant_value = None if tenant is None else tenant.get(plan.tenant_column)
        if plan.table not in as_rows:
            columns = plan.columns
            if old is not None:
                old = {c: old[c] for c in columns if c in old}
            if new is not None:
                new = {c: new[c] for c in columns if c in new}
        rows.append(OutboxRow(
            id=item.lsn, txid=str(item.xid), created_at=item.committed_at,
            table_name=plan.table, operation=op,
            tenant_id=tenant_value if isinstance(tenant_value, str) else None,
            pk={c: source.get(c) for c in table.pk},
            old=old, new=new,
            attempts=count, last_error=error,
            age=(now - item.committed_at).total_seconds(),
        ))
    return rows

def _text_images(item: PendingChange) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The old and new text values to build images from: an unchanged TOASTed value
    is taken from the old row; an UPDATE that kept its key and sent no old row (no
    FULL identity, so no rule reads an old non-key value) uses the new row. Where the
    capture set FULL but the row came without its old values (a partition left with
    its own identity, a table altered since), the old image holds the key only: the
    other old values are unknown, and planning treats them conservatively."""
    change = item.change
    if ((change.old is not None or change.operation != "UPDATE")
            and (change.old is None or pgoutput.UNCHANGED not in change.old.values())
            and (change.new is None or pgoutput.UNCHANGED not in change.new.values())):
        return change.old, change.new  # the common case: nothing to fill in
    old = None if change.old is None else dict(change.old)
    new = None if change.new is None else dict(change.new)
    if change.operation == "UPDATE" and old is None:
        old = dict(new or {})
        if item.table.full_identity:
            kept = (*item.table.pk, item.table.plan.tenant_column)
            old = {c: v for c, v in old.items() if c in kept}
    if new is not None and old is not None:
        for column, value in list(new.items()):
            if value is pgoutput.UNCHANGED and column in old:
                new[column] = old[column]  # may be UNCHANGED too: then dropped below
    for image in (old, new):
        if image is not None:
            for column in [c for c, v in image.items() if v is pgoutput.UNCHANGED]:
                del image[column]  # no value to give: unknown to planning, not NULL
    return old, new
