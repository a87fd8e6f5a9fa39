"""A host application's integration, on real servers: one call prepares the database as
``db init`` does; the worker's public API (``drained``); capture checked before anything
runs; the worker CLI stopping like a service; host overrides of plugin schemas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import asyncpg
import pytest
from core_testing import HS, HsEnv, run_cli, wait_until
from plugins_fixtures import good

from thorbis_cache import (
    CacheApp,
    CacheSettings,
    KeyRing,
    LogicalCapture,
    NearCache,
    OutboxWorker,
    SchemaOverride,
    WorkerMetrics,
)
from thorbis_cache.errors import CaptureNotInstalledError, ConfigurationError
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import apply_and_check
from thorbis_cache.postgres.migrations import core_migrations

AppFactory = Callable[..., CacheApp]


@pytest.fixture
async def make_app() -> AsyncIterator[AppFactory]:
    """CacheApps with the good plugin registered as ``tst``; all closed afterwards."""
    apps: list[CacheApp] = []

    def make(url: str, dsn: str | None = None, **options: Any) -> CacheApp:
        app = CacheApp(url, keyring=KeyRing.generate(), postgres_dsn=dsn, **options)
        app.register(good, "tst")
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.aclose()


async def _fetchval(dsn: str, query: str, *args: object) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def test_worker_api_is_exported() -> None:
    import thorbis_cache
    from thorbis_cache import postgres
    from thorbis_cache.invalidation import worker

    assert OutboxWorker is worker.OutboxWorker
    assert WorkerMetrics is worker.WorkerMetrics
    assert LogicalCapture is postgres.logical.LogicalCapture
    assert {"OutboxWorker", "WorkerMetrics", "LogicalCapture", "SchemaOverride"} <= set(
        thorbis_cache.__all__)


# --------------------------------------------------------------------------- 1. setup


async def test_start_with_apply_sql_prepares_the_database_as_db_init_does(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture="triggers")
    assert app.database is not None
    assert app.database.capture == "triggers"
    assert app.database.migrations.applied == tuple(m.name for m in core_migrations())
    assert [p.table for p in app.database.triggers] == ["tst.items"]

    # The first write works (thorbis.outbox exists, the trigger records it), and the
    # worker turns it into an invalidation.
    key = good.ITEM.key("acme", item_id=7)
    await app.cache.set(key, good.Item(7, "pump", "open"))
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await conn.execute("INSERT INTO tst.items VALUES ('acme', 7, 'pump', 'open')")
    finally:
        await conn.close()
    async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
        await worker.drained()
    assert await app.cache.get(key) is None
    assert worker.metrics.processed == 1

    # db migrate finds nothing left to apply: the same migrations ran.
    out = await asyncio.to_thread(run_cli, "db", "migrate", "--dsn", thorbis_pg_dsn)
    assert f"(0 applied, {len(core_migrations())} already)" in out


async def test_start_with_apply_sql_and_logical_capture(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = make_app(thorbis_standalone_redis_url, thorbis_pg_dsn)
    await app.start(["tst"], apply_sql=True, capture="logical", slot="hosttest")
    capture = LogicalCapture("hosttest", app.plugins.all_rules(), app.plugins.all_views())
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert app.database is not None
        assert (app.database.capture, app.database.slot) == ("logical", "thorbis_hosttest")
        assert await capture.slot_exists(conn)
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tst.items'::regclass "
            "AND NOT tgisinternal") == 0
    finally:
        await capture.drop(conn)
        await conn.close()


async def test_capture_is_chosen_from_the_server_when_not_set(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    """No ``capture=``: logical decoding where the server allows it (the test server
    runs wal_level=logical with a bounded max_slot_wal_keep_size), and the worker built
    by ``from_app`` follows the slot without being told."""
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True)
    assert app.database is not None
    assert (app.database.capture, app.database.slot, app.database.fallback) == \
        ("logical", "thorbis_main", None)
    key = good.ITEM.key("acme", item_id=7)
    await app.cache.set(key, good.Item(7, "pump", "open"))
    async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
        await _insert_items(thorbis_pg_dsn, range(7, 8))
        await worker.drained()
        assert worker.capture is not None
        assert worker.capture.slot == "thorbis_main"
        assert worker.metrics.processed == 1
    assert await app.cache.get(key) is None


async def test_triggers_left_beside_a_slot_are_reported(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from thorbis_cache.postgres.triggers import install_triggers

    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await install_triggers(conn, app.plugins.all_rules())
    finally:
        await conn.close()
    async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
        await worker.check_capture()
    assert "capture triggers are installed on tst.items beside the replication slot " \
           "thorbis_main" in caplog.text
    assert "db init --capture logical" in caplog.text


async def test_start_refuses_a_bad_capture(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = make_app(thorbis_standalone_redis_url, thorbis_pg_dsn)
    with pytest.raises(ConfigurationError, match="capture must be one of triggers, logical"):
        await app.start(["tst"], apply_sql=True, capture="wal")  # type: ignore[arg-type]
    assert app.plugins.plugins == {}


# --------------------------------------------------------------------------- 2. drained


async def _insert_items(dsn: str, ids: range) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany("INSERT INTO tst.items VALUES ('acme', $1, 'x', 'open')",
                               [(i,) for i in ids])
    finally:
        await conn.close()


async def test_drained_waits_for_the_running_loop_and_runs_no_batch_itself(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture="triggers")
    # A long idle pause: drained() must wake the loop rather than wait for its poll.
    worker = OutboxWorker.from_app(app, thorbis_pg_dsn, batch_size=7, poll_interval=30.0)

    async def no_batches_beside_the_loop() -> Any:
        raise AssertionError("drained() ran a batch while run() was running")

    task = asyncio.create_task(worker.run())
    try:
        await wait_until("the worker runs", lambda: asyncio.sleep(0, worker._running))
        worker.run_once = no_batches_beside_the_loop  # type: ignore[method-assign]
        for round_ in range(3):
            keys = [good.ITEM.key("acme", item_id=i) for i in range(round_ * 50, round_ * 50 + 50)]
            for key in keys:
                await app.cache.set(key, good.Item(0, "x", "open"))
            await _insert_items(thorbis_pg_dsn, range(round_ * 50, round_ * 50 + 50))
            await asyncio.wait_for(worker.drained(), 20)
            assert await _fetchval(thorbis_pg_dsn, "SELECT count(*) FROM thorbis.outbox") == 0
            assert await app.cache.get_many(keys) == [None] * 50
        assert worker.metrics.processed == 150
    finally:
        worker.stop()
        await task
        await worker.aclose()
    # Not running: drained() drains by itself.
    del worker.run_once
    await _insert_items(thorbis_pg_dsn, range(1000, 1010))
    await worker.drained()
    assert await _fetchval(thorbis_pg_dsn, "SELECT count(*) FROM thorbis.outbox") == 0
    assert worker.metrics.processed == 160
    await worker.aclose()


@pytest.mark.parametrize("capture", ["triggers", "logical"])
async def test_drained_right_after_the_loop_was_started(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str,
    capture: Literal["triggers", "logical"]
) -> None:
    """Found as a user would: ``create_task(worker.run())`` then at once ``await
    worker.drained()`` (the loop's task had not started yet, so drained() drained by
    itself) failed with asyncpg's "another operation is in progress": its batches and
    the loop's first checks ran on the worker's one connection at the same time (and
    each opened one, the first left open)."""
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture=capture, slot="rightafter")
    logical = None
    if capture == "logical":
        logical = LogicalCapture("rightafter", app.plugins.all_rules(),
                                 app.plugins.all_views())
    for round_ in range(5):  # a new worker each time: its first use of the database
        await _insert_items(thorbis_pg_dsn, range(round_ * 100, round_ * 100 + 100))
        async with OutboxWorker.from_app(app, thorbis_pg_dsn, capture=logical,
                                         batch_size=5) as worker:
            task = asyncio.create_task(worker.run())
            try:
                async with asyncio.timeout(20):  # not wait_for: its task would start later
                    await worker.drained()
                assert worker.metrics.processed == 100
            finally:
                worker.stop()
                await task
    assert await _fetchval(thorbis_pg_dsn, "SELECT count(*) FROM thorbis.outbox") == 0
    if logical is not None:
        conn = await asyncpg.connect(thorbis_pg_dsn)
        try:
            await logical.drop(conn)
        finally:
            await conn.close()


async def test_a_worker_from_the_app_follows_the_slot_the_app_made_ready(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    """``from_app``'s ``capture="auto"`` looked for the slot ``main`` whatever slot
    ``start(apply_sql=True, slot=...)`` had made ready, and refused to run ("no capture
    trigger")."""
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture="logical", slot="appslot")
    key = good.ITEM.key("acme", item_id=1)
    await app.cache.set(key, good.Item(1, "x", "open"))
    # The DSN defaults to the app's own.
    async with OutboxWorker.from_app(app) as worker:
        await _insert_items(thorbis_pg_dsn, range(1, 2))
        await worker.drained()
        assert worker.capture is not None
        assert worker.capture.slot == "thorbis_appslot"
        assert await app.cache.get(key) is None
        await worker.capture.drop(await worker._connection())
    without = CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate())
    with pytest.raises(ConfigurationError, match="postgres_dsn="):
        OutboxWorker.from_app(without)


