"""The hash-chained audit log: appends chain, concurrent appenders never fork it, and
``verify`` (and ``thorbis-cache audit verify``) names the first broken link after an
edit or a deletion."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest
from typer.testing import CliRunner

from thorbis_cache.cli import app as cli_app
from thorbis_cache.postgres import audit
from thorbis_cache.postgres.migrations import migrate


async def _append(core_conn: asyncpg.Connection, n: int, tenant: str = "acme") -> None:
    for i in range(n):
        async with core_conn.transaction():
            await audit.append(core_conn, "invalidation", tenant, {"keys": i, "digest": "ab" * 8})


async def test_chain_links_and_verifies(core_conn: asyncpg.Connection) -> None:
    assert await audit.verify(core_conn) == audit.VerifyResult(True, 0)
    await _append(core_conn, 5)
    rows = await core_conn.fetch("SELECT id, prev_hash, hash FROM thorbis.audit_log ORDER BY id")
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert bytes(rows[0]["prev_hash"]) == audit.GENESIS
    for before, after in itertools.pairwise(rows):
        assert bytes(after["prev_hash"]) == bytes(before["hash"])
    assert await audit.verify(core_conn, batch=2) == audit.VerifyResult(True, 5)


async def test_rolled_back_append_leaves_no_trace(core_conn: asyncpg.Connection) -> None:
    await _append(core_conn, 2)
    tx = core_conn.transaction()
    await tx.start()
    await audit.append(core_conn, "invalidation", "acme", {"keys": 9})
    await tx.rollback()  # the batch failed: its audit record goes with it
    await _append(core_conn, 1)
    assert await audit.verify(core_conn) == audit.VerifyResult(True, 3)


async def test_concurrent_appenders_never_fork(thorbis_pg_dsn: str,
                                               core_conn: asyncpg.Connection) -> None:
    async def appender(tenant: str) -> None:
        c = await asyncpg.connect(thorbis_pg_dsn)
        try:
            await _append(c, 15, tenant)
        finally:
            await c.close()

    await asyncio.gather(*(appender(f"t{i}") for i in range(4)))
    assert await audit.verify(core_conn) == audit.VerifyResult(True, 60)


@pytest.mark.parametrize(
    ("tamper", "broken", "reason"),
    [
        ("UPDATE thorbis.audit_log SET detail = '{\"keys\": 99}' WHERE id = 3", 3,
         "hash mismatch"),
        ("UPDATE thorbis.audit_log SET tenant = 'evil' WHERE id = 4", 4, "hash mismatch"),
        ("UPDATE thorbis.audit_log SET at = at + interval '1 second' WHERE id = 2", 2,
         "hash mismatch"),
        ("UPDATE thorbis.audit_log SET prev_hash = '\\x00'::bytea WHERE id = 5", 5,
         "prev mismatch"),
        # Rewriting a record with a self-consistent hash still breaks its successor.
        ("UPDATE thorbis.audit_log SET hash = sha256(hash) WHERE id = 3", 3, "hash mismatch"),
        ("DELETE FROM thorbis.audit_log WHERE id = 4", 5, "gap"),
        ("DELETE FROM thorbis.audit_log WHERE id = 1", 2, "gap"),
    ],
)
async def test_tampering_is_reported_at_the_first_broken_link(
    core_conn: asyncpg.Connection, thorbis_pg_dsn: str, tamper: str, broken: int, reason: str
) -> None:
    await _append(core_conn, 6)
    await core_conn.execute(tamper)
    result = await audit.verify(core_conn)
    assert not result.ok
    assert result.broken_id == broken
    assert result.reason is not None
    assert result.reason.startswith(reason)

    cli = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["audit", "verify", "--dsn", thorbis_pg_dsn])
    assert cli.exit_code == 1
    assert f"broken at record {broken}" in cli.output
    assert reason in cli.output


async def test_renumbering_after_a_deletion_is_detected(core_conn: asyncpg.Connection) -> None:
    # A forger who deletes record 3 and renumbers the rest to close the gap breaks the
    # prev link instead.
    await _append(core_conn, 5)
    await core_conn.execute("DELETE FROM thorbis.audit_log WHERE id = 3")
    await core_conn.execute("UPDATE thorbis.audit_log SET id = id - 1 WHERE id > 3")
    result = await audit.verify(core_conn)
    assert (result.broken_id, result.reason is not None and result.reason[:13]) == (
        3, "prev mismatch")


def test_cli_audit_verify_ok(thorbis_pg_dsn: str) -> None:
    async def setup() -> None:
        await migrate(thorbis_pg_dsn)
        c = await asyncpg.connect(thorbis_pg_dsn)
        try:
            await _append(c, 3)
        finally:
            await c.close()

    asyncio.run(setup())
    result = CliRunner().invoke(cli_app, ["audit", "verify", "--dsn", thorbis_pg_dsn])
    assert result.exit_code == 0, result.output
    assert "audit chain OK: 3 record(s)" in result.output
