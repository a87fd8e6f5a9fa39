"""``thorbis-cache db init|migrate``, ``thorbis-cache worker``, ``thorbis-cache audit verify``.

* ``db migrate``: apply the pending core SQL (``sql/core``), versioned and checksummed.
* ``db init``: ``migrate``, then the plugins' SQL and views (checked against the
  database), then change capture (:func:`thorbis_cache.postgres.setup.setup_database`,
  which ``CacheApp.start(apply_sql=True)`` runs too).
* ``worker``: the outbox worker (adaptive polling of the outbox), the reliable
  invalidation queue's consumer and the materialized-view scheduler, until SIGTERM or
  SIGINT (Ctrl-C): the batch in hand finishes, one line says so, exit 0; ``--once``
  drains the outbox, runs one scheduler tick and exits. Either refuses to start when a
  rule's table has no capture installed (``db migrate`` without ``db init``).
* ``audit verify``: walk the audit chain; exit 1 naming the first broken link.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from thorbis_cache.cli import options
from thorbis_cache.cli.dsn import check_postgres
from thorbis_cache.errors import AuditChainBroken, ConfigurationError

if TYPE_CHECKING:
    from thorbis_cache.invalidation.worker import OutboxWorker
    from thorbis_cache.postgres.logical import LogicalCapture
    from thorbis_cache.postgres.migrations import MigrationReport

__all__ = ["AuditAction", "DbAction", "audit_command", "db_command", "worker_command"]



class DbAction(enum.Enum):
    """What ``db`` does."""

    init = "init"
    migrate = "migrate"


class Capture(enum.Enum):
    """How committed changes reach the worker."""

    triggers = "triggers"
    logical = "logical"
    auto = "auto"


_CAPTURE = typer.Option(
    "--capture", help="triggers: capture triggers write thorbis.outbox; logical: a "
    "replication slot reads the WAL (wal_level=logical); auto (the default): db init picks "
    "logical when the server allows it (wal_level=logical, max_slot_wal_keep_size set, a "
    "replication slot free, psycopg installed) and says why not otherwise; the worker follows "
    "whatever db init set up.")
_SLOT = typer.Option("--slot", help="Name of the logical capture (slot and publication "
                     "thorbis_<name>); one per worker group.")
_PRUNE = typer.Option("--prune", help="Make the capture exactly the loaded plugins': take "
                      "it off tables no rule or view of theirs reads any more (after a "
                      "plugin or a rule was removed), and forget removed rules. Give every "
                      "plugin the application loads.")
_REAPPLY = typer.Option("--reapply-sql", help="Apply every plugin's SQL again, even where "
                        "the database holds it as recorded (an object its scripts make was "
                        "dropped by hand). Without it, unchanged SQL is left alone, so that "
                        "no lock is asked for on the host's tables.")


class AuditAction(enum.Enum):
    """What ``audit`` does."""

    verify = "verify"


def db_command(
    action: Annotated[DbAction, typer.Argument(help="init: core + plugin SQL + triggers; "
                                               "migrate: core SQL only.")],
    dsn: Annotated[str, options.DSN],
    plugin: Annotated[list[str] | None, options.PLUGINS] = None,
    capture: Annotated[Capture, _CAPTURE] = Capture.auto,
    slot: Annotated[str, _SLOT] = "main",
    prune: Annotated[bool, _PRUNE] = False,
    reapply_sql: Annotated[bool, _REAPPLY] = False,
) -> None:
    """Apply the core schema (versioned); with init, plugin SQL and change capture too
    (capture triggers, or a publication and a replication slot with --capture logical)."""
    asyncio.run(_db(action, dsn, plugin or None, capture, slot, prune, reapply_sql))


async def _db(action: DbAction, dsn: str, plugins: list[str] | None,
              capture: Capture = Capture.auto, slot: str = "main",
              prune: bool = False, reapply_sql: bool = False) -> None:
    from thorbis_cache.plugins.manager import PluginManager
    from thorbis_cache.postgres.migrations import migrate
    from thorbis_cache.postgres.setup import setup_database

    _log_to_stderr()  # its warnings (a table it waits for, a standby at risk) and steps
    await check_postgres(dsn)
    if action is DbAction.migrate:
        _echo_migrations(await migrate(dsn))
        return
    manager = PluginManager()
    await manager.load(plugins)
    done = await setup_database(dsn, manager, capture=capture.value, slot=slot, prune=prune,
                                reapply_sql=reapply_sql)
    _echo_migrations(done.migrations)
    for table in done.uncaptured:
        typer.echo(f"capture taken off {table}: no rule or view of these plugins reads it")
    if done.fallback:
        typer.echo(f"capture: triggers ({done.fallback})")
    said = ([f"SQL applied ({', '.join(done.sql.applied)})"] if done.sql.applied else []) + (
        [f"SQL unchanged, left alone ({', '.join(done.sql.unchanged)})"]
        if done.sql.unchanged else []) + (
        [f"SQL of a later release there, left alone ({', '.join(done.sql.newer)})"]
        if done.sql.newer else [])
    applied = f"plugins {', '.join(done.plugins)}: {'; '.join(said) or 'no SQL'}" \
        if done.plugins else "plugins (none)"
    if done.sync_standby:
        typer.echo(f"warning: {done.sync_standby}", err=True)
    if done.rules_recorded:
        # A running worker of an earlier release applies these conservatively (by
        # tag) until it is restarted with this one.
        typer.echo(f"rules recorded (new or changed): {', '.join(done.rules_recorded)}")
    if done.kept:
        typer.echo(f"{applied}, logical capture {done.slot} kept as it was set up "
                   f"({done.kept}); every rule's table is published")
        return
    if done.capture == "logical":
        for line in done.dropped:
            typer.echo(f"capture trigger dropped: {line}")
        if done.slot_lost:
            typer.echo(f"warning: the replication slot of logical capture {done.slot} is "
                       "gone while its publication is here (dropped while no worker ran, or "
                       "not carried over by a failover): the changes committed since it was "
                       "last read are lost. Not made again here: start `thorbis-cache "
                       "worker`, which first invalidates every tag the rules of its tables "
                       "reach, for every tenant, then makes the slot again", err=True)
            typer.echo(f"{applied}, logical capture {done.slot} set up but for its slot "
                       f"(REPLICA IDENTITY FULL set on: "
                       f"{', '.join(done.replica_full) or 'none needed'})")
            return
        typer.echo(f"{applied}, logical capture {done.slot} ready (REPLICA IDENTITY FULL "
                   f"set on: {', '.join(done.replica_full) or 'none needed'})")
        return
    for plan in done.triggers:
        typer.echo(f"capture trigger on {plan.table}: {', '.join(plan.columns)}")
    typer.echo(f"{applied}, {len(done.triggers)} capture trigger(s) installed")
    if done.retired_slot:
        typer.echo(f"logical capture {done.retired_slot} dropped (slot and publication): "
                   "running workers read the outbox from now on")
    if done.ddl_guard:
        typer.echo(f"warning: {done.ddl_guard}", err=True)


def _echo_migrations(report: MigrationReport) -> None:
    for name in report.applied:
        typer.echo(f"applied core {name}")
    typer.echo(f"core schema up to date ({len(report.applied)} applied, "
               f"{len(report.already)} already)")


def worker_command(
    dsn: Annotated[str, options.DSN],
    redis_url: Annotated[str, options.REDIS_URL],
    plugin: Annotated[list[str] | None, options.PLUGINS] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain the outbox and exit.")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 1000,
    poll_interval: Annotated[float, typer.Option(
        min=0.001, help="Longest pause between two polls of an empty outbox, in seconds "
                        "(the pause starts at 1 ms and doubles while it stays empty).")] = 0.02,
    queue: Annotated[bool, typer.Option(
        "--queue/--no-queue",
        help="Also consume the reliable invalidation queue (Redis Stream).")] = True,
    mv: Annotated[bool, typer.Option(
        "--mv/--no-mv", help="Also run the materialized-view scheduler.")] = True,
    mv_tick: Annotated[float, typer.Option(
        min=0.1, help="Seconds between two looks at the view schedule.")] = 15.0,
    capture: Annotated[Capture, _CAPTURE] = Capture.auto,
    slot: Annotated[str, _SLOT] = "main",
    max_transaction_changes: Annotated[int, typer.Option(
        min=1, help="Logical capture: the changes of one transaction held for its commit, "
                    "at most (about 2.3 KB each); a bigger transaction is invalidated by "
                    "tenant instead of by row.")] = 50_000,  # logical_rows.MAX_HELD
    hold_timeout: Annotated[float, typer.Option(
        min=1.0, help="Seconds a batch's transaction may sit idle before PostgreSQL ends "
                      "this worker's session: a worker that hangs mid-batch holds the "
                      "changes it claimed until then, and the other workers take them "
                      "after it.")] = 60.0,
    metrics_port: Annotated[int | None, options.METRICS_PORT] = None,
    metrics_host: Annotated[str, options.METRICS_HOST] = "127.0.0.1",
) -> None:
    """Run the outbox worker: committed changes become cache invalidations; it also
    consumes queued invalidation jobs (``InvalidationQueue``) unless ``--no-queue``, and
    refreshes the plugins' materialized views when due (cron, smart) unless ``--no-mv``.
    Run as many workers as you like: each view is refreshed by one at a time, the outbox
    is shared, and a replication slot is read by one while the others stand by to take
    it over (``--once`` beside a running worker says who reads it, exit 1). SIGTERM or
    Ctrl-C stops it after the batch in hand (exit 0); it refuses to start when a rule's
    table has no change capture (run ``db init``). With ``--metrics-port`` it serves
    /metrics and /health (``docs/operations.md``)."""
    _log_to_stderr()
    asyncio.run(_worker(dsn, redis_url, plugin or None, once, batch_size, poll_interval,
                        queue, mv, mv_tick, capture, slot, metrics_port, metrics_host,
                        max_transaction_changes=max_transaction_changes,
                        hold_timeout=hold_timeout))


def _log_to_stderr() -> None:
    """The worker's log lines on stderr, with time and level, its own from INFO up (a
    slot taken over from another worker, Redis back after an outage, a view
    refreshed): without this Python shows WARNING and above only, bare. Left alone
    when logging is configured already (a host that runs the command in process,
    pytest)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("thorbis_cache").setLevel(logging.INFO)


