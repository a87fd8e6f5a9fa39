"""The demo application's PostgreSQL side: its database, its pool, its counted queries.

The demo plays the host application, so it talks to PostgreSQL through ``asyncpg``
itself; the cache never sees the database. The tables, views and data are the
home_services plugin's (``CacheApp.start(apply_sql=True)`` creates them,
``thorbis_home_services.datagen`` fills them); the plugin's loaders run their queries
through :meth:`Database.fetch`, which counts them. This is the only demo module that
imports ``asyncpg``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import asyncpg
from thorbis_home_services import datagen

from thorbis_cache.postgres import audit
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import CHANNEL, install_triggers
from thorbis_cache.testing.plugin_db import refresh_views

if TYPE_CHECKING:
    from thorbis_cache.plugins.declarations import InvalidationRule, MaterializedView
    from thorbis_cache.testing.servers import PostgresServer

__all__ = ["DATABASE", "Database", "close_pool", "create_database", "create_pool"]

DATABASE = "thorbis_demo"

# Short enough to read inline (the scene's other statement lives in sql/demo/).
_SET_STATUS = ("UPDATE hs.customers SET account_status = $3, updated_at = now() "
               "WHERE tenant_id = $1 AND id = $2")
_LISTENERS = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1"


def _sql(name: str) -> str:
    """The text of ``sql/demo/<name>.sql`` (read through the package, so wheels work)."""
    return (resources.files("thorbis_cache.sql") / "demo" / f"{name}.sql").read_text("utf-8")


async def create_database(postgres: PostgresServer) -> str:
    """Create the demo's (empty) database on ``postgres``; returns its DSN."""
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return postgres.dsn(DATABASE)


async def create_pool(dsn: str) -> Any:
    """Open the demo application's pool; close it with :func:`close_pool`."""
    return await asyncpg.create_pool(dsn, min_size=2, max_size=16)


async def close_pool(pool: Any) -> None:
    """Close ``pool``, terminating it if closing takes longer than 5 s."""
    # A connection stuck in a cancelled query would make close() wait forever.
    try:
        await asyncio.wait_for(pool.close(), 5.0)
    except TimeoutError:
        pool.terminate()


class Database:
    """The demo application's data access: one pool, queries counted."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        #: Queries run through :meth:`fetch` (the loaders' and warmers' reads).
        self.queries = 0
        self._set_priority = _sql("work_order_priority")

    async def fetch(self, sql: str, *args: object) -> list[Mapping[str, Any]]:
        """Run one query and return its rows (counted): the ``fetch`` the plugin's
        loaders and warmers take (``async (sql, *args) -> rows``)."""
        self.queries += 1
        rows: list[Mapping[str, Any]] = await self.pool.fetch(sql, *args)
        return rows

    async def load(self, tenants: Iterable[str], per_tenant: int, seed: int) -> dict[str, int]:
        """Generate the plugin's deterministic data set and COPY it in (one transaction).

        :returns: rows per ``hs`` table.
        """
        data = await datagen.load(self.pool, list(tenants), per_tenant, seed=seed)
        return data.counts()

    async def refresh(self, views: Iterable[MaterializedView]) -> None:
        """``REFRESH MATERIALIZED VIEW`` each view once, after the load, so that the view
        rows exist (plain, not ``CONCURRENTLY``: nothing reads them yet, and a plain
        refresh is the cheaper one)."""
        async with self.pool.acquire() as conn:
            await refresh_views(conn, views)

    async def set_priority(self, tenant: str, work_order_id: int, priority: str) -> None:
        """Change a work order's priority (one committed statement)."""
        await self.pool.execute(self._set_priority, tenant, work_order_id, priority)

    async def install_capture(self, rules: Iterable[InvalidationRule],
                              views: Iterable[MaterializedView] = ()) -> list[str]:
        """What ``thorbis-cache db init`` adds to the plugin's SQL (applied by
        ``CacheApp.start``): the core schema (outbox, audit log), then the capture
        triggers generated from ``rules`` (and count-only ones on the sources of
        ``views``). Done after the bulk load, so the data set's COPY leaves no outbox
        backlog.

        :returns: the tables now captured.
        """
        async with self.pool.acquire() as conn:
            await migrate(conn)
            plans = await install_triggers(conn, rules, views)
        return [plan.table for plan in plans]

    async def wait_for_listener(self, within: float) -> bool:
        """Wait until some session LISTENs on the outbox channel (the worker is up).

        :returns: False if none did within ``within`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await self.pool.fetchval(_LISTENERS, f"LISTEN%{CHANNEL}%"):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def set_account_status(self, tenant: str, customer_id: int, status: str) -> None:
        """Change a customer's account status (one committed statement)."""
        await self.pool.execute(_SET_STATUS, tenant, customer_id, status)

    async def verify_audit(self) -> tuple[bool, int]:
        """Walk the invalidation audit chain: (intact, records checked)."""
        async with self.pool.acquire() as conn:
            result = await audit.verify(conn)
        return result.ok, result.count
