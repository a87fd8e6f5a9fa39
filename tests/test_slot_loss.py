"""Logical capture losing its slot in ways an operator meets: the publication dropped by
hand while changes are captured, and the slot dropped (or not carried over by a
failover) while no worker runs. Either way the changes since the slot was last read are
lost; the worker must flush what they may have made stale before it reads on, and
nothing may make the slot again behind its back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from core_testing import CUSTOMER_SQL, run_cli, stale_customer
from test_logical_capture import Env, close_env, connect, open_env
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing, LogicalCapture
from thorbis_cache.postgres.capture_check import capture_problems
from thorbis_cache.postgres.catalog import quote_ident


@pytest.fixture
async def env(thorbis_pg_dsn: str, thorbis_redis_url: str) -> AsyncIterator[Env]:
    env = await open_env(thorbis_pg_dsn, thorbis_redis_url)
    try:
        yield env
    finally:
        await close_env(env)


async def test_a_dropped_publication_is_a_capture_loss(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL decodes each change under the catalog of its time: a change committed
    while the publication did not exist fails every stream of the slot, even once the
    publication is made again (as ``db init`` does). The worker used to fail batch after
    batch for ever, every entry stale; now the slot is a capture loss: flushed for,
    dropped, made again with its publication."""
    await env.conn.execute(CUSTOMER_SQL, "acme", 3)
    async with env.worker() as worker:
        await worker.run_once()
        for cid in (1, 2, 3):
            await env.cache_customer("acme", cid)
        await env.conn.execute(f"DROP PUBLICATION {quote_ident(env.capture.publication)}")
        await env.conn.execute("UPDATE hs.customers SET phone = 'lost' WHERE id = 1")
        await env.capture.ensure(env.conn)  # db init again: the publication is back
        await env.conn.execute("UPDATE hs.customers SET phone = 'after' WHERE id = 2")
        with caplog.at_level(logging.ERROR):
            assert (await worker.run_once()).claimed == 0
        assert "was dropped while it captured changes" in caplog.text
        assert "lost track of hs." in caplog.text
        assert worker.metrics.capture_losses == 1
        for cid in (1, 2, 3):  # changed while it could not be read, or not proven fresh
            assert not await env.cached("acme", cid)
        assert await env.capture.publication_here(env.conn)
        assert not await env.capture.slot_lost(env.conn)
        # Capture goes on from the new slot.
        await env.cache_customer("acme", 3)
        await env.conn.execute("UPDATE hs.customers SET phone = 'y' WHERE id = 3")
        assert (await worker.run_once()).keys == ("{acme}:hs.customer:3",)
        assert worker.metrics.capture_losses == 1


