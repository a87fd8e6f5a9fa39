"""A partitioned watched table against change capture, under both captures, with real
PostgreSQL and Redis: ``hs.customers`` partitioned by tenant (acme's own partition, and
a default one itself partitioned by hash), as a host partitions a big table.

Found as a user would: under capture triggers, a statement that names a partition
(``UPDATE hs.customers_acme ...``, a COPY into it) fires that partition's statement
triggers, never the table's, and nothing was captured. Under both captures, rows that
left or joined the table with a partition (detached, dropped, attached with rows; under
logical capture a partition truncated) invalidated nothing. And under logical capture
the partitions kept their own replica identity, so an UPDATE's old row lacked the old
values a rule compares: a customer whose status changed left the customer lists stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL
from thorbis_home_services.schemas import TAG_CUSTOMER_LISTS

from thorbis_cache.invalidation.batch import BatchResult
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.capture_check import capture_problems

_PARTITIONED = [
    "CREATE TABLE hs.customers_copy (LIKE hs.customers INCLUDING DEFAULTS) "
    "PARTITION BY LIST (tenant_id)",
    "CREATE TABLE hs.customers_acme PARTITION OF hs.customers_copy FOR VALUES IN ('acme')",
    "CREATE TABLE hs.customers_others PARTITION OF hs.customers_copy DEFAULT "
    "PARTITION BY HASH (id)",
    "CREATE TABLE hs.customers_others_0 PARTITION OF hs.customers_others "
    "FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
    "CREATE TABLE hs.customers_others_1 PARTITION OF hs.customers_others "
    "FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
    "INSERT INTO hs.customers_copy SELECT * FROM hs.customers",
    "DROP TABLE hs.customers CASCADE",
    "ALTER TABLE hs.customers_copy RENAME TO customers",
    "ALTER TABLE hs.customers ADD PRIMARY KEY (tenant_id, id)",
]

_COLUMNS = ["tenant_id", "id", "first_name", "last_name", "email", "phone", "customer_type",
            "account_status", "payment_status", "longitude", "latitude"]


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    """Customers 1-3 of acme and globex in ``hs.customers`` partitioned, captured as
    ``db init`` makes it."""
    async with capture_env(request.param, thorbis_pg_dsn,
                           thorbis_standalone_redis_url) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 3)
        await env.conn.execute(CUSTOMER_SQL, "globex", 3)
        async with env.conn.transaction():
            for statement in _PARTITIONED:
                await env.conn.execute(statement)
        await asyncio.to_thread(env.db_init)
        async with env.worker() as worker:
            await worker.drain()
        yield env


def _keys(results: list[BatchResult]) -> set[str]:
    return {k for r in results for k in r.keys}


def _tags(results: list[BatchResult]) -> set[tuple[str, str]]:
    return {t for r in results for t in r.tags}


@pytest.mark.parametrize(("statement", "tenant"), [
    ("UPDATE hs.customers_acme SET phone = 'x' WHERE id = 1", "acme"),
    ("DELETE FROM hs.customers_acme WHERE id = 1", "acme"),
    ("UPDATE hs.customers_others SET phone = 'x' WHERE tenant_id = 'globex' AND id = 1",
     "globex"),  # a partition that is partitioned itself
    ("UPDATE hs.customers_others_0 SET phone = 'x' WHERE tenant_id = 'globex' AND id = 1;"
     "UPDATE hs.customers_others_1 SET phone = 'x' WHERE tenant_id = 'globex' AND id = 1",
     "globex"),  # a leaf, at the second level
    ("UPDATE hs.customers SET phone = 'x' WHERE tenant_id = 'acme' AND id = 1", "acme"),
])
async def test_a_write_naming_a_partition_is_captured_as_the_tables(
    env: Env, statement: str, tenant: str
) -> None:
    async with env.worker() as worker:
        await env.cache_customer(1, tenant)
        await env.cache_customer(2, tenant)
        await env.conn.execute(statement)
        assert _keys(await worker.drain()) == {f"{{{tenant}}}:hs.customer:1"}
        assert not await env.cached(1, tenant)
        assert await env.cached(2, tenant)  # the row's change only, not the table's


async def test_inserts_and_copy_into_a_partition_are_captured(env: Env) -> None:
    async with env.worker() as worker:
        for cid in (7, 8):
            await env.cache_customer(cid)  # stands for a cached absence
        await env.conn.execute(
            "CREATE TEMP TABLE seven AS SELECT * FROM hs.customers_acme WHERE id = 1;"
            "UPDATE seven SET id = 7; INSERT INTO hs.customers_acme SELECT * FROM seven")
        await env.conn.copy_records_to_table(
            "customers_acme", schema_name="hs", columns=_COLUMNS,
            records=[("acme", 8, "A", "B", "c@example.com", "1", "residential", "active",
                      "current", 1.0, 2.0)])
        keys = _keys(await worker.drain())
        assert {"{acme}:hs.customer:7", "{acme}:hs.customer:8"} <= keys
        assert not await env.cached(7)
        assert not await env.cached(8)


async def test_an_update_through_the_table_compares_the_old_values(env: Env) -> None:
    """Under logical capture a partition's rows reach the WAL under the partition's own
    replica identity: the capture gives each partition FULL where the table has it, so
    that a rule comparing an old value (the customer lists, on a changed status) sees
    it. An UPDATE of a column no list reads still leaves the lists alone."""
    async with env.worker() as worker:
        await env.conn.execute("UPDATE hs.customers SET phone = 'x' "
                               "WHERE tenant_id = 'acme' AND id = 1")
        assert ("acme", TAG_CUSTOMER_LISTS) not in _tags(await worker.drain())
        await env.conn.execute("UPDATE hs.customers SET account_status = 'suspended' "
                               "WHERE tenant_id = 'acme' AND id = 1")
        assert ("acme", TAG_CUSTOMER_LISTS) in _tags(await worker.drain())
        await env.conn.execute("UPDATE hs.customers_others SET account_status = 'suspended' "
                               "WHERE tenant_id = 'globex' AND id = 2")
        assert ("globex", TAG_CUSTOMER_LISTS) in _tags(await worker.drain())


async def _attach_with_rows(env: Env) -> None:
    await env.conn.execute("CREATE TABLE hs.customers_initech (LIKE hs.customers "
                           "INCLUDING DEFAULTS)")
    await env.conn.execute(CUSTOMER_SQL.replace("hs.customers", "hs.customers_initech"),
                           "initech", 1)
    await env.conn.execute("ALTER TABLE hs.customers ATTACH PARTITION hs.customers_initech "
                           "FOR VALUES IN ('initech')")


@pytest.mark.parametrize("change", [
    "TRUNCATE hs.customers_acme",
    "ALTER TABLE hs.customers DETACH PARTITION hs.customers_acme",
    "DROP TABLE hs.customers_acme",
    "ALTER TABLE hs.customers_others DETACH PARTITION hs.customers_others_1",
    "attach a table with rows",
])
async def test_rows_that_leave_or_join_with_a_partition_invalidate_the_table(
    env: Env, change: str
) -> None:
    """No row trigger and no row in the WAL says which rows left or joined: recorded as
    a TRUNCATE of the table, every tag its rules reach is invalidated for every tenant."""
    async with env.worker() as worker:
        await env.cache_customer(1)
        await env.cache_customer(1, "globex")
        await env.cache_customer(1, "initech")
        if change == "attach a table with rows":
            await _attach_with_rows(env)
        else:
            await env.conn.execute(change)
        tags = _tags(await worker.drain())
        assert {("acme", "hs.customers"), ("globex", "hs.customers")} <= tags
        assert not await env.cached(1)
        assert not await env.cached(1, "globex")
        assert not await env.cached(1, "initech")
        if "DETACH PARTITION hs.customers_acme" in change:
            # No longer the table's: its writes are not captured any more.
            await env.cache_customer(2)
            await env.conn.execute("UPDATE hs.customers_acme SET phone = 'y'")
            assert not _keys(await worker.drain())
            assert await env.cached(2)


async def test_a_new_partition_is_captured_and_invalidates_nothing(env: Env) -> None:
    async with env.worker() as worker:
        await env.cache_customer(1)
        await env.conn.execute("CREATE TABLE hs.customers_initech PARTITION OF hs.customers "
                               "FOR VALUES IN ('initech')")
        assert not _tags(await worker.drain())  # empty: nothing left or joined
        assert await env.cached(1)
        await env.cache_customer(5, "initech")
        await env.conn.execute(CUSTOMER_SQL.replace("hs.customers", "hs.customers_initech"),
                               "initech", 5)
        assert "{initech}:hs.customer:5" in _keys(await worker.drain())
        assert not await env.cached(5, "initech")


async def test_a_migration_renaming_a_watched_column_keeps_partition_writes_working(
    env: Env
) -> None:
    """The stand-in capture a migration puts on the table (capture_ddl) reaches its
    partitions too: their triggers ran the generated functions, which name the old
    column, and every write naming a partition would have failed."""
    async with env.worker() as worker:
        await env.conn.execute("ALTER TABLE hs.customers RENAME COLUMN account_status "
                               "TO status")
        await env.cache_customer(1)
        await env.cache_customer(1, "globex")
        await env.conn.execute("UPDATE hs.customers_acme SET phone = 'x' WHERE id = 1")
        await env.conn.execute("UPDATE hs.customers_others_0 SET phone = 'x'")
        await env.conn.execute("UPDATE hs.customers_others_1 SET phone = 'x'")
        keys = _keys(await worker.drain())
        assert {"{acme}:hs.customer:1", "{globex}:hs.customer:1"} <= keys


async def test_health_names_a_partition_left_without_capture(env: Env) -> None:
    rules = env.app.plugins.all_rules()
    capture = "triggers" if env.capture is None else env.capture
    assert await capture_problems(env.conn, rules, capture) == []
    if env.capture is not None:
        return  # logical: the publication sends every partition's rows as the table's
    await env.conn.execute("DROP TRIGGER thorbis_capture_update ON hs.customers_others_1")
    assert await capture_problems(env.conn, rules, "triggers") == [
        "hs.customers (rules hs.customer_entity, hs.customer_lists_on_change, "
        "hs.customer_lists_on_membership): partition hs.customers_others_1 has no capture "
        "trigger for UPDATE"]
    await asyncio.to_thread(env.db_init)
    assert await capture_problems(env.conn, rules, "triggers") == []


async def test_db_init_records_the_partitions_and_gives_each_its_capture(env: Env) -> None:
    rows = await env.conn.fetch(
        "SELECT g.tgrelid::regclass::text AS rel, g.tgname, g.tgenabled::text "
        "FROM pg_trigger g WHERE g.tgname LIKE 'thorbis_capture%' "
        "AND g.tgrelid::regclass::text LIKE 'hs.customers_%' ORDER BY 1, 2")
    partitions = ["hs.customers_acme", "hs.customers_others", "hs.customers_others_0",
                  "hs.customers_others_1"]
    names = (["thorbis_capture_delete", "thorbis_capture_insert", "thorbis_capture_truncate",
              "thorbis_capture_update"] if env.capture is None
             else ["thorbis_capture_truncate"])
    assert [(r["rel"], r["tgname"]) for r in rows] == [(p, n) for p in partitions
                                                        for n in names]
    assert {r["tgenabled"] for r in rows} == {"A"}  # replica sessions too
    recorded = await env.conn.fetchval(
        "SELECT ARRAY(SELECT p::regclass::text FROM unnest(partitions) AS p ORDER BY 1) "
        "FROM thorbis.captured_tables WHERE table_name = 'hs.customers'")
    assert recorded == partitions
    identities = {r[0]: r[1] for r in await env.conn.fetch(
        "SELECT relname, relreplident::text FROM pg_class WHERE relkind = 'r' "
        "AND relname LIKE 'customers_%' AND relnamespace = 'hs'::regnamespace")}
    expected = "f" if env.capture is not None else "d"
    assert identities == dict.fromkeys(
        ["customers_acme", "customers_others_0", "customers_others_1"], expected)


async def test_a_worker_started_after_the_partitions_changed(env: Env) -> None:
    """The change is recorded in the detaching transaction and read in commit order:
    a worker that was not running then applies it when it starts."""
    await env.cache_customer(1)
    await env.conn.execute("ALTER TABLE hs.customers DETACH PARTITION hs.customers_acme")
    worker = OutboxWorker.from_app(env.app, env.dsn, capture=env.capture)
    async with worker:
        assert ("acme", "hs.customers") in _tags(await worker.drain())
    assert not await env.cached(1)
