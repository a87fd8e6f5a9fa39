"""Prepare a database for thorbis-cache in one call: what ``thorbis-cache db init`` runs.

::

    report = await setup_database(dsn, app.plugins)   # capture="auto"

In order: the core migrations (``sql/core``, versioned and checksummed), every loaded
plugin's SQL and materialized views (checked against the database), then change capture:
``"auto"`` (the default: logical when the server allows it -- ``wal_level=logical``, a
bounded ``max_slot_wal_keep_size``, a free replication slot, psycopg installed -- else
triggers, with the reason
in :attr:`DatabaseSetup.fallback`), the capture triggers generated from the rules
(``"triggers"``; a slot of logical capture set up before is dropped once they are in
place), or a publication and a logical replication slot (``"logical"``; the capture
triggers are dropped once it exists). Every step is
idempotent, so a second host process, or a deploy, may run it again.

Where the slot exists already, ``"auto"`` keeps logical capture, whoever runs it: a
release job sets it up on the server's own address, and the application then runs
this through a transaction pooler (which carries no replication connection) or as a
role without REPLICATION; falling back to triggers there would add them on top of
the slot, so that every write paid for both captures. With a role that may not
manage the slot, it is only checked (every rule's table published:
:class:`~thorbis_cache.errors.CaptureNotInstalledError` otherwise), and
:attr:`DatabaseSetup.kept` says why.

``thorbis-cache db init`` and :meth:`CacheApp.start(apply_sql=True)
<thorbis_cache.app.CacheApp.start>` both call :func:`setup_database`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.postgres.capture_ddl import (
    capture_partitions,
    ensure_ddl_guard,
    uncapture_others,
)
from thorbis_cache.postgres.connection import connect
from thorbis_cache.postgres.ddl_locks import with_lock_retries
from thorbis_cache.postgres.migrations import MigrationReport, migrate
from thorbis_cache.postgres.rules_record import record_rules, recorded_rules
from thorbis_cache.postgres.sql_apply import SqlApplied, apply_and_check

if TYPE_CHECKING:
    import asyncpg

    from thorbis_cache.plugins.manager import PluginManager
    from thorbis_cache.postgres.triggers import TablePlan

__all__ = ["CAPTURES", "CaptureMode", "DatabaseSetup", "setup_database"]

#: How committed changes reach the worker (``db init --capture``).
CaptureMode = Literal["triggers", "logical", "auto"]
CAPTURES: tuple[CaptureMode, ...] = ("triggers", "logical", "auto")


@attrs.frozen(slots=True)
class DatabaseSetup:
    """What :func:`setup_database` did.

    :ivar migrations: the core migrations applied and already there.
    :ivar plugins: the plugins set up, in load order.
    :ivar sql: which plugins' SQL and views were applied, which the database held as
        they are (recorded in ``thorbis.plugin_sql``: not applied again, so that nothing
        locked the host's tables), and which it holds from a later release of their
        distribution (left alone: a rolling deploy's earlier release starting again);
        :func:`~thorbis_cache.postgres.sql_apply.apply_and_check`.
    :ivar capture: the capture installed, ``"triggers"`` or ``"logical"``.
    :ivar triggers: the capture trigger plans installed (triggers).
    :ivar slot: the replication slot (and publication) made ready (logical).
    :ivar replica_full: tables set to REPLICA IDENTITY FULL (logical).
    :ivar dropped: capture triggers dropped (``"<trigger> ON <table>"``; logical).
    :ivar fallback: why ``"auto"`` chose triggers, or None.
    :ivar sync_standby: why the logical capture set up may hold the host's commits
        (``synchronous_standby_names`` lists ``*``: ``"auto"`` chooses triggers
        there), or None.
    :ivar retired_slot: the replication slot (and publication) dropped because
        triggers were asked for where logical capture was set up, or None.
    :ivar kept: why ``"auto"`` found the slot there and left it as it was (this role
        may not manage it; every rule's table is published), or None.
    :ivar ddl_guard: why the event trigger that keeps a migration from breaking the
        capture triggers could not be created (triggers), or None
        (:mod:`~thorbis_cache.postgres.capture_ddl`).
    :ivar rules_recorded: the rules this setup recorded that the database's record did
        not hold as they are (added or changed): workers without them apply them
        conservatively until they run this release
        (:mod:`~thorbis_cache.postgres.rules_record`).
    :ivar uncaptured: tables whose capture was taken off (``prune``: no rule or view of
        the plugins reads them any more).
    :ivar slot_lost: the slot was found lost, its publication left behind
        (:meth:`~thorbis_cache.postgres.logical.LogicalCapture.lost_here`), and not made
        again: the worker makes it, after flushing what the changes lost with it may
        have made stale (logical).
    """

    migrations: MigrationReport
    plugins: tuple[str, ...]
    capture: Literal["triggers", "logical"]
    triggers: tuple[TablePlan, ...] = ()
    slot: str | None = None
    replica_full: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    fallback: str | None = None
    kept: str | None = None
    retired_slot: str | None = None
    sync_standby: str | None = None
    ddl_guard: str | None = None
    rules_recorded: tuple[str, ...] = ()
    uncaptured: tuple[str, ...] = ()
    sql: SqlApplied = attrs.field(factory=SqlApplied)
    slot_lost: bool = False


async def setup_database(dsn: str, plugins: PluginManager, *, capture: CaptureMode = "auto",
                         slot: str = "main", prune: bool = False,
                         reapply_sql: bool = False) -> DatabaseSetup:
    """Apply the core schema, the plugins' SQL and views, and install change capture.

    :param dsn: the PostgreSQL database.
    :param plugins: a manager whose plugins are loaded (``app.plugins``): their SQL,
        views and rules are what is applied.
    :param capture: ``"triggers"``, ``"logical"`` or ``"auto"`` (see the module).
    :param slot: the logical capture's name: slot and publication ``thorbis_<slot>``.
    :param prune: make the capture and the rules record exactly these plugins' (``db
        init --prune``): the capture of a table no rule or view of theirs reads any more
        is taken off (:func:`~thorbis_cache.postgres.capture_ddl.uncapture_others`).
        Without it, nothing is taken away: the processes of two releases (a rolling
        deploy) or of different plugin sets may each run this at start.
    :param reapply_sql: apply every plugin's SQL, even where the database holds it as it
        is (``db init --reapply-sql``: an object its scripts make, other than a table or
        index, was dropped by hand).
    :returns: what was done.
    :raises ConfigurationError: an unknown ``capture``; a rule naming a table or column
        the database lacks; logical capture on a server without ``wal_level=logical``.
    :raises PluginLoadError: a plugin's SQL failed, or its rules do not match the tables.
    :raises MigrationError: a core migration failed or was changed after it was applied.
    """
    if capture not in CAPTURES:
        raise ConfigurationError(f"capture must be one of {', '.join(CAPTURES)}, "
                                 f"got {capture!r}")
    report = await migrate(dsn)
    loaded = list(plugins.plugins.values())
    held = await apply_and_check(dsn, loaded, reapply=reapply_sql)
    names = tuple(p.name for p in loaded)
    rules, views = plugins.all_rules(), plugins.all_views()
    conn = await connect(dsn, writes="installing change capture")
    try:
        # First: a worker without some of these rules finds them recorded before any
        # change is captured for them (rules_record).
        recorded = await record_rules(conn, rules, plugins.registry, exact=prune)
        fallback = None
        from thorbis_cache.postgres.logical import (
            LogicalCapture,
            logical_unavailable,
            replication_refused,
            sync_standby_risk,
        )

        logical = LogicalCapture(slot, rules, views)
        # The database's capture is logical already (see the module): kept.
        existing = capture == "auto" and await logical.set_up_here(conn)
        if capture == "auto" and not existing:
            fallback = await logical_unavailable(conn, dsn)
            capture = "triggers" if fallback else "logical"
        if capture == "logical" or existing:
            from thorbis_cache.postgres.capture_check import check_capture
            from thorbis_cache.postgres.triggers import remove_triggers

            risk = await sync_standby_risk(conn)
            refused = await replication_refused(conn) if existing else None
            if refused is not None:
                if prune:
                    # Found reading this path: it returned before pruning, in silence.
                    raise ConfigurationError(
                        f"--prune changes logical capture {logical.slot}, and {refused}: "
                        "run it as a role that may (the one that set the capture up)")
                await check_capture(conn, rules, logical, plugins=names)
                return DatabaseSetup(report, names, "logical", slot=logical.slot,
                                     kept=refused, sync_standby=risk,
                                     rules_recorded=recorded, sql=held)
            # Before anything is changed: the role, then the replication connection
            # (the worker's: where a slot exists, it reads it elsewhere already).
            await logical.check_role(conn)
            if not existing:
                await logical.check_connection(dsn)
            watched = list(logical.plans)
            # A slot lost with its publication left behind: made again here, it would
            # hide the changes lost with it; the worker flushes for them, then makes it.
            lost = await logical.lost_here(conn)
            full = await with_lock_retries(
                conn, lambda: logical.ensure(conn, prune=prune, create_slot=not lost),
                tables=watched, what=f"setting up logical capture {logical.slot}")
            dropped = await with_lock_retries(
                conn, lambda: remove_triggers(conn), tables=watched,
                what="dropping the capture triggers")
            uncaptured = await _uncapture(conn, watched) if prune else []
            # A partition's TRUNCATE is not published as its table's: a trigger says it.
            await with_lock_retries(
                conn, lambda: capture_partitions(conn, sorted({r.table for r in rules})),
                tables=watched, what="capturing the partitions' TRUNCATE")
            # Nothing on the write path to protect: the event trigger only records a
            # migration's missing columns for `health`, where the role may create it.
            await ensure_ddl_guard(conn)
            return DatabaseSetup(report, names, "logical", slot=logical.slot,
                                 replica_full=tuple(full), dropped=tuple(dropped),
                                 sync_standby=risk, rules_recorded=recorded,
                                 uncaptured=tuple(uncaptured), sql=held, slot_lost=lost)
        from thorbis_cache.postgres.triggers import install_triggers, plan_tables

        retiring = fallback is None and await logical.set_up_here(conn)
        if retiring and (refused := await replication_refused(conn)) is not None:
            # Before anything changes: triggers beside a slot nobody may drop would
            # make every write pay for both captures.
            raise ConfigurationError(
                f"capture triggers were asked for, but logical capture {logical.slot} is "
                f"set up in this database and {refused}: a role that may drops it "
                f"(thorbis-cache db init --capture triggers --slot "
                f"{logical.slot.removeprefix('thorbis_')}), or keep logical capture")
        # The record's rules these plugins lack: processes of another release, or
        # with other plugins, may run them (all gone with prune: the record is exact).
        mine = {rule.name for rule in rules}
        others = [r for r in await recorded_rules(conn) if r.name not in mine]
        plans = await with_lock_retries(
            conn, lambda: install_triggers(conn, rules, views, others),
            tables=[p.table for p in plan_tables(rules, views)],
            what="installing the capture triggers")
        uncaptured = await _uncapture(conn, [p.table for p in plans]) if prune else []
        guard = await ensure_ddl_guard(conn)
        retired = None
        if retiring:
            # Asked for triggers where logical capture was set up: once the triggers
            # are in place, the slot goes (it would keep WAL, and every write would pay
            # for both captures); a worker following it then reads the outbox.
            await logical.drop(conn)
            retired = logical.slot
    finally:
        await conn.close()
    return DatabaseSetup(report, names, "triggers", triggers=tuple(plans), fallback=fallback,
                         ddl_guard=guard, retired_slot=retired, rules_recorded=recorded,
                         uncaptured=tuple(uncaptured), sql=held)


async def _uncapture(conn: asyncpg.Connection, keep: list[str]) -> list[str]:
    """:func:`uncapture_others`, its table locks bounded and retried."""
    others = [r[0] for r in await conn.fetch(
        "SELECT table_name FROM thorbis.captured_tables WHERE NOT table_name = ANY ($1)",
        keep)]
    if not others:
        return []
    return await with_lock_retries(conn, lambda: uncapture_others(conn, keep), tables=others,
                                   what="taking the capture off what no rule reads")
