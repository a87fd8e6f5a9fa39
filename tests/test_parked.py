"""Changes parked while their Cluster shard is out of reach: ``thorbis.parked_changes``
and each tenant's retry schedule, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest
from core_testing import HsEnv

from thorbis_cache.invalidation.batch import count_attempt
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres import outbox, parked
from thorbis_cache.postgres.outbox import OutboxRow


def _row(tenant: str | None, i: int) -> OutboxRow:
    return OutboxRow(
        id=i, txid="1234", created_at=dt.datetime(2026, 12, 5, 12, 0, i, tzinfo=dt.UTC),
        table_name="hs.customers", operation="UPDATE" if tenant else "TRUNCATE",
        tenant_id=tenant, pk={"id": i} if tenant else {}, old={"id": i, "phone": "1"},
        new={"id": i, "phone": "2"}, attempts=2, last_error="an earlier failure", age=0.0)


async def _due_now(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE thorbis.parked_tenants SET retry_at = clock_timestamp()")


async def test_parked_changes_keep_their_form_and_wait_for_their_tenants_turn(
        core_conn: asyncpg.Connection) -> None:
    conn = core_conn
    rows = [_row("acme", 1), _row("acme", 2), _row("beta", 3), _row(None, 4)]
    async with conn.transaction():
        await parked.park(conn, rows, "redis UNLINK: circuit open")
    # Not at once: their shard has just refused them.
    async with conn.transaction():
        assert await parked.due_tenant(conn) is None
    schedule = {r["tenant"]: r for r in await conn.fetch("SELECT * FROM thorbis.parked_tenants")}
    assert set(schedule) == {"acme", "beta", ""}  # a TRUNCATE (no tenant) is ''
    assert schedule["acme"]["last_error"] == "redis UNLINK: circuit open"
    assert (await parked.figures(conn)).changes == 4
    assert (await parked.figures(conn)).tenants == 3
    await _due_now(conn)
    async with conn.transaction():
        due = await parked.due_tenant(conn)
        assert due is not None
        taken = await parked.claim_parked(conn, due.tenant, 10)
        assert {row.tenant_id or "" for row in taken} == {due.tenant}
        if due.tenant == "acme":
            assert [(r.pk, r.old, r.new) for r in taken] == [
                ('{"id": 1}', '{"id": 1, "phone": "1"}', '{"id": 1, "phone": "2"}'),
                ('{"id": 2}', '{"id": 2, "phone": "1"}', '{"id": 2, "phone": "2"}')]
        # What a retry needs of a change: its time, transaction and attempts, kept.
        assert all(r.attempts == 2 and r.txid == "1234" and r.last_error for r in taken)
        assert sorted(r.created_at for r in taken) == sorted(
            row.created_at for row in rows if (row.tenant_id or "") == due.tenant)
        assert await parked.forget_if_empty(conn, due.tenant)
    assert (await parked.figures(conn)).tenants == 2


async def test_a_tenant_whose_shard_stays_away_is_put_off_longer_each_time(
        core_conn: asyncpg.Connection) -> None:
    conn = core_conn
    async with conn.transaction():
        await parked.park(conn, [_row("acme", 1)], "no reply within 2.0s")
    waits = []
    for _ in range(6):
        await _due_now(conn)
        async with conn.transaction():
            due = await parked.due_tenant(conn)
            assert due is not None
            waits.append(await parked.retry_later(conn, due, "circuit open"))
            ahead = await conn.fetchval(
                "SELECT extract(epoch FROM retry_at - clock_timestamp()) "
                "FROM thorbis.parked_tenants WHERE tenant = 'acme'")
            assert 0 < ahead <= waits[-1]
    assert waits == [1.0, 2.0, 4.0, parked.MAX_RETRY, parked.MAX_RETRY, parked.MAX_RETRY]
    tries, error = await conn.fetchrow(
        "SELECT tries, last_error FROM thorbis.parked_tenants WHERE tenant = 'acme'")
    assert (tries, error) == (6, "circuit open")
    # Parking more of its changes does not hurry it.
    async with conn.transaction():
        await parked.park(conn, [_row("acme", 2)], "no reply within 2.0s")
    assert await conn.fetchval(
        "SELECT retry_at > clock_timestamp() + interval '1 second' "
        "FROM thorbis.parked_tenants WHERE tenant = 'acme'")
    # A try that reaches it with changes left makes the rest due at once.
    await _due_now(conn)
    async with conn.transaction():
        due = await parked.due_tenant(conn)
        assert due is not None
        assert len(await parked.claim_parked(conn, "acme", 1)) == 1
        assert not await parked.forget_if_empty(conn, "acme")
    async with conn.transaction():
        again = await parked.due_tenant(conn)
        assert again == parked.DueTenant("acme", 0)


@pytest.mark.parametrize("parked_first", [False, True])
async def test_a_change_parked_while_a_retry_forgets_its_tenant_is_not_lost(
        core_conn: asyncpg.Connection, thorbis_pg_dsn: str, parked_first: bool) -> None:
    """A retry took the tenant's last change and forgets the tenant; another worker
    parks a new change of it, its transaction still open, either before the retry
    forgets (``parked_first``) or after. Either way the new change keeps a turn: the
    parker's schedule waits for the retry's commit, then writes the tenant again."""
    conn = core_conn
    other = await asyncpg.connect(thorbis_pg_dsn)
    try:
        for i in range(3):
            async with conn.transaction():
                await parked.park(conn, [_row("acme", 10 * i)], "away")
            await _due_now(conn)
            retry = conn.transaction()
            await retry.start()
            due = await parked.due_tenant(conn)
            assert due is not None
            assert len(await parked.claim_parked(conn, "acme", 10)) == 1
            if not parked_first:
                assert await parked.forget_if_empty(conn, "acme")
            parker = other.transaction()
            await parker.start()
            parking = asyncio.ensure_future(parked.park(other, [_row("acme", 10 * i + 1)],
                                                        "away"))
            await asyncio.sleep(0.2)
            assert not parking.done(), "the schedule did not wait for the retry's row"
            if parked_first:
                assert await parked.forget_if_empty(conn, "acme")  # the new one unseen
            await retry.commit()
            await parking
            await parker.commit()
            assert await conn.fetchval("SELECT count(*) FROM thorbis.parked_tenants "
                                       "WHERE tenant = 'acme'") == 1
            assert await conn.fetchval("SELECT count(*) FROM thorbis.parked_changes") == 1
            await conn.execute("DELETE FROM thorbis.parked_changes")
            await conn.execute("DELETE FROM thorbis.parked_tenants")
    finally:
        await other.close()


async def test_a_worker_on_a_schema_without_parking_says_so_and_goes_on(
        hs_env: HsEnv, caplog: pytest.LogCaptureFixture) -> None:
    """A worker of this release started before ``db migrate`` ran (a rolling deploy):
    its batches are applied, and it names the command that adds what it lacks."""
    await hs_env.conn.execute("DROP TABLE thorbis.parked_tenants, thorbis.parked_changes")
    assert await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") > 0
    worker = OutboxWorker.from_app(hs_env.app, hs_env.dsn)
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    assert await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
    assert worker.metrics.processed > 0
    assert any("run `thorbis-cache db migrate`" in r.getMessage()
               and "parked_tenants" in r.getMessage() for r in caplog.records)


async def test_a_failed_try_counts_an_attempt_on_the_parked_changes(
        core_conn: asyncpg.Connection) -> None:
    """A try that fails otherwise than by the shard being away (a tag invalidator
    error) counts an attempt, so that a change that can never be applied is
    dead-lettered after ``max_attempts``, as from the outbox."""
    conn = core_conn
    async with conn.transaction():
        await parked.park(conn, [_row("acme", 1)], "away")
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM thorbis.parked_changes")]
    await count_attempt(conn, ids, ValueError("tag invalidator: boom"),
                        "thorbis.parked_changes")
    attempts, error = await conn.fetchrow(
        "SELECT attempts, last_error FROM thorbis.parked_changes")
    assert (attempts, error) == (3, "ValueError: tag invalidator: boom")
    with pytest.raises(ValueError, match="counts no attempts"):
        await outbox.record_failure(conn, ids, "x", table="thorbis.audit_log")
