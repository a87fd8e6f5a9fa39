"""Logical decoding capture: which client reads the WAL, and what REPLICA IDENTITY FULL
costs, measured on a private PostgreSQL (``wal_level=logical``).

    .venv/bin/python bench/logical_capture.py            # 100k-change backlog
    .venv/bin/python bench/logical_capture.py --changes 20000

Setup: the home_services schema, ``--changes`` customers, a ``pgoutput`` slot and a
publication of the ruled tables (``LogicalCapture.ensure``), then a backlog of
``--changes`` UPDATEs (1,000 rows per transaction). Each client reads the same backlog
from its own copy of the slot (``pg_copy_logical_replication_slot``):

(a) **SQL, one call**: ``pg_logical_slot_peek_binary_changes`` over asyncpg, the whole
    backlog, every message parsed by ``thorbis_cache.postgres.pgoutput``.
(b) **SQL, worker batches**: the same in calls of 1,000 messages, each followed by
    ``pg_replication_slot_advance`` -- what the worker does, without the row images.
(c) **libpq stream**: ``START_REPLICATION`` through psycopg 3's libpq binding, read on
    the event loop (``thorbis_cache.postgres.replication.ReplicationStream``, what the
    worker uses), every message parsed, confirmed per commit.
(d) **psycopg2 replication connection**: ``START_REPLICATION`` on a
    ``LogicalReplicationConnection``, messages read with ``read_message`` and parsed by
    the same parser, feedback sent per commit (skipped unless psycopg2 is installed:
    ``pip install psycopg2-binary``, a bench-only anchor).
(e) **the worker's read side**: ``LogicalStream.read`` in batches of ``--batch``
    changes (decoding only the columns the images hold, images built in Python) and
    ``confirm``.

Then the WAL written by 10,000 single-row UPDATEs of hs.customers under the default
replica identity and under FULL.

A report, not a test: no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import select
import time
from collections.abc import Sequence

import asyncpg

from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import apply_plugin_sql, pgoutput
from thorbis_cache.postgres.logical import LogicalCapture, parse_lsn
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.replication import ReplicationStream
from thorbis_cache.testing.servers import PostgresServer

CUSTOMERS_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
SELECT 'acme', i, 'Ada', 'Lovelace', 'ada@example.com', 'p0', 'residential', 'active',
       'current', -97.7, 30.2
  FROM generate_series(1, $1::int) AS i
"""
#: Messages per peek in (b) and (c) (``--batch``; the worker's ``batch_size``).
BATCH = 1000
PEEK = ("SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, "
        "'proto_version', '1', 'publication_names', $3)")


def count_changes(messages: Sequence[bytes]) -> int:
    relations: dict[int, pgoutput.Relation] = {}
    return sum(isinstance(pgoutput.parse(m, relations), pgoutput.Change) for m in messages)


async def setup(dsn: str, changes: int) -> tuple[LogicalCapture, asyncpg.Connection]:
    manager = PluginManager()
    await manager.load(["home_services"])
    await migrate(dsn)
    await apply_plugin_sql(dsn, list(manager.plugins.values()))
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})
    await conn.execute(CUSTOMERS_SQL, changes)
    capture = LogicalCapture("bench", manager.all_rules(), manager.all_views())
    await capture.ensure(conn)
    for start in range(0, changes, 1000):
        await conn.execute("UPDATE hs.customers SET phone = 'p1', account_status = 'vip' "
                           "WHERE id > $1 AND id <= $1 + 1000", start)
    return capture, conn


async def copy(conn: asyncpg.Connection, capture: LogicalCapture, name: str) -> str:
    await conn.execute("SELECT pg_copy_logical_replication_slot($1, $2)", capture.slot, name)
    return name


async def sql_one_call(conn: asyncpg.Connection, capture: LogicalCapture) -> tuple[int, float]:
    slot = await copy(conn, capture, "bench_a")
    start = time.perf_counter()
    records = await conn.fetch(PEEK, slot, None, capture.publication)
    n = count_changes([r["data"] for r in records])
    return n, time.perf_counter() - start


async def sql_batches(conn: asyncpg.Connection, capture: LogicalCapture) -> tuple[int, float]:
    slot = await copy(conn, capture, "bench_b")
    start = time.perf_counter()
    n = 0
    while True:
        records = await conn.fetch(PEEK, slot, BATCH, capture.publication)
        if not records:
            break
        n += count_changes([r["data"] for r in records])
        await conn.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", slot,
                           records[-1]["lsn"])
    return n, time.perf_counter() - start


class _CopyReader(LogicalCapture):
    """The capture's publication, read through the copy ``bench_e`` of its slot."""

    @property
    def slot(self) -> str:
        return "bench_e"


