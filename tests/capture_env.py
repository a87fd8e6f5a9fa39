"""The capture tests' environment for a host's DDL (migrations, partitions): the
home_services plugin's app, a connection that keeps the server's notices, and the
capture installed by ``thorbis-cache db init``, under either capture."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import attrs
from core_testing import run_cli, stale_customer, wait_until
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.logical import LogicalCapture


@attrs.frozen
class Env:
    mode: str
    dsn: str
    redis_url: str
    conn: asyncpg.Connection
    app: CacheApp
    capture: LogicalCapture | None
    notices: list[str]

    def worker(self) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn, capture=self.capture)

    async def cache_customer(self, cid: int, tenant: str = "acme") -> None:
        stale = stale_customer(cid)
        await self.app.cache.hash(CUSTOMER.key(tenant, customer_id=cid)).replace(stale)

    async def cached(self, cid: int, tenant: str = "acme") -> bool:
        key = CUSTOMER.key(tenant, customer_id=cid)
        return await self.app.cache.hash(key).get() is not None

    async def drained(self, worker: OutboxWorker, cid: int, tenant: str = "acme") -> None:
        """Cache customer ``cid``, update its phone, drain ``worker``: the entry must be
        gone."""
        await self.cache_customer(cid, tenant)
        await self.conn.execute("UPDATE hs.customers SET phone = phone || '0' "
                                "WHERE tenant_id = $1 AND id = $2", tenant, cid)
        await worker.drain()
        assert not await self.cached(cid, tenant), f"customer {cid} is still cached"

    async def invalidated(self, cid: int) -> None:
        """Cache customer ``cid`` of acme, update its row, and wait until a running
        worker has invalidated the entry."""
        await self.cache_customer(cid)
        await self.conn.execute("UPDATE hs.customers SET phone = phone || '0' "
                                "WHERE tenant_id = 'acme' AND id = $1", cid)

        async def gone() -> bool:
            return not await self.cached(cid)

        await wait_until(f"customer {cid}'s entry is invalidated", gone)

    def db_init(self, code: int = 0, *extra: str) -> str:
        args = ["db", "init", "--dsn", self.dsn, "--plugin", "home_services",
                "--capture", self.mode, *extra]
        if self.capture is not None:
            args += ["--slot", self.capture.slot.removeprefix("thorbis_")]
        return run_cli(*args, code=code)


@contextlib.asynccontextmanager
async def capture_env(mode: str, dsn: str, redis_url: str) -> AsyncIterator[Env]:
    """An :class:`Env` with ``mode`` capture installed by ``db init``; its slot dropped
    and everything closed on exit."""
    app = await CacheApp(redis_url, keyring=KeyRing.generate()).start(["home_services"])
    capture = None
    if mode == "logical":
        capture = LogicalCapture(f"d{uuid.uuid4().hex[:10]}", app.plugins.all_rules(),
                                 app.plugins.all_views())
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})
    notices: list[str] = []
    conn.add_log_listener(lambda _, message: notices.append(str(message)))
    env = Env(mode, dsn, redis_url, conn, app, capture, notices)
    try:
        await asyncio.to_thread(env.db_init)
        yield env
    finally:
        if conn.is_closed():  # the test restarted the server
            conn = await asyncpg.connect(dsn)
        if capture is not None:
            await capture.drop(conn)
        await conn.close()
        await app.aclose()
