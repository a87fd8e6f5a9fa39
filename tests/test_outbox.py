"""Outbox capture and commit-safe consumption, on a small table of its own.

Triggers record one row per change with only the columns rules need; a transaction that
commits late is still processed; several workers share the work exactly once; a worker
killed mid-batch loses nothing; poison rows are dead-lettered with the reason and do not
block their batch; retries are bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence

import asyncpg
import attrs
import pytest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import ConfigurationError, RedisUnavailableError
from thorbis_cache.invalidation.batch import Incomplete
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.declarations import InvalidationRule, Operation, RuleTarget
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.outbox import claim_batch, prune_dead_letters
from thorbis_cache.postgres.triggers import CHANNEL, install_triggers, plan_tables

TABLE_SQL = """
CREATE SCHEMA IF NOT EXISTS tst;
CREATE TABLE tst.items (
    tenant_id text NOT NULL, id bigint NOT NULL, status text NOT NULL,
    note text NOT NULL DEFAULT '', secret text NOT NULL DEFAULT 'pii', day date,
    PRIMARY KEY (tenant_id, id));
CREATE TABLE tst.flags (
    tenant_id text NOT NULL, id bigint PRIMARY KEY, status text NOT NULL, note text);
"""

ITEM: KeySchema[str] = KeySchema("tst.item", str, params={"item_id": int})
DAY: KeySchema[str] = KeySchema("tst.day", str, params={"day": dt.date})

RULES = (
    InvalidationRule("tst.item", "tst.items", (Operation.UPDATE, Operation.DELETE),
                     (RuleTarget(schema="tst.item", params={"item_id": "id"}),)),
    InvalidationRule("tst.lists", "tst.items", list(Operation), (RuleTarget(tag="tst.lists"),),
                     significant_columns=("status",)),
    InvalidationRule("tst.day", "tst.items", list(Operation),
                     (RuleTarget(schema="tst.day", params={"day": "day"}),),
                     significant_columns=("day",)),
    # Only significant-column rules on tst.flags: irrelevant updates are skipped in SQL.
    InvalidationRule("tst.flags", "tst.flags", list(Operation), (RuleTarget(tag="tst.flags"),),
                     significant_columns=("status",)),
)


@attrs.frozen
class Env:
    dsn: str
    conn: asyncpg.Connection
    cache: Cache

    def worker(self, **options: object) -> OutboxWorker:
        return OutboxWorker(self.dsn, self.cache, RULES, **options)  # type: ignore[arg-type]

    async def count(self, table: str = "thorbis.outbox") -> int:
        return int(await self.conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608


@pytest.fixture
async def env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    await migrate(thorbis_pg_dsn)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    await conn.execute(TABLE_SQL)
    await install_triggers(conn, RULES)
    registry = SchemaRegistry()
    registry.register(ITEM)
    registry.register(DAY)
    async with Cache.from_url(thorbis_standalone_redis_url, registry) as cache:
        yield Env(thorbis_pg_dsn, conn, cache)
    await conn.close()


async def insert(conn: asyncpg.Connection, ids: Sequence[int], tenant: str = "acme") -> None:
    await conn.executemany("INSERT INTO tst.items (tenant_id, id, status) VALUES ($1, $2, 'open')",
                           [(tenant, i) for i in ids])


# --------------------------------------------------------------------------- capture


async def test_trigger_records_one_row_with_needed_columns_and_sends_no_notify(
    env: Env
) -> None:
    wakes: list[str] = []
    listener = await asyncpg.connect(env.dsn)
    await listener.add_listener(CHANNEL, lambda *args: wakes.append(args[-1]))
    try:
        await env.conn.execute(
            "INSERT INTO tst.items (tenant_id, id, status, day) VALUES ('acme', 7, 'open', "
            "'2024-05-01')")
        await env.conn.execute("UPDATE tst.items SET status = 'done' WHERE id = 7")
        await env.conn.execute("DELETE FROM tst.items WHERE id = 7")
        await asyncio.sleep(0.2)  # a notification would have arrived by now
    finally:
        await listener.close()
    # No NOTIFY: a notifying transaction takes a database-wide lock at commit, which
    # would serialise the host's writers; the worker polls instead.
    assert wakes == []
    rows = await env.conn.fetch("SELECT * FROM thorbis.outbox_images ORDER BY id")
    assert [r["operation"] for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    assert {r["table_name"] for r in rows} == {"tst.items"}
    assert {r["tenant_id"] for r in rows} == {"acme"}
    assert {r["pk"] for r in rows} == {json.dumps({"id": 7, "tenant_id": "acme"})}
    full = {"day": "2024-05-01", "id": 7, "status": "open", "tenant_id": "acme"}
    assert (rows[0]["old"], json.loads(rows[0]["new"])) == (None, full)
    assert json.loads(rows[1]["new"]) == {**full, "status": "done"}
    assert (json.loads(rows[2]["old"])["status"], rows[2]["new"]) == ("done", None)
    # Columns no rule reads (note, secret) never reach the outbox.
    assert all("secret" not in (r["new"] or r["old"]) for r in rows)


async def test_update_skipped_in_sql_only_when_every_rule_has_significant_columns(
    env: Env
) -> None:
    await env.conn.execute("INSERT INTO tst.flags VALUES ('acme', 1, 'on', 'a')")
    await env.conn.execute("INSERT INTO tst.items (tenant_id, id, status) VALUES ('acme', 1, 'a')")
    await env.conn.execute("DELETE FROM thorbis.outbox")
    await env.conn.execute("UPDATE tst.flags SET note = 'b'")  # insignificant: skipped
    assert await env.count() == 0
    await env.conn.execute("UPDATE tst.flags SET status = 'off'")
    assert await env.count() == 1
    # tst.items has a rule without significant columns: every UPDATE is recorded.
    await env.conn.execute("UPDATE tst.items SET note = 'x'")
    assert await env.count() == 2
    plans = {p.table: p for p in plan_tables(RULES)}
    assert plans["tst.flags"].update_filter == ("status", "tenant_id")
    assert plans["tst.items"].update_filter == ()


async def test_multi_row_statements_record_each_row_paired_by_key(env: Env) -> None:
    """Statement-level capture: one outbox row per changed row, old and new images of the
    same row; rows whose significant columns did not change are skipped in bulk too."""
    await insert(env.conn, range(1, 6))
    await env.conn.execute("INSERT INTO tst.flags SELECT 'acme', i, 'on' "
                           "FROM generate_series(1, 5) i")
    await env.conn.execute("DELETE FROM thorbis.outbox")
    await env.conn.execute("UPDATE tst.items SET status = 's' || id")
    rows = await env.conn.fetch("SELECT pk, old, new FROM thorbis.outbox_images ORDER BY id")
    assert sorted(json.loads(r["pk"])["id"] for r in rows) == [1, 2, 3, 4, 5]
    for r in rows:
        old, new = json.loads(r["old"]), json.loads(r["new"])
        assert old["id"] == new["id"] == json.loads(r["pk"])["id"]
        assert (old["status"], new["status"]) == ("open", f"s{old['id']}")
    await env.conn.execute("DELETE FROM thorbis.outbox")
    await env.conn.execute("UPDATE tst.flags SET status = CASE WHEN id % 2 = 0 THEN 'off' "
                           "ELSE status END, note = 'n'")
    rows = await env.conn.fetch("SELECT pk, new FROM thorbis.outbox_images ORDER BY id")
    assert sorted(json.loads(r["pk"])["id"] for r in rows) == [2, 4]
    assert {json.loads(r["new"])["status"] for r in rows} == {"off"}
    await env.conn.execute("DELETE FROM tst.flags WHERE id <= 3")
    assert await env.conn.fetchval(
        "SELECT count(*) FROM thorbis.outbox WHERE operation = 'DELETE'") == 3


async def test_a_bulk_update_after_a_single_row_one_in_the_same_session_stays_linear(
    env: Env
) -> None:
    """PL/pgSQL keeps the plan it made for the first UPDATE of a session: planned for one
    row, the old/new join was a nested loop, and a later 8,000-row UPDATE compared 64
    million pairs (seconds). The UPDATE function plans without nested loops."""
    await env.conn.execute("INSERT INTO tst.items (tenant_id, id, status) "
                           "SELECT 'acme', i, 'open' FROM generate_series(1, 8000) i")
    await env.conn.execute("UPDATE tst.items SET note = 'one' WHERE id = 1")
    await env.conn.execute("DELETE FROM thorbis.outbox")
    started = asyncio.get_running_loop().time()
    await env.conn.execute("UPDATE tst.items SET note = 'all'")
    elapsed = asyncio.get_running_loop().time() - started
    assert await env.count() == 8000
    assert await env.conn.fetchval(
        "SELECT count(DISTINCT pk) FROM thorbis.outbox_images "
        "WHERE old->>'id' = new->>'id'") == 8000
    assert elapsed < 2.0, f"8,000-row UPDATE took {elapsed:.2f} s (nested loop?)"


async def test_the_outbox_takes_rows_without_a_check_constraint(env: Env) -> None:
    """Migration 006 dropped the CHECK on ``operation`` (re-planned for every captured
    statement); the worker still refuses an unknown operation, as a dead letter."""
    assert await env.conn.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'thorbis.outbox'::regclass "
        "AND contype = 'c'") == 0
    await env.conn.execute(
        "INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk) "
        "VALUES ('tst.items', 'MERGE', 'acme', '{\"tenant_id\": \"acme\", \"id\": 1}')")
    async with env.worker() as worker:
        results = await worker.drain()
    assert [reason for r in results for _, reason in r.dead_letters] == [
        "unknown operation 'MERGE'"]
    assert await env.count() == 0
    assert await env.count("thorbis.outbox_dead_letters") == 1


async def test_an_update_that_changes_the_key_records_both_images(env: Env) -> None:
    """A row whose key changed has no partner in the UPDATE's FULL JOIN: its old and its
    new row are recorded one-sided, and both keys go."""
    await env.cache.set(ITEM.key("acme", item_id=1), "old key")
    await env.cache.set(ITEM.key("acme", item_id=2), "new key")
    await insert(env.conn, [1, 3])
    await env.conn.execute("DELETE FROM thorbis.outbox")
    await env.conn.execute("UPDATE tst.items SET id = id + 1, status = 'moved'")
    rows = await env.conn.fetch("SELECT operation, old, new FROM thorbis.outbox_images")

    def key(image: str | None) -> int | None:
        return None if image is None else int(json.loads(image)["id"])

    # 1 -> 2 and 3 -> 4: no old row shares its key with a new one, so all four are
    # recorded one-sided.
    assert sorted(((r["operation"], key(r["old"]), key(r["new"])) for r in rows),
                  key=str) == sorted([("UPDATE", 1, None), ("UPDATE", 3, None),
                                      ("UPDATE", None, 2), ("UPDATE", None, 4)], key=str)
    async with env.worker() as worker:
        await worker.drain()
    assert await env.cache.get(ITEM.key("acme", item_id=1)) is None
    assert await env.cache.get(ITEM.key("acme", item_id=2)) is None


async def test_a_migration_may_change_the_type_of_a_key_column(env: Env) -> None:
    """Found as a user would: `ALTER TABLE ... ALTER COLUMN id TYPE bigint` (an int key
    running out) was refused by PostgreSQL while the row-level key trigger's WHEN read
    the key. No trigger definition reads a column now; capture goes on after it."""
    await insert(env.conn, [1])
    await env.conn.execute("ALTER TABLE tst.items ALTER COLUMN id TYPE numeric(20)")
    await env.cache.set(ITEM.key("acme", item_id=1), "cached")
    await env.conn.execute("UPDATE tst.items SET status = 'done' WHERE id = 1")
    async with env.worker() as worker:
        await worker.drain()
    assert await env.cache.get(ITEM.key("acme", item_id=1)) is None


TYPES_SQL = """
CREATE TABLE tst.typed (
    tenant_id text NOT NULL, id bigint NOT NULL, name varchar(20), n int, small smallint,
    flag boolean, amount numeric, ratio float8, day date, at timestamptz, ref uuid,
    doc jsonb, tags text[], PRIMARY KEY (tenant_id, id));
