"""Refresh the plugins' materialized views: one refresher per view, recorded and audited.

:func:`refresh_view` refreshes one view inside one transaction that first takes
``pg_try_advisory_xact_lock(hashtext('thorbis_mv:' || view))``: across every process, one
refresher per view at a time; the lock belongs to the transaction, so a refresher killed
mid-refresh (its transaction aborted) leaves no lock behind. A view already being refreshed
is not waited for: the attempt is recorded as ``skipped_locked``.

A never-populated view (``pg_class.relispopulated = false``) gets a plain first refresh
(``CONCURRENTLY`` refuses an unpopulated view); afterwards ``CONCURRENTLY`` is used when the
view's policy asks for it and a usable unique index exists (no predicate, no expression),
else a plain refresh. Every attempt gets a ``thorbis.mv_refresh_history`` row and an audit
record (kind ``"mv_refresh"``), both written in a transaction of their own after the
refresh's, so a failure is recorded with PostgreSQL's message and SQLSTATE.

The view's ``thorbis.mv_state`` row (``sql/core/004_mv_schedule.sql``) is updated in the
refresh's own transaction, under the lock: the data's new "as of", the change marks of
its sources (taken in one statement before the refresh: applied changes plus the outbox
backlog, so each change is counted exactly once), the cron fire handled, and a reset
failure count. A failed refresh adds one to ``failures`` (the scheduler's backoff) in the
recording transaction. A refresh also counts one change under the view's own name, which
is how views that depend on it see it. The scheduler passes ``recheck``: it is evaluated
on the state read under the lock, so a second worker that decided from an older state
does nothing (outcome ``not_due``, not recorded).

Sessions that refresh set ``client_connection_check_interval``: if the worker is killed
mid-refresh its backend notices within a second, aborts, and the lock is gone.

:func:`refresh_and_invalidate` then drops the view's cache tags for every tenant in it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
import attrs

from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.postgres import audit
from thorbis_cache.postgres.catalog import USABLE_UNIQUE_INDEX, quote_qualified

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.plugins.declarations import MaterializedView

__all__ = [
    "HISTORY_TABLE",
    "Outcome",
    "RefreshOutcome",
    "Trigger",
    "ViewState",
    "change_sources",
    "history_exists",
    "invalidate_pending_tags",
    "load_state",
    "load_states",
    "pending_changes",
    "refresh_and_invalidate",
    "refresh_view",
]

log = logging.getLogger(__name__)

#: Where every refresh attempt is recorded (``sql/core/003_mv_refresh.sql``).
HISTORY_TABLE = "thorbis.mv_refresh_history"

Trigger = Literal["cron", "smart", "manual"]
Outcome = Literal["ok", "failed", "skipped_locked", "not_due"]

_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('thorbis_mv:' || $1::text))"
# relispopulated is NULL when the view does not exist (to_regclass gives NULL): the
# REFRESH below then fails with PostgreSQL's own "does not exist" message.
_CATALOG = f"""
SELECT c.relispopulated AS populated,
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.oid AND {USABLE_UNIQUE_INDEX}) AS unique_index,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                 AND a.attnum > 0 AND NOT a.attisdropped) AS has_tenant
FROM pg_class c WHERE c.oid = to_regclass($1)
"""  # noqa: S608 -- a constant fragment
# One statement, so one snapshot: a worker's batch moves rows from the outbox to the
# counts atomically, so each change is seen exactly once (in the backlog or the count).
_MARKS = """
SELECT s.t AS table_name,
       coalesce((SELECT c.changes FROM thorbis.table_changes c WHERE c.table_name = s.t), 0)
       + (SELECT count(*) FROM thorbis.outbox o WHERE o.table_name = s.t) AS changes
FROM unnest($1::text[]) AS s(t)
"""
_STATE_COLUMNS = ("view, plugin, registered_at, refreshed_at, last_duration_ms, change_marks, "
                  "cron_fired_at, failures, last_failed_at, last_error, tags_pending")
_SELECT_STATE = f"SELECT {_STATE_COLUMNS} FROM thorbis.mv_state WHERE view = $1"  # noqa: S608
_STATE_OK = """
INSERT INTO thorbis.mv_state AS s (view, plugin, refreshed_at, last_duration_ms, change_marks,
                                   cron_fired_at, tags_pending)
