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

:func:`refresh_and_invalidate` then drops the view's cache tags for every tenant in it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Literal

import asyncpg
import attrs

from thorbis_cache.postgres import audit
from thorbis_cache.postgres.catalog import USABLE_UNIQUE_INDEX, quote_qualified

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache import Cache
    from thorbis_cache.declarations import MaterializedView

__all__ = [
    "HISTORY_TABLE",
    "Outcome",
    "RefreshOutcome",
    "Trigger",
    "ViewStatus",
    "history_exists",
    "refresh_and_invalidate",
    "refresh_view",
    "view_status",
]

log = logging.getLogger(__name__)

#: Where every refresh attempt is recorded (``sql/core/003_mv_refresh.sql``).
HISTORY_TABLE = "thorbis.mv_refresh_history"

Trigger = Literal["cron", "smart", "manual"]
Outcome = Literal["ok", "failed", "skipped_locked"]

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

    @property
    def ok(self) -> bool:
        """The view was refreshed."""
        return self.outcome == "ok"


@attrs.frozen(slots=True)
class ViewStatus:
    """A view's newest history row (``thorbis-cache mv status``).

    :ivar view: the qualified view name.
    :ivar plugin: the plugin that declares it.
    :ivar trigger: what started the refresh.
    :ivar outcome: how it ended.
    :ivar finished_at: when it ended.
    :ivar age_s: seconds since then (by the database clock).
    :ivar duration_ms: how long it took.
    :ivar rows: rows after the refresh, if ok.
    :ivar error: the failure's message, if any.
    """

    view: str
    plugin: str
    trigger: str
    outcome: str
    finished_at: dt.datetime
    age_s: float
    duration_ms: float
    rows: int | None
    error: str | None


async def history_exists(conn: asyncpg.Connection) -> bool:
    """Whether the history table exists (``thorbis-cache db migrate`` creates it)."""
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", HISTORY_TABLE))


async def refresh_view(
    conn: asyncpg.Connection,
    plugin_name: str,
    view: MaterializedView,
    *,
    trigger: Trigger = "manual",
    statement_timeout_s: float | None = None,
) -> RefreshOutcome:
    """Refresh ``view`` unless another session is refreshing it; record the attempt.

    :param conn: an open connection, not inside a transaction.
    :param plugin_name: the plugin that declares the view (recorded, named in errors).
    :param view: the view.
    :param trigger: why it is refreshed (recorded).
    :param statement_timeout_s: bound on the refresh statement (``SET LOCAL
        statement_timeout``); None keeps the session's setting.
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
            else:
                if statement_timeout_s is not None:
                    # SET cannot take a parameter; an int of milliseconds is safe to inline.
                    await conn.execute(
                        f"SET LOCAL statement_timeout = {max(1, round(statement_timeout_s * 1000))}"
                    )
                info = await conn.fetchrow(_CATALOG, view.name)
                concurrently = bool(
                    info is not None and info["populated"] and info["unique_index"]
                    and view.refresh.concurrently
                )
                mode = "CONCURRENTLY " if concurrently else ""
                quoted = quote_qualified(view.name)
                await conn.execute(f"REFRESH MATERIALIZED VIEW {mode}{quoted}")
                rows = int(await conn.fetchval(
                    f"SELECT count(*) FROM {quoted}"  # noqa: S608 -- quoted by _quoted
                ))
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
    await _record(conn, result)
    return result


async def _record(conn: asyncpg.Connection, r: RefreshOutcome) -> None:
    async with conn.transaction():
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
    :returns: the outcome, with ``tenants`` set to those invalidated.
    :raises CacheBackendError: Redis failed while invalidating (the refresh is recorded).
    """
    result = await refresh_view(conn, plugin_name, view, trigger=trigger,
                                statement_timeout_s=statement_timeout_s)
    if not result.ok or not result.tags:
        return result
    info = await conn.fetchrow(_CATALOG, view.name)
    if info is None or not info["has_tenant"]:
        log.info("materialized view %r (plugin %r) has no tenant_id column: tags %s not "
                 "invalidated", view.name, plugin_name, ", ".join(result.tags))
        return result
    from thorbis_cache.app import CacheApp  # here: the app imports the plugin layer

    cache = app_or_cache.cache if isinstance(app_or_cache, CacheApp) else app_or_cache
    tenants = [r["tenant_id"] for r in await conn.fetch(
        f"SELECT DISTINCT tenant_id::text AS tenant_id FROM {quote_qualified(view.name)} "  # noqa: S608
        "WHERE tenant_id IS NOT NULL ORDER BY 1"  # (identifiers quoted by _quoted)
    )]
    for tenant in tenants:
        await cache.invalidate_tags(tenant, result.tags)
    return attrs.evolve(result, tenants=tuple(tenants))


async def view_status(conn: asyncpg.Connection) -> list[ViewStatus]:
    """The newest history row of every view that was ever refreshed, by view name.

    :param conn: an open connection.
    """
    rows = await conn.fetch(
        "SELECT DISTINCT ON (view) view, plugin, trigger, outcome, finished_at, "
        "extract(epoch FROM now() - finished_at)::float8 AS age_s, duration_ms, rows, error "
        "FROM thorbis.mv_refresh_history ORDER BY view, started_at DESC, id DESC"
    )
    return [ViewStatus(r["view"], r["plugin"], r["trigger"], r["outcome"], r["finished_at"],
                       r["age_s"], r["duration_ms"], r["rows"], r["error"]) for r in rows]