"""
TYPED = ("name", "n", "small", "flag", "amount", "ratio", "day", "at", "ref", "doc", "tags")


async def test_claimed_images_equal_the_json_the_old_triggers_wrote(env: Env) -> None:
    """Triggers write text arrays; the claim rebuilds the objects ``jsonb_build_object``
    gave in the writing session, for every kind of type (whatever its DateStyle); a row
    already in the outbox in the JSON form is claimed as before."""
    await env.conn.execute(TYPES_SQL)
    rule = InvalidationRule("tst.typed", "tst.typed", list(Operation), (RuleTarget(tag="t"),),
                            significant_columns=TYPED)
    await install_triggers(env.conn, [*RULES, rule])
    await env.conn.execute("DELETE FROM thorbis.outbox")
    await env.conn.execute("SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Kolkata'")
    await env.conn.execute(
        "INSERT INTO tst.typed VALUES ('acme', 1, 'a \"q\" \\ é\n\x01', 42, -3, true, "
        "12345678901234567890.5, 1e20, '2024-05-01', '2024-05-01 10:00:00+00', "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, null]}', '{x,\"y z\"}'), "
        "('acme', 2, NULL, NULL, NULL, NULL, 'NaN', '-Infinity', NULL, NULL, NULL, NULL, "
        "NULL)")
    await env.conn.execute("UPDATE tst.typed SET n = n + 1, flag = NOT flag")
    await env.conn.execute("DELETE FROM tst.typed WHERE id = 2")
    pairs = ", ".join(f"'{c}', t.{c}" for c in sorted(("tenant_id", *TYPED)))
    # A row of the earlier form (jsonb columns, no shape), as a trigger of 0.x wrote it.
    await env.conn.execute(
        "INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, new) "  # noqa: S608
        f"SELECT 'tst.typed', 'INSERT', 'acme', jsonb_build_object('tenant_id', t.tenant_id, "
        f"'id', t.id), jsonb_build_object({pairs}) FROM tst.typed t")
    one = json.loads(await env.conn.fetchval(
        f"SELECT jsonb_build_object({pairs})::text FROM tst.typed t"))  # noqa: S608
    await env.conn.execute("RESET DateStyle; RESET TimeZone")
    async with env.conn.transaction():
        claimed = await claim_batch(env.conn, 100)
    # The UPDATE of row 2 changed no significant column (NULL + 1 is NULL): not recorded.
    assert [(r.operation, r.pk) for r in claimed[:4]] == [
        ("INSERT", {"id": 1, "tenant_id": "acme"}), ("INSERT", {"id": 2, "tenant_id": "acme"}),
        ("UPDATE", {"id": 1, "tenant_id": "acme"}), ("DELETE", {"id": 2, "tenant_id": "acme"})]
    assert claimed[2].new == one
    assert claimed[0].new == claimed[2].old == {**one, "n": 42, "flag": True}
    assert one["name"] == 'a "q" \\ é\n\x01'
    assert (one["amount"], one["ratio"]) == (12345678901234567890.5, 100000000000000000000)
    # As jsonb_build_object wrote it in the writer's session: ISO, the session's offset.
    assert (one["at"], one["day"]) == ("2024-05-01T15:30:00+05:30", "2024-05-01")
    assert one["tags"] == ["x", "y z"]
    assert one["doc"] == {"k": [1, None]}
    two = {**dict.fromkeys(one), "tenant_id": "acme", "amount": "NaN",
           "ratio": "-Infinity"}
    assert claimed[1].new == claimed[3].old == two
    assert claimed[3].new is None
    # The earlier form is claimed as stored: JSON text.
    assert json.loads(str(claimed[4].new)) == one
    assert json.loads(str(claimed[4].pk)) == {"id": 1, "tenant_id": "acme"}
    assert len(claimed) == 5


async def test_an_undecodable_compact_row_is_dead_lettered_with_its_values(env: Env) -> None:
    await env.conn.execute(
        "INSERT INTO thorbis.outbox (table_name, operation, tenant_id, shape, old_values) "
        "VALUES ('tst.items', 'DELETE', 'acme', 999999, '{acme,1}')")
    async with env.worker() as worker:
        results = await worker.drain()
    [(_, reason)] = [d for r in results for d in r.dead_letters]
    assert reason.startswith("old: malformed JSON")
    kept = await env.conn.fetchval("SELECT old #>> '{}' FROM thorbis.outbox_dead_letters")
    assert "capture shape 999999 does not exist" in kept
    assert "'old': ['acme', '1']" in kept
    assert await env.count() == 0


async def test_install_is_idempotent_and_refuses_bad_tables(env: Env) -> None:
    await install_triggers(env.conn, RULES)
    names = await env.conn.fetch(
        "SELECT tgrelid::regclass::text AS rel, tgname FROM pg_trigger "
        "WHERE tgname LIKE 'thorbis_capture%' ORDER BY 1, 2")
    # Per table: one statement-level trigger per operation and one for TRUNCATE (no
    # row-level trigger: none whose definition reads a column a migration could change).
    assert [tuple(r) for r in names] == [
        (t, n) for t in ("tst.flags", "tst.items")
        for n in ("thorbis_capture_delete", "thorbis_capture_insert",
                  "thorbis_capture_truncate", "thorbis_capture_update")]
    missing = InvalidationRule("tst.m", "tst.items", [Operation.UPDATE],
                               (RuleTarget(tag="tst.x"),), significant_columns=("nope",))
    with pytest.raises(ConfigurationError, match=r"tst\.items.*nope"):
        await install_triggers(env.conn, [missing])
    await env.conn.execute("CREATE TABLE tst.nopk (tenant_id text, id int)")
    with pytest.raises(ConfigurationError, match="no primary key"):
        await install_triggers(env.conn, [InvalidationRule(
            "tst.n", "tst.nopk", [Operation.INSERT], (RuleTarget(tag="tst.x"),))])
    # The failed installs changed nothing: writes still work and are captured.
    await insert(env.conn, [1])
    assert await env.count() == 1


# --------------------------------------------------------------------------- consumption


async def test_late_committing_transaction_is_not_skipped(env: Env) -> None:
    late = await asyncpg.connect(env.dsn)
    try:
        tx = late.transaction()
        await tx.start()
        await insert(late, [1])  # takes the lowest outbox id, commits last
        await insert(env.conn, [2, 3])
        worker = env.worker()
        first = await worker.run_once()
        assert first.claimed == 2
        assert await worker.run_once() == type(first)()  # the open transaction is invisible
        await tx.commit()
        second = await worker.run_once()
        assert second.claimed == 1
        assert set(second.processed).isdisjoint(first.processed)
        await worker.aclose()
    finally:
        await late.close()
    assert await env.count() == 0


async def test_changes_committed_while_no_worker_ran_are_processed(env: Env) -> None:
    await env.cache.set(ITEM.key("acme", item_id=5), "cached")
    await insert(env.conn, [5])
    await env.conn.execute("UPDATE tst.items SET note = 'n' WHERE id = 5")
    async with env.worker() as worker:
        results = await worker.drain()
    assert sum(r.claimed for r in results) == 2
    assert await env.cache.get(ITEM.key("acme", item_id=5)) is None


async def test_claims_are_planned_for_the_outbox_as_it_is_now(env: Env) -> None:
    """The outbox is empty most of the time. A generic plan that PostgreSQL kept after
    a quiet spell of empty claims was one for an empty table: then a burst of 68,000
    rows made a claim take more than 20 s (bench/capture.py's worker fell to 340
    changes/s under 8 writers). The worker's connection plans every claim afresh."""
    async with env.worker(require_capture=False) as worker:
        for _ in range(12):  # an idle worker's empty claims
            assert (await worker.run_once()).claimed == 0
        conn = await worker._connection()
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%WITH claimed AS%' "
            "AND statement NOT LIKE '%pg_prepared_statements%'")
        assert plans is not None
        assert plans["generic_plans"] == 0
        assert plans["custom_plans"] >= 12
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"