VALUES ($1, $2, now(), $3, $4::jsonb, $5, $6)
ON CONFLICT (view) DO UPDATE SET
    plugin = EXCLUDED.plugin, refreshed_at = EXCLUDED.refreshed_at,
    last_duration_ms = EXCLUDED.last_duration_ms, change_marks = EXCLUDED.change_marks,
    cron_fired_at = greatest(EXCLUDED.cron_fired_at, s.cron_fired_at),
    failures = 0, last_error = NULL, tags_pending = EXCLUDED.tags_pending
"""
_STATE_FAILED = """
INSERT INTO thorbis.mv_state AS s (view, plugin, failures, last_failed_at, last_error)
VALUES ($1, $2, 1, now(), $3)
ON CONFLICT (view) DO UPDATE SET
    plugin = EXCLUDED.plugin, failures = s.failures + 1, last_failed_at = now(),
    last_error = EXCLUDED.last_error
"""
_COUNT_SELF = """
INSERT INTO thorbis.table_changes AS t (table_name, changes) VALUES ($1, 1)
ON CONFLICT (table_name) DO UPDATE SET changes = t.changes + 1, updated_at = now()
"""
_INSERT_HISTORY = """
INSERT INTO thorbis.mv_refresh_history
    (view, plugin, trigger, started_at, finished_at, duration_ms, rows, "concurrently",
     outcome, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""




@attrs.frozen(slots=True)
class RefreshOutcome:
    """What one refresh attempt did.

    :ivar view: the qualified view name.
    :ivar plugin: the plugin that declares it.
    :ivar trigger: ``"cron"``, ``"smart"`` or ``"manual"``.
    :ivar outcome: ``"ok"``, ``"failed"`` or ``"skipped_locked"``.
    :ivar started_at: when the attempt started (UTC).
    :ivar finished_at: when it ended (UTC).
    :ivar duration_ms: its duration in milliseconds.
    :ivar rows: the view's row count after an ok refresh, else None.
    :ivar concurrently: whether ``REFRESH ... CONCURRENTLY`` was used.
    :ivar error: for a failure, PostgreSQL's message with its SQLSTATE, naming view and
        plugin.
    :ivar tags: the cache tags to invalidate (the view's tags after an ok refresh, else
        empty).
    :ivar tenants: the tenants whose tags :func:`refresh_and_invalidate` invalidated.
    :ivar tags_pending: the refresh committed but Redis could not be reached to
        invalidate its tags: they stay pending (``mv_state.tags_pending``) and the
        scheduler invalidates them on a later tick.
    """

    view: str
    plugin: str
    trigger: Trigger
    outcome: Outcome
    started_at: dt.datetime
    finished_at: dt.datetime
    duration_ms: float
    rows: int | None = None
    concurrently: bool = False
    error: str | None = None
    tags: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    tags_pending: bool = False

    @property
    def ok(self) -> bool:
        """The view was refreshed."""
        return self.outcome == "ok"


@attrs.frozen(slots=True)
class ViewState:
    """A view's ``thorbis.mv_state`` row: what the scheduler decides from.

    :ivar view: the qualified view name.
    :ivar plugin: the plugin that declares it.
    :ivar registered_at: when the scheduler first saw it.
    :ivar refreshed_at: the data's "as of" (start of the last ok refresh), or None.
    :ivar last_duration_ms: the last ok refresh's duration.
    :ivar change_marks: per source, the changes counted when it was last refreshed.
    :ivar cron_fired_at: the newest cron fire a refresh ran for (or registration time).
    :ivar failures: consecutive failed refreshes (0 after an ok one).
    :ivar last_failed_at: when the last failure happened.
    :ivar last_error: PostgreSQL's message of the last failure.
    :ivar tags_pending: the last refresh's tags are not invalidated yet.
    """

    view: str
    plugin: str
    registered_at: dt.datetime
    refreshed_at: dt.datetime | None = None
    last_duration_ms: float | None = None
    change_marks: dict[str, int] = attrs.field(factory=dict)
    cron_fired_at: dt.datetime | None = None
    failures: int = 0
    last_failed_at: dt.datetime | None = None
    last_error: str | None = None
    tags_pending: bool = False

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> ViewState:
        """From a ``thorbis.mv_state`` row."""
        marks = json.loads(r["change_marks"]) if r["change_marks"] else {}
        return cls(r["view"], r["plugin"], r["registered_at"], r["refreshed_at"],
                   r["last_duration_ms"], {str(k): int(v) for k, v in marks.items()},
                   r["cron_fired_at"], r["failures"], r["last_failed_at"], r["last_error"],
                   r["tags_pending"])


async def load_state(conn: asyncpg.Connection, view: str) -> ViewState | None:
    """The view's scheduler state, or None when it was never registered or refreshed."""
    record = await conn.fetchrow(_SELECT_STATE, view)
    return None if record is None else ViewState.from_record(record)


async def load_states(conn: asyncpg.Connection,
                      views: Sequence[str]) -> tuple[dt.datetime, dict[str, ViewState]]:
    """The database clock and the states of ``views`` that have one, in one query."""
    rows = await conn.fetch(
        f"SELECT now() AS now, s.* FROM (SELECT now()) AS clock "  # noqa: S608 -- constants
        f"LEFT JOIN (SELECT {_STATE_COLUMNS} FROM thorbis.mv_state "
        "WHERE view = ANY($1::text[])) AS s ON true", list(views))
    states = {r["view"]: ViewState.from_record(r) for r in rows if r["view"] is not None}
    return rows[0]["now"], states


def change_sources(view: MaterializedView) -> list[str]:
    """The names whose changes count toward ``view``'s smart refresh: its sources and
    the views it depends on (each of their refreshes counts one)."""
    return sorted({*view.sources, *view.depends_on})


async def _marks(conn: asyncpg.Connection, view: MaterializedView) -> dict[str, int]:
    rows = await conn.fetch(_MARKS, change_sources(view))
    return {r["table_name"]: int(r["changes"]) for r in rows}


async def pending_changes(conn: asyncpg.Connection, view: MaterializedView,
                          state: ViewState | None) -> int:
    """Changes of ``view``'s sources since its last refresh (applied by a worker or still
    in the outbox). A source without a mark counts from zero: never fewer than true."""
    marks = state.change_marks if state is not None else {}
    now = await _marks(conn, view)
    return sum(max(0, count - marks.get(name, 0)) for name, count in now.items())


async def history_exists(conn: asyncpg.Connection) -> bool:
    """Whether the history and state tables exist (``thorbis-cache db migrate`` creates
    them)."""
    return bool(await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass('thorbis.mv_state') IS NOT NULL",
        HISTORY_TABLE))


