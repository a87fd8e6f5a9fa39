"""The materialized-view scheduler with real PostgreSQL and Redis, and its pure parts.

Cron fire times across DST (croniter in the policy's zone, a fixed-time job once on the
fall-back day), decisions (cron, smart, backoff), dependency order and the checks at
plugin load; then against real servers: smart refresh fires after M changes counted
from the outbox and not before (each change counted exactly once), readers of a view
being refreshed concurrently are never blocked (and are, under a plain refresh), two
schedulers refresh a due view once, a scheduler killed with SIGKILL mid-refresh leaves
no lock behind and another takes over at its next tick, a broken view is reported with
the view, plugin and PostgreSQL's error, backs off and does not stop the others, and
tags left pending while Redis was down are invalidated once it is back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import signal
import sys
import textwrap

import asyncpg
import attrs
import pytest
from core_testing import HS, HS_TENANTS, HsEnv, run_cli
from hypothesis import given
from hypothesis import strategies as st
from thorbis_home_services import rows
from thorbis_home_services.schemas import CUSTOMER_SUMMARY
from thorbis_home_services.views import ALL_VIEWS, CUSTOMER_SUMMARY_VIEW

from thorbis_cache import PluginInfo, hookimpl
from thorbis_cache.errors import ConfigurationError, PluginLoadError
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.mv.refresh import (
    ViewState,
    load_state,
    pending_changes,
    refresh_and_invalidate,
    refresh_view,
)
from thorbis_cache.mv.scheduler import (
    MvScheduler,
    ScheduledView,
    backoff_s,
    cron_fires,
    decide,
    latest_cron_fire,
    refresh_order,
    report,
)
from thorbis_cache.plugins.declarations import MaterializedView, RefreshPolicy
from thorbis_cache.plugins.hookspecs import HOOK_API_VERSION
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.testing.servers import RedisServer

TENANTS = HS_TENANTS
UTC = dt.UTC
NY = "America/New_York"

# --------------------------------------------------------------------------- cron + DST


def _local(fires: list[dt.datetime], zone: str = NY) -> list[str]:
    from zoneinfo import ZoneInfo

    return [f.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for f in fires]


def _take(cron: str, zone: str, after: dt.datetime, n: int) -> list[dt.datetime]:
    fires = cron_fires(cron, zone, after)
    return [next(fires) for _ in range(n)]


def test_daily_job_runs_once_on_the_day_clocks_fall_back() -> None:
    # 2026-11-01 01:30 happens twice in New York; croniter alone fires at both.
    fires = _take("30 1 * * *", NY, dt.datetime(2026, 10, 30, 12, tzinfo=UTC), 4)
    assert _local(fires) == ["10-31 01:30-0400", "11-01 01:30-0400", "11-02 01:30-0500",
                             "11-03 01:30-0500"]


def test_daily_job_in_the_skipped_hour_runs_once_when_clocks_spring_forward() -> None:
    # 2026-03-08 02:30 does not exist in New York: the job runs at the first valid minute.
    fires = _take("30 2 * * *", NY, dt.datetime(2026, 3, 6, 12, tzinfo=UTC), 4)
    assert _local(fires) == ["03-07 02:30-0500", "03-08 03:00-0400", "03-09 02:30-0400",
                             "03-10 02:30-0400"]


def test_every_quarter_hour_keeps_its_real_time_rhythm_through_both_passes() -> None:
    fires = _take("*/15 * * * *", NY, dt.datetime(2026, 11, 1, 4, 50, tzinfo=UTC), 10)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
    assert gaps == {900.0}  # 01:00..01:45 EDT, then 01:00..01:45 EST, then 02:00
    assert _local(fires)[:6] == ["11-01 01:00-0400", "11-01 01:15-0400", "11-01 01:30-0400",
                                 "11-01 01:45-0400", "11-01 01:00-0500", "11-01 01:15-0500"]


def test_seed_schedules_in_utc() -> None:
    start = dt.datetime(2026, 11, 26, 0, 7, tzinfo=UTC)
    summary, financial, techs, areas = (v.refresh.cron for v in ALL_VIEWS)
    assert _take(str(summary), "UTC", start, 2) == [start.replace(minute=15),
                                                    start.replace(minute=30)]
    assert _take(str(financial), "UTC", start, 1) == [start.replace(hour=1, minute=0)]
    assert _take(str(techs), "UTC", start, 2) == [start.replace(hour=4, minute=0),
                                                  start.replace(hour=8, minute=0)]
    assert _take(str(areas), "UTC", start, 1) == [start.replace(hour=2, minute=0)]


@given(st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2030, 1, 1)),
       st.sampled_from(["0 1 * * *", "30 2 * * *", "*/15 * * * *", "0 */4 * * *"]),
       st.sampled_from([NY, "Europe/London", "Australia/Sydney", "UTC"]))
def test_fires_are_strictly_increasing_and_a_fixed_time_job_fires_once_a_day(
        start: dt.datetime, cron: str, zone: str) -> None:
    from zoneinfo import ZoneInfo

    after = start.replace(tzinfo=UTC)
    fires = _take(cron, zone, after, 30)
    assert fires[0] > after
    assert all(a < b for a, b in itertools.pairwise(fires))
    if cron.startswith(("0 1 ", "30 2 ")):
        days = [f.astimezone(ZoneInfo(zone)).date() for f in fires]
        assert len(days) == len(set(days))


def test_latest_fire_coalesces_missed_fires_also_after_a_long_outage() -> None:
    base = dt.datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert latest_cron_fire("*/15 * * * *", "UTC", base, base + dt.timedelta(minutes=14)) is None
    assert latest_cron_fire("*/15 * * * *", "UTC", base,
                            base + dt.timedelta(minutes=50)) == base.replace(minute=45)
    # Days down: stepped back from now, not walked through every missed fire.
    assert latest_cron_fire("*/15 * * * *", "UTC", base - dt.timedelta(days=40),
                            base + dt.timedelta(minutes=7)) == base
    # ... and on the fall-back night a fixed-time job's repeated wall time is still not a
    # fire of its own: 01:30 EST (06:30 UTC) is the second pass, so the fire is 01:30 EDT.
    fall_back = dt.datetime(2026, 11, 1, 6, 45, tzinfo=UTC)
    assert latest_cron_fire("30 1 * * *", NY, fall_back - dt.timedelta(days=3),
                            fall_back) == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


# --------------------------------------------------------------------------- decisions

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _state(**changes: object) -> ViewState:
    return attrs.evolve(ViewState("x.v", "p", registered_at=T0), **changes)  # type: ignore[arg-type]


def _view(**policy: object) -> MaterializedView:
    return MaterializedView("x.v", "SELECT 1", refresh=RefreshPolicy(**policy))  # type: ignore[arg-type]


def test_decide_cron_smart_and_backoff() -> None:
    opts = {"backoff_base_s": 30.0, "backoff_cap_s": 3600.0}
    hourly = _view(cron="0 * * * *")
    assert decide(hourly, _state(), 0, T0 + dt.timedelta(minutes=59), **opts) is None
    d = decide(hourly, _state(), 0, T0 + dt.timedelta(hours=3, minutes=5), **opts)
    assert d is not None
    assert (d.trigger, d.cron_fire) == ("cron", T0 + dt.timedelta(hours=3))
    handled = _state(cron_fired_at=T0 + dt.timedelta(hours=3))
    assert decide(hourly, handled, 10**6, T0 + dt.timedelta(hours=3, minutes=5), **opts) is None

    smart = _view(max_staleness=900.0, min_changes=100)
    fresh = _state(refreshed_at=T0)
    assert decide(smart, fresh, 10**6, T0 + dt.timedelta(seconds=899), **opts) is None
    assert decide(smart, fresh, 99, T0 + dt.timedelta(hours=5), **opts) is None
    d = decide(smart, fresh, 100, T0 + dt.timedelta(seconds=900), **opts)
    assert d is not None
    assert d.trigger == "smart"
    # Never refreshed by us: any age qualifies, changes still have to be there.
    assert decide(smart, _state(), 0, T0, **opts) is None
    assert decide(smart, _state(), 100, T0, **opts) is not None

    failing = _state(failures=3, last_failed_at=T0)
    assert backoff_s(3, 30.0, 3600.0) == 120.0
    assert decide(hourly, failing, 0, T0 + dt.timedelta(seconds=119), **opts) is None
    assert decide(hourly, failing, 0, T0 + dt.timedelta(hours=1, seconds=1), **opts) is not None
    assert backoff_s(40, 30.0, 3600.0) == 3600.0
    assert backoff_s(0, 30.0, 3600.0) == 0.0


def test_refresh_order_puts_dependencies_first_and_refuses_cycles() -> None:
    def sv(name: str, *deps: str) -> ScheduledView:
        return ScheduledView("p", MaterializedView(name, "SELECT 1", depends_on=deps))

    views = [sv("x.c", "x.b"), sv("x.a"), sv("x.b", "x.a"), sv("x.d", "y.elsewhere")]
    assert [v.name for v in refresh_order(views)] == ["x.a", "x.d", "x.b", "x.c"]
    with pytest.raises(ConfigurationError, match="cycle"):
        refresh_order([sv("x.a", "x.b"), sv("x.b", "x.a")])


class _ViewsPlugin:
    """A minimal in-process plugin declaring only materialized views."""

    def __init__(self, namespace: str, views: list[MaterializedView]) -> None:
        self.namespace = namespace
        self.views = views

    @hookimpl
    def register_plugin_info(self) -> PluginInfo:
        return PluginInfo(self.namespace, HOOK_API_VERSION, title=self.namespace)

    @hookimpl
    def register_materialized_views(self) -> list[MaterializedView]:
        return self.views


async def test_plugin_load_checks_dependencies_time_zones_and_thresholds() -> None:
    manager = PluginManager()
    manager.add(_ViewsPlugin("va", [
        MaterializedView("va.one", "SELECT 1", depends_on=("vb.two", "va.ghost")),
        MaterializedView("va.tz", "SELECT 1",
                         refresh=RefreshPolicy(timezone="Mars/Olympus", min_changes=0)),
    ]), "views_a")
    manager.add(_ViewsPlugin("vb", [
        MaterializedView("vb.two", "SELECT 1", depends_on=("va.one",)),
    ]), "views_b")
    with pytest.raises(PluginLoadError) as caught:
        await manager.load(["views_a", "views_b"])
    text = str(caught.value)
    assert "views_a" in text
    assert "register_materialized_views" in text
    assert "'va.one' depends on va.ghost, which no loaded plugin declares" in text
    assert "cycle" in text
    assert "va.one" in text
    assert "vb.two" in text
    assert "timezone 'Mars/Olympus' is not an IANA time zone" in text
    assert "min_changes must be positive" in text


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def env(hs_env: HsEnv) -> HsEnv:
    """The shared home_services environment (``hs_env`` in ``conftest.py``)."""
    return hs_env


def _scheduler(env: HsEnv, *views: tuple[str, MaterializedView], **options: object) -> MvScheduler:
    return MvScheduler(env.dsn, [ScheduledView(p, v) for p, v in views], cache=env.app.cache,
                       **options)  # type: ignore[arg-type]


async def _touch_customers(conn: asyncpg.Connection, n: int) -> None:
    """``n`` committed UPDATEs of customer rows (one outbox row each)."""
    ids = await conn.fetch("SELECT tenant_id, id FROM hs.customers ORDER BY tenant_id, id "
                           "LIMIT $1", n)
    for r in ids:
        await conn.execute("UPDATE hs.customers SET phone = phone || '' , updated_at = now() "
                           "WHERE tenant_id = $1 AND id = $2", r["tenant_id"], r["id"])


async def test_smart_refresh_fires_after_m_changes_and_not_before(env: HsEnv) -> None:
    view = attrs.evolve(CUSTOMER_SUMMARY_VIEW, refresh=RefreshPolicy(min_changes=5))
    worker = OutboxWorker.from_app(env.app, env.dsn)
    async with _scheduler(env, (HS, view)) as scheduler:
        # The generated rows are changes nobody refreshed for: a first smart refresh.
        first = await scheduler.tick()
        assert [(o.outcome, o.trigger) for o in first] == [("ok", "smart")]
        assert await scheduler.tick() == []
        await _touch_customers(env.conn, 3)          # still in the outbox: counted there
        await worker.drain()                         # now counted in table_changes
        await _touch_customers(env.conn, 1)
        state = await load_state(env.conn, view.name)
        assert await pending_changes(env.conn, view, state) == 4
        assert await scheduler.tick() == []          # 4 < 5
        await _touch_customers(env.conn, 1)
        fired = await scheduler.tick()
        assert [(o.outcome, o.trigger) for o in fired] == [("ok", "smart")]
        # Backlog at refresh time is in the marks: draining it later adds nothing.
        await worker.drain()
        state = await load_state(env.conn, view.name)
        assert await pending_changes(env.conn, view, state) == 0
        assert await scheduler.tick() == []
    await worker.aclose()


async def test_cron_refresh_invalidates_tags_and_two_schedulers_refresh_once(
    hs_env_every_topology: HsEnv,
) -> None:
    env = hs_env_every_topology
    yearly = attrs.evolve(CUSTOMER_SUMMARY_VIEW, refresh=RefreshPolicy(cron="0 0 1 1 *"))
    await _slow_view(env.conn)
    slow = _slow("0 0 1 1 *")
    await env.conn.execute("ALTER DATABASE " + _db(env.dsn) + " SET thorbis_test.sleep = '1.0'")
    a = _scheduler(env, (HS, yearly), ("tests", slow))
    b = _scheduler(env, (HS, yearly), ("tests", slow))
    try:
        await a.tick()  # registers: the cron clock starts now, nothing is due
        assert await b.tick() == []
        await env.conn.execute("UPDATE thorbis.mv_state SET cron_fired_at = now() - "
                               "interval '2 years'")
        key = await _cache_a_summary(env)
        both = await asyncio.gather(a.tick(), b.tick())
        outcomes = sorted(o.outcome for results in both for o in results)
        # Per view: one ok; the other scheduler was locked out or saw it done.
        assert outcomes.count("ok") == 2
        assert set(outcomes) <= {"ok", "skipped_locked", "not_due"}
        assert await a.tick() == []
        assert await b.tick() == []
        assert await env.app.cache.get(key) is None  # the view's tag dropped the entry
        ok = await env.conn.fetch("SELECT view, trigger FROM thorbis.mv_refresh_history "
                                  "WHERE outcome = 'ok' AND trigger = 'cron' ORDER BY view")
        assert [(r["view"], r["trigger"]) for r in ok] == [("hs.customer_summary", "cron"),
                                                          ("hs.t_slow", "cron")]
    finally:
        await env.conn.execute("ALTER DATABASE " + _db(env.dsn) + " RESET thorbis_test.sleep")
        await a.aclose()
        await b.aclose()


async def test_recheck_under_the_lock_makes_a_late_decision_a_no_op(env: HsEnv) -> None:
    before = await load_state(env.conn, CUSTOMER_SUMMARY_VIEW.name)
    assert (await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW)).ok
    seen = None if before is None else before.refreshed_at
    late = await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW, trigger="cron",
                              recheck=lambda s: (s.refreshed_at if s else None) == seen)
    assert late.outcome == "not_due"
    assert await env.conn.fetchval("SELECT count(*) FROM thorbis.mv_refresh_history") == 1


def _db(dsn: str) -> str:
    return '"' + dsn.rsplit("/", 1)[1].split("?", 1)[0] + '"'


async def _slow_view(conn: asyncpg.Connection) -> None:
    # Sleeps for the session's thorbis_test.sleep seconds (0 when unset: created fast).
    await conn.execute(
        "CREATE MATERIALIZED VIEW hs.t_slow AS SELECT tenant_id, id FROM hs.customers "
        "WHERE (SELECT true FROM pg_sleep(coalesce(nullif(current_setting("
        "'thorbis_test.sleep', true), ''), '0')::float8))")
    await conn.execute("CREATE UNIQUE INDEX t_slow_uniq ON hs.t_slow (tenant_id, id)")


def _slow(cron: str | None = None, concurrently: bool = True) -> MaterializedView:
    return MaterializedView("hs.t_slow", "SELECT 1", unique_index=("tenant_id", "id"),
                            refresh=RefreshPolicy(cron=cron, concurrently=concurrently))


async def _cache_a_summary(env: HsEnv) -> object:
    assert (await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW)).ok  # the data is in
    row = await env.conn.fetchrow("SELECT * FROM hs.customer_summary ORDER BY tenant_id, "
                                  "customer_id LIMIT 1")
    key = CUSTOMER_SUMMARY.key(row["tenant_id"], customer_id=row["customer_id"])
    await env.app.cache.set(key, rows.customer_summary(row))
    assert await env.app.cache.get(key) is not None
    return key


async def _wait_for_refresh_running(conn: asyncpg.Connection, view: str) -> int:
    """The pid of the backend running ``REFRESH ... view`` (waits for it to start)."""
    for _ in range(200):
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query ILIKE $1",
            f"REFRESH MATERIALIZED VIEW%{view}%")
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no REFRESH of {view} started")


@pytest.mark.parametrize("concurrently", [True, False], ids=["concurrently", "plain"])
async def test_readers_are_not_blocked_during_a_concurrent_refresh(
        env: HsEnv, concurrently: bool) -> None:
    await _slow_view(env.conn)
    refresher = await asyncpg.connect(env.dsn, server_settings={"thorbis_test.sleep": "2"})
    reader = await asyncpg.connect(env.dsn)
    try:
        await reader.execute("SET lock_timeout = '200ms'")
        task = asyncio.create_task(
            refresh_view(refresher, "tests", _slow(concurrently=concurrently)))
        await _wait_for_refresh_running(env.conn, "t_slow")
        answers = []
        try:
            for _ in range(5):
                answers.append(await reader.fetchval("SELECT count(*) FROM hs.t_slow"))
        except asyncpg.LockNotAvailableError:
            answers.append(-1)
        outcome = await task
        assert outcome.ok
        assert outcome.concurrently is concurrently
    finally:
        await refresher.close()
        await reader.close()
    if concurrently:
        assert answers == [8] * 5  # answered from the old contents while it refreshed
    else:
        assert answers == [-1]     # a plain refresh holds ACCESS EXCLUSIVE: readers wait


_KILLABLE = textwrap.dedent("""
    import asyncio, sys
    from thorbis_cache.plugins.declarations import MaterializedView, RefreshPolicy
    from thorbis_cache.mv.scheduler import MvScheduler, ScheduledView

    view = MaterializedView("hs.t_slow", "SELECT 1", unique_index=("tenant_id", "id"),
                            refresh=RefreshPolicy(cron="0 0 1 1 *"))

    async def main() -> None:
        scheduler = MvScheduler(sys.argv[1], [ScheduledView("tests", view)], cache=None,
                                tick_s=0.2)
        await scheduler.run()

    asyncio.run(main())
