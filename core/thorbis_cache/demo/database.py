"""The demo application's PostgreSQL side: its database, its pool, its counted queries.

The demo plays the host application, so it talks to PostgreSQL through ``asyncpg``
itself; the cache never sees the database. This is the only demo module that does.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import TYPE_CHECKING, Any

import asyncpg
import attrs

from thorbis_cache.demo.data import Customer
from thorbis_cache.demo.results import DemoFailure

if TYPE_CHECKING:
    from thorbis_cache.testing.servers import PostgresServer

__all__ = ["DATABASE", "Database", "close_pool", "create_pool"]

DATABASE = "thorbis_demo"


def _sql(name: str) -> str:
    """The text of ``sql/demo/<name>.sql`` (read through the package, so wheels work)."""
    return (resources.files("thorbis_cache.sql") / "demo" / f"{name}.sql").read_text("utf-8")


async def create_pool(postgres: PostgresServer) -> Any:
    """Create the demo's database on ``postgres`` and open a pool on it.

    :param postgres: the running server.
    :returns: an ``asyncpg`` pool; close it with :func:`close_pool`.
    """
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return await asyncpg.create_pool(postgres.dsn(DATABASE), min_size=2, max_size=16)


async def close_pool(pool: Any) -> None:
    """Close ``pool``, terminating it if closing takes longer than 5 s."""
    # A connection stuck in a cancelled query would make close() wait forever.
    try:
        await asyncio.wait_for(pool.close(), 5.0)
    except TimeoutError:
        pool.terminate()


class Database:
    """The demo application's data access: one pool, queries counted."""

    _COLUMNS = tuple(f.name for f in attrs.fields(Customer))

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.queries = 0
        self._get = _sql("customer_get")
        self._update = _sql("customer_update")

    async def load(self, data: dict[str, list[Customer]]) -> int:
        """Create the table and COPY the data set in; returns the number of rows."""
        async with self.pool.acquire() as conn:
            await conn.execute(_sql("customers"))
            rows = [
                (tenant, *attrs.astuple(c, recurse=False))
                for tenant, customers in data.items()
                for c in customers
            ]
            await conn.copy_records_to_table(
                "customers", records=rows, columns=("tenant_id", *self._COLUMNS)
            )
            await conn.execute("ANALYZE customers")
        return len(rows)

    async def customer(self, tenant: str, customer_id: int) -> Customer:
        """One customer, read from PostgreSQL (counted).

        :raises DemoFailure: no such row (the demo only reads ids it inserted).
        """
        self.queries += 1
        row = await self.pool.fetchrow(self._get, tenant, customer_id)
        if row is None:
            raise DemoFailure(f"customer {customer_id} of tenant {tenant!r} is not in the table")
        return Customer(**dict(row.items()))

    async def update(self, tenant: str, customer_id: int, email: str, status: str) -> None:
        """Change a customer's email and account status (one committed statement)."""
        await self.pool.execute(self._update, tenant, customer_id, email, status)