async def test_drained_after_stop_drains_by_itself(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture="triggers")
    async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
        task = asyncio.create_task(worker.run())
        await wait_until("the worker runs", lambda: asyncio.sleep(0, worker._running))
        worker.stop()
        await _insert_items(thorbis_pg_dsn, range(5))
        await worker.drained()
        await task
        assert await _fetchval(thorbis_pg_dsn, "SELECT count(*) FROM thorbis.outbox") == 0


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thorbis_cache.cli", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


async def test_worker_once_returns_with_the_outbox_empty(hs_env: HsEnv) -> None:
    pending = await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    assert pending > 10
    result = await asyncio.to_thread(
        _cli, "worker", "--once", "--batch-size", "3", "--no-mv", "--dsn", hs_env.dsn,
        "--redis-url", hs_env.redis_url, "--plugin", HS)
    assert result.returncode == 0, result.stderr
    assert f"{pending} change(s) applied" in result.stdout
    assert await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0


# --------------------------------------------------------------------------- 3. capture


async def test_migrate_without_init_is_refused_naming_rules_and_the_fix(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    # The core schema and the plugin's tables, but no `db init`: no capture trigger.
    await asyncio.to_thread(run_cli, "db", "migrate", "--dsn", thorbis_pg_dsn)
    manager = PluginManager()
    await apply_and_check(thorbis_pg_dsn, await manager.load([HS]))
    args = ("--dsn", thorbis_pg_dsn, "--redis-url", thorbis_standalone_redis_url,
            "--plugin", HS, "--no-mv")
    for once in (["--once"], []):
        result = await asyncio.to_thread(_cli, "worker", *once, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        error = result.stderr
        assert error.startswith("error: change capture is not installed for "), error
        assert "run `thorbis-cache db init --plugin home_services`" in error
        assert "hs.customers (rules hs.customer" in error
        assert "no capture trigger" in error
        assert "change(s) applied" not in result.stdout
        assert "Traceback" not in error

    # The app refuses too, and so do the worker's run and drain.
    app = CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(),
                   postgres_dsn=thorbis_pg_dsn)
    with pytest.raises(CaptureNotInstalledError) as info:
        await app.start([HS])
    assert info.value.fix == "thorbis-cache db init --plugin home_services"
    assert any(p.startswith("hs.customers ") for p in info.value.problems)
    assert app.plugins.plugins == {}
    started = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate()
                             ).start([HS])
    try:
        async with OutboxWorker.from_app(started, thorbis_pg_dsn) as worker:
            with pytest.raises(CaptureNotInstalledError):
                await worker.drain()
            with pytest.raises(CaptureNotInstalledError):
                await worker.run()

        # After db init, everything runs.
        await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin", HS)
        result = await asyncio.to_thread(_cli, "worker", "--once", *args)
        assert result.returncode == 0, result.stderr
        async with OutboxWorker.from_app(started, thorbis_pg_dsn) as worker:
            await worker.drain()
        checked = CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(),
                           postgres_dsn=thorbis_pg_dsn)
        await checked.start([HS])
        await checked.aclose()
    finally:
        await started.aclose()


