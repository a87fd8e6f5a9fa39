"""The worker's run loop after failures other than Redis being away: PostgreSQL shutting
down under a logical worker, and a failure that lasts (its pauses and its log lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal

import asyncpg
import pytest
from capture_env import capture_env
from core_testing import wait_until
from hypothesis import given
from hypothesis import strategies as st
from test_invalidation_proof import CUSTOMERS_SQL

from thorbis_cache.invalidation.failures import FIRST_PAUSE, REPEAT_LOG_INTERVAL, FailureBackoff
from thorbis_cache.testing.servers import PostgresServer


@pytest.mark.slow
async def test_a_fast_shutdown_is_not_held_by_a_busy_logical_worker(
    thorbis_standalone_redis_url: str,
) -> None:
    """PostgreSQL's fast shutdown ends the sessions, then waits for each WAL sender to
    have its WAL confirmed. The worker, failing to reconnect its other sessions, left
    its stream unread, and the server waited out the stream's ``wal_sender_timeout``
    (60 s, 4 of 5 restarts killed by the launcher's 15 s grace). A failure now closes
    the stream: the server shuts down without waiting for it."""
    with PostgresServer() as server:
        admin = await asyncpg.connect(server.dsn())
        await admin.execute("CREATE DATABASE app")
        await admin.close()
        async with contextlib.AsyncExitStack() as stack:
            env = await stack.enter_async_context(
                capture_env("logical", server.dsn("app"), thorbis_standalone_redis_url))
            stack.push_async_callback(_back_up, server)  # capture_env's cleanup needs it
            await env.conn.execute(CUSTOMERS_SQL, 50)
            worker = env.worker()
            worker.hold_timeout = 600.0  # the stream's wal_sender_timeout: not what ends it
            running = asyncio.ensure_future(worker.run())
            writing = asyncio.ensure_future(_write(server.dsn("app")))
            try:
                await env.invalidated(1)
                await wait_until("the worker applies the writer's changes",
                                 lambda: asyncio.sleep(0, worker.metrics.processed > 200))
                pid = server.pid
                assert pid is not None
                os.kill(pid, signal.SIGINT)  # what pg_ctl stop -m fast sends
                await wait_until("PostgreSQL has shut down",
                                 lambda: asyncio.sleep(0, not server.is_running), within=120)
                assert "due to replication timeout" not in server.log_path.read_text()
            finally:
                writing.cancel()
                worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
                await running
                await worker.aclose()


async def _back_up(server: PostgresServer) -> None:
    await asyncio.to_thread(server.start)


async def _write(dsn: str) -> None:
    """Commit changes to watched rows until cancelled, through PostgreSQL going away."""
    i = 0
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                while True:
                    i += 1
                    await conn.execute("UPDATE hs.customers SET phone = $1 WHERE "
                                       "tenant_id = 'acme' AND id = $2", str(i), 2 + i % 40)
            finally:
                conn.terminate()  # cancelled mid-statement: close() would wait on it
        except Exception:  # a load, through the server going away
            await asyncio.sleep(0.05)


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _backoff(max_pause: float = 2.0) -> tuple[FailureBackoff, _Said]:
    said = _Said()
    logger = logging.getLogger(f"test_worker_failures.{id(said)}")
    logger.propagate = False
    logger.addHandler(said)
    logger.setLevel(logging.DEBUG)
    return FailureBackoff(logger, max_pause), said


def test_a_failure_that_lasts_pauses_longer_and_is_said_once_in_a_while() -> None:
    backoff, said = _backoff()
    pauses = []
    now = 0.0
    for _ in range(8):  # a stream that opens, reads nothing, fails again
        pauses.append(backoff.failed(RuntimeError("publication does not exist"), now))
        backoff.succeeded(False, now + 0.001)  # an empty batch in between
        now += pauses[-1]
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert [r.levelname for r in said.records] == ["ERROR"] + ["DEBUG"] * 7
    assert said.records[0].exc_info is not None  # said once with its traceback
    said.records.clear()
    now += REPEAT_LOG_INTERVAL
    backoff.failed(RuntimeError("publication does not exist"), now)
    assert [r.levelname for r in said.records] == ["WARNING"]
    assert "8 more time(s)" in said.records[0].getMessage()
    backoff.failed(ValueError("another"), now + 1)  # another error: said in full
    assert said.records[-1].levelname == "ERROR"
    backoff.succeeded(True, now + 2)  # changes applied: over
    assert "after 10 failure(s)" in said.records[-1].getMessage()
    assert backoff.failed(RuntimeError("again"), now + 3) == FIRST_PAUSE


@given(st.lists(st.tuples(st.sampled_from(["fail-a", "fail-b", "empty", "applied"]),
                          st.floats(0, 100)), max_size=60))
def test_pauses_stay_bounded_and_errors_are_said_once_per_kind_in_a_row(
    events: list[tuple[str, float]]
) -> None:
    backoff, said = _backoff(2.0)
    now = 0.0
    for event, gap in events:
        now += gap
        if event.startswith("fail"):
            pause = backoff.failed(RuntimeError(event), now)
            assert FIRST_PAUSE <= pause <= 2.0
        else:
            backoff.succeeded(event == "applied", now)
    kinds = [e for e, _ in events if e.startswith("fail")]
    changes = sum(1 for a, b in itertools.pairwise(kinds) if a != b)
    errors = sum(r.levelname == "ERROR" for r in said.records)
    assert sum(r.levelname in ("WARNING", "DEBUG") for r in said.records) <= len(kinds)
    assert errors <= len(kinds)
    assert not kinds or errors >= 1
    # Said again in full only for another error, or after batches went through.
    assert errors <= 1 + changes + sum(not e.startswith("fail") for e, _ in events)