#: Seconds the client waits past a refresh's ``statement_timeout`` before taking the
#: server for lost (a hung server enforces no timeout of its own).
REFRESH_MARGIN = 60.0

#: The client's bound on a refresh without a ``statement_timeout``: a week. Explicit,
#: since None would mean the connection's ``command_timeout`` (the scheduler's is
#: meant for its quick statements).
UNBOUNDED_REFRESH = 7 * 86400.0


def _client_bound(statement_timeout_s: float | None) -> float:
    return UNBOUNDED_REFRESH if statement_timeout_s is None else \
        statement_timeout_s + REFRESH_MARGIN


async def refresh_view(
    conn: asyncpg.Connection,
    plugin_name: str,
    view: MaterializedView,
    *,
    trigger: Trigger = "manual",
    statement_timeout_s: float | None = None,
    recheck: Callable[[ViewState | None], bool] | None = None,
    cron_fire: dt.datetime | None = None,
) -> RefreshOutcome:
    """Refresh ``view`` unless another session is refreshing it; record the attempt.

    :param conn: an open connection, not inside a transaction.
    :param plugin_name: the plugin that declares the view (recorded, named in errors).
    :param view: the view.
    :param trigger: why it is refreshed (recorded).
    :param statement_timeout_s: bound on the refresh statement (``SET LOCAL
        statement_timeout``); None keeps the session's setting.
    :param recheck: called with the view's state read under the lock; False makes the
        attempt a ``not_due`` no-op (another worker just refreshed it).
    :param cron_fire: the cron fire this refresh handles (stored in the state).
    :returns: the outcome; a PostgreSQL failure of the refresh is returned as
        ``outcome="failed"``, not raised.
    :raises asyncpg.PostgresError: the history row or the audit record could not be
        written (e.g. the core schema is not migrated).
    """
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    outcome: Outcome = "ok"
    rows: int | None = None
    concurrently = False
    error: str | None = None
    try:
        async with conn.transaction():
            if not await conn.fetchval(_TRY_LOCK, view.name):
                outcome = "skipped_locked"
            elif recheck is not None and not recheck(await load_state(conn, view.name)):
                outcome = "not_due"
            else:
                # Notice a dead client mid-refresh: abort, and the lock goes with it.
                await conn.execute("SET LOCAL client_connection_check_interval = 1000")
                if statement_timeout_s is not None:
                    # SET cannot take a parameter; an int of milliseconds is safe to inline.
                    await conn.execute(
                        f"SET LOCAL statement_timeout = {max(1, round(statement_timeout_s * 1000))}"
                    )
                marks = await _marks(conn, view)
                info = await conn.fetchrow(_CATALOG, view.name)
                concurrently = bool(
                    info is not None and info["populated"] and info["unique_index"]
                    and view.refresh.concurrently
                )
                mode = "CONCURRENTLY " if concurrently else ""
                quoted = quote_qualified(view.name)
                # The client's own bound too: a server that hung enforces nothing.
                bound = _client_bound(statement_timeout_s)
                await conn.execute(f"REFRESH MATERIALIZED VIEW {mode}{quoted}", timeout=bound)
                rows = int(await conn.fetchval(
                    f"SELECT count(*) FROM {quoted}",  # noqa: S608 -- quoted by _quoted
                    timeout=bound))
                await conn.execute(
                    _STATE_OK, view.name, plugin_name, (time.perf_counter() - clock) * 1000.0,
                    json.dumps(marks), cron_fire, bool(view.tags),
                )
                await conn.execute(_COUNT_SELF, view.name)
    except asyncpg.PostgresError as exc:
        outcome, rows = "failed", None
        error = (f"refresh of materialized view {view.name!r} (plugin {plugin_name!r}) "
                 f"failed: PostgreSQL {exc.sqlstate}: {exc}")
        log.warning("%s", error)
    finished = dt.datetime.now(dt.UTC)
    duration_ms = (time.perf_counter() - clock) * 1000.0
    result = RefreshOutcome(
        view.name, plugin_name, trigger, outcome, started, finished, duration_ms, rows,
        concurrently, error, view.tags if outcome == "ok" else (),
    )
    if outcome != "not_due":
        await _record(conn, result)
    return result


