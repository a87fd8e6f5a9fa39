"""The materialized-view scheduler: cron and smart refreshes, run inside the worker.

``thorbis-cache worker`` runs one :class:`MvScheduler` next to the outbox worker (pg_cron
is not needed: it is missing from many managed PostgreSQL services). Every ``tick_s``
seconds it reads each view's ``thorbis.mv_state`` row and the database clock, and decides
(:func:`decide`, a pure function) whether the view is due:

* **cron**: the view's next cron fire after the last one handled is not in the future.
  Missed fires (the worker was down) are coalesced into one refresh. Fires are computed
  with croniter in the policy's time zone; on the day clocks fall back a fixed-time job
  (an hour field that is not every hour) runs once, not twice (:func:`cron_fires`).
* **smart**: the data is at least ``max_staleness`` old and at least ``min_changes``
  changes of its sources were counted since its last refresh
  (:func:`~thorbis_cache.mv.refresh.pending_changes`, from the outbox).
* **backoff**: after ``n`` consecutive failures the view is not retried before
  ``min(backoff_base_s * 2**(n-1), backoff_cap_s)`` seconds after the last one.

Due views are refreshed one after the other in dependency order
(:func:`refresh_order`), each through
:func:`~thorbis_cache.mv.refresh.refresh_view`: its advisory lock makes one
refresher per view across every worker, and the ``recheck`` it is given compares the
state read under the lock with the state the decision was made from, so a worker that
decided just before another finished does nothing. A failing view is recorded (history,
audit, ``failures``) and does not stop the others.

After an ok refresh the view's tags are invalidated for every tenant in it. The state
row's ``tags_pending`` flag is set in the refresh's own transaction and cleared once the
tags are gone, so tags whose invalidation failed (Redis down, the worker killed) are
invalidated at a later tick: a refreshed view never leaves stale cached rows behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import graphlib
import logging
import math
import zoneinfo
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
import attrs
from croniter import croniter

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.mv.refresh import (
    RefreshOutcome,
    Trigger,
    ViewState,
    invalidate_pending_tags,
    load_states,
    pending_changes,
    refresh_view,
)
from thorbis_cache.postgres import connection

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.plugins.declarations import MaterializedView

__all__ = [
    "Decision",
    "Health",
    "MvScheduler",
    "ScheduledView",
    "ViewReport",
    "backoff_s",
    "cron_fires",
    "decide",
    "latest_cron_fire",
    "next_cron_fire",
    "refresh_order",
    "report",
]

log = logging.getLogger(__name__)

Health = Literal["ok", "stale", "failing", "never"]

_REGISTER = """
INSERT INTO thorbis.mv_state (view, plugin, cron_fired_at)
SELECT v, p, now() FROM unnest($1::text[], $2::text[]) AS u(v, p)
ON CONFLICT (view) DO NOTHING
"""


@attrs.frozen(slots=True)
class ScheduledView:
    """A materialized view and the plugin that declares it."""

    plugin: str
    view: MaterializedView

    @property
    def name(self) -> str:
        """The qualified view name."""
        return self.view.name


# --------------------------------------------------------------------------- cron


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ConfigurationError(f"time zone {name!r} is not an IANA time zone") from None


def _repeated_wall_time(local: dt.datetime) -> bool:
    """``local`` is the second occurrence of a wall time (the hour repeated when clocks
    fall back)."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _every_hour(cron: str) -> bool:
    """The hour field names every hour (an interval job, not a fixed-time one)."""
    return croniter(cron).expanded[1] in (["*"], list(range(24)))


def cron_fires(cron: str, timezone: str, after: dt.datetime) -> Iterator[dt.datetime]:
    """The fire times of ``cron`` read in ``timezone``, strictly after ``after``, as
    UTC datetimes, in order, without end.

    DST, as Vixie cron does it: a wall time skipped when clocks spring forward fires at
    the first valid minute after the gap (croniter's rule); when clocks fall back, a job
    whose hour field is not "every hour" fires in the first pass of the repeated hour
    only, while an every-hour job keeps its real-time rhythm through both passes.

    :param cron: a 5-field cron expression.
    :param timezone: an IANA time zone name.
    :param after: an aware datetime.
    """
    zone = _zone(timezone)
    every_hour = _every_hour(cron)
    fires = croniter(cron, after.astimezone(zone))
    while True:
        local: dt.datetime = fires.get_next(dt.datetime)
        if not every_hour and _repeated_wall_time(local):
            continue
        yield local.astimezone(dt.UTC)