async def _worker(dsn: str, redis_url: str, plugins: list[str] | None, once: bool,
                  batch_size: int, poll_interval: float, queue: bool = True,
                  mv: bool = True, mv_tick: float = 15.0,
                  capture: Capture = Capture.auto, slot: str = "main",
                  metrics_port: int | None = None, metrics_host: str = "127.0.0.1", *,
                  max_transaction_changes: int, hold_timeout: float = 60.0) -> None:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.crypto import KeyRing
    from thorbis_cache.invalidation.apply import CacheInvalidator
    from thorbis_cache.invalidation.queue import InvalidationQueue
    from thorbis_cache.invalidation.worker import OutboxWorker
    from thorbis_cache.observability.serve import worker_endpoint
    from thorbis_cache.observability.views import MeteredMvScheduler

    await check_postgres(dsn)
    # The worker only deletes keys, it never opens a value: when no ring is configured a
    # throwaway one satisfies the sensitive schemas' requirement.
    keyring = KeyRing.from_env() if os.environ.get("THORBIS_KEYRING") else KeyRing.generate()
    app = await CacheApp(redis_url, keyring=keyring).start(plugins)
    logical = await _logical_capture(dsn, app, capture, slot, max_transaction_changes)
    # auto: the worker follows the database's capture, a `db init` switching it included.
    follow: dict[str, Any] = (
        {"capture": "auto", "slot": slot, "max_transaction_changes": max_transaction_changes}
        if capture is Capture.auto else {"capture": logical})
    worker = OutboxWorker.from_app(app, dsn, batch_size=batch_size,
                                   poll_interval=poll_interval, hold_timeout=hold_timeout,
                                   **follow)
    jobs = InvalidationQueue(app.cache.store, app.cache.settings.prefix)
    handler: Any = CacheInvalidator(app.cache)
    scheduler = MeteredMvScheduler.from_app(app, dsn, tick_s=mv_tick)
    stop = asyncio.Event()
    endpoint = None
    try:
        if metrics_port is not None:
            endpoint, handler = await worker_endpoint(
                app.cache, dsn, worker, jobs, handler, scheduler.refresh_metrics,
                port=metrics_port, host=metrics_host, scheduled=scheduler.views)
        # Before anything: a rule whose table nothing captures would leave the cache
        # stale while the worker reports "0 change(s) applied".
        await worker.check_capture()
        if once:
            queued = 0
            if queue:
                queued = await jobs.run_once(handler)
                queued += await jobs.sweep(handler)
            results = await worker.drain()
            refreshed = await scheduler.tick() if mv else []
            m = worker.metrics
            parked = await worker.parked()
            typer.echo(f"{len(results)} batch(es): {m.processed} change(s) applied, "
                       f"{m.keys_deleted} key(s) deleted, {m.tags_invalidated} tag(s), "
                       f"{m.dead_lettered} dead-lettered; {queued} queued job(s); "
                       f"{sum(r.ok for r in refreshed)} view(s) refreshed")
            if parked.changes:
                # drain() leaves them: they wait for their shard, not for a worker.
                typer.echo(f"{parked.changes} change(s) of {parked.tenants} tenant(s) parked, "
                           f"the oldest {parked.oldest_seconds:.0f} s old: their Redis "
                           "Cluster shard does not answer (thorbis.parked_tenants); a running "
                           "worker applies them once it does")
            for r in refreshed:
                if r.outcome == "failed":
                    typer.echo(f"  {r.error}")
            return
        received: list[str] = []
        # Handlers first: a signal sent as soon as the line below is read must stop it.
        with _stop_on_signals(worker, received):
            typer.echo(f"worker running ({'slot ' + logical.slot if logical else 'outbox'}, "
                       f"batch {batch_size}, poll {poll_interval}s"
                       f"{f', {len(scheduler.views)} view(s) every {mv_tick}s' if mv else ''}"
                       "); Ctrl-C or SIGTERM stops")
            tasks = []
            if queue:
                tasks.append(asyncio.create_task(jobs.run(handler, stop),
                                                 name="thorbis-queue-consumer"))
            if mv and scheduler.views:
                tasks.append(asyncio.create_task(scheduler.run(), name="thorbis-mv-scheduler"))
            try:
                await worker.run()
            finally:
                stop.set()
                scheduler.stop()
                await asyncio.gather(*tasks)
        typer.echo(f"worker stopped ({received[0] if received else 'stop()'}): "
                   f"{worker.metrics.processed} change(s) applied")
    finally:
        if endpoint is not None:
            await endpoint.aclose()
        await scheduler.aclose()
        await worker.aclose()
        await app.aclose()