async def test_several_workers_process_each_change_exactly_once(env: Env) -> None:
    await insert(env.conn, range(300))
    await env.conn.execute("UPDATE tst.items SET status = 'x'")
    expected = {r[0] for r in await env.conn.fetch("SELECT id FROM thorbis.outbox")}
    workers = [env.worker(batch_size=25) for _ in range(4)]

    async def drain(w: OutboxWorker) -> list[int]:
        return [i for r in await w.drain() for i in r.processed]

    done = await asyncio.gather(*(drain(w) for w in workers))
    for w in workers:
        await w.aclose()
    seen = [i for ids in done for i in ids]
    assert len(seen) == len(set(seen)) == len(expected) == 600
    assert set(seen) == expected
    assert sum(1 for ids in done if ids) >= 2  # the work was actually shared


async def test_worker_killed_mid_batch_loses_nothing(env: Env) -> None:
    await insert(env.conn, range(10))
    await env.conn.execute("UPDATE tst.items SET status = 'x'")
    claimed = asyncio.Event()

    async def hang(tenant: str, tags: Sequence[str]) -> None:
        claimed.set()
        await asyncio.sleep(3600)

    doomed = env.worker(invalidate_tags=hang)
    task = asyncio.create_task(doomed.run_once())
    await asyncio.wait_for(claimed.wait(), 5)
    # The process dies: its connection drops, its transaction aborts.
    doomed._conn.terminate()
    task.cancel()
    with pytest.raises((asyncio.CancelledError, Exception)):
        await task
    assert await env.count() == 20
    survivor = env.worker()
    results = await survivor.drain()
    await survivor.aclose()
    assert sum(r.claimed for r in results) == 20


