"""Shared test configuration.

The server fixtures (``thorbis_*``) come from the ``thorbis_cache.testing.pytest_plugin``
entry point; ``pytester`` runs inner pytest sessions for the clean-up tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import asyncpg
import pytest
from core_testing import HS, HS_TENANTS, HsEnv, run_cli
from thorbis_home_services import datagen

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.errors import ServerBinaryNotFound
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.testing.binaries import (
    PgBouncerBinaries,
    PrometheusBinaries,
    ensure_pgbouncer,
    ensure_prometheus,
)

pytest_plugins = ["pytester"]


async def _hs_env(dsn: str, redis_url: str) -> AsyncIterator[HsEnv]:
    # Triggers: these tests read and feed thorbis.outbox (logical capture has its own).
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin", HS,
                            "--capture", "triggers")
    app = await CacheApp(redis_url, keyring=KeyRing.generate()).start([HS])
    conn = await asyncpg.connect(dsn)
    await datagen.load(conn, HS_TENANTS, per_tenant=4, seed=1)
    try:
        yield HsEnv(dsn, redis_url, conn, app)
    finally:
        await conn.close()
        await app.aclose()


@pytest.fixture
async def hs_env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[HsEnv]:
    """``thorbis-cache db init`` with home_services, 4 generated customers per tenant of
    :data:`HS_TENANTS` (their outbox rows not yet applied), a started app, a connection."""
    async for env in _hs_env(thorbis_pg_dsn, thorbis_standalone_redis_url):
        yield env


@pytest.fixture
async def hs_env_every_topology(thorbis_pg_dsn: str, thorbis_redis_url: str
                                ) -> AsyncIterator[HsEnv]:
    """:func:`hs_env` once per Redis topology (single server, Cluster, Sentinel)."""
    async for env in _hs_env(thorbis_pg_dsn, thorbis_redis_url):
        yield env


@pytest.fixture
async def core_conn(thorbis_pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh database with the core schema (no plugin)."""
    await migrate(thorbis_pg_dsn)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


T = TypeVar("T")


def _installed(ensure: Callable[..., T]) -> T:
    """``ensure(install=True)``'s binaries, or the test fails naming what is missing."""
    try:
        return ensure(install=True)
    except ServerBinaryNotFound as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def prometheus_binaries() -> PrometheusBinaries:
    """prometheus and promtool; installed with apt when missing and allowed (root)."""
    return _installed(ensure_prometheus)


@pytest.fixture(scope="session")
def pgbouncer_binaries() -> PgBouncerBinaries:
    """pgbouncer; installed with apt when missing and allowed (root)."""
    return _installed(ensure_pgbouncer)
