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

import asyncpg

from thorbis_cache.cache.meta_sweep import MetaSweep
from thorbis_cache.cache.tags import CacheTagInvalidator
from thorbis_cache.errors import ConfigurationError, RedisUnavailableError
from thorbis_cache.invalidation.batch import (
    BatchResult,
    TagInvalidator,
    UnconfiguredTagInvalidator,
    WorkerMetrics,
    apply_and_count,
    apply_changes,
    count_attempt,
)
from thorbis_cache.invalidation.database_origin import OriginCheck
from thorbis_cache.invalidation.failures import FailureBackoff
from thorbis_cache.invalidation.lacking_rules import LackingRules, RulesChanged
from thorbis_cache.invalidation.parked_retry import LOOK_EVERY, ShardProbes, retry_parked
from thorbis_cache.invalidation.planning import Plan, PoisonRow, RulePlanner
from thorbis_cache.invalidation.replay import FailoverReplay
from thorbis_cache.invalidation.replica_echo import ReplicaEcho
from thorbis_cache.invalidation.slot_reader import SlotReader, wal_flushed
from thorbis_cache.plugins.declarations import InvalidationRule, MaterializedView
from thorbis_cache.postgres import connection, outbox, parked
from thorbis_cache.postgres.logical import LogicalCapture
from thorbis_cache.postgres.logical_rows import MAX_HELD
from thorbis_cache.postgres.triggers import CHANNEL, capture_triggers

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.core import Cache

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

#: Seconds between two looks, by a worker following the database's capture
#: (``capture="auto"``) while it reads the outbox, for the slot ``db init`` creates when
#: it switches the database to logical capture (the changes since wait in the slot).
FOLLOW_INTERVAL = 1.0

#: Seconds, under logical capture, between two looks at ``thorbis.outbox`` while the
#: stream keeps bringing changes (replayed dead letters wait there).
OUTBOX_EVERY = 1.0