async def _record(conn: asyncpg.Connection, r: RefreshOutcome) -> None:
    async with conn.transaction():
        if r.outcome == "failed":
            await conn.execute(_STATE_FAILED, r.view, r.plugin, r.error)
        await conn.execute(
            _INSERT_HISTORY, r.view, r.plugin, r.trigger, r.started_at, r.finished_at,
            r.duration_ms, r.rows, r.concurrently, r.outcome, r.error,
        )
        # Facts only: no row contents. The audit lock is held to commit, so this is last.
        await audit.append(conn, "mv_refresh", None, {
            "view": r.view, "plugin": r.plugin, "trigger": r.trigger, "outcome": r.outcome,
            "rows": r.rows, "concurrently": r.concurrently,
            "duration_ms": round(r.duration_ms, 3), "error": r.error,
        })


async def refresh_and_invalidate(
    app_or_cache: CacheApp | Cache,
    conn: asyncpg.Connection,
    plugin_name: str,
    view: MaterializedView,
    *,
    trigger: Trigger = "manual",
    statement_timeout_s: float | None = None,
    recheck: Callable[[ViewState | None], bool] | None = None,
    cron_fire: dt.datetime | None = None,
) -> RefreshOutcome:
    """:func:`refresh_view`, then, after an ok refresh, invalidate the view's tags for
    every tenant present in it (``SELECT DISTINCT tenant_id``).

    A view without a ``tenant_id`` column has no tenants to name: its tags are left
    alone, with a log line.

    :param app_or_cache: a started :class:`~thorbis_cache.app.CacheApp` or its cache.
    :param conn: an open connection, not inside a transaction.
    :param plugin_name: the plugin that declares the view.
    :param view: the view.
    :param trigger: why it is refreshed.
    :param statement_timeout_s: bound on the refresh statement.
    :param recheck: see :func:`refresh_view`.
    :param cron_fire: see :func:`refresh_view`.
    :returns: the outcome, with ``tenants`` set to those invalidated -- or, when Redis
        could not be reached after the refresh committed, ``tags_pending`` (the refresh
        is done; its invalidation is left to a later tick, never lost).
    :raises CacheBackendError: Redis answered with an error while invalidating.
    """
    result = await refresh_view(conn, plugin_name, view, trigger=trigger,
                                statement_timeout_s=statement_timeout_s, recheck=recheck,
                                cron_fire=cron_fire)
    if not result.ok or not result.tags:
        return result
    from thorbis_cache.app import CacheApp  # here: the app imports the plugin layer

    cache = app_or_cache.cache if isinstance(app_or_cache, CacheApp) else app_or_cache
    try:
        tenants = await invalidate_pending_tags(cache, conn, plugin_name, view)
    except RedisUnavailableError as exc:
        log.warning("view %r (plugin %r) refreshed; its tags stay pending until Redis is "
                    "back: %s", view.name, plugin_name, exc)
        return attrs.evolve(result, tags_pending=True)
    return attrs.evolve(result, tenants=tuple(tenants or ()))


