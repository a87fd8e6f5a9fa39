"""A worker that hangs mid-batch must not hold the changes it claimed for ever.

Found as a user would, running two workers on the capture triggers' outbox: one of
them stopped (SIGSTOP: a process that hangs, a VM paused, a host cut off) while its
batch waited on Redis. Its claimed rows stayed locked by its open transaction, and
the other worker skipped them (``FOR UPDATE SKIP LOCKED``) for as long as it hung: a
stopped process's kernel keeps its TCP connection alive, so PostgreSQL never ended the
session. Those changes' entries stayed stale. The worker's session now has an
``idle_in_transaction_session_timeout`` (``hold_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import asyncpg
import pytest
import redis.asyncio as aioredis
from capture_env import capture_env
from core_testing import wait_until
from test_invalidation_proof import CUSTOMERS_SQL

from thorbis_cache.testing.servers import RedisServer

pytestmark = pytest.mark.slow

HOLD = 2  # seconds: the hung worker's --hold-timeout


async def test_a_worker_hung_mid_batch_leaves_its_changes_to_another(
        thorbis_pg_dsn: str) -> None:
    with RedisServer() as redis_server:  # its own: the test pauses its writes
        async with capture_env("triggers", thorbis_pg_dsn, redis_server.url) as env:
            await env.conn.execute(CUSTOMERS_SQL, 3)
            hung = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "thorbis_cache.cli", "worker", "--dsn", env.dsn,
                "--redis-url", env.redis_url, "--plugin", "home_services",
                "--capture", "triggers", "--no-mv", "--no-queue",
                "--hold-timeout", str(HOLD),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            other = None
            stopped = False
            admin = aioredis.Redis.from_url(env.redis_url)
            try:
                await env.invalidated(1)  # the CLI worker applies changes
                await env.cache_customer(2)
                await wait_until("the CLI worker's batches committed",
                                 lambda: _outbox_empty(env.conn))
                # Its next batch waits on Redis inside its transaction...
                await admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
                await env.conn.execute("UPDATE hs.customers SET phone = '555-0102' "
                                       "WHERE tenant_id = 'acme' AND id = 2")
                await wait_until("the CLI worker holds the change", lambda: _held(env.conn))
                # ... and the worker hangs there.
                os.kill(hung.pid, signal.SIGSTOP)
                stopped = True
                other = env.worker()
                running = asyncio.ensure_future(other.run())
                try:
                    # (Customer 2's entry may be gone already: the hung worker's UNLINK
                    # was in Redis's buffer. Its claim is what must not stay held.)
                    await wait_until("the other worker took the hung one's changes",
                                     lambda: _outbox_empty(env.conn), within=HOLD + 20)
                    assert other.metrics.processed >= 1
                    assert not await env.cached(2)
                finally:
                    other.stop()
                    await running
                    await other.aclose()
                # Resumed, the hung worker finds its session ended and goes on.
                os.kill(hung.pid, signal.SIGCONT)
                stopped = False
                await env.invalidated(3)
                hung.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(hung.wait(), 30) == 0
            finally:
                await admin.aclose()
                if stopped:
                    os.kill(hung.pid, signal.SIGCONT)
                if hung.returncode is None:
                    hung.kill()
                    with contextlib.suppress(ProcessLookupError):
                        await hung.wait()


async def _outbox_empty(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0)


async def _held(conn: asyncpg.Connection) -> bool:
    """Changes wait in the outbox, every one locked by a worker's batch."""
    waiting = await conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    free = await conn.fetchval(
        "SELECT count(*) FROM (SELECT id FROM thorbis.outbox FOR UPDATE SKIP LOCKED) AS f")
    return bool(waiting >= 1 and free == 0)


async def test_a_worker_hung_on_the_slot_leaves_it_to_a_standby(
        thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> None:
    """Under logical capture the hung worker holds the slot instead: a standing-by
    worker takes it over once the server ends the hung one's stream (its
    ``wal_sender_timeout``, the worker's ``hold_timeout``; the server's 60 s before)."""
    async with capture_env("logical", thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        assert env.capture is not None
        await env.conn.execute(CUSTOMERS_SQL, 2)
        hung = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "thorbis_cache.cli", "worker", "--dsn", env.dsn,
            "--redis-url", env.redis_url, "--plugin", "home_services",
            "--capture", "logical", "--slot", env.capture.slot.removeprefix("thorbis_"),
            "--no-mv", "--no-queue", "--hold-timeout", str(HOLD),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        stopped = False
        try:
            await env.invalidated(1)  # the CLI worker reads the slot
            os.kill(hung.pid, signal.SIGSTOP)
            stopped = True
            standby = env.worker()
            running = asyncio.ensure_future(standby.run())
            try:
                # Committed while the hung worker holds the slot: applied by the standby
                # once the server has ended the hung one's stream.
                await env.cache_customer(2)
                await env.conn.execute("UPDATE hs.customers SET phone = '555-0102' "
                                       "WHERE tenant_id = 'acme' AND id = 2")

                async def gone() -> bool:
                    return not await env.cached(2)

                await wait_until("the standby took the slot over and applied the change",
                                 gone, within=HOLD + 15)
            finally:
                standby.stop()
                await running
                await standby.aclose()
        finally:
            if stopped:
                os.kill(hung.pid, signal.SIGCONT)
            hung.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(hung.wait(), 30)
            finally:
                if hung.returncode is None:
                    hung.kill()
                    await hung.wait()