async def test_a_disabled_or_partial_capture_is_found(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    from thorbis_cache.postgres.capture_check import capture_problems

    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture="triggers")
    rules = app.plugins.all_rules()
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert await capture_problems(conn, rules) == []
        names = [r[0] for r in await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'tst.items'::regclass "
            "AND NOT tgisinternal AND tgtype & 8 <> 0")]  # the DELETE trigger(s)
        assert names
        for name in names:
            await conn.execute(f'ALTER TABLE tst.items DISABLE TRIGGER "{name}"')
        assert await capture_problems(conn, rules) == [
            "tst.items (rules tst.item, tst.lists): no capture trigger for DELETE"]
        logical = LogicalCapture("nowhere", rules)
        assert await capture_problems(conn, rules, logical) == [
            "tst.items (rules tst.item, tst.lists): replication slot thorbis_nowhere does "
            "not exist in this database"]
    finally:
        await conn.close()


# --------------------------------------------------------------------------- 4. signals


def _start_worker(dsn: str, redis_url: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "thorbis_cache.cli", "worker", "--dsn", dsn,
         "--redis-url", redis_url, "--plugin", HS, "--mv-tick", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_worker_stops_like_a_service(hs_env: HsEnv, sig: signal.Signals) -> None:
    pending = await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    proc, lines = _start_worker(hs_env.dsn, hs_env.redis_url)
    try:
        await wait_until("the worker says it runs",
                         lambda: asyncio.sleep(0, any("worker running" in x for x in lines)))
        await wait_until("the backlog is applied", lambda: _outbox_empty(hs_env.conn))
        await hs_env.conn.execute("UPDATE hs.customers SET phone = '555-0100' "
                                  "WHERE tenant_id = 'acme' AND id = 1")
        await wait_until("the change is applied", lambda: _outbox_empty(hs_env.conn))
        proc.send_signal(sig)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert code == 0, err
    await wait_until("the last line is read", lambda: asyncio.sleep(0, len(lines) >= 2))
    assert lines[-1] == f"worker stopped ({sig.name}): {pending + 1} change(s) applied\n", (
        lines, err)
    assert "Traceback" not in err


async def _outbox_empty(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0


# --------------------------------------------------------------------------- 5. overrides


async def test_hosts_override_ttl_and_turn_on_the_near_cache(
    make_app: AppFactory, thorbis_standalone_redis_url: str
) -> None:
    settings = CacheSettings(schema_overrides={"tst.item": {"ttl": 600, "near_ttl": 5}})
    app = await make_app(thorbis_standalone_redis_url, settings=settings,
                         near=NearCache(max_entries=100)).start(["tst"])
    assert app.plugins.registry.get("tst.item") is good.ITEM  # the plugin's own schema
    assert good.ITEM.near_ttl is None
    assert good.ITEM.ttl == 300
    assert await app.cache.near_ready()
    key = good.ITEM.key("acme", item_id=1)
    await app.cache.set(key, good.Item(1, "pump", "open"))
    pttl = await app.cache.store._client.pttl(app.cache.redis_key(key))
    assert 590_000 < pttl <= 600_000
    for _ in range(3):
        assert await app.cache.get(key) == good.Item(1, "pump", "open")
    counters = app.cache.metrics.for_schema("tst.item")
    assert (counters.near_misses, counters.near_hits) == (1, 2)
    # An invalidation still reaches L1 at once.
    await app.cache.delete(key)
    assert await app.cache.get(key) is None


@pytest.mark.parametrize(("overrides", "message"), [
    ({"tst.nope": {"ttl": 60}}, "schema_overrides['tst.nope']: no registered key schema has "
                                "this name (registered: tst.item, tst.item_hash,"),
    ({"tst.item_hash": {"near_ttl": 5}},
     "schema_overrides['tst.item_hash']: near_ttl applies to value schemas only"),
    ({"tst.item": {"near_ttl": 90}},
     "schema_overrides['tst.item']: near_ttl must be seconds in (0, 60], got 90"),
    ({"tst.item": {"ttl": -1}},
     "schema_overrides['tst.item']: ttl must be seconds in (0, 1 year], got -1"),
])
async def test_bad_overrides_fail_the_start_naming_them(
    make_app: AppFactory, thorbis_standalone_redis_url: str, overrides: dict[str, Any],
    message: str,
) -> None:
    app = make_app(thorbis_standalone_redis_url,
                   settings=CacheSettings(schema_overrides=overrides))
    with pytest.raises(ConfigurationError) as info:
        await app.start(["tst"])
    assert str(info.value).startswith(message)
    assert app.plugins.plugins == {}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"tst.item": {"ttl": "ten"}},
     "schema_overrides['tst.item']: ttl must be seconds (a number) or None, got 'ten'"),
    ({"tst.item": {"tll": 5}},
     "schema_overrides['tst.item']: unknown setting(s) 'tll' (settable: ttl, near_ttl)"),
    ({"tst.item": 5}, "schema_overrides['tst.item'] must be a SchemaOverride or a mapping"),
])
def test_bad_override_values_are_refused_by_the_settings(overrides: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CacheSettings(schema_overrides=overrides)
    assert str(info.value).startswith(message)
    assert CacheSettings(schema_overrides={"a.b": SchemaOverride(ttl=5)}
                         ).schema_overrides["a.b"].ttl == 5


async def test_drained_under_logical_capture_waits_for_the_running_stream(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = await make_app(thorbis_standalone_redis_url, thorbis_pg_dsn).start(
        ["tst"], apply_sql=True, capture="logical", slot="hostdrain")
    capture = LogicalCapture("hostdrain", app.plugins.all_rules(), app.plugins.all_views())
    worker = OutboxWorker.from_app(app, thorbis_pg_dsn, capture=capture, poll_interval=30.0)

    async def no_batches_beside_the_loop() -> Any:
        raise AssertionError("drained() ran a batch while run() was running")

    task = asyncio.create_task(worker.run())
    try:
        await wait_until("the worker runs", lambda: asyncio.sleep(0, worker._running))
        worker.run_once = no_batches_beside_the_loop  # type: ignore[method-assign]
        keys = [good.ITEM.key("acme", item_id=i) for i in range(40)]
        for key in keys:
            await app.cache.set(key, good.Item(0, "x", "open"))
        await _insert_items(thorbis_pg_dsn, range(40))
        await asyncio.wait_for(worker.drained(), 20)
        assert await app.cache.get_many(keys) == [None] * 40
        assert worker.metrics.processed == 40
    finally:
        worker.stop()
        await task
        await worker.aclose()
        conn = await asyncpg.connect(thorbis_pg_dsn)
        try:
            await capture.drop(conn)
        finally:
            await conn.close()