async def invalidate_pending_tags(cache: Any, conn: asyncpg.Connection, plugin_name: str,
                                  view: MaterializedView) -> list[str] | None:
    """Invalidate ``view``'s tags for every tenant in it if its last refresh left them
    pending (``mv_state.tags_pending``), then clear the flag -- unless the view was
    refreshed again meanwhile (that refresh's tags stay pending).

    A view without a ``tenant_id`` column has no tenants to name: its tags are left
    alone, with a log line, and the flag is cleared.

    :param cache: the :class:`~thorbis_cache.cache.core.Cache` holding the tagged entries.
    :returns: the tenants invalidated, or None when nothing was pending.
    :raises CacheBackendError: Redis failed (the flag stays set for a later call).
    """
    state = await load_state(conn, view.name)
    if state is None or not state.tags_pending:
        return None
    tenants: list[str] = []
    info = await conn.fetchrow(_CATALOG, view.name)
    if info is None or not info["has_tenant"]:
        log.info("materialized view %r (plugin %r) has no tenant_id column: tags %s not "
                 "invalidated", view.name, plugin_name, ", ".join(view.tags))
    else:
        tenants = [r["tenant_id"] for r in await conn.fetch(
            f"SELECT DISTINCT tenant_id::text AS tenant_id FROM {quote_qualified(view.name)} "  # noqa: S608
            "WHERE tenant_id IS NOT NULL ORDER BY 1"  # (identifiers quoted by _quoted)
        )]
        for tenant in tenants:
            await cache.invalidate_tags(tenant, view.tags)
    await conn.execute(
        "UPDATE thorbis.mv_state SET tags_pending = false "
        "WHERE view = $1 AND refreshed_at IS NOT DISTINCT FROM $2", view.name, state.refreshed_at)
    return tenants