async def test_failing_batch_rolls_back_then_dead_letters_after_max_attempts(env: Env) -> None:
    await insert(env.conn, [1])
    calls = 0

    async def broken(tenant: str, tags: Sequence[str]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("tag engine down")

    async with env.worker(invalidate_tags=broken, max_attempts=2) as worker:
        for attempt in (1, 2):
            with pytest.raises(RuntimeError, match="tag engine down"):
                await worker.run_once()
            row = await env.conn.fetchrow("SELECT attempts, last_error FROM thorbis.outbox")
            assert row["attempts"] == attempt
            assert "tag engine down" in row["last_error"]
        result = await worker.run_once()
    assert calls == 2
    assert result.processed == ()
    assert result.dead_letters[0][1].startswith("gave up after 2 attempts: RuntimeError")
    assert await env.count() == 0
    assert await env.count("thorbis.outbox_dead_letters") == 1
    assert worker.metrics.failed_batches == 2
    assert worker.metrics.dead_lettered == 1


async def test_poison_rows_are_dead_lettered_without_blocking_the_batch(env: Env) -> None:
    await env.cache.set(ITEM.key("acme", item_id=1), "cached")
    await insert(env.conn, [1])
    await env.conn.execute("UPDATE tst.items SET day = NULL, status = 'z' WHERE id = 1")
    poison = [
        ("UPDATE", "acme", '{"id": "abc", "status": "a", "day": null}', "cannot convert 'abc'"),
        ("UPDATE", "acme", '"just a string"', "old: expected a JSON object, got str"),
        ("DELETE", "acme", '{"id": 1, "status": "a", "day": "2024-13-45"}', "'day'"),
        ("DELETE", "ACME!", '{"id": 1}', "tenant:"),
    ]
    for op, tenant, old, _ in (*poison, ("DELETE", "acme", '{"status": "a"}', "")):
        await env.conn.execute(
            "INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, old, new) "
            "VALUES ('tst.items', $1, $2, '{}', $3::jsonb, $3::jsonb)", op, tenant, old)
    async with env.worker() as worker:
        result = await worker.run_once()
    # The real INSERT and UPDATE, and the row without the columns the keys need: not
    # poison, but incomplete (applied by tags, and said: no schema here has one).
    assert len(result.processed) == 3
    assert result.incomplete == (
        Incomplete("tst.items", 1, ("day", "id"), ("tst.day", "tst.item")),)
    assert worker.metrics.incomplete_changes == 1
    assert len(result.dead_letters) == len(poison)
    for (_, reason), (_, _, _, expected) in zip(result.dead_letters, poison):
        assert expected in reason
    # The NULL day named no key; the good rows were applied.
    assert await env.cache.get(ITEM.key("acme", item_id=1)) is None
    stored = await env.conn.fetch("SELECT reason FROM thorbis.outbox_dead_letters ORDER BY id")
    assert [r["reason"] for r in stored] == [r for _, r in result.dead_letters]
    assert await env.count() == 0


async def test_prune_dead_letters(env: Env) -> None:
    await env.conn.execute(
        "INSERT INTO thorbis.outbox_dead_letters (outbox_id, reason, failed_at) VALUES "
        "(1, 'old', now() - interval '30 days'), (2, 'new', now())")
    assert await prune_dead_letters(env.conn, 14) == 1
    assert [r[0] for r in await env.conn.fetch(
        "SELECT reason FROM thorbis.outbox_dead_letters")] == ["new"]


async def test_redis_down_keeps_rows_without_counting_attempts(env: Env) -> None:
    await insert(env.conn, [1])
    await env.conn.execute("UPDATE tst.items SET note = 'n'")
    # Nothing listens on port 1: every Redis call fails at once.
    async with Cache.from_url("redis://127.0.0.1:1/0", env.cache.registry) as down:
        worker = OutboxWorker(env.dsn, down, RULES)
        with pytest.raises(RedisUnavailableError):
            await worker.run_once()
        await worker.aclose()
    assert await env.conn.fetchval("SELECT sum(attempts) FROM thorbis.outbox") == 0
    assert await env.count() == 2
    async with env.worker() as recovered:
        assert sum(r.claimed for r in await recovered.drain()) == 2


async def test_a_view_source_no_rule_names_gets_a_count_only_trigger(env: Env) -> None:
    """Entries that mirror a view are left to its refresh, so its sources often have no
    rule; their changes must still reach the outbox, where the smart refresh counts
    them, and plan no invalidation."""
    from thorbis_cache.plugins.declarations import MaterializedView

    await env.conn.execute(
        "CREATE TABLE tst.sales (tenant_id text NOT NULL, id bigint PRIMARY KEY, "
        "amount numeric NOT NULL, buyer text NOT NULL)")
    view = MaterializedView("tst.sales_daily", "SELECT 1", sources=("tst.sales", "tst.items"))
    plans = {p.table: p for p in plan_tables(RULES, [view])}
    assert plans["tst.sales"].columns == ("tenant_id",)  # no other column travels
    assert plans["tst.items"].columns != ("tenant_id",)  # a ruled table keeps its plan
    await install_triggers(env.conn, RULES, [view])
    await env.conn.execute("INSERT INTO tst.sales VALUES ('acme', 1, 9.5, 'Ada')")
    await env.conn.execute("UPDATE tst.sales SET amount = 10 WHERE id = 1")
    rows = await env.conn.fetch(
        "SELECT operation, old, new FROM thorbis.outbox_images "
        "WHERE table_name = 'tst.sales' ORDER BY id")
    assert [r["operation"] for r in rows] == ["INSERT", "UPDATE"]
    assert "Ada" not in json.dumps([dict(r) for r in rows], default=str)
    async with env.worker() as worker:
        batches = await worker.drain()
    assert sum(len(b.processed) for b in batches) == 2
    assert not any(b.keys or b.tags for b in batches)
    counted = await env.conn.fetchval(
        "SELECT changes FROM thorbis.table_changes WHERE table_name = 'tst.sales'")
    assert counted == 2