""")


async def test_a_scheduler_killed_mid_refresh_leaves_no_lock_and_another_takes_over(
        env: HsEnv) -> None:
    await _slow_view(env.conn)
    slow = _slow("0 0 1 1 *")
    # Register, then make the yearly fire due.
    async with _scheduler(env, ("tests", slow), tick_s=0.2) as survivor:
        assert await survivor.tick() == []
        await env.conn.execute("UPDATE thorbis.mv_state SET cron_fired_at = now() - "
                               "interval '2 years'")
        await env.conn.execute("ALTER DATABASE " + _db(env.dsn) + " SET thorbis_test.sleep = '60'")
        victim = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLABLE, env.dsn, start_new_session=True)
        try:
            await _wait_for_refresh_running(env.conn, "t_slow")
            await env.conn.execute("ALTER DATABASE " + _db(env.dsn) + " RESET thorbis_test.sleep")
            os.kill(victim.pid, signal.SIGKILL)
            await victim.wait()
        finally:
            if victim.returncode is None:
                os.killpg(victim.pid, signal.SIGKILL)
                await victim.wait()
        # The orphaned backend notices its client is gone (client_connection_check_interval)
        # and aborts; the next ticks find the lock free. Without that setting it would
        # sleep on for a minute holding the lock.
        seen: list[str] = []
        for _ in range(40):
            seen += [o.outcome for o in await survivor.tick()]
            if "ok" in seen:
                break
            await asyncio.sleep(0.25)
        assert seen[-1] == "ok", seen
        assert set(seen[:-1]) <= {"skipped_locked"}
    history = await env.conn.fetch("SELECT outcome FROM thorbis.mv_refresh_history")
    assert [r["outcome"] for r in history].count("ok") == 1  # the victim recorded nothing


async def test_a_broken_view_is_reported_backs_off_and_does_not_stop_the_others(
        env: HsEnv) -> None:
    await env.conn.execute("CREATE MATERIALIZED VIEW hs.t_broken AS SELECT tenant_id, id, "
                           "1 / (id - id) AS boom FROM hs.customers WITH NO DATA")
    broken = MaterializedView("hs.t_broken", "SELECT 1", refresh=RefreshPolicy(
        cron="0 0 1 1 *", concurrently=False))
    yearly = attrs.evolve(CUSTOMER_SUMMARY_VIEW, refresh=RefreshPolicy(cron="0 0 1 1 *"))
    async with _scheduler(env, ("broken_plugin", broken), (HS, yearly)) as scheduler:
        await scheduler.tick()
        await env.conn.execute("UPDATE thorbis.mv_state SET cron_fired_at = now() - "
                               "interval '2 years'")
        results = {o.view: o for o in await scheduler.tick()}
        assert results["hs.customer_summary"].ok
        failed = results["hs.t_broken"]
        assert failed.outcome == "failed"
        assert failed.error is not None
        for part in ("'hs.t_broken'", "'broken_plugin'", "PostgreSQL 22012", "division by zero"):
            assert part in failed.error
        assert await scheduler.tick() == []  # backing off, not hammering
        lines = {r.view: r for r in await report(env.conn, scheduler.views)}
        assert lines["hs.t_broken"].health == "failing"
        assert lines["hs.t_broken"].failures == 1
        assert "division by zero" in str(lines["hs.t_broken"].last_error)
        assert lines["hs.customer_summary"].health == "ok"
        # After the backoff it is tried again (and fails again: failures count up).
        await env.conn.execute("UPDATE thorbis.mv_state SET last_failed_at = now() - "
                               "interval '1 minute' WHERE view = 'hs.t_broken'")
        again = await scheduler.tick()
        assert [(o.view, o.outcome) for o in again] == [("hs.t_broken", "failed")]
        state = await load_state(env.conn, "hs.t_broken")
        assert state is not None
        assert state.failures == 2


async def test_tags_pending_while_redis_is_down_are_invalidated_when_it_is_back(
        env: HsEnv, thorbis_redis_server: RedisServer) -> None:
    key = await _cache_a_summary(env)
    async with _scheduler(env, (HS, CUSTOMER_SUMMARY_VIEW)) as scheduler:
        thorbis_redis_server.kill()
        try:
            assert (await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW)).ok
            assert await scheduler.tick() == []  # invalidation fails: logged, kept pending
            state = await load_state(env.conn, CUSTOMER_SUMMARY_VIEW.name)
            assert state is not None
            assert state.tags_pending
        finally:
            thorbis_redis_server.restart()
        for _ in range(20):  # the cache's clients reconnect on their own
            try:
                await scheduler.tick()
                break
            except Exception:
                await asyncio.sleep(0.2)
        state = await load_state(env.conn, CUSTOMER_SUMMARY_VIEW.name)
        assert state is not None
        assert not state.tags_pending
        assert await env.app.cache.get(key) is None


def test_cli_mv_status_shows_next_run_pending_changes_and_health(env: HsEnv) -> None:
    run_cli("refresh", "hs.customer_summary", "--dsn", env.dsn, "--redis-url", env.redis_url,
         "--plugin", HS)
    out = run_cli("mv", "status", "--dsn", env.dsn, "--plugin", HS)
    assert "hs.customer_summary" in out
    assert "hs.financial_daily" in out
    assert "next run" in out
    assert "pending" in out
    assert "health" in out
    assert "never" in out  # the three views not refreshed yet


async def test_thorbis_cache_worker_runs_the_scheduler(env: HsEnv) -> None:
    # Views known to the scheduler with a cron fire long overdue: the worker refreshes them.
    await env.conn.execute(
        "INSERT INTO thorbis.mv_state (view, plugin, cron_fired_at) "
        "SELECT v, $2, now() - interval '2 years' FROM unnest($1::text[]) AS v",
        [v.name for v in ALL_VIEWS], HS)
    exe = os.path.join(os.path.dirname(sys.executable), "thorbis-cache")
    worker = await asyncio.create_subprocess_exec(
        exe, "worker", "--dsn", env.dsn, "--redis-url", env.redis_url, "--plugin", HS,
        "--mv-tick", "0.2", start_new_session=True, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        refreshed: list[str] = []
        for _ in range(150):
            refreshed = [r["view"] for r in await env.conn.fetch(
                "SELECT view FROM thorbis.mv_refresh_history WHERE outcome = 'ok' "
                "AND trigger = 'cron' ORDER BY id")]
            if len(refreshed) == len(ALL_VIEWS):
                break
            await asyncio.sleep(0.1)
        assert sorted(refreshed) == sorted(v.name for v in ALL_VIEWS)
        worker.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(worker.communicate(), 30)
    finally:
        if worker.returncode is None:
            os.killpg(worker.pid, signal.SIGKILL)
            await worker.wait()
    assert b"4 view(s) every 0.2s" in out
    assert await env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0


async def test_concurrent_refresh_needs_a_usable_unique_index_in_the_live_catalog(
        thorbis_pg_dsn: str) -> None:
    from thorbis_cache.postgres.sql_apply import apply_plugin_sql, check_rules_against_db

    views = [MaterializedView(f"vx.{n}", "SELECT * FROM vx.t", unique_index=("tenant_id", "id"),
                              sources=("vx.t",)) for n in ("partial", "expr", "good")]
    manager = PluginManager()
    manager.add(_ViewsPlugin("vx", views), "views_x")
    loaded = await manager.load(["views_x"])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await conn.execute("CREATE SCHEMA vx; CREATE TABLE vx.t (tenant_id text, id int)")
        await apply_plugin_sql(conn, loaded)
        assert await check_rules_against_db(conn, loaded) == []
        # Someone replaced two unique indexes with ones REFRESH ... CONCURRENTLY refuses:
        # a WHERE clause, an expression.
        await conn.execute("DROP INDEX vx.partial_uniq; CREATE UNIQUE INDEX partial_uniq "
                           "ON vx.partial (tenant_id, id) WHERE id > 0")
        await conn.execute("DROP INDEX vx.expr_uniq; CREATE UNIQUE INDEX expr_uniq "
                           "ON vx.expr (tenant_id, (id + 0))")
        found = [(p.plugin, p.hook, p.message)
                 for p in await check_rules_against_db(conn, loaded)]
    finally:
        await conn.close()
    hook = "register_materialized_views"
    assert found == [
        ("views_x", hook, f"materialized view 'vx.{n}' refreshes concurrently but has no unique "
         "index on plain columns without a WHERE clause (REFRESH ... CONCURRENTLY would fail)")
        for n in ("partial", "expr")
    ]


async def test_refresh_and_invalidate_reports_tags_pending_when_redis_is_down(
        env: HsEnv, thorbis_redis_server: RedisServer) -> None:
    """The refresh committed: it is reported done, its invalidation pending -- not
    raised as if the refresh had failed."""
    key = await _cache_a_summary(env)
    thorbis_redis_server.kill()
    try:
        outcome = await refresh_and_invalidate(env.app, env.conn, HS, CUSTOMER_SUMMARY_VIEW)
        assert outcome.ok
        assert outcome.tags_pending
        assert outcome.tenants == ()
        state = await load_state(env.conn, CUSTOMER_SUMMARY_VIEW.name)
        assert state is not None
        assert state.tags_pending
    finally:
        thorbis_redis_server.restart()
    for _ in range(20):  # the cache's clients reconnect on their own
        outcome = await refresh_and_invalidate(env.app, env.conn, HS, CUSTOMER_SUMMARY_VIEW)
        if not outcome.tags_pending:
            break
        await asyncio.sleep(0.2)
    assert outcome.tenants
    assert await env.app.cache.get(key) is None