@contextlib.contextmanager
def _stop_on_signals(worker: OutboxWorker, received: list[str]) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``worker`` as a service stops: :meth:`OutboxWorker.stop`
    lets the batch in hand commit (or roll back, its rows kept), then ``run`` returns
    and the command exits 0. The signals' names are appended to ``received``."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        worker.stop()

    installed = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def audit_command(
    action: Annotated[AuditAction, typer.Argument(help="verify: walk the hash chain.")],
    dsn: Annotated[str, options.DSN],
) -> None:
    """Verify the hash-chained audit log; exit 1 naming the first broken link."""
    asyncio.run(_audit(dsn))


async def _audit(dsn: str) -> None:
    from thorbis_cache.postgres.audit import verify
    from thorbis_cache.postgres.connection import connect

    await check_postgres(dsn)
    conn = await connect(dsn)
    try:
        result = await verify(conn)
    finally:
        await conn.close()
    if not result.ok:
        raise AuditChainBroken(
            f"audit chain broken at record {result.broken_id} "
            f"({result.count} checked): {result.reason}"
        )
    typer.echo(f"audit chain OK: {result.count} record(s)")


async def _logical_capture(dsn: str, app: object, capture: Capture, slot: str,
                           max_transaction_changes: int) -> LogicalCapture | None:
    """The worker's change source: the slot ``db init --capture logical`` created, or
    None for the outbox. ``auto`` follows what exists. A slot lost (its publication
    left, marked as having had it) is followed too, unless the capture triggers cover
    every table: its reader flushes what the lost changes may have made stale before it
    makes the slot again (a slot made after one was lost, without that flush, would
    hide them)."""
    from thorbis_cache.postgres.capture_check import auto_follows
    from thorbis_cache.postgres.connection import connect
    from thorbis_cache.postgres.logical import LogicalCapture

    if capture is Capture.triggers:
        return None
    plugins: Any = app.plugins  # type: ignore[attr-defined]
    logical = LogicalCapture(slot, plugins.all_rules(), plugins.all_views(),
                             max_transaction_changes=max_transaction_changes)
    conn = await connect(dsn, writes="the invalidation worker")
    try:
        # Its slot lost or not: a lost one is the worker's to flush for, then to make
        # again (SlotReader), never a reason to read nothing.
        exists = await (logical.set_up_here(conn) if capture is Capture.logical
                        else auto_follows(conn, logical, plugins.all_rules()))
        if exists:
            # A slot is there, so the outbox gets nothing: a role that cannot read the
            # slot is refused now, never left to retry (or to fall back) silently.
            try:
                await logical.check_role(conn)
            except ConfigurationError as exc:
                raise typer.BadParameter(str(exc), param_hint="--dsn") from None
        if exists or capture is Capture.logical:
            # The slot is read on a replication connection: one that cannot open (a
            # pooler, pg_hba.conf) is refused now, never retried forever.
            try:
                await logical.check_connection(dsn)
            except ConfigurationError as exc:
                raise typer.BadParameter(str(exc), param_hint="--dsn") from None
    finally:
        await conn.close()
    if capture is Capture.auto:
        return logical if exists else None
    if not exists:
        raise typer.BadParameter(
            f"no replication slot {logical.slot}: run `thorbis-cache db init --capture "
            f"logical --slot {slot}` first", param_hint="--capture")
    return logical
