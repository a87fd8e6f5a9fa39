"""``thorbis-cache outbox-deadletters list|show|replay|purge`` run as a user runs it:
subprocesses of the installed console script, against real PostgreSQL and Redis, with
the worker (``thorbis-cache worker --once``) dead-lettering and then re-applying."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from core_testing import HS, HsEnv
from thorbis_home_services.schemas import CUSTOMER

CLI = str(Path(sys.executable).with_name("thorbis-cache"))
TABLE = "thorbis.outbox_dead_letters"


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THORBIS_")}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=120, check=False)


async def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args, stdin=stdin)


async def worker_once(env: HsEnv) -> str:
    done = await cli("worker", "--once", "--no-mv", "--no-queue", "--dsn", env.dsn,
                     "--redis-url", env.redis_url, "-p", HS)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def dead_letter_two(env: HsEnv) -> tuple[int, int, int]:
    """A change of a real customer whose batch kept failing (its attempts exhausted) and
    a poison change (an id that is not an int), both dead-lettered by the worker.

    :returns: the customer id, and the dead-letter ids of the good and the poison change.
    """
    await worker_once(env)  # the generated data's own changes
    customer = await env.conn.fetchval(
        "SELECT id FROM hs.customers WHERE tenant_id = 'acme' ORDER BY id LIMIT 1")
    image = json.dumps({"id": customer, "tenant_id": "acme", "account_status": "active",
                        "payment_status": "current", "customer_type": "residential"})
    await env.conn.execute(
        "INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, old, new, attempts, "
        "last_error) VALUES ('hs.customers', 'UPDATE', 'acme', $1::jsonb, $2::jsonb, "
        "$2::jsonb, 5, 'RuntimeError: redis said no')",
        json.dumps({"tenant_id": "acme", "id": customer}), image)
    poison = json.dumps({"id": "abc", "tenant_id": "acme"})
    await env.conn.execute(
        "INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, old, new) "
        "VALUES ('hs.customers', 'DELETE', 'acme', $1::jsonb, $1::jsonb, NULL)", poison)
    out = await worker_once(env)
    assert "2 dead-lettered" in out
    rows = await env.conn.fetch(f"SELECT id, reason FROM {TABLE} ORDER BY id")  # noqa: S608
    assert rows[0]["reason"].startswith("gave up after 5 attempts: RuntimeError")
    assert "'abc'" in rows[1]["reason"]
    return customer, rows[0]["id"], rows[1]["id"]


async def test_list_show_replay_and_the_worker_applies_it(hs_env: HsEnv) -> None:
    env = hs_env
    customer, good, poison = await dead_letter_two(env)
    dsn = ("--dsn", env.dsn)

    listed = await cli("outbox-deadletters", "list", *dsn, "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)["dead_letters"]
    assert [x["id"] for x in letters] == [good, poison]
    assert letters[0]["table_name"] == "hs.customers"
    assert letters[0]["operation"] == "UPDATE"
    assert letters[0]["tenant_id"] == "acme"
    assert letters[0]["attempts"] == 5
    assert letters[0]["pk"] == {"tenant_id": "acme", "id": customer}
    assert letters[0]["age_s"] >= 0

    table = await cli("outbox-deadletters", "list", *dsn)
    assert table.returncode == 0, table.stderr
    assert f"2 dead letter(s) in {TABLE}" in table.stdout
    assert "gave up after 5" in table.stdout

    shown = await cli("outbox-deadletters", "show", str(poison), *dsn)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["old"] == {"id": "abc", "tenant_id": "acme"}

    # The customer's entry is cached; replaying its change lets the worker drop it.
    key = env.app.cache.redis_key(CUSTOMER.key("acme", customer_id=customer))
    await env.app.cache.store.command("SET", key, b"stale", "PX", 60_000)
    replayed = await cli("outbox-deadletters", "replay", str(good), *dsn)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {good} -> thorbis.outbox " in replayed.stdout
    assert "1 dead letter(s) replayed" in replayed.stdout
    assert await env.conn.fetchval(
        "SELECT attempts FROM thorbis.outbox WHERE table_name = 'hs.customers'") == 0
    assert await env.conn.fetchval(f"SELECT count(*) FROM {TABLE}") == 1  # noqa: S608
    out = await worker_once(env)
    assert "1 change(s) applied" in out
    assert "0 dead-lettered" in out
    assert await env.app.cache.store.command("EXISTS", key) == 0

    # A poison change replayed is dead-lettered again, under a new id.
    again = await cli("outbox-deadletters", "replay", "--all", *dsn, "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert list(report["replayed"]) == [str(poison)]
    assert report["missing"] == []
    assert "1 dead-lettered" in await worker_once(env)
    ids = [r["id"] for r in await env.conn.fetch(f"SELECT id FROM {TABLE}")]  # noqa: S608
    assert len(ids) == 1
    assert ids[0] > poison

    # Replaying an id twice: the second time it is not a dead letter any more.
    missing = await cli("outbox-deadletters", "replay", str(poison), *dsn)
    assert missing.returncode == 1
    assert f"no dead letter {poison} in {TABLE}" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


async def test_purge(hs_env: HsEnv) -> None:
    env = hs_env
    _, good, poison = await dead_letter_two(env)
    dsn = ("--dsn", env.dsn)

    one = await cli("outbox-deadletters", "purge", str(good), *dsn)
    assert one.returncode == 0, one.stderr
    assert "1 dead letter(s) deleted" in one.stdout
    # An id that is not a dead letter (any more) is said, as show and replay say it.
    again = await cli("outbox-deadletters", "purge", str(good), *dsn)
    assert again.returncode == 1
    assert f"no dead letter {good} in {TABLE}" in again.stderr

    declined = await cli("outbox-deadletters", "purge", *dsn, stdin="n\n")
    assert declined.returncode == 1
    assert await env.conn.fetchval(f"SELECT count(*) FROM {TABLE}") == 1  # noqa: S608

    everything = await cli("outbox-deadletters", "purge", "--yes", *dsn, "--json")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout) == {"deleted": 1}
    assert await env.conn.fetchval(f"SELECT count(*) FROM {TABLE}") == 0  # noqa: S608
    assert poison > good


def test_bad_input_and_unreachable_servers_are_one_line(thorbis_pg_dsn: str) -> None:
    cases = [
        (("list", "--dsn", "postgresql://nobody:secret@127.0.0.1:1/none"),
         "postgresql connect to postgresql://nobody:***@127.0.0.1:1/none"),
        (("list", "--dsn", "postgresql://127.0.0.1:notaport/x"), "malformed"),
        (("list",), "no PostgreSQL DSN"),
        (("list", "--dsn", thorbis_pg_dsn),
         f"{TABLE} does not exist: run `thorbis-cache db migrate`"),
        # Bad input: exit 64 (it was 1; an id past a bigint printed a traceback).
        (("show", "abc", "--dsn", thorbis_pg_dsn), "id 'abc' is not an integer"),
        (("show", "99999999999999999999", "--dsn", thorbis_pg_dsn), "is out of range"),
        (("purge", "0", "--dsn", thorbis_pg_dsn), "is out of range"),
        (("show", "--dsn", thorbis_pg_dsn), "show takes exactly one dead-letter id"),
        (("replay", "--dsn", thorbis_pg_dsn), "replay takes dead-letter ids or --all"),
    ]
    for args, expected in cases:
        got = run("outbox-deadletters", *args)
        bad_input = args[0] in ("show", "replay", "purge")
        assert got.returncode == (64 if bad_input else 1), (args, got.stdout, got.stderr)
        assert expected in got.stderr, (args, got.stderr)
        assert "secret" not in got.stderr
        assert len(got.stderr.strip().splitlines()) == 1, (args, got.stderr)


async def test_a_logical_worker_applies_a_replayed_dead_letter(
        thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> None:
    """Under logical capture (db init's default on this server) a replayed dead letter
    lands in thorbis.outbox, which the WAL reader applies once its stream is empty."""
    from thorbis_cache import CacheApp, KeyRing, OutboxWorker

    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(),
                         postgres_dsn=thorbis_pg_dsn).start([HS], apply_sql=True)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert app.database is not None
        assert app.database.capture == "logical"
        await conn.execute(
            "INSERT INTO thorbis.outbox_dead_letters (outbox_id, table_name, operation, "
            "tenant_id, pk, old, new, reason, attempts) VALUES (1, 'hs.customers', 'DELETE', "
            "'acme', $1::jsonb, $1::jsonb, NULL, 'gave up after 5 attempts', 5)",
            json.dumps({"tenant_id": "acme", "id": 42}))
        key = app.cache.redis_key(CUSTOMER.key("acme", customer_id=42))
        await app.cache.store.command("SET", key, b"stale", "PX", 60_000)
        replayed = await cli("outbox-deadletters", "replay", "--all", "--dsn", thorbis_pg_dsn)
        assert replayed.returncode == 0, replayed.stderr
        async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
            await worker.drained()
            assert worker.capture is not None  # it read the slot
            assert worker.metrics.processed == 1
        assert await app.cache.store.command("EXISTS", key) == 0
        assert await conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
    finally:
        await conn.close()
        await app.aclose()
