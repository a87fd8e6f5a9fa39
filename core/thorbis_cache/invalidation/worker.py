"""The outbox worker: turns committed database changes into cache invalidations.

::

    worker = OutboxWorker.from_app(app, dsn)
    async with worker:
        await worker.run()          # until worker.stop()

Each batch (see :mod:`thorbis_cache.postgres.outbox` for why it is commit-safe):

1. claim up to ``batch_size`` committed outbox rows, in a transaction kept open;
2. per row, evaluate the plugins' rules (``rule.fires(op, old, new)``); a schema target
   names the key of the old row and of the new row (a NULL parameter names no key;
   column values are converted to the parameter types); a tag target names a tag. A row
   that cannot be planned (a value of the wrong type, malformed JSON, an unknown schema)
   is dead-lettered with the reason and does not block the others;
3. delete the keys (``Cache.delete``, which also revokes fill leases) and hand the tags
   to the tag invalidator;
4. append one audit record per tenant, add the batch's rows per table to
   ``thorbis.table_changes`` (what the view scheduler's smart refresh counts), then
   commit -- the rows are gone only now.

Steps 2 to 4 are :func:`~thorbis_cache.invalidation.batch.apply_changes`, shared with
the logical-capture source. If step 3 fails the transaction rolls back and the rows come
back. A failure other than Redis being unavailable counts an attempt on each row; a row
past ``max_attempts`` is dead-lettered at its next claim. Redis being down is not the
rows' fault: they wait, however long, and are applied on recovery.

**Outages** (:meth:`OutboxWorker.run`). While Redis is unavailable the worker does not
back off: it probes the server every ``redis_probe_interval`` (20 ms) on a connection of
its own (:meth:`RedisStore.probe <thorbis_cache.store.redis_store.RedisStore.probe>`),
applies the backlog the moment it answers, and tries a batch at least every
:data:`REDIS_RETRY` seconds whatever the probe says. A Redis restarted from its AOF or RDB comes
back with the entries it held, including those whose rows changed while it was down,
and serves them until the backlog is applied: that window is kept short, not closed
(docs/architecture.md, "Restarts"). A PostgreSQL outage, or any other failure, is retried
after a backoff from 0.1 s doubling to ``max_backoff``.

**Tags.** :meth:`OutboxWorker.from_app` hands tags to the cache's tag engine
(:class:`~thorbis_cache.invalidation.CacheTagInvalidator`: ``Cache.invalidate_tags``,
which returns when the tagged keys are gone). A worker built directly without
``invalidate_tags`` uses :class:`UnconfiguredTagInvalidator`, which only counts and logs
("tag invalidation not configured"); the tags are still reported in each
:class:`BatchResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from thorbis_cache.cache.meta_sweep import MetaSweep
from thorbis_cache.cache.tags import CacheTagInvalidator
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.batch import (
    BLAMELESS,
    BatchResult,
    TagInvalidator,
    UnconfiguredTagInvalidator,
    WorkerMetrics,
    apply_changes,
)
from thorbis_cache.invalidation.capture_loss import flush_after_capture_loss
from thorbis_cache.invalidation.planning import Plan, PoisonRow, RulePlanner
from thorbis_cache.invalidation.replay import FailoverReplay
from thorbis_cache.plugins.declarations import InvalidationRule, MaterializedView
from thorbis_cache.postgres import outbox
from thorbis_cache.postgres.logical import LogicalCapture, SlotLostError, parse_lsn
from thorbis_cache.postgres.replication import ReplicationError
from thorbis_cache.postgres.triggers import CHANNEL, capture_triggers

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.postgres.logical import LogicalStream

__all__ = [
    "BatchResult",
    "OutboxWorker",
    "PoisonRow",
    "TagInvalidator",
    "UnconfiguredTagInvalidator",
    "WorkerMetrics",
]

log = logging.getLogger(__name__)

#: Seconds :meth:`OutboxWorker.run` waits on its Redis probe at most before it tries a
#: batch anyway (the probe may not reach the servers the cache's pool does).
REDIS_RETRY = 1.0

#: Seconds :meth:`OutboxWorker.run` pauses after the first empty poll; the pause doubles
#: up to ``poll_interval`` while the outbox stays empty.
MIN_POLL = 0.001


class OutboxWorker:
    """Consumes the outbox and applies the plugins' invalidation rules.

    :param dsn: the PostgreSQL holding ``thorbis.outbox``.
    :param cache: where keys are deleted; its registry must hold the rules' schemas.
    :param rules: the invalidation rules (``app.plugins.all_rules()``).
    :param invalidate_tags: see :data:`TagInvalidator`; default
        :class:`UnconfiguredTagInvalidator` (:meth:`from_app` passes the cache's
        :class:`~thorbis_cache.invalidation.CacheTagInvalidator`).
    :param batch_size: rows claimed per batch. Most of a batch's cost is per tenant
        and per transaction (the audit record, the tag invalidations, the commit), so a
        backlog -- what piles up while Redis is down -- goes faster in big batches:
        1,000 changes in one batch rather than two (``bench/ha.py``).
    :param poll_interval: the longest pause between two polls of an empty outbox. The
        capture triggers send no NOTIFY (it would serialise the host's commits), so
        :meth:`run` polls: at once again while batches bring rows, then after
        :data:`MIN_POLL` seconds, the pause doubling up to ``poll_interval`` while the
        outbox stays empty. A change committed on an idle worker is seen within about
        ``poll_interval``; under a steady write load within a few milliseconds.
    :param max_attempts: failed batch attempts after which a row is dead-lettered.
    :param dead_letter_days: dead letters older than this are pruned by :meth:`run`.
    :param audit: append audit records (one per tenant per batch).
    :param replay_window: seconds of invalidations logged for replay after a Redis
        failover or restart lost acknowledged writes (see
        :mod:`thorbis_cache.invalidation.replay`); ``None`` turns that off.
    :param redis_probe_interval: seconds between two probes of an unavailable Redis in
        :meth:`run`; the backlog is applied at most this long after Redis answers again.
    :param max_backoff: the longest pause of :meth:`run` after a failure other than Redis
        being unavailable (PostgreSQL down, a tag invalidator error); the pause starts
        at 0.1 s and doubles.
    :param sweep_interval: seconds between two passes of the sweep that :meth:`run`
        keeps going beside the batches (``MetaSweep`` of
        :mod:`thorbis_cache.cache.meta_sweep`: idle tag and dependency sets, leftovers
        of dead cascades).
    :param capture: where changes come from. None (the default): ``thorbis.outbox``,
        written by the capture triggers. A
        :class:`~thorbis_cache.postgres.logical.LogicalCapture`: the WAL, through its
        replication slot (:meth:`run_once` then reads whole transactions in commit
        order and advances the slot only after Redis acknowledged and the batch's
        transaction committed; see :meth:`_run_logical_once`). Call its ``ensure`` once
        beforehand: the worker never creates the slot, since a slot created after one
        was lost would hide the changes lost with it
        (:class:`~thorbis_cache.postgres.logical.SlotLostError`, logged at each batch).
        ``"auto"`` (the default of :meth:`from_app`): the slot ``thorbis_<slot>`` if it
        exists when the worker first touches the database, else the outbox -- whichever
        ``db init`` (or ``CacheApp.start(apply_sql=True)``) set up, as ``thorbis-cache
        worker --capture auto`` does.
    :param slot: with ``capture="auto"``: the logical capture's name (``db init
        --slot``).
    :param views: with ``capture="auto"``: the materialized views whose sources'
        changes a logical capture counts (``app.plugins.all_views()``).
    :param plugins: the names of the plugins whose rules these are, named in the
        command of a :class:`~thorbis_cache.errors.CaptureNotInstalledError`
        (:meth:`from_app` passes them).
    :param require_capture: :meth:`run`, :meth:`drain` and :meth:`drained` first check
        that every rule's table is captured (:meth:`check_capture`) and refuse
        otherwise; False skips that (a test feeding the outbox by hand).
    """

    def __init__(self, dsn: str, cache: Cache, rules: Iterable[InvalidationRule], *,
                 invalidate_tags: TagInvalidator | None = None, batch_size: int = 1000,
                 poll_interval: float = 0.02, max_attempts: int = 5,
                 dead_letter_days: float = 14.0, audit: bool = True,
                 replay_window: float | None = 300.0, redis_probe_interval: float = 0.02,
                 max_backoff: float = 2.0, sweep_interval: float = 60.0,
                 capture: LogicalCapture | Literal["auto"] | None = None,
                 slot: str = "main", views: Iterable[MaterializedView] = (),
                 plugins: Sequence[str] = (), require_capture: bool = True) -> None:
        self.dsn = dsn
        self.cache = cache
        self._planner = RulePlanner(cache, rules)
        self.rules = self._planner.rules
        self.invalidate_tags = invalidate_tags or UnconfiguredTagInvalidator()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.dead_letter_days = dead_letter_days
        self.audit = audit
        self.metrics = WorkerMetrics()
        self.replay = None if replay_window is None else FailoverReplay(
            cache, invalidate_tags=self.invalidate_tags, window=replay_window)
        self.redis_probe_interval = redis_probe_interval
        self.max_backoff = max_backoff
        self.sweep_interval = sweep_interval
        #: where changes come from: a logical capture, or None for the outbox
        self.capture: LogicalCapture | None = None if capture == "auto" else capture
        # "auto": the capture to follow if its slot exists (resolved on first use).
        self._follow: LogicalCapture | None = None
        if capture == "auto":
            self._follow = LogicalCapture(slot, self._all_rules(), views)
        self.plugins = tuple(plugins)
        self.require_capture = require_capture
        self._capture_checked = False
        # Failed attempts per change (its LSN) under logical capture: the WAL has no
        # attempts column, so they are counted here, and start again after a restart.
        self._attempts: dict[int, tuple[int, str]] = {}
        self._conn: Any = None
        self._stream: LogicalStream | None = None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._running = False
        # drained() calls waiting on run(): resolved by the first batch that started
        # after them and found nothing left (see _settle_waiters).
        self._waiters: list[asyncio.Future[bool]] = []

    @classmethod
    def from_app(cls, app: CacheApp, dsn: str, **options: Any) -> OutboxWorker:
        """A worker on a started app's cache and its plugins' rules; tags go to the
        cache's tag engine unless ``invalidate_tags`` is passed.

        :param app: a started :class:`~thorbis_cache.app.CacheApp`.
        :param dsn: the PostgreSQL database the plugins' tables live in.
        :param options: any keyword argument of :class:`OutboxWorker`; ``capture``
            defaults to ``"auto"`` (follow the slot ``db init`` created, if any).
        """
        options.setdefault("invalidate_tags", CacheTagInvalidator(app.cache))
        options.setdefault("plugins", tuple(app.plugins.plugins))
        options.setdefault("capture", "auto")
        options.setdefault("views", app.plugins.all_views())
        return cls(dsn, app.cache, app.plugins.all_rules(), **options)

    async def __aenter__(self) -> OutboxWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the worker's database connection and replication stream (not the
        cache)."""
        await self._close_stream()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await outbox.connect(self.dsn)
        return self._conn

    async def _follow_slot(self) -> None:
        """``capture="auto"``: read from the slot if it exists, else from the outbox;
        decided once, on the worker's first use of the database."""
        follow, self._follow = self._follow, None
        if follow is not None and await follow.slot_exists(await self._connection()):
            self.capture = follow
            log.info("worker follows the replication slot %s", follow.slot)

    # ----------------------------------------------------------------- one row

    def plan(self, row: outbox.OutboxRow) -> Plan:
        """The keys and tags a change makes stale (see :class:`RulePlanner`).

        :raises PoisonRow: the row can never be applied (the reason names rule, target,
            parameter, column and value).
        """
        return self._planner.plan(row)

    # ----------------------------------------------------------------- one batch

    async def run_once(self) -> BatchResult:
        """Claim, apply and commit one batch; an empty result when the outbox is empty.

        :raises Exception: invalidation failed (Redis down, a tag invalidator error); the
            batch was rolled back and its rows are back in the outbox.
        """
        return await self._next_batch(caught_up=True)

    async def _next_batch(self, caught_up: bool = False) -> BatchResult:
        """:meth:`run`'s batch: from a stream, what has arrived (the loop wakes when
        the server sends more), or with ``caught_up`` (a :meth:`drained` call waits)
        up to the server's flush position; from the outbox, a claim."""
        if self._follow is not None:
            await self._follow_slot()
        if self.capture is not None:
            return await self._logical_then_outbox(self.capture, caught_up=caught_up)
        return await self._run_outbox_once()

    async def _logical_then_outbox(self, capture: LogicalCapture, *, caught_up: bool
                                   ) -> BatchResult:
        """Under logical capture, a batch from the stream; once the stream has nothing,
        one from ``thorbis.outbox``, where nothing but replayed dead letters
        (``thorbis-cache outbox-deadletters replay``) arrive: the WAL does not have
        them any more. An empty outbox costs one indexed query."""
        result = await self._run_logical_once(capture, caught_up=caught_up)
        if result.claimed:
            return result
        return await self._run_outbox_once()

    async def _run_outbox_once(self) -> BatchResult:
        conn = await self._connection()
        ids: list[int] = []
        try:
            if self.replay is not None:
                await self.replay.check(conn)
            async with conn.transaction():
                rows = await outbox.claim_batch(conn, self.batch_size)
                claimed = time.perf_counter()
                ids = [r.id for r in rows]
                result = await self._apply(conn, rows) if rows else BatchResult()
                await outbox.count_changes(conn, rows)
        except Exception as exc:
            self.metrics.failed_batches += 1
            if ids and not isinstance(exc, BLAMELESS) and not conn.is_closed():
                try:
                    await outbox.record_failure(conn, ids, f"{type(exc).__name__}: {exc}")
                except outbox.DB_ERRORS:
                    log.exception("outbox worker: could not count the failed attempt")
            raise
        if rows:
            self.metrics.count(result, rows, claimed)
        return result

    async def _recover_lost_slot(self, capture: LogicalCapture, conn: Any,
                                 lost: SlotLostError) -> None:
        """The slot is gone: changes to its tables since its last confirmed position
        are lost, and no cached entry built from them can be proven fresh. Flush every
        tag their rules reach for every tenant, recreate the slot, and flush again (a
        change committed between the first flush and the new slot is covered by the
        second); logged as errors, counted in ``metrics.capture_losses``
        (:mod:`thorbis_cache.invalidation.capture_loss`)."""
        log.error("logical capture: %s", lost)
        tables = lost.tables or tuple(sorted({r.table for r in self._all_rules()}))
        rules = self._all_rules()
        await flush_after_capture_loss(self.cache, rules, tables, self.invalidate_tags)
        await capture.replace_lost_slot(conn)
        await flush_after_capture_loss(self.cache, rules, tables, self.invalidate_tags)
        self.metrics.capture_losses += 1
        log.error("logical capture: slot %s recreated after the flush; capture goes on",
                  capture.slot)

    def _all_rules(self) -> list[InvalidationRule]:
        return [rule for rules in self.rules.values() for rule in rules]

    async def _run_logical_once(self, capture: LogicalCapture, *, caught_up: bool
                                ) -> BatchResult:
        """One batch from the replication stream: read whole transactions (with
        ``caught_up``, up to the server's WAL insert position as of now, so that a
        transaction committed before the call is read even when its commit is not
        flushed yet; otherwise what has arrived), at most ``batch_size`` changes, apply
        them as an outbox batch would (same plans, replay log, audit, change counts, in
        one transaction), commit, then confirm the slot that far.

        Not waiting is what :meth:`run` wants: under ``synchronous_commit=off`` a
        commit reaches the WAL sender only after the WAL writer's next flush (up to
        ``wal_writer_delay``, 200 ms by default); :meth:`run` instead wakes when the
        stream's socket has data.

        At least once: a worker killed, or a Redis or PostgreSQL failure, before the
        confirmation leaves the slot where it was; the stream is closed on any failure,
        and the next one is sent the same transactions again (deletes and tag
        invalidations are idempotent; the audit may then hold a batch twice).
        Transactions holding no watched change (an UPDATE no significant column of
        which changed) are confirmed and skipped, so an empty result means the slot
        is caught up.
        """
        conn = await self._connection()
        rows: Sequence[outbox.OutboxRow] = ()
        try:
            if self.replay is not None:
                await self.replay.check(conn)
            if self._stream is None:
                try:
                    self._stream = await capture.stream(self.dsn, conn)
                except SlotLostError as lost:
                    await self._recover_lost_slot(capture, conn, lost)
                    return BatchResult()
            stream = self._stream
            until = None if not caught_up else parse_lsn(
                await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
            while True:
                try:
                    batch = await stream.read(conn, self.batch_size, self._attempts,
                                              until=until)
                    claimed = time.perf_counter()
                except ReplicationError:
                    # A slot dropped or invalidated ends its reader's session: say so
                    # now rather than at the next stream.
                    if await capture.slot_lost(conn):
                        await self._close_stream()
                        await self._recover_lost_slot(capture, conn, capture.lost(
                            "the slot was dropped or invalidated while streaming"))
                        return BatchResult()
                    raise
                if batch.truncated:
                    # No row images in a TRUNCATE: nothing to plan from. Loud, not silent.
                    log.error("logical capture: TRUNCATE of %s; entries made from these "
                              "tables are not invalidated by it",
                              ", ".join(sorted(set(batch.truncated))))
                if batch.rows or batch.end_lsn is None or batch.caught_up or not caught_up:
                    break
                stream.confirm(batch.end_lsn)  # whole transactions, none watched
            rows = batch.rows
            if not rows:
                stream.confirm(batch.end_lsn)
                return BatchResult()
            async with conn.transaction():
                result = await self._apply(conn, rows)
                await outbox.count_changes(conn, rows)
            stream.confirm(batch.end_lsn)
        except Exception as exc:
            self.metrics.failed_batches += 1
            # What was read and not confirmed comes again on the next stream.
            await self._close_stream()
            if not isinstance(exc, BLAMELESS):
                error = f"{type(exc).__name__}: {exc}"[:1000]
                for row in rows:
                    self._attempts[row.id] = (self._attempts.get(row.id, (0, ""))[0] + 1,
                                              error)
            raise
        for row in rows:
            self._attempts.pop(row.id, None)
        self.metrics.count(result, rows, claimed)
        return result

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    async def _apply(self, conn: Any, rows: Sequence[outbox.OutboxRow]) -> BatchResult:
        return await apply_changes(
            conn, rows, plan=self.plan, cache=self.cache,
            invalidate_tags=self.invalidate_tags, replay=self.replay, audited=self.audit,
            max_attempts=self.max_attempts)

    async def check_capture(self) -> None:
        """Refuse to run when some rule's table has no change capture installed (no
        capture trigger, or for logical capture no slot or publication): the worker
        would apply nothing while the cache stays stale
        (:mod:`thorbis_cache.postgres.capture_check`).

        :raises CaptureNotInstalledError: naming each table, its rules, and the
            ``thorbis-cache db init`` command that installs the capture.
        """
        from thorbis_cache.postgres.capture_check import check_capture

        if self._follow is not None:
            await self._follow_slot()
        conn = await self._connection()
        await check_capture(conn, self._all_rules(), self.capture or "triggers",
                            plugins=self.plugins)
        self._capture_checked = True
        if self.capture is not None:
            # Capture triggers left beside a slot: every change reaches the worker twice
            # (from the WAL, and from the outbox it also drains for replays).
            tables = ", ".join(sorted({table for _, table in await capture_triggers(conn)}))
            if tables:
                log.warning("capture triggers are installed on %s beside the replication "
                            "slot %s: every change there is applied twice; `thorbis-cache db "
                            "init --capture logical` drops them", tables, self.capture.slot)

    async def _check_once(self) -> None:
        if self.require_capture and not self._capture_checked:
            await self.check_capture()

    async def drain(self) -> list[BatchResult]:
        """Run batches until the outbox is empty (for tests and the CLI's ``--once``):
        the last batch claimed nothing, so every change committed before it started
        has been applied (or dead-lettered). Under logical capture, until the slot
        has caught up with the server's flush position. Not while :meth:`run` runs in
        another task (use :meth:`drained`).

        :raises CaptureNotInstalledError: see :meth:`check_capture`.
        """
        await self.cache.verify_server()
        await self._check_once()
        results = []
        while (result := await self.run_once()).claimed:
            results.append(result)
        return results

    async def drained(self) -> None:
        """Return once every change committed before the call has been applied.

        When :meth:`run` is running (in another task), wait for its loop to get there:
        the first batch that starts after this call and finds the outbox empty (under
        logical capture: reads up to the server's flush position as of its start)
        resolves it; no batch runs beside the loop's (when the loop stops first, this
        drains once it has returned); under logical capture it first waits for the WAL
        to be flushed past the call, since the loop's batches read what has arrived
        (see :meth:`_wal_flushed`). Otherwise, :meth:`drain` (whose batches read up to
        the WAL insert position themselves). For tests and deploys, instead of polling
        ``thorbis.outbox``.

        It waits as long as that takes: while Redis is down the changes wait, and so
        does this (wrap it in :func:`asyncio.timeout` to bound it).

        :raises CaptureNotInstalledError: see :meth:`check_capture`.
        """
        if self._follow is not None:
            await self._follow_slot()
        if self._running:
            if self.capture is not None:
                # The loop's batches read what has arrived; make sure it has.
                await self._wal_flushed()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake.set()
            if await waiter:
                return
        # run() is not running, or stopped before it got there (and has returned: its
        # connection is free).
        await self.drain()

    async def _wal_flushed(self) -> None:
        """Wait until the WAL is flushed past what was written before this call.

        A logical batch reads up to the server's *flush* position; under
        ``synchronous_commit=off`` a transaction that has committed may not be flushed
        yet (the WAL writer flushes within ``wal_writer_delay``, 200 ms by default), so
        reading up to the flush position as of now could miss it. On a connection of
        its own: the worker's may be in a batch."""
        conn = await outbox.connect(self.dsn)
        try:
            target = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
            pause = MIN_POLL
            while not await conn.fetchval("SELECT pg_current_wal_flush_lsn() >= $1", target):
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.02)
        finally:
            await conn.close()

    def _settle_waiters(self, started: int, caught_up: bool | None) -> None:
        """Resolve the ``started`` oldest :meth:`drained` calls (those made before the
        batch that just ended began): True when it caught up, False (they drain by
        themselves) when :meth:`run` ends (``caught_up`` None)."""
        if caught_up is None:
            started = len(self._waiters)
        elif not caught_up:
            return
        done, self._waiters = self._waiters[:started], self._waiters[started:]
        for waiter in done:
            if not waiter.done():
                waiter.set_result(bool(caught_up))

    # ----------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Make :meth:`run` return after its current batch (at once when it waits):
        the batch in hand commits (or rolls back, its changes back in the outbox), so
        nothing is lost. Safe to call from a signal handler
        (``loop.add_signal_handler(signal.SIGTERM, worker.stop)``)."""
        self._stopping = True
        self._wake.set()
        self._stopped.set()

    async def run(self) -> None:
        """Process batches until :meth:`stop`: drain, then poll again after a pause
        that starts at :data:`MIN_POLL` and doubles up to ``poll_interval`` while the
        outbox stays empty (a NOTIFY on :data:`~thorbis_cache.postgres.triggers.CHANNEL`
        still ends the pause at once; the capture triggers send none).

        Failures are logged and do not end the loop. A batch that finds Redis
        unavailable rolls back, and the loop waits for Redis with a probe every
        ``redis_probe_interval`` rather than a backoff (:meth:`_wait_for_redis`), then
        drains before anything else: a restarted Redis serves entries whose rows changed
        while it was down until the backlog is applied. Any other failure (PostgreSQL
        down, a tag invalidator error) is retried after a backoff from 0.1 s doubling to
        ``max_backoff``.
        """
        # Reset before the first await, so that a stop() during the checks is kept.
        self._stopping = False
        self._stopped.clear()
        self._running = True
        try:
            await self.cache.verify_server()
            await self._check_once()
        except BaseException:
            self._running = False
            self._settle_waiters(0, None)
            raise
        listener: Any = None
        last_prune: float | None = None
        backoff = 0.0
        loop = asyncio.get_running_loop()
        redis_down_since: float | None = None
        # The pause before the first probe of a wait. It doubles (up to 1 s) each time a
        # probe's answer is followed by a batch that finds Redis unavailable again (the
        # probe reached one Cluster node, the batch another, still down), so that such a
        # server is not sent a claim that rolls back at every probe.
        settle = self.redis_probe_interval
        answered = False  # the last wait ended with an answer, and no batch went since
        # Capture sends no NOTIFY (a notifying transaction takes a database-wide lock at
        # commit), so changes are found by polling: a short pause after the outbox was
        # last seen non-empty, growing while it stays empty, so an idle worker costs a
        # few polls a second and a busy one sees a commit within milliseconds.
        idle = 0.0

        def wake(*_: object) -> None:
            self._wake.set()

        # Invalidation sets carry no TTL (so no accepted eviction policy takes them):
        # the sweep bounds the idle ones, in small steps beside the batches.
        sweeper = asyncio.create_task(MetaSweep.for_cache(self.cache).sweep_forever(
            self.sweep_interval), name="thorbis-meta-sweep")
        try:
            while not self._stopping:
                try:
                    if redis_down_since is not None:
                        answered = await self._wait_for_redis(settle)
                        if self._stopped.is_set():
                            break
                    if listener is None or listener.is_closed():
                        listener = await outbox.connect(self.dsn)
                        await listener.add_listener(CHANNEL, wake)
                    self._wake.clear()
                    while not self._stopping:
                        asked = len(self._waiters)
                        result = await self._next_batch(caught_up=asked > 0)
                        self._settle_waiters(asked, not result.claimed)
                        if result.claimed:
                            idle = 0.0
                        backoff, settle, answered = 0.0, self.redis_probe_interval, False
                        if redis_down_since is not None:
                            log.info("outbox worker: Redis is back; %d change(s) applied "
                                     "%.2fs after it became unavailable",
                                     result.claimed, loop.time() - redis_down_since)
                            redis_down_since = None
                        if not result.claimed:
                            break
                    # After the backlog: pruning dead letters can wait, stale entries not.
                    if last_prune is None or loop.time() - last_prune > 3600:
                        await outbox.prune_dead_letters(await self._connection(),
                                                        self.dead_letter_days)
                        last_prune = loop.time()
                except RedisUnavailableError as exc:
                    # Not the rows' fault and no reason to back off: run_once rolled
                    # back, the rows wait in the outbox while we watch for Redis.
                    if answered:
                        settle = min(settle * 2, 1.0)
                    if redis_down_since is None:
                        redis_down_since = loop.time()
                        self.metrics.redis_waits += 1
                        log.warning("outbox worker: %s; the changes wait in the outbox, "
                                    "probing Redis every %.0f ms", exc,
                                    self.redis_probe_interval * 1000)
                    continue
                except Exception:
                    backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                    log.exception("outbox worker: batch failed; retrying in %.1fs", backoff)
                    await self._drop_broken(listener)
                    await self._pause(backoff)
                    continue
                idle = min(max(idle * 2, MIN_POLL), self.poll_interval)
                # A replication stream says when the server sends something: wait on
                # its socket too, so a commit is read as soon as it is decoded.
                unwatch = None if self._stream is None else self._stream.watch(wake)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), idle)
                finally:
                    if unwatch is not None:
                        unwatch()
        finally:
            self._running = False
            self._settle_waiters(0, None)
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if listener is not None and not listener.is_closed():
                await listener.close()

    async def _wait_for_redis(self, first: float) -> bool:
        """Probe Redis until it answers, for at most :data:`REDIS_RETRY` seconds.

        One probe every ``redis_probe_interval`` (the first after ``first`` seconds),
        each a PING on a connection of its own (:meth:`RedisStore.probe
        <thorbis_cache.store.redis_store.RedisStore.probe>`): through the cache's pool a call
        is refused while the breaker cools down, so the backlog would wait for the end
        of the cooldown after the server is back; the probe's answer closes the breaker.
        A refused connection costs well under a millisecond: probing this often is cheap.

        Returning after :data:`REDIS_RETRY` without an answer lets :meth:`run` try a
        batch anyway: the probe reaches one server (the first node of a Cluster), and
        must not hold the worker back when that one stays down but the pool's servers
        are back.

        :param first: seconds before the first probe.
        :returns: True when Redis answered; False on :meth:`stop` or after
            :data:`REDIS_RETRY` seconds.
        :raises CacheBackendError: the server answered the probe with an error.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        pause = first
        try:
            while not await self._pause(pause):
                self.metrics.redis_probes += 1
                if await self.cache.store.probe():
                    log.info("outbox worker: Redis answers again; applying the backlog")
                    return True
                if loop.time() - started >= REDIS_RETRY:
                    return False
                pause = self.redis_probe_interval
            return False
        finally:
            self.metrics.redis_wait_seconds += loop.time() - started

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, less if :meth:`stop` is called; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)
        return self._stopping

    async def _drop_broken(self, listener: Any) -> None:
        # After a lost connection, reconnect both: asyncpg will not revive a dead one.
        for conn in (listener, self._conn):
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.execute("SELECT 1"), 2.0)
                except Exception:
                    conn.terminate()