#: Seconds before a worker that found the database's thorbis schema older than itself
#: (no ``thorbis.parked_tenants``) looks for parked changes again.
SCHEMA_RECHECK = 60.0


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
    :param hold_timeout: seconds a batch's transaction may sit idle before PostgreSQL
        ends the worker's session (``idle_in_transaction_session_timeout``): a worker
        that hangs mid-batch (a stopped process, a host cut off) holds the changes it
        claimed, locked, until then, and other workers take them after it. A batch
        waits on Redis inside its transaction, each call for at most the store's
        timeout; keep this well above. Not through a transaction pooler (set the
        pooler's ``idle_transaction_timeout``). Under logical capture it is also the
        replication stream's ``wal_sender_timeout``: a worker that hangs loses the
        slot to a standing-by worker after it.
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
        transaction committed; see
        :class:`~thorbis_cache.invalidation.slot_reader.SlotReader`). Call its ``ensure`` once
        beforehand: the worker never creates the slot, since a slot created after one
        was lost would hide the changes lost with it
        (:class:`~thorbis_cache.postgres.logical.SlotLostError`, logged at each batch).
        ``"auto"`` (the default of :meth:`from_app`): follow whichever capture ``db init``
        (or ``CacheApp.start(apply_sql=True)``) set up, as ``thorbis-cache worker
        --capture auto`` does: the slot ``thorbis_<slot>`` while it exists in the
        database, else the outbox; and follow a ``db init`` that switches it while the
        worker runs (the slot looked for every :data:`FOLLOW_INTERVAL` while the outbox
        is read; a slot dropped with the capture triggers covering every rule's table
        read no more, after a flush of what it held unread).
    :param slot: with ``capture="auto"``: the logical capture's name (``db init
        --slot``).
    :param views: with ``capture="auto"``: the materialized views whose sources'
        changes a logical capture counts (``app.plugins.all_views()``).
    :param max_transaction_changes: with ``capture="auto"``: the logical capture's
        bound on the changes of one transaction held row by row (see
        :class:`~thorbis_cache.postgres.logical.LogicalCapture`).
    :param plugins: the names of the plugins whose rules these are, named in the
        command of a :class:`~thorbis_cache.errors.CaptureNotInstalledError`
        (:meth:`from_app` passes them).
    :param require_capture: :meth:`run`, :meth:`drain` and :meth:`drained` first check
        that every rule's table is captured (:meth:`check_capture`) and refuse
        otherwise; False skips that (a test feeding the outbox by hand).
    :param capture_check_interval: seconds between two checks, while :meth:`run`
        runs, that every rule's table is still captured (a trigger disabled, a table
        taken out of the publication): a table found uncaptured is logged as an error
        and counted in ``metrics.uncaptured_tables``.
    :param replica_echo: apply each batch's invalidations again once every standby
        streaming from the primary has replayed it, so that a reader on a replica
        cannot cache the old row (:mod:`~thorbis_cache.invalidation.replica_echo`;
        nothing is kept while the primary has no standby).
    """

    def __init__(self, dsn: str, cache: Cache, rules: Iterable[InvalidationRule], *,
                 invalidate_tags: TagInvalidator | None = None, batch_size: int = 1000,
                 poll_interval: float = 0.02, max_attempts: int = 5,
                 dead_letter_days: float = 14.0, audit: bool = True,
                 replay_window: float | None = 300.0, redis_probe_interval: float = 0.02,
                 max_backoff: float = 2.0, sweep_interval: float = 60.0,
                 capture_check_interval: float = 60.0,
                 capture: LogicalCapture | Literal["auto"] | None = None,
                 slot: str = "main", views: Iterable[MaterializedView] = (),
                 plugins: Sequence[str] = (), require_capture: bool = True,
                 replica_echo: bool = True, max_transaction_changes: int = MAX_HELD,
                 hold_timeout: float = 60.0) -> None:
        if hold_timeout < 1:
            raise ConfigurationError(f"outbox worker: hold_timeout must be at least 1 s, "
                                     f"got {hold_timeout!r}")
        self.dsn = dsn
        self.hold_timeout = hold_timeout
        self.cache = cache
        self._own_rules = list(rules)
        self._planner = RulePlanner(cache, self._own_rules)
        self.rules = self._planner.rules
        #: the database's recorded rules this worker lacks (an earlier release's worker
        #: in a rolling deploy), applied through stand-ins
        self.lacking = LackingRules(self._own_rules, cache.registry)
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
        self.capture_check_interval = capture_check_interval
        self._uncaptured: tuple[str, ...] = ()
        #: where changes come from: a logical capture, or None for the outbox
        self.capture: LogicalCapture | None = None if capture == "auto" else capture
        # "auto": the capture followed while its slot exists (see _follow_slot).
        self._auto: LogicalCapture | None = None
        self._followed_at: float | None = None
        self._outbox_read_at = float("-inf")
        self._parked_looked_at = float("-inf")
        self._shard_probes = ShardProbes(cache.store)
        if capture == "auto":
            self._auto = LogicalCapture(slot, self._all_rules(), views,
                                        max_transaction_changes=max_transaction_changes)
        self.plugins = tuple(plugins)
        self.require_capture = require_capture
        self._capture_checked = False
        self._conn: Any = None
        self._origin = OriginCheck(cache, self._all_rules, self.invalidate_tags)
        self._origin_checked_on: Any = None  # the connection the check last ran on
        #: the second pass of each batch once the standbys replayed it (readers on
        #: replicas); None when switched off
        self.echo = ReplicaEcho(cache, self.invalidate_tags) if replica_echo else None
        # One user of the connection at a time: run()'s loop and a drain() (a drained()
        # called before the loop's task has started) must not interleave on it.
        self._conn_lock = asyncio.Lock()
        # Under logical capture: the slot's stream and its changes' failed attempts.
        self._reader: SlotReader | None = None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._running = False
        # drained() calls waiting on run(): resolved by the first batch that started
        # after them and found nothing left (see _settle_waiters).
        self._waiters: list[asyncio.Future[bool]] = []

    @property
    def standing_by(self) -> str | None:
        """Under logical capture, while another session reads the slot (another worker
        of it), that session (:meth:`LogicalCapture.reader
        <thorbis_cache.postgres.logical.LogicalCapture.reader>`): :meth:`run` stands by
        and reads the slot once it is free. None otherwise."""
        busy = None if self._reader is None else self._reader.standing_by
        return None if busy is None else busy.reader

    @classmethod
    def from_app(cls, app: CacheApp, dsn: str | None = None, **options: Any) -> OutboxWorker:
        """A worker on a started app's cache and its plugins' rules; tags go to the
        cache's tag engine unless ``invalidate_tags`` is passed.

        :param app: a started :class:`~thorbis_cache.app.CacheApp`.
        :param dsn: the PostgreSQL database the plugins' tables live in; by default the
            app's ``postgres_dsn``.
        :raises ConfigurationError: no DSN given, and the app has none.
        :param options: any keyword argument of :class:`OutboxWorker`; ``capture``
            defaults to ``"auto"`` (follow the slot ``db init`` created, if any), and
            ``slot`` to the one ``app.start(apply_sql=True, slot=...)`` made ready.
        """
        if dsn is None:
            dsn = app.postgres_dsn
            if dsn is None:
                raise ConfigurationError(
                    "OutboxWorker.from_app: give the PostgreSQL DSN of the plugins' tables "
                    "(from_app(app, dsn)), or build the CacheApp with postgres_dsn=")
        options.setdefault("invalidate_tags", CacheTagInvalidator(app.cache))
        options.setdefault("plugins", tuple(app.plugins.plugins))
        options.setdefault("capture", "auto")
        setup = app.database
        if setup is not None and setup.slot is not None:
            # The app prepared the database with a slot of its own name: follow it.
            options.setdefault("slot", setup.slot.removeprefix("thorbis_"))
        options.setdefault("views", app.plugins.all_views())
        return cls(dsn, app.cache, app.plugins.all_rules(), **options)

    async def __aenter__(self) -> OutboxWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the worker's database connection and replication stream (not the
        cache), and stop its calls to shards out of reach."""
        await self._shard_probes.aclose()
        if self._reader is not None:
            await self._reader.close()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _connection(self) -> Any:
        """The worker's connection (to the primary: a standby is refused); the first
        batch on a new one checks that the database was not rewound (see
        :meth:`_check_origin`)."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await connection.connect(
                self.dsn, writes="the invalidation worker",
                command_timeout=connection.QUERY_TIMEOUT,
                settings={"idle_in_transaction_session_timeout":
                          str(round(self.hold_timeout * 1000))})
        return self._conn

    async def _check_origin(self) -> None:
        """Once per connection, before its first batch: if the database failed over or
        was restored since the cache last heard from it, flush what its lost commits may
        have left stale (:mod:`~thorbis_cache.invalidation.database_origin`). In the
        batch, not at connect: it needs Redis, and a worker starts (and waits) while
        Redis is down."""
        conn = await self._connection()
        if self._origin_checked_on is not conn:
            try:
                report = await self._origin.check(conn)
            except Exception:
                self.metrics.failed_batches += 1  # the batch it precedes
                raise
            if report is not None:
                self.metrics.capture_losses += 1
            self._origin_checked_on = conn

    async def _follow_slot(self) -> None:
        """``capture="auto"``, while the worker reads the outbox: read the slot instead
        once logical capture is set up in the database (its slot, or the publication
        of a slot lost: the slot's reader flushes for it and makes it again). Looked at
        on the worker's first use of the database, then at most every
        :data:`FOLLOW_INTERVAL` (a ``db init`` that switched the database to logical
        capture). The other way is found by the slot's
        reader (:attr:`SlotReader.retired
        <thorbis_cache.invalidation.slot_reader.SlotReader.retired>`)."""
        auto = self._auto
        if auto is None or self.capture is not None:
            return
        now = asyncio.get_running_loop().time()
        if self._followed_at is not None and now - self._followed_at < FOLLOW_INTERVAL:
            return
        self._followed_at = now
        from thorbis_cache.postgres.capture_check import auto_follows

        if await auto_follows(await self._connection(), auto, self._all_rules()):
            self.capture = auto
            log.info("worker follows the replication slot %s", auto.slot)

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

    async def _next_batch(self, caught_up: bool = False, standby: bool = False
                          ) -> BatchResult:
        """:meth:`run`'s batch: from a stream, what has arrived (the loop wakes when
        the server sends more), or with ``caught_up`` (a :meth:`drained` call waits)
        up to the server's flush position; from the outbox, a claim. With ``standby``
        a slot another worker reads is waited for (:attr:`standing_by`), else refused
        with :class:`~thorbis_cache.postgres.logical.SlotInUseError`."""
        async with self._conn_lock:
            return await self._next_batch_locked(caught_up, standby)

    async def _next_batch_locked(self, caught_up: bool, standby: bool) -> BatchResult:
        await self._check_origin()
        result = await self._next_batch_from_capture(caught_up, standby)
        if self.echo is not None and result.claimed:
            await self.echo.after_batch(await self._connection(), result)
        return result

    async def _settle_echoes(self) -> None:
        """Apply the second passes the standbys have caught up with."""
        if self.echo is not None and self.echo.pending:
            async with self._conn_lock:
                self.metrics.replica_echoes += await self.echo.settle(await self._connection())

    async def _next_batch_from_capture(self, caught_up: bool, standby: bool) -> BatchResult:
        if self._auto is not None:
            await self._follow_slot()
        result = await self._retry_parked()
        if result.claimed:
            return result
        if self.capture is not None:
            return await self._logical_then_outbox(self.capture, caught_up=caught_up,
                                                   standby=standby)
        return await self._run_outbox_once()

    async def _logical_then_outbox(self, capture: LogicalCapture, *, caught_up: bool,
                                   standby: bool) -> BatchResult:
        """Under logical capture, a batch from the stream; once the stream has nothing,
        or a second after the outbox was last looked at, one from ``thorbis.outbox``,
        where nothing but replayed dead letters (``thorbis-cache outbox-deadletters
        replay``) arrive: the WAL does not have them any more, and a busy stream must
        not hold them back. An empty outbox costs one indexed query."""
        now = asyncio.get_running_loop().time()
        if now - self._outbox_read_at >= OUTBOX_EVERY:
            result = await self._run_outbox_once()
            if result.claimed:
                return result
        if self._reader is None:  # the capture is settled by the first batch
            self._reader = SlotReader(
                capture, self.dsn, cache=self.cache, rules=self._all_rules,
                invalidate_tags=self.invalidate_tags, replay=self.replay,
                metrics=self.metrics, apply=self._apply, follows=self._auto is capture,
                rules_changed=self._rules_changed, hold_timeout=self.hold_timeout)
        result = await self._reader.next_batch(await self._connection(), self.batch_size,
                                               caught_up=caught_up, standby=standby)
        if self._reader.retired:  # the database captures with triggers now
            self._reader = self.capture = None
            self._followed_at = asyncio.get_running_loop().time()
        if result.claimed:
            return result
        return await self._run_outbox_once()

    async def parked(self) -> parked.ParkedFigures:
        """What waits parked, its Cluster shard out of reach (:meth:`drain` leaves it:
        see :mod:`~thorbis_cache.invalidation.parked_retry`)."""
        async with self._conn_lock:
            return await parked.figures(await self._connection())

    async def _retry_parked(self) -> BatchResult:
        """At most every :data:`~thorbis_cache.invalidation.parked_retry.LOOK_EVERY`
        seconds, the parked changes of a due tenant whose Cluster shard answers again
        (:mod:`~thorbis_cache.invalidation.parked_retry`); they wait in their own table,
        so the outbox's batches and the stream never carry them round."""
        now = asyncio.get_running_loop().time()
        if now - self._parked_looked_at < LOOK_EVERY:
            return BatchResult()
        self._parked_looked_at = now
        conn = await self._connection()
        try:
            if self.replay is not None:
                await self.replay.check(conn)
            return await retry_parked(conn, cache=self.cache, batch_size=self.batch_size,
                                      apply=self._apply, rules_changed=self._rules_changed,
                                      metrics=self.metrics, probes=self._shard_probes)
        except asyncpg.UndefinedTableError as exc:
            # A worker of this release started before `db migrate` ran (a rolling
            # deploy): its batches go on; nothing can be parked there yet either.
            self._parked_looked_at = now + SCHEMA_RECHECK
            log.error("outbox worker: %s: the database's thorbis schema is older than this "
                      "worker; run `thorbis-cache db migrate` (parked changes are looked "
                      "for again in %.0f s)", exc, SCHEMA_RECHECK)
            return BatchResult()
        except Exception:
            self.metrics.failed_batches += 1
            raise

    async def _run_outbox_once(self) -> BatchResult:
        self._outbox_read_at = asyncio.get_running_loop().time()
        conn = await self._connection()
        ids: list[int] = []
        try:
            if self.replay is not None:
                await self.replay.check(conn)
            async with conn.transaction():
                rows = await outbox.claim_batch(conn, self.batch_size)
                claimed = time.perf_counter()
                ids = [r.id for r in rows]
                result = (await apply_and_count(conn, rows, self._apply, self._rules_changed)
                          if rows else BatchResult())
        except RulesChanged:
            return await self._run_outbox_once()  # rolled back: claimed again
        except Exception as exc:
            self.metrics.failed_batches += 1
            await count_attempt(conn, ids, exc)
            raise
        if rows:
            self.metrics.count(result, rows, claimed)
        return result

    def _all_rules(self) -> list[InvalidationRule]:
        return [*self._own_rules, *self.lacking.stand_ins]

    async def _rules_changed(self, conn: Any) -> bool:
        """Read the database's rules record (with every batch, after its changes were
        read, so that a change made under rules recorded since finds them); True when
        what this worker lacks changed: its planner, and the capture it reads, now
        follow the stand-ins (:mod:`~thorbis_cache.invalidation.lacking_rules`)."""
        if not await self.lacking.changed(conn):
            return False
        self._planner = RulePlanner(self.cache, self._all_rules())
        self.rules = self._planner.rules
        self.metrics.lacking_rules = len(self.lacking.rules)
        for capture in {c for c in (self.capture, self._auto) if c is not None}:
            capture.watch(self._all_rules())
        if self._reader is not None:
            # Its stream decodes for the tables watched when it opened: what it read
            # and did not confirm is read again under the new rules.
            await self._reader.close()
        return True

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
        async with self._conn_lock:
            await self._check_capture_locked()

    async def _check_capture_locked(self) -> None:
        from thorbis_cache.postgres.capture_check import check_capture

        if self._auto is not None:
            await self._follow_slot()
        conn = await self._connection()
        await self._rules_changed(conn)  # said at start, not at the first change
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

    async def _recheck_capture(self) -> None:
        """While running: is every rule's table still captured? Found as a user would:
        ``ALTER TABLE ... DISABLE TRIGGER ALL`` (bulk loaders run it) or a table taken
        out of the publication left its entries stale while the worker, checked once at
        start, applied nothing for it and said nothing. Logged as an error when the set
        of uncaptured tables changes (and said when it is empty again)."""
        from thorbis_cache.postgres.capture_check import capture_problems

        async with self._conn_lock:
            conn = await self._connection()
            await self._rules_changed(conn)
            problems = tuple(await capture_problems(conn, self._all_rules(),
                                                    self.capture or "triggers"))
            if self._reader is not None:
                await self._reader.check_sync(conn)
        if problems != self._uncaptured:
            if problems:
                log.error("change capture stopped for %d table(s): their changes are not "
                          "invalidated and their entries stay stale until their TTL: %s; "
                          "run `thorbis-cache db init`", len(problems), "; ".join(problems))
            else:
                log.warning("change capture is complete again: every rule's table is "
                            "captured")
            self._uncaptured = problems
        self.metrics.uncaptured_tables = len(problems)

    async def _check_once(self) -> None:
        if self.require_capture and not self._capture_checked:
            await self.check_capture()

    async def drain(self) -> list[BatchResult]:
        """Run batches until the outbox is empty (for tests and the CLI's ``--once``):
        the last batch claimed nothing, so every change committed before it started
        has been applied (or dead-lettered), or parked: changes whose Cluster shard is
        out of reach wait for it (:mod:`~thorbis_cache.invalidation.parked_retry`), not
        for this. Under logical capture, until the slot has caught up with the server's
        flush position. Not while :meth:`run` runs in another task (use
        :meth:`drained`).

        :raises CaptureNotInstalledError: see :meth:`check_capture`.
        :raises SlotInUseError: another worker reads the slot (it applies the changes).
        """
        await self.cache.verify_server()
        await self._check_once()
        results = []
        while (result := await self.run_once()).claimed:
            results.append(result)
        await self._settle_echoes()
        return results

    async def drained(self) -> None:
        """Return once every change committed before the call has been applied (or
        parked: see :meth:`drain`).

        When :meth:`run` is running (in another task), wait for its loop to get there:
        the first batch that starts after this call and finds the outbox empty (under
        logical capture: reads up to the server's flush position as of its start)
        resolves it; no batch runs beside the loop's (when the loop stops first, this
        drains once it has returned); under logical capture it first waits for the WAL
        to be flushed past the call, since the loop's batches read what has arrived
        (:func:`~thorbis_cache.invalidation.slot_reader.wal_flushed`). Otherwise,
        :meth:`drain` (whose batches read up to the WAL insert position themselves).
        For tests and deploys, instead of polling ``thorbis.outbox``.

        It waits as long as that takes: while Redis is down the changes wait, and so
        does this (wrap it in :func:`asyncio.timeout` to bound it); on a worker that
        stands by (:attr:`standing_by`), until it reads the slot.

        :raises CaptureNotInstalledError: see :meth:`check_capture`.
        """
        if self._auto is not None:
            async with self._conn_lock:
                await self._follow_slot()
        if self._running:
            if self.capture is not None:
                # The loop's batches read what has arrived; make sure it has.
                await wal_flushed(self.dsn, MIN_POLL, connection.QUERY_TIMEOUT)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake.set()
            if await waiter:
                return
        # run() is not running, or stopped before it got there (and has returned: its
        # connection is free).
        await self.drain()

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
        ``max_backoff``, logged once with its traceback and then at most every 30 s
        while it stays the same (:class:`~thorbis_cache.invalidation.failures.FailureBackoff`);
        the slot's stream is closed meanwhile, so that a PostgreSQL shutting down does not
        wait for its confirmations.
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
        # Through a transaction pooler a LISTEN stays on whichever server connection
        # ran it: no listener there (the adaptive poll alone wakes the worker).
        listens = not connection.target_of(self.dsn).pooled
        last_prune: float | None = None
        last_capture_check = asyncio.get_running_loop().time()
        failures = FailureBackoff(log, self.max_backoff)
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
                    if listens and (listener is None or listener.is_closed()):
                        listener = await connection.connect(self.dsn)
                        await listener.add_listener(CHANNEL, wake)
                    self._wake.clear()
                    while not self._stopping:
                        asked = len(self._waiters)
                        result = await self._next_batch(caught_up=asked > 0, standby=True)
                        # A standby has applied nothing of the slot: its drained()
                        # calls wait until it reads the slot (or run() ends).
                        self._settle_waiters(asked, not result.claimed
                                             and not self.standing_by)
                        if result.claimed:
                            idle = 0.0
                        failures.succeeded(bool(result.claimed), loop.time())
                        settle, answered = self.redis_probe_interval, False
                        if redis_down_since is not None:
                            log.info("outbox worker: Redis is back; %d change(s) applied "
                                     "%.2fs after it became unavailable",
                                     result.claimed, loop.time() - redis_down_since)
                            redis_down_since = None
                        if not result.claimed:
                            break
                    await self._settle_echoes()
                    if loop.time() - last_capture_check > self.capture_check_interval:
                        await self._recheck_capture()
                        last_capture_check = loop.time()
                    # After the backlog: pruning dead letters can wait, stale entries not.
                    if last_prune is None or loop.time() - last_prune > 3600:
                        async with self._conn_lock:
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
                except Exception as exc:
                    pause = failures.failed(exc, loop.time())
                    if self._reader is not None:
                        # Not read while we pause: its WAL sender would wait for our
                        # confirmations, and hold a PostgreSQL shutting down for as long
                        # as its wal_sender_timeout. What it sent unconfirmed comes again.
                        await self._reader.close()
                    async with self._conn_lock:
                        await self._drop_broken(listener)
                    await self._pause(pause)
                    continue
                idle = min(max(idle * 2, MIN_POLL), self.poll_interval)
                # A replication stream says when the server sends something: wait on
                # its socket too, so a commit is read as soon as it is decoded.
                unwatch = None if self._reader is None else self._reader.watch(wake)
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
            if self._reader is not None:
                # A stopped worker frees the slot for one standing by (else it would
                # hold it, unread, until aclose() or the server's wal_sender_timeout).
                await self._reader.close()

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
