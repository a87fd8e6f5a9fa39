"""Materialized-view refresh with real PostgreSQL and Redis: the home_services views are
refreshed after loading generated data, a never-populated view gets a plain first refresh,
every attempt is in the history table and on the audit chain, a view locked by another
refresher is skipped (recorded), a broken view is reported with PostgreSQL's message and
does not stop the others, and a refresh drops the cached entries carrying the view's tags.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import attrs
import pytest
from core_testing import HS, HS_TENANTS, HsEnv, run_cli
from thorbis_home_services import rows
from thorbis_home_services.schemas import CUSTOMER_SUMMARY
from thorbis_home_services.views import ALL_VIEWS, CUSTOMER_SUMMARY_VIEW

from thorbis_cache.mv.refresh import (
    RefreshOutcome,
    refresh_and_invalidate,
    refresh_view,
)
from thorbis_cache.plugins.declarations import MaterializedView, RefreshPolicy
from thorbis_cache.postgres import audit

TENANTS = HS_TENANTS


async def _history(conn: asyncpg.Connection) -> list[tuple[str, str, str, bool, int | None]]:
    return [(r["view"], r["plugin"], r["outcome"], r["concurrently"], r["rows"])
            for r in await conn.fetch("SELECT * FROM thorbis.mv_refresh_history ORDER BY id")]


@pytest.fixture
def env(hs_env: HsEnv) -> HsEnv:
    """The shared home_services environment (``hs_env`` in ``conftest.py``)."""
    return hs_env


async def test_home_services_views_refresh_concurrently_with_history_and_audit(env: HsEnv) -> None:
    outcomes = [await refresh_view(env.conn, HS, v) for v in ALL_VIEWS]
    assert [o.outcome for o in outcomes] == ["ok"] * 4
    assert all(o.concurrently for o in outcomes)  # populated at creation, unique indexes
    summary_rows = await env.conn.fetchval("SELECT count(*) FROM hs.customer_summary")
    assert outcomes[0].rows == summary_rows == 2 * 4  # the generated customers are in
    assert outcomes[0].tags == CUSTOMER_SUMMARY_VIEW.tags
    assert await _history(env.conn) == [
        (o.view, HS, "ok", True, o.rows) for o in outcomes
    ]
    kinds = await env.conn.fetch("SELECT kind, detail->>'view' AS view FROM thorbis.audit_log "
                                 "WHERE kind = 'mv_refresh' ORDER BY id")
    assert [r["view"] for r in kinds] == [v.name for v in ALL_VIEWS]
    assert (await audit.verify(env.conn)).ok


async def test_never_populated_view_gets_a_plain_first_refresh(env: HsEnv) -> None:
    await env.conn.execute(
        "CREATE MATERIALIZED VIEW hs.t_unpopulated AS "
        "SELECT tenant_id, id FROM hs.customers WITH NO DATA")
    await env.conn.execute("CREATE UNIQUE INDEX ON hs.t_unpopulated (tenant_id, id)")
    view = MaterializedView("hs.t_unpopulated", "SELECT 1", unique_index=("tenant_id", "id"))
    first = await refresh_view(env.conn, "tests", view)
    second = await refresh_view(env.conn, "tests", view)
    assert (first.outcome, first.concurrently, first.rows) == ("ok", False, 8)
    assert (second.outcome, second.concurrently) == ("ok", True)
    # A policy without CONCURRENTLY, or a view without a unique index, refreshes plainly.
    plain = attrs.evolve(view, refresh=RefreshPolicy(concurrently=False))
    assert not (await refresh_view(env.conn, "tests", plain)).concurrently
    await env.conn.execute("DROP INDEX hs.t_unpopulated_tenant_id_id_idx")
    assert not (await refresh_view(env.conn, "tests", view)).concurrently


async def test_a_view_being_refreshed_elsewhere_is_skipped_and_recorded(env: HsEnv) -> None:
    holder = await asyncpg.connect(env.dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock(hashtext('thorbis_mv:' || $1))",
                             CUSTOMER_SUMMARY_VIEW.name)
        skipped = await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW, trigger="cron")
        assert (skipped.outcome, skipped.rows, skipped.tags) == ("skipped_locked", None, ())
        await tx.rollback()  # the holder's transaction ends: the lock is gone with it
    finally:
        await holder.close()
    done = await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW)
    assert done.outcome == "ok"
    assert [h[2] for h in await _history(env.conn)] == ["skipped_locked", "ok"]
    trig = await env.conn.fetchval("SELECT trigger FROM thorbis.mv_refresh_history ORDER BY id "
                                   "LIMIT 1")
    assert trig == "cron"


async def test_two_concurrent_refreshes_one_ok_one_skipped(env: HsEnv) -> None:
    # The second session waits on nothing: it tries the lock while the first holds it.
    other = await asyncpg.connect(env.dsn)
    try:
        slow = MaterializedView("hs.t_slow", "SELECT 1", unique_index=("id",))
        await env.conn.execute(
            "CREATE MATERIALIZED VIEW hs.t_slow AS SELECT 1 AS id, pg_sleep(0.5) IS NULL AS s")
        results = await asyncio.gather(refresh_view(env.conn, HS, slow),
                                       _after(0.15, refresh_view(other, HS, slow)))
    finally:
        await other.close()
    assert sorted(r.outcome for r in results) == ["ok", "skipped_locked"]


async def _after(delay: float, aw: Awaitable[RefreshOutcome]) -> RefreshOutcome:
    await asyncio.sleep(delay)
    return await aw


async def test_a_broken_view_is_reported_and_the_others_still_refresh(env: HsEnv) -> None:
    await env.conn.execute("CREATE TABLE hs.t_src (id int)")
    await env.conn.execute("CREATE MATERIALIZED VIEW hs.t_broken AS SELECT id FROM hs.t_src")
    await env.conn.execute("DROP TABLE hs.t_src CASCADE")  # drops the view: refresh fails
    broken = MaterializedView("hs.t_broken", "SELECT id FROM hs.t_src")
    owned = [(HS, CUSTOMER_SUMMARY_VIEW), ("broken_test", broken), (HS, ALL_VIEWS[1])]
    results = [await refresh_view(env.conn, p, v) for p, v in owned]
    assert [r.outcome for r in results] == ["ok", "failed", "ok"]
    error = results[1].error
    assert error is not None
    assert "'hs.t_broken'" in error
    assert "'broken_test'" in error
    assert "PostgreSQL 42P01" in error
    assert "does not exist" in error
    recorded = await env.conn.fetchrow(
        "SELECT outcome, error FROM thorbis.mv_refresh_history WHERE view = 'hs.t_broken'")
    assert (recorded["outcome"], recorded["error"]) == ("failed", error)
    assert (await audit.verify(env.conn)).ok


async def test_refresh_invalidates_the_views_tags_for_each_tenant(
    hs_env_every_topology: HsEnv,
) -> None:
    env = hs_env_every_topology
    cache = env.app.cache
    assert (await refresh_view(env.conn, HS, CUSTOMER_SUMMARY_VIEW)).ok  # the data is in
    keys = []
    for tenant in TENANTS:
        row = await env.conn.fetchrow("SELECT * FROM hs.customer_summary WHERE tenant_id = $1 "
                                      "ORDER BY customer_id LIMIT 1", tenant)
        key = CUSTOMER_SUMMARY.key(tenant, customer_id=row["customer_id"])
        await cache.set(key, rows.customer_summary(row))
        assert await cache.get(key) is not None
        keys.append(key)
    result = await refresh_and_invalidate(env.app, env.conn, HS, CUSTOMER_SUMMARY_VIEW)
    assert result.ok
    assert result.tenants == TENANTS
    for key in keys:
        assert await cache.get(key) is None
    # A view without tenant_id: refreshed, nothing to name, nothing invalidated.
    await env.conn.execute("CREATE MATERIALIZED VIEW hs.t_global AS SELECT 1 AS id")
    plain = MaterializedView("hs.t_global", "SELECT 1 AS id", tags=("hs.reports",))
    assert (await refresh_and_invalidate(cache, env.conn, HS, plain)).tenants == ()


def test_cli_refresh_and_status(env: HsEnv) -> None:
    out = run_cli("refresh", "--all", "--dsn", env.dsn, "--redis-url", env.redis_url,
               "--plugin", HS)
    for view in ALL_VIEWS:
        assert f"ok {view.name} concurrently" in out
    assert "4 view(s): 4 refreshed or skipped, 0 failed" in out
    status = run_cli("mv", "status", "--dsn", env.dsn)
    for view in ALL_VIEWS:
        assert view.name in status
    assert "ok" in status
    # Bad input: one line, exit 64 as every command's (it was 1).
    bad = run_cli("refresh", "hs.nope", "--dsn", env.dsn, "--redis-url", env.redis_url,
                  "--plugin", HS, code=64)
    assert "unknown materialized view(s) hs.nope" in bad
    both = run_cli("refresh", "hs.customer_summary", "--all", "--dsn", env.dsn,
                   "--redis-url", env.redis_url, "--plugin", HS, code=64)
    assert "name the views to refresh, or pass --all (not both)" in both


async def test_cli_refresh_exits_1_when_a_view_fails(env: HsEnv) -> None:
    await env.conn.execute("DROP MATERIALIZED VIEW hs.financial_daily")
    out = await asyncio.to_thread(
        run_cli, "refresh", "hs.customer_summary", "hs.financial_daily", "--dsn", env.dsn,
        "--redis-url", env.redis_url, "--plugin", HS, code=1)
    assert "ok hs.customer_summary" in out
    assert "failed hs.financial_daily" in out
    assert "42P01" in out
    statuses = {r["view"]: r for r in await env.conn.fetch(
        "SELECT DISTINCT ON (view) view, outcome FROM thorbis.mv_refresh_history "
        "ORDER BY view, id DESC")}
    assert statuses["hs.financial_daily"]["outcome"] == "failed"
    assert statuses["hs.customer_summary"]["outcome"] == "ok"