async def libpq_stream(dsn: str, capture: LogicalCapture, total: int) -> tuple[int, float]:
    start = time.perf_counter()
    stream = await ReplicationStream.start(dsn, "bench_c", {
        "proto_version": "1", "publication_names": capture.publication})
    relations: dict[int, pgoutput.Relation] = {}
    n = 0
    try:
        while n < total:
            message = stream.read()
            if message is None:
                await stream.readable(1.0)
                continue
            parsed = pgoutput.parse(message[1], relations)
            if isinstance(parsed, pgoutput.Change):
                n += 1
            elif isinstance(parsed, pgoutput.Commit):
                stream.confirm(parsed.end_lsn)
    finally:
        await stream.close()
    return n, time.perf_counter() - start


async def stream_images(dsn: str, conn: asyncpg.Connection, capture: LogicalCapture
                        ) -> tuple[int, float]:
    reader = _CopyReader("bench", [], [])
    reader.plans = capture.plans
    until = parse_lsn(await conn.fetchval("SELECT pg_current_wal_flush_lsn()::text"))
    start = time.perf_counter()
    stream = await reader.stream(dsn, conn)
    n = 0
    try:
        while True:
            batch = await stream.read(conn, BATCH, until=until)
            n += len(batch.rows)
            if batch.end_lsn is not None:
                stream.confirm(batch.end_lsn)
            if batch.caught_up:
                break
    finally:
        await stream.close()
    return n, time.perf_counter() - start


def psycopg2_replication(dsn: str, capture: LogicalCapture, total: int) -> tuple[int, float]:
    # A bench-only dependency (pip install psycopg2-binary), imported where used.
    import psycopg2
    import psycopg2.extras

    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    start = time.perf_counter()
    cur.start_replication(slot_name="bench_d", decode=False, options={
        "proto_version": "1", "publication_names": capture.publication})
    relations: dict[int, pgoutput.Relation] = {}
    n = 0
    while n < total:
        message = cur.read_message()
        if message is None:
            select.select([cur], [], [], 0.01)  # psycopg2's documented wait for data
            continue
        parsed = pgoutput.parse(message.payload, relations)
        if isinstance(parsed, pgoutput.Change):
            n += 1
        elif isinstance(parsed, pgoutput.Commit):
            cur.send_feedback(flush_lsn=message.data_start)
    elapsed = time.perf_counter() - start
    conn.close()
    return n, elapsed


async def wal_cost(conn: asyncpg.Connection, full: bool) -> int:
    identity = "FULL" if full else "DEFAULT"
    await conn.execute(f"ALTER TABLE hs.customers REPLICA IDENTITY {identity}")
    before = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    for i in range(1, 10_001, 100):
        await conn.execute("UPDATE hs.customers SET phone = md5(random()::text) "
                           "WHERE id >= $1 AND id < $1 + 100", i)
    return int(await conn.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint", before))


async def run(dsn: str, changes: int) -> None:
    capture, conn = await setup(dsn, changes)
    try:
        for copy_name in ("bench_c", "bench_d", "bench_e"):
            await copy(conn, capture, copy_name)
        rows = []
        for name, bench in (("(a) SQL peek, one call", sql_one_call),
                            (f"(b) SQL peek {BATCH} + advance", sql_batches)):
            n, seconds = await bench(conn, capture)
            rows.append((name, n, seconds))
        n, seconds = await libpq_stream(dsn, capture, changes)
        rows.append(("(c) libpq stream (psycopg 3)", n, seconds))
        try:
            n, seconds = await asyncio.to_thread(psycopg2_replication, dsn, capture, changes)
            rows.append(("(d) psycopg2 replication conn", n, seconds))
        except ImportError:
            print("(d) skipped: psycopg2 is not installed (pip install psycopg2-binary)")
        n, seconds = await stream_images(dsn, conn, capture)
        rows.append(("(e) (c) + row images (worker)", n, seconds))
        print(f"decoding a backlog of {changes} UPDATEs (1,000 per transaction)")
        print(f"    {'client':<34}{'changes':>9}{'seconds':>9}{'changes/s':>12}")
        for name, n, seconds in rows:
            print(f"    {name:<34}{n:>9}{seconds:>9.2f}{n / seconds:>12.0f}")
        for slot in ("bench_a", "bench_b", "bench_c", "bench_d", "bench_e"):
            # The WAL sender of (d) may outlive its closed connection by a moment.
            for _ in range(1000):
                if not await conn.fetchval("SELECT active FROM pg_replication_slots "
                                           "WHERE slot_name = $1", slot):
                    break
                await asyncio.sleep(0.01)
            await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
        default, full = await wal_cost(conn, False), await wal_cost(conn, True)
        print("\nWAL of 10,000 UPDATEs of hs.customers (100 rows per transaction)")
        print(f"    REPLICA IDENTITY DEFAULT {default / 1e6:8.2f} MB "
              f"({default / 10_000:.0f} B/row)")
        print(f"    REPLICA IDENTITY FULL    {full / 1e6:8.2f} MB "
              f"({full / 10_000:.0f} B/row, {full / default:.2f}x)")
        await capture.drop(conn)
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    global BATCH
    BATCH = args.batch
    with PostgresServer() as postgres:
        asyncio.run(run(postgres.dsn(), args.changes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
