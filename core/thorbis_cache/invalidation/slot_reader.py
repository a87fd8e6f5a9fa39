"""The worker's changes under logical capture: whole transactions read from the
replication slot, applied as one batch, and only then confirmed; and what the worker does
when the slot is lost.

:class:`~thorbis_cache.invalidation.worker.OutboxWorker` holds one :class:`SlotReader`
while it follows a :class:`~thorbis_cache.postgres.logical.LogicalCapture`; the outbox
source needs none of this (its rows stay claimed in a transaction instead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from thorbis_cache.invalidation.batch import (
    BLAMELESS,
    Apply,
    BatchResult,
    TagInvalidator,
    WorkerMetrics,
    apply_and_count,
)
from thorbis_cache.invalidation.capture_loss import flush_after_capture_loss
from thorbis_cache.invalidation.lacking_rules import RulesChanged
from thorbis_cache.invalidation.replay import FailoverReplay
from thorbis_cache.plugins.declarations import InvalidationRule
from thorbis_cache.postgres import connection, outbox
from thorbis_cache.postgres.capture_check import capture_problems
from thorbis_cache.postgres.logical import (
    SYNC_CANDIDATE,
    LogicalCapture,
    SlotInUseError,
    SlotLostError,
    parse_lsn,
)
from thorbis_cache.postgres.replication import ReplicationError

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.postgres.logical import LogicalStream

__all__ = ["SlotReader", "wal_flushed"]

log = logging.getLogger(__name__)

#: Seconds one read of the stream waits for the server to reach the position asked for;
#: a read that ends with the server still sending (or still decoding) is followed by
#: another, as long as the stream moves.
READ_WAIT = 5.0

#: The error code of a session ended by ``pg_terminate_backend`` (admin_shutdown).
ADMIN_SHUTDOWN = "57P01"

#: Seconds a reader whose session was ended waits for the slot's drop that may follow.
DROP_WAIT = 1.0



class SlotReader:
    """Batches of a logical capture's slot, for one worker.

    PostgreSQL lets one session read a slot. A worker that finds it read by another
    (two workers for availability, or a rolling deploy) stands by: it says so once,
    sets ``metrics.standby``, looks at ``pg_replication_slots`` at each of its polls
    (no replication connection is tried while the slot is taken) and reads the slot
    as soon as it is free: when the other worker stops, or the server ends its session
    (a killed process on the same host at once; a hung one, or one across a network
    partition, ``wal_sender_timeout`` later: ``hold_timeout``).

    :param capture: the capture whose slot is read (``ensure`` already called).
    :param dsn: where the replication stream connects.
    :param cache: where a lost slot's tags are flushed.
    :param rules: the worker's rules (a lost slot flushes every tag they reach).
    :param invalidate_tags: the worker's tag invalidator.
    :param replay: the worker's failover replay, checked before each batch.
    :param metrics: the worker's metrics (batches, failures, capture losses).
    :param apply: applies a batch's rows on the worker's connection.
    :param follows: the worker follows the database's capture (``capture="auto"``): a
        slot found gone while the capture triggers cover every rule's table was dropped
        by ``db init --capture triggers``, and is not recreated (:attr:`retired`).
    :param rules_changed: read the database's rules record before what was read is
        confirmed; True when the worker's rules changed (and the capture with them):
        the batch is rolled back and read again, since the stream dropped the changes
        of tables the rules did not watch
        (:mod:`~thorbis_cache.invalidation.lacking_rules`).
    :param hold_timeout: the stream's ``wal_sender_timeout`` (seconds; None: the
        server's): a worker that hangs loses the slot after it, to a standby.
    """

    def __init__(self, capture: LogicalCapture, dsn: str, *, cache: Cache,
                 rules: Callable[[], list[InvalidationRule]],
                 invalidate_tags: TagInvalidator, replay: FailoverReplay | None,
                 metrics: WorkerMetrics, apply: Apply, follows: bool = False,
                 rules_changed: Callable[[Any], Awaitable[bool]] | None = None,
                 hold_timeout: float | None = None) -> None:
        self.capture = capture
        self.hold_timeout = hold_timeout
        self.dsn = dsn
        self._cache = cache
        self._rules = rules
        self._invalidate_tags = invalidate_tags
        self._replay = replay
        self._metrics = metrics
        self._apply = apply
        self._follows = follows
        self._rules_changed = rules_changed
        #: The slot was dropped and the database captures with triggers now: the
        #: worker reads the outbox instead (only when ``follows``).
        self.retired = False
        self._stream: LogicalStream | None = None
        #: While another session reads the slot: who (see :meth:`next_batch`).
        self.standing_by: SlotInUseError | None = None
        # The reading session's sync_state as last seen (see check_sync).
        self._sync_state: str | None = None
        self._sync_checked = False
        # Failed attempts per change (its LSN): the WAL has no attempts column, so they
        # are counted here, and start again after a restart.
        self._attempts: dict[int, tuple[int, str]] = {}

    def watch(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` when the server sends something on the open stream (what
        :meth:`OutboxWorker.run` waits on); the returned function stops that. None
        when no stream is open."""
        return None if self._stream is None else self._stream.watch(callback)

    async def close(self) -> None:
        """Close the stream: what was read and not confirmed comes again on the next."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    async def next_batch(self, conn: Any, limit: int, *, caught_up: bool,
                         standby: bool = False) -> BatchResult:
        """One batch from the replication stream: read whole transactions (with
        ``caught_up``, up to the server's WAL insert position as of now, so that a
        transaction committed before the call is read even when its commit is not
        flushed yet; otherwise what has arrived), at most ``limit`` changes, apply
        them as an outbox batch would (same plans, replay log, audit, change counts, in
        one transaction), commit, then confirm the slot that far.

        Not waiting is what :meth:`OutboxWorker.run` wants: under
        ``synchronous_commit=off`` a commit reaches the WAL sender only after the WAL
        writer's next flush (up to ``wal_writer_delay``, 200 ms by default); the worker
        instead wakes when the stream's socket has data (:meth:`watch`).

        At least once: a worker killed, or a Redis or PostgreSQL failure, before the
        confirmation leaves the slot where it was; the stream is closed on any failure,
        and the next one is sent the same transactions again (deletes and tag
        invalidations are idempotent; the audit may then hold a batch twice).
        Transactions holding no watched change (an UPDATE no significant column of
        which changed) are confirmed and skipped, so an empty result means the slot
        is caught up, unless :attr:`standing_by`.

        :param standby: when another session reads the slot, return an empty batch and
            stand by (:meth:`OutboxWorker.run`'s loop); otherwise raise.
        :raises SlotInUseError: another session reads the slot, and not ``standby``.
        """
        while True:
            result = await self._read_batch(conn, limit, caught_up=caught_up,
                                            standby=standby)
            if result is not None:
                return result

    async def _read_batch(self, conn: Any, limit: int, *, caught_up: bool,
                          standby: bool) -> BatchResult | None:
        """:meth:`next_batch`, or None when what was read is to be read again under
        rules that changed (:meth:`_rereads`)."""
        capture = self.capture
        rows: Sequence[outbox.OutboxRow] = ()
        try:
            if self._replay is not None:
                await self._replay.check(conn)
            if self._stream is None:
                try:
                    self._stream = await self._open(conn, standby)
                except SlotLostError as lost:
                    await self._recover_lost_slot(conn, lost)
                    return BatchResult()
                if self._stream is None:
                    return BatchResult()  # standing by
            stream = self._stream
            until = None if not caught_up else parse_lsn(
                await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
            while True:
                moved = (stream.position, stream.messages)
                try:
                    batch = await stream.read(conn, limit, self._attempts, until=until,
                                              max_wait=READ_WAIT)
                    claimed = time.perf_counter()
                except ReplicationError as exc:
                    await self.close()
                    ended = exc.sqlstate == ADMIN_SHUTDOWN
                    if ended:
                        await self._drop_settled(conn)
                    # A slot dropped or invalidated ends its reader's session: say so
                    # now rather than at the next stream.
                    if await capture.slot_lost(conn):
                        await self._recover_lost_slot(conn, capture.lost(
                            "the slot was dropped or invalidated while streaming"))
                        return BatchResult()
                    unreadable = capture.unreadable(exc)
                    if unreadable is not None:
                        await self._recover_lost_slot(conn, unreadable)
                        return BatchResult()
                    if ended:  # not a failure of the batch: read again
                        log.warning("logical capture: the server ended the session "
                                    "reading slot %s (%s); reading it again",
                                    capture.slot, exc)
                        return BatchResult()
                    raise
                if batch.rows or batch.caught_up or not caught_up:
                    break
                if batch.end_lsn is not None:
                    if await self._rereads(conn):
                        return None
                    stream.confirm(batch.end_lsn)  # whole transactions, none watched
                elif (stream.position, stream.messages) == moved:
                    break  # nothing came for a whole read: where it stands is all there is
                # Otherwise a transaction is still arriving, or the server is still
                # decoding the WAL before it (a big one takes longer than a read's
                # wait): an empty batch now would say caught up, and drain() and
                # drained() would return before it was applied.
            rows = batch.rows
            if not rows:
                if batch.end_lsn is not None and await self._rereads(conn):
                    return None
                stream.confirm(batch.end_lsn)
                if not self._sync_checked:
                    self._sync_checked = True
                    await self.check_sync(conn)
                return BatchResult()
            async with conn.transaction():
                result = await apply_and_count(conn, rows, self._apply, self._rules_changed)
            stream.confirm(batch.end_lsn)
        except SlotInUseError:
            raise  # no batch was tried: nothing to count, nothing to close
        except RulesChanged:
            await self.close()  # rolled back, nothing confirmed: read again
            return None
        except Exception as exc:
            self._metrics.failed_batches += 1
            # What was read and not confirmed comes again on the next stream.
            await self.close()
            if not isinstance(exc, BLAMELESS):
                error = f"{type(exc).__name__}: {exc}"[:1000]
                for row in rows:
                    self._attempts[row.id] = (self._attempts.get(row.id, (0, ""))[0] + 1,
                                              error)
            raise
        for row in rows:
            self._attempts.pop(row.id, None)
        self._metrics.count(result, rows, claimed)
        self._metrics.bulk_transactions += batch.bulk_transactions
        return result

    async def _rereads(self, conn: Any) -> bool:
        """Before what was read is confirmed: if the rules record changed what the
        worker watches, close the stream (nothing of it confirmed) so that it is read
        again under the new rules."""
        if self._rules_changed is None or not await self._rules_changed(conn):
            return False
        await self.close()
        return True

    async def _drop_settled(self, conn: Any) -> None:
        """After the server ended the stream's session (``pg_terminate_backend``):
        most often a slot being dropped (``db init --capture triggers``, or
        :meth:`LogicalCapture.drop <thorbis_cache.postgres.logical.LogicalCapture.drop>`),
        whose drop follows the termination at once. Wait for it, :data:`DROP_WAIT`
        seconds at most, rather than read the slot again in its way."""
        for _ in range(round(DROP_WAIT / 0.01)):
            if await self.capture.slot_lost(conn):
                return
            await asyncio.sleep(0.01)

    async def _open(self, conn: Any, standby: bool) -> LogicalStream | None:
        """The slot's stream, or None while another session reads it and ``standby``
        (:attr:`standing_by` says who)."""
        capture = self.capture
        if self.standing_by is not None:
            # No replication connection while the slot is taken: the server would log
            # each refusal, at every poll.
            reader = await capture.reader(conn)
            if reader is not None:
                self._stand_by(capture.in_use(reader), standby)
                return None
        try:
            stream = await capture.stream(self.dsn, conn, sender_timeout=self.hold_timeout)
        except SlotInUseError as busy:
            self._stand_by(busy, standby)
            return None
        if self.standing_by is not None:
            log.info("logical capture: slot %s is free; this worker took over from %s",
                     capture.slot, self.standing_by.reader)
            self.standing_by = None
            self._metrics.standby = 0
        self._sync_checked = False
        return stream

    async def check_sync(self, conn: Any) -> None:
        """Say (a warning, when it starts) that this worker's session reading the slot
        is a synchronous standby: ``synchronous_standby_names`` matches it (``*``).
        Checked after a stream's first empty batch (the server sets the session's
        priority once it streams) and at the worker's capture checks."""
        if self._stream is None:
            return
        state = await self.capture.reader_sync_state(conn)
        if state in SYNC_CANDIDATE and self._sync_state not in SYNC_CANDIDATE:
            log.warning("logical capture: this worker's session reading slot %s is a "
                        "synchronous standby (%s: synchronous_standby_names matches it): "
                        "when no other standby answers, every commit of the host waits "
                        "for the cache's invalidations, and hangs while this worker is "
                        "paused; name the standbys there instead", self.capture.slot, state)
        self._sync_state = state

    def _stand_by(self, busy: SlotInUseError, standby: bool) -> None:
        if not standby:
            raise busy
        if self.standing_by is None or self.standing_by.reader != busy.reader:
            log.info("logical capture: slot %s is read by another worker (%s); this "
                     "one stands by, and takes the slot over when it is free",
                     self.capture.slot, busy.reader)
        self.standing_by = busy
        self._metrics.standby = 1

    async def _recover_lost_slot(self, conn: Any, lost: SlotLostError) -> None:
        """The slot is gone: changes to its tables since its last confirmed position
        are lost, and no cached entry built from them can be proven fresh. Flush every
        tag their rules reach for every tenant, recreate the slot, and flush again (a
        change committed between the first flush and the new slot is covered by the
        second); logged as errors, counted in ``metrics.capture_losses``
        (:mod:`thorbis_cache.invalidation.capture_loss`)."""
        rules = self._rules()
        tables = lost.tables or tuple(sorted({r.table for r in rules}))
        if self._follows and not await capture_problems(conn, rules, "triggers"):
            # Not lost by accident: the capture switched (triggers installed first,
            # then the slot dropped). What it held unread is gone all the same.
            log.warning("logical capture: slot %s is gone and the capture triggers cover "
                        "every rule's table (db init --capture triggers): this worker "
                        "reads the outbox from now on, after flushing every tag the "
                        "rules of %s reach, for what the slot held unread",
                        self.capture.slot, ", ".join(tables))
            await flush_after_capture_loss(self._cache, rules, tables,
                                           self._invalidate_tags, logging.WARNING)
            self._metrics.capture_losses += 1
            self.retired = True
            return
        log.error("logical capture: %s", lost)
        await flush_after_capture_loss(self._cache, rules, tables, self._invalidate_tags)
        await self.capture.replace_lost_slot(conn, lost)
        await flush_after_capture_loss(self._cache, rules, tables, self._invalidate_tags)
        self._metrics.capture_losses += 1
        log.error("logical capture: slot %s recreated after the flush; capture goes on",
                  self.capture.slot)


async def wal_flushed(dsn: str, first_pause: float, query_timeout: float | None = None
                      ) -> None:
    """Wait until the WAL is flushed past what was written before this call.

    A logical batch reads up to the server's *flush* position; under
    ``synchronous_commit=off`` a transaction that has committed may not be flushed yet
    (the WAL writer flushes within ``wal_writer_delay``, 200 ms by default), so reading
    up to the flush position as of now could miss it. On a connection of its own: the
    worker's may be in a batch. Polls from ``first_pause`` seconds, doubling to 20 ms."""
    conn = await connection.connect(dsn, command_timeout=query_timeout)
    try:
        target = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        pause = first_pause
        while not await conn.fetchval("SELECT pg_current_wal_flush_lsn() >= $1", target):
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)
    finally:
        await conn.close()
