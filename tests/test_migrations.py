"""Core SQL migrations: applied in order, recorded with checksums, re-runs are no-ops,
an edited applied file is refused by name; ``thorbis-cache db migrate`` runs them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from core_testing import CUSTOMER_SQL, run_cli
from typer.testing import CliRunner

from thorbis_cache.cli import app as cli_app
from thorbis_cache.postgres import ddl_locks
from thorbis_cache.postgres.migrations import (
    Migration,
    MigrationError,
    core_migrations,
    migrate,
)

#: The core migration files shipped today, in order.
CORE = ["001_outbox.sql", "002_audit.sql", "003_mv_refresh.sql", "004_mv_schedule.sql",
        "005_replay_log.sql", "006_outbox_lean.sql", "007_capture_ddl.sql",
        "008_capture_truncate.sql", "009_capture_always.sql", "010_capture_partitions.sql",
        "011_capture_rules.sql", "012_plugin_sql.sql",
        "013_capture_filter.sql", "014_parked_changes.sql", "015_capture_ddl_reentry.sql"]


async def test_core_migrations_are_numbered_files_in_order() -> None:
    found = core_migrations()
    assert [m.name for m in found] == CORE
    assert [m.version for m in found] == list(range(1, len(CORE) + 1))


async def test_migrate_applies_once_and_records_checksums(thorbis_pg_dsn: str) -> None:
    first = await migrate(thorbis_pg_dsn)
    assert first.applied == tuple(CORE)
    assert first.already == ()
    again = await migrate(thorbis_pg_dsn)
    assert again.applied == ()
    assert again.already == tuple(CORE)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM thorbis.schema_migrations "
                                "ORDER BY version")
        assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
            (m.version, m.name, m.checksum) for m in core_migrations()
        ]
        for table in ("thorbis.outbox", "thorbis.outbox_dead_letters", "thorbis.audit_log"):
            assert await conn.fetchval("SELECT to_regclass($1)::text", table) == table
    finally:
        await conn.close()


async def test_changed_applied_file_is_refused_by_name(thorbis_pg_dsn: str) -> None:
    await migrate(thorbis_pg_dsn)
    edited = [*core_migrations()]
    edited[1] = Migration(2, "002_audit.sql", edited[1].sql + "\n-- edited\n")
    extra = Migration(len(CORE) + 1, f"{len(CORE) + 1:03d}_new.sql",
                      "CREATE TABLE thorbis.later (x int)")
    with pytest.raises(MigrationError, match=r"'002_audit\.sql'.*changed after it was applied"):
        await migrate(thorbis_pg_dsn, [*edited, extra])
    # Refused before anything was applied.
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('thorbis.later')") is None
    finally:
        await conn.close()


async def test_failing_file_names_statement_and_keeps_earlier_ones(thorbis_pg_dsn: str) -> None:
    good = Migration(1, "001_a.sql", "CREATE SCHEMA IF NOT EXISTS thorbis; "
                     "CREATE TABLE thorbis.a (x int)")
    bad = Migration(2, "002_b.sql", "CREATE TABLE thorbis.b (x int); SELECT nope")
    with pytest.raises(MigrationError, match=r"'002_b\.sql'.*SELECT nope"):
        await migrate(thorbis_pg_dsn, [good, bad])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('thorbis.a')::text") == "thorbis.a"
        assert await conn.fetchval("SELECT to_regclass('thorbis.b')") is None
        assert await conn.fetchval("SELECT count(*) FROM thorbis.schema_migrations") == 1
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(thorbis_pg_dsn: str) -> None:
    reports = await asyncio.gather(*(migrate(thorbis_pg_dsn) for _ in range(4)))
    applied = [name for r in reports for name in r.applied]
    assert sorted(applied) == CORE


def test_cli_db_migrate(thorbis_pg_dsn: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["db", "migrate", "--dsn", thorbis_pg_dsn])
    assert result.exit_code == 0, result.output
    assert "applied core 001_outbox.sql" in result.output
    result = runner.invoke(cli_app, ["db", "migrate", "--dsn", thorbis_pg_dsn])
    assert result.exit_code == 0, result.output
    assert f"0 applied, {len(CORE)} already" in result.output


async def test_a_migration_never_queues_the_host_s_writes_behind_it(
    thorbis_pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later release's migration that alters a captured table (as 009 and 015 alter
    their triggers) found a host transaction open on it: it waited, and every write of
    the host to that table queued behind it until the transaction ended (found as an
    operator would: a writer held 7 s). Its locks are bounded and tried again now, as
    db init's are."""
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "triggers")
    monkeypatch.setattr(ddl_locks, "LOCK_TIMEOUT", 0.2)
    monkeypatch.setattr(ddl_locks, "RETRY_PAUSE", 0.2)
    later = Migration(len(CORE) + 1, f"{len(CORE) + 1:03d}_later.sql",
                      "ALTER TABLE hs.customers ENABLE ALWAYS TRIGGER thorbis_capture_update")
    batch = await asyncpg.connect(thorbis_pg_dsn)
    writer = await asyncpg.connect(thorbis_pg_dsn)
    await batch.execute(CUSTOMER_SQL, "acme", 2)
    try:
        open_batch = batch.transaction()
        await open_batch.start()
        await batch.execute("UPDATE hs.customers SET phone = 'batch' WHERE id = 1")
        upgrade = asyncio.ensure_future(migrate(thorbis_pg_dsn, [*core_migrations(), later]))
        await asyncio.sleep(0.5)  # the migration is trying, the batch job still open
        # The host's write goes through while the batch job holds the table (before,
        # it waited for the migration, which waited for the batch job).
        await writer.execute("UPDATE hs.customers SET phone = 'host' WHERE id = 2",
                             timeout=10)
        assert not upgrade.done()
        await open_batch.commit()
        report = await asyncio.wait_for(upgrade, 30)
        assert report.applied == (later.name,)
    finally:
        await batch.close()
        await writer.close()
