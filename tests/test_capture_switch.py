"""A database switched from one capture to the other under a running worker (``capture``
auto, the default of ``thorbis-cache worker`` and ``OutboxWorker.from_app``).

Found as a user would: ``auto`` installs triggers on a server whose
``max_slot_wal_keep_size`` is unbounded, "until an operator sets a bound"; the operator
set one and ran ``db init`` again, which created the slot and dropped the triggers, and
the running workers went on polling an outbox nothing wrote any more: every change was
left unapplied until they were restarted. The other way, ``db init --capture triggers``
left the slot (and its publication) in place, so every write paid for both captures and
the worker applied each change twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL, run_cli

from thorbis_cache.invalidation.worker import OutboxWorker


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env(request.param, thorbis_pg_dsn, thorbis_standalone_redis_url
                           ) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 4)
        yield env


def _slot(env: Env) -> str:
    """The env's capture name (under triggers, one for the switch to create)."""
    return (env.capture.slot.removeprefix("thorbis_") if env.capture is not None
            else f"s{env.dsn.rsplit('/', 1)[1]}{uuid.uuid4().hex[:6]}")



async def _slot_exists(env: Env, name: str) -> bool:
    return bool(await env.conn.fetchval(
        "SELECT true FROM pg_replication_slots WHERE slot_name = $1", f"thorbis_{name}"))


async def test_a_running_worker_follows_the_database_to_the_other_capture(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="thorbis_cache")
    name = _slot(env)
    other = "logical" if env.mode == "triggers" else "triggers"
    worker = OutboxWorker.from_app(env.app, env.dsn, slot=name)
    running = asyncio.create_task(worker.run())
    try:
        await env.invalidated(1)  # by the capture db init set up
        out = await asyncio.to_thread(
            run_cli, "db", "init", "--dsn", env.dsn, "--plugin", "home_services",
            "--capture", other, "--slot", name)
        await env.invalidated(2)  # by the other one, read by the same worker
        await env.invalidated(3)
        await asyncio.wait_for(worker.drained(), 30)
        if other == "triggers":
            # The slot and its publication are gone (nothing keeps WAL for them), and
            # the worker did not recreate them: it reads the outbox. What the slot
            # held unread when it was dropped cannot be proven applied: flushed once.
            assert f"logical capture thorbis_{name} dropped" in out, out
            assert not await _slot_exists(env, name)
            assert await env.conn.fetchval(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1",
                f"thorbis_{name}") == 0
            assert worker.capture is None
            assert worker.metrics.capture_losses == 1
            assert "the capture triggers cover every rule's table" in caplog.text
        else:
            assert await _slot_exists(env, name)
            assert worker.capture is not None
            assert worker.metrics.capture_losses == 0
            assert f"worker follows the replication slot thorbis_{name}" in caplog.text
        assert worker.metrics.failed_batches == 0
    finally:
        worker.stop()
        await running
        await worker.aclose()
        if env.capture is None and await _slot_exists(env, name):
            await env.conn.execute("SELECT pg_drop_replication_slot($1)", f"thorbis_{name}")
