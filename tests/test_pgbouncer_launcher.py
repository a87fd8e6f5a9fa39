"""The PgBouncer launcher: a real pgbouncer (Debian's, found or installed like
redis-server) in transaction mode in front of the session's PostgreSQL passes queries
through, refuses startup parameters it does not know, and frees its port on stop."""

from __future__ import annotations

import socket
import urllib.parse

import asyncpg
import pytest

from thorbis_cache.testing.binaries import PgBouncerBinaries
from thorbis_cache.testing.servers import PgBouncer


async def test_pgbouncer_pools_to_postgres_and_refuses_unknown_startup_parameters(
    pgbouncer_binaries: PgBouncerBinaries, thorbis_pg_dsn: str,
) -> None:
    backend = urllib.parse.urlsplit(thorbis_pg_dsn)
    assert backend.port is not None
    dbname = backend.path.lstrip("/")
    bouncer = PgBouncer(backend_port=backend.port, pool_mode="transaction",
                        binaries=pgbouncer_binaries)
    try:
        bouncer.start()
        port = bouncer.port
        # Transaction pooling: prepared statements may land on another server connection.
        conn = await asyncpg.connect(bouncer.dsn(dbname), statement_cache_size=0)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_database()") == dbname
        finally:
            await conn.close()
        with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
            await asyncpg.connect(bouncer.dsn(dbname), statement_cache_size=0,
                                  server_settings={"plan_cache_mode": "force_custom_plan"})
    finally:
        bouncer.stop()
    assert not bouncer.is_running
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        ("127.0.0.1", port), timeout=2.0
    ):
        pass


def test_pgbouncer_rejects_an_unknown_pool_mode() -> None:
    with pytest.raises(ValueError, match="pool_mode"):
        PgBouncer(backend_port=5432, pool_mode="sessions")