async def test_a_slot_lost_while_no_worker_ran_is_flushed_for_before_it_is_made_again(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot dropped while no worker ran (or not carried over by a failover) leaves its
    publication. ``db init`` used to make a new slot in silence, and the changes
    committed meanwhile stayed stale; a worker with ``--capture logical`` refused to
    start (exit 64) and ``auto`` read an outbox nothing fills. Now ``db init`` leaves
    the slot to the worker and says so, and the worker flushes, then makes it."""
    dsn, url = thorbis_pg_dsn, thorbis_standalone_redis_url
    name = f"l{uuid.uuid4().hex[:10]}"
    worker_args = ("worker", "--dsn", dsn, "--redis-url", url, "--plugin", "home_services",
                   "--once", "--no-queue", "--no-mv", "--slot", name)
    db_init = ("db", "init", "--dsn", dsn, "--plugin", "home_services", "--capture",
               "logical", "--slot", name)
    await asyncio.to_thread(run_cli, *db_init)
    conn = await connect(dsn)
    app = await CacheApp(url, keyring=KeyRing.generate()).start(["home_services"])
    capture = LogicalCapture(name, app.plugins.all_rules(), app.plugins.all_views())
    keys = [CUSTOMER.key(tenant, customer_id=cid) for tenant in ("acme", "globex")
            for cid in (1, 2)]
    try:
        for tenant in ("acme", "globex"):
            await conn.execute(CUSTOMER_SQL, tenant, 2)
        await asyncio.to_thread(run_cli, *worker_args)
        for capture_arg in ("logical", "auto"):  # auto read an outbox nothing fills
            for key in keys:
                await app.cache.hash(key).replace(stale_customer(key.params["customer_id"]))
            await conn.execute("SELECT pg_drop_replication_slot($1)", capture.slot)
            await conn.execute("UPDATE hs.customers SET phone = $1 "
                               "WHERE tenant_id = 'acme' AND id = 1", capture_arg)
            if capture_arg == "logical":
                said = await asyncio.to_thread(run_cli, *db_init)
                assert "is gone while its publication is here" in said
                assert "set up but for its slot" in said
                assert await capture.lost_here(conn)
                out = await asyncio.to_thread(
                    run_cli, "health", "--json", "--redis-url", url, "--dsn", dsn,
                    "--plugin", "home_services", code=2)
                checks = json.loads(out)["checks"]
                assert checks["capture_slot"]["status"] == "unhealthy", checks
                assert "gone while its publication is here" in checks["capture_slot"]["reason"]
                assert checks["capture"]["status"] == "healthy", checks  # the worker mends it
            caplog.clear()
            with caplog.at_level(logging.ERROR):
                await asyncio.to_thread(run_cli, *worker_args, "--capture", capture_arg)
            assert "lost track of hs." in caplog.text
            for key in keys:  # the gap's change, and every entry not proven fresh
                assert await app.cache.hash(key).get() is None, (capture_arg, key)
            assert not await capture.slot_lost(conn)
            await app.cache.hash(keys[1]).replace(stale_customer(2))
            await conn.execute("UPDATE hs.customers SET phone = $1 "
                               "WHERE tenant_id = 'acme' AND id = 2", capture_arg)
            await asyncio.to_thread(run_cli, *worker_args, "--capture", capture_arg)
            assert await app.cache.hash(keys[1]).get() is None  # read from the new slot
    finally:
        await capture.drop(conn)
        await conn.close()
        await app.aclose()


async def test_a_table_left_out_of_the_publication_is_named_as_such(env: Env) -> None:
    """Where logical capture is set up, a rule's table missing from its publication is
    said to be missing from it (health used to say "no capture trigger", of a database
    that has none)."""
    await env.conn.execute(f"ALTER PUBLICATION {quote_ident(env.capture.publication)} "
                           "DROP TABLE hs.customers")
    rules = env.app.plugins.all_rules()
    for capture in ("any", env.capture):
        problems = await capture_problems(env.conn, rules, capture)
        assert [p.split(" (")[0] for p in problems] == ["hs.customers"], problems
        assert f"not in publication {env.capture.publication}" in problems[0], problems


async def test_a_publication_left_by_a_setup_that_stopped_is_not_a_lost_slot(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``db init --capture logical`` makes the publication, then the slot; one that
    stopped between the two (its slot creation timed out behind a long transaction)
    leaves a publication that never had a slot. Only a publication marked as having
    had one is a lost slot: here a worker of ``auto`` stays on the capture triggers'
    outbox (it followed the publication, flushed every tenant and retired, again every
    second), and ``db init`` makes the slot as a first setup does."""
    dsn, url = thorbis_pg_dsn, thorbis_standalone_redis_url
    name = f"s{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                            "--capture", "triggers")
    conn = await connect(dsn)
    app = await CacheApp(url, keyring=KeyRing.generate()).start(["home_services"])
    capture = LogicalCapture(name, app.plugins.all_rules(), app.plugins.all_views())
    key = CUSTOMER.key("acme", customer_id=1)
    try:
        await conn.execute(f"CREATE PUBLICATION {quote_ident(capture.publication)} "
                           "FOR TABLE hs.customers")
        assert not await capture.lost_here(conn)
        await conn.execute(CUSTOMER_SQL, "acme", 1)
        await app.cache.hash(key).replace(stale_customer(1))
        await conn.execute("UPDATE hs.customers SET phone = 'new' WHERE id = 1")
        with caplog.at_level(logging.WARNING):
            await asyncio.to_thread(
                run_cli, "worker", "--dsn", dsn, "--redis-url", url, "--plugin",
                "home_services", "--once", "--no-queue", "--no-mv", "--slot", name)
        assert await app.cache.hash(key).get() is None  # from the outbox
        assert "lost track" not in caplog.text
        said = await asyncio.to_thread(
            run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services", "--capture",
            "logical", "--slot", name)
        assert f"logical capture {capture.slot} ready" in said, said
        assert await capture.slot_here(conn)
    finally:
        await capture.drop(conn)
        await conn.close()
        await app.aclose()