def next_cron_fire(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first fire of ``cron`` strictly after ``after`` (UTC)."""
    return next(cron_fires(cron, timezone, after))


def latest_cron_fire(cron: str, timezone: str, after: dt.datetime,
                     at: dt.datetime) -> dt.datetime | None:
    """The newest fire in ``(after, at]``, or None: what a late refresh handles (missed
    fires are coalesced into one).

    Walks forward from ``after`` when that is at most a day back; otherwise steps back
    from ``at`` with croniter (bounded work after a long outage).
    """
    if at - after > dt.timedelta(days=1):
        zone = _zone(timezone)
        every_hour = _every_hour(cron)
        back = croniter(cron, (at + dt.timedelta(seconds=1)).astimezone(zone))
        prev: dt.datetime = back.get_prev(dt.datetime)
        while not every_hour and _repeated_wall_time(prev):  # as cron_fires skips it
            prev = back.get_prev(dt.datetime)
        return prev.astimezone(dt.UTC) if prev > after else None
    latest = None
    for fire in cron_fires(cron, timezone, after):
        if fire > at:
            return latest
        latest = fire
    raise AssertionError("unreachable: cron_fires is endless")  # pragma: no cover


# --------------------------------------------------------------------------- decisions


def backoff_s(failures: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (0 for none)."""
    if failures <= 0:
        return 0.0
    return min(base_s * 2.0 ** min(failures - 1, 60), cap_s)


@attrs.frozen(slots=True)
class Decision:
    """Why a view is refreshed now.

    :ivar trigger: ``"cron"`` or ``"smart"``.
    :ivar cron_fire: the newest cron fire the refresh handles (cron and smart alike,
        when one is due).
    :ivar reason: a sentence for the log.
    """

    trigger: Trigger
    cron_fire: dt.datetime | None
    reason: str


def decide(view: MaterializedView, state: ViewState, pending: int, now: dt.datetime, *,
           backoff_base_s: float, backoff_cap_s: float) -> Decision | None:
    """Whether ``view`` is due at ``now`` given its state and pending changes.

    :returns: the decision, or None when it is not due (or backing off).
    """
    policy = view.refresh
    if state.failures and state.last_failed_at is not None:
        wait = backoff_s(state.failures, backoff_base_s, backoff_cap_s)
        if now < state.last_failed_at + dt.timedelta(seconds=wait):
            return None
    fire = None
    if policy.cron is not None:
        base = state.cron_fired_at or state.registered_at
        fire = latest_cron_fire(policy.cron, policy.timezone, base, now)
        if fire is not None:
            return Decision("cron", fire,
                            f"cron {policy.cron!r} fired at {fire:%Y-%m-%d %H:%M} UTC")
    if policy.smart:
        age = math.inf if state.refreshed_at is None else (now - state.refreshed_at).total_seconds()
        need = policy.min_changes or 1
        if age >= (policy.max_staleness or 0.0) and pending >= need:
            return Decision("smart", None, f"{pending} change(s) >= {need}, age "
                            f"{'never refreshed' if math.isinf(age) else f'{age:.0f}s'}")
    return None


def refresh_order(views: Sequence[ScheduledView]) -> list[ScheduledView]:
    """``views`` with every view after the views it depends on (declaration order
    otherwise). Dependencies outside ``views`` are ignored.

    :raises ConfigurationError: the dependencies form a cycle.
    """
    by_name = {v.name: v for v in views}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for v in views:
        sorter.add(v.name, *(d for d in v.view.depends_on if d in by_name))
    position = {v.name: i for i, v in enumerate(views)}
    order: list[ScheduledView] = []
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ConfigurationError("materialized views depend on each other in a cycle: "
                                 + " -> ".join(exc.args[1])) from None
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(by_name[n] for n in ready)
        sorter.done(*ready)
    return order


# --------------------------------------------------------------------------- reports


@attrs.frozen(slots=True)
class ViewReport:
    """One line of ``thorbis-cache mv status``.

    :ivar view: the qualified view name.
    :ivar plugin: the plugin that declares it.
    :ivar health: ``ok``; ``stale`` (older than twice its expected interval);
        ``failing`` (its last refresh failed); ``never`` (never refreshed by thorbis).
    :ivar age_s: seconds since its data's "as of", or None.
    :ivar last_duration_ms: the last ok refresh's duration.
    :ivar next_run: the next cron fire, or the end of the backoff when failing.
    :ivar pending: changes counted since the last refresh.
    :ivar min_changes: the smart policy's threshold (None: no smart refresh).
    :ivar failures: consecutive failures.
    :ivar last_error: the last failure's message.
    """

    view: str
    plugin: str
    health: Health
    age_s: float | None
    last_duration_ms: float | None
    next_run: dt.datetime | None
    pending: int
    min_changes: int | None
    failures: int
    last_error: str | None


def _expected_interval_s(view: MaterializedView, now: dt.datetime) -> float | None:
    policy = view.refresh
    spans = []
    if policy.cron is not None:
        fires = cron_fires(policy.cron, policy.timezone, now)
        first = next(fires)
        spans.append((next(fires) - first).total_seconds())
    if policy.max_staleness is not None:
        spans.append(policy.max_staleness)
    return min(spans) if spans else None


async def report(conn: asyncpg.Connection, views: Sequence[ScheduledView], *,
                 backoff_base_s: float = 30.0, backoff_cap_s: float = 3600.0,
                 ) -> list[ViewReport]:
    """The freshness report of ``views`` (by the database clock).

    :param conn: an open connection to a migrated database.
    :param views: the views of the loaded plugins.
    """
    now, states = await load_states(conn, [sv.name for sv in views])
    lines = []
    for sv in views:
        view, policy = sv.view, sv.view.refresh
        state = states.get(sv.name)
        pending = await pending_changes(conn, view, state)
        age = None
        if state is not None and state.refreshed_at is not None:
            age = (now - state.refreshed_at).total_seconds()
        next_run = None
        if policy.cron is not None:
            base = now if state is None else (state.cron_fired_at or state.registered_at)
            next_run = next_cron_fire(policy.cron, policy.timezone, base)
        failures = 0 if state is None else state.failures
        health: Health
        if failures and state is not None and state.last_failed_at is not None:
            health = "failing"
            retry = state.last_failed_at + dt.timedelta(
                seconds=backoff_s(failures, backoff_base_s, backoff_cap_s))
            next_run = retry if next_run is None else max(next_run, retry)
        elif age is None:
            health = "never"
        else:
            interval = _expected_interval_s(view, now)
            health = "stale" if interval is not None and age > 2 * interval else "ok"
        lines.append(ViewReport(sv.name, sv.plugin, health, age,
                                None if state is None else state.last_duration_ms, next_run,
                                pending, policy.min_changes if policy.smart else None,
                                failures, None if state is None else state.last_error))
    return lines


# --------------------------------------------------------------------------- scheduler


class MvScheduler:
    """Refreshes the plugins' views when due; run one per worker, as many workers as
    you like.

    :param dsn: the PostgreSQL holding the views and ``thorbis.mv_state``.
    :param views: the views to schedule (:meth:`from_app` takes every loaded plugin's).
    :param cache: where the views' tags are invalidated after a refresh (None: not
        invalidated, and ``tags_pending`` stays set for a worker that has a cache).
    :param tick_s: seconds between two looks at the schedule.
    :param statement_timeout_s: default bound on one refresh (a policy's
        ``statement_timeout`` wins).
    :param backoff_base_s: the wait after a first failure; doubles per failure.
    :param backoff_cap_s: the longest wait between retries.
    """

    def __init__(self, dsn: str, views: Sequence[ScheduledView], *, cache: Cache | None,
                 tick_s: float = 15.0, statement_timeout_s: float | None = 1800.0,
                 backoff_base_s: float = 30.0, backoff_cap_s: float = 3600.0) -> None:
        if tick_s <= 0 or backoff_base_s <= 0 or backoff_cap_s <= 0:
            raise ConfigurationError("tick_s, backoff_base_s and backoff_cap_s must be > 0")
        self.dsn = dsn
        self.views = refresh_order(views)
        self.cache = cache
        self.tick_s = tick_s
        self.statement_timeout_s = statement_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.refreshes: dict[str, int] = {}
        self._conn: Any = None
        self._registered = False
        self._stopping = False
        self._wake = asyncio.Event()

    @classmethod
    def from_app(cls, app: CacheApp, dsn: str, **options: Any) -> MvScheduler:
        """A scheduler of every view of a started app's plugins, invalidating through
        its cache."""
        views = [ScheduledView(p.name, v) for p in app.plugins.plugins.values() for v in p.views]
        return cls(dsn, views, cache=app.cache, **options)

    async def __aenter__(self) -> MvScheduler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the scheduler's connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connection.connect(
                self.dsn, writes="refreshing materialized views",
                command_timeout=connection.QUERY_TIMEOUT)
            self._registered = False
        if not self._registered:
            # Registration starts each view's cron clock (no refresh for fires before
            # the first scheduler saw it) and is a no-op for views already known.
            await self._conn.execute(_REGISTER, [v.name for v in self.views],
                                     [v.plugin for v in self.views])
            self._registered = True
        return self._conn

    async def tick(self) -> list[RefreshOutcome]:
        """Refresh every due view once, in dependency order; then invalidate tags left
        pending by an earlier refresh.

        :returns: the outcomes of the attempts made (``not_due`` included).
        :raises asyncpg.PostgresError: the state could not be read or written.
        """
        conn = await self._connection()
        # One clock for the whole tick: a fire that falls due during a long refresh is
        # handled by the next tick.
        now, states = await load_states(conn, [sv.name for sv in self.views])
        results = []
        for sv in self.views:
            state = states.get(sv.name)
            if state is None:  # pragma: no cover -- registered above
                continue
            pending = await pending_changes(conn, sv.view, state) if sv.view.refresh.smart else 0
            decision = decide(sv.view, state, pending, now, backoff_base_s=self.backoff_base_s,
                              backoff_cap_s=self.backoff_cap_s)
            if decision is None:
                continue
            log.info("refreshing %s (plugin %s): %s", sv.name, sv.plugin, decision.reason)
            seen = (state.refreshed_at, state.last_failed_at)

            def unchanged(now_state: ViewState | None, seen: object = seen) -> bool:
                return now_state is not None and (
                    now_state.refreshed_at, now_state.last_failed_at) == seen

            timeout = sv.view.refresh.statement_timeout or self.statement_timeout_s
            outcome = await refresh_view(conn, sv.plugin, sv.view, trigger=decision.trigger,
                                         statement_timeout_s=timeout, recheck=unchanged,
                                         cron_fire=decision.cron_fire)
            if outcome.ok:
                self.refreshes[sv.name] = self.refreshes.get(sv.name, 0) + 1
            results.append(outcome)
        if self.cache is not None:
            await self._invalidate_pending_tags(conn, results, states)
        return results

    async def _invalidate_pending_tags(self, conn: Any, refreshed: Sequence[RefreshOutcome],
                                       states: dict[str, ViewState]) -> None:
        """Invalidate the tags of views refreshed now or left pending by an earlier tick."""
        assert self.cache is not None
        due = {o.view for o in refreshed if o.ok}
        due |= {name for name, state in states.items() if state.tags_pending}
        for sv in self.views:
            if sv.name not in due:
                continue
            try:
                await invalidate_pending_tags(self.cache, conn, sv.plugin, sv.view)
            except asyncpg.PostgresError:
                raise
            except Exception as exc:  # Redis: the flag stays set, the next tick retries
                log.warning("tags of %s (plugin %s) not invalidated yet: %s", sv.name,
                            sv.plugin, exc)

    def stop(self) -> None:
        """Make :meth:`run` return after its current tick."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Tick every ``tick_s`` until :meth:`stop`. Database and Redis failures are
        logged and retried at the next tick (after a reconnect)."""
        self._stopping = False
        while not self._stopping:
            try:
                await self.tick()
            except Exception:  # a tick must never end the worker: log, reconnect, retry
                log.exception("materialized-view scheduler: tick failed; retrying in %.1fs",
                              self.tick_s)
                conn, self._conn = self._conn, None
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
