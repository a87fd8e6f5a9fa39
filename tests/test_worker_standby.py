"""Two workers on one replication slot, as a highly available deployment runs them (two
replicas of the worker, or a rolling deploy where the new one starts before the old one
stops): under logical capture PostgreSQL lets one session read a slot, so the other
stands by, quietly, and takes the slot over as soon as it is free, a SIGKILL included.
Found as a user would: the second worker logged a failed batch with its traceback every
2 s for as long as the first ran, and counted each in
``thorbis_cache_worker_failed_batches``; ``worker --once`` beside a running worker died
with a traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import IO

import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL, run_cli, wait_until

from thorbis_cache.postgres.logical import SlotInUseError


@pytest.fixture
async def env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env("logical", thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 3)
        yield env


def _spawn(env: Env, stderr: int | IO[bytes] = asyncio.subprocess.DEVNULL
           ) -> Awaitable[asyncio.subprocess.Process]:
    assert env.capture is not None
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", "thorbis_cache.cli", "worker", "--dsn", env.dsn,
        "--redis-url", env.redis_url, "--plugin", "home_services", "--capture", "logical",
        "--slot", env.capture.slot.removeprefix("thorbis_"), "--no-mv", "--no-queue",
        stdout=asyncio.subprocess.DEVNULL, stderr=stderr)


async def _cli_worker(env: Env) -> asyncio.subprocess.Process:
    """``thorbis-cache worker`` on the env's slot, in a process of its own, once it
    reads the slot (its replication session names it: host and process id)."""
    proc = await _spawn(env)

    async def reading() -> bool:
        name = await env.conn.fetchval(
            "SELECT r.application_name FROM pg_replication_slots s "
            "JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1",
            env.capture.slot if env.capture else None)
        return name is not None and name.endswith(f":{proc.pid}")

    await wait_until("the CLI worker reads the slot", reading, within=60)
    return proc



async def test_a_second_worker_stands_by_quietly_and_takes_over_a_killed_one(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="thorbis_cache")
    first = await _cli_worker(env)
    second = env.worker()
    running = asyncio.create_task(second.run())
    try:
        async def standing_by() -> bool:
            return second.metrics.standby == 1

        await wait_until("the second worker stands by", standing_by)
        await env.invalidated(1)  # applied by the first
        assert second.metrics.processed == 0
        # The first is killed: the second takes over at once (no batch failed, no
        # traceback, one line each way naming who reads the slot).
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        await env.invalidated(2)
        assert second.metrics.standby == 0

        async def counted() -> bool:  # the keys go before the batch commits and counts
            return second.metrics.processed >= 1

        await wait_until("the second worker counts the change", counted)
        assert second.metrics.failed_batches == 0
        await asyncio.wait_for(second.drained(), 30)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        second.stop()
        await running
        await second.aclose()
    assert env.capture is not None
    worker_logs = [r for r in caplog.records if r.name.startswith("thorbis_cache.invalidation")]
    assert not [r for r in worker_logs if r.levelno >= logging.ERROR or r.exc_info]
    standby = [r.getMessage() for r in worker_logs if "stands by" in r.getMessage()]
    assert len(standby) == 1, standby
    assert env.capture.slot in standby[0]
    assert f":{first.pid}" in standby[0]
    assert len([r for r in worker_logs if "took over" in r.getMessage()]) == 1


async def test_the_cli_worker_says_it_stands_by_and_takes_over_a_stopped_one(
    env: Env, tmp_path: Path
) -> None:
    """The CLI worker logs its INFO lines (with time and level) on stderr: who reads the
    slot while it stands by, then that it took over from the worker that stopped."""
    first = env.worker()
    running = asyncio.create_task(first.run())
    log_path = tmp_path / "standby.log"
    try:
        await asyncio.wait_for(first.drained(), 30)
        with log_path.open("wb") as log_file:
            second = await _spawn(env, log_file)
        try:
            async def said(what: str) -> bool:
                return what in log_path.read_text()

            await wait_until("the CLI worker says it stands by",
                             lambda: said("this one stands by"), within=60)
            first.stop()
            await running
            await wait_until("the CLI worker says it took over", lambda: said("took over"))
            await env.invalidated(1)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
    finally:
        first.stop()
        await running
        await first.aclose()
    lines = log_path.read_text().splitlines()
    standby = [line for line in lines if "stands by" in line]
    assert len(standby) == 1, lines
    assert " INFO thorbis_cache.invalidation.slot_reader: " in standby[0]
    assert "Traceback" not in log_path.read_text()


async def test_drain_beside_a_running_worker_names_who_reads_the_slot(env: Env) -> None:
    first = await _cli_worker(env)
    try:
        assert env.capture is not None
        beside = env.worker()
        try:
            with pytest.raises(SlotInUseError) as refused:
                await beside.drain()
        finally:
            await beside.aclose()
        message = str(refused.value)
        assert env.capture.slot in message
        assert f":{first.pid}" in message
        assert beside.metrics.failed_batches == 0
        # The CLI says the same in one line, without a traceback.
        out = await asyncio.to_thread(
            run_cli, "worker", "--once", "--dsn", env.dsn, "--redis-url", env.redis_url,
            "--plugin", "home_services", "--capture", "logical", "--slot",
            env.capture.slot.removeprefix("thorbis_"), "--no-mv", "--no-queue", code=1)
        assert f":{first.pid}" in out
        assert "Traceback" not in out
        # The running worker was not disturbed.
        await env.invalidated(3)
    finally:
        first.kill()
        await first.wait()


async def test_a_standby_worker_is_counted_in_its_metrics(env: Env) -> None:
    """``thorbis_cache_worker_standby`` says which of the workers reads the slot."""
    from thorbis_cache.observability.workers import WorkerCollector

    reader, standby = env.worker(), env.worker()
    tasks = [asyncio.create_task(w.run()) for w in (reader, standby)]
    try:
        async def one_reads() -> bool:
            return sorted((reader.metrics.standby, standby.metrics.standby)) == [0, 1]

        await wait_until("one worker reads the slot and the other stands by", one_reads)
        gauges = {w: {s.name: s.value for m in WorkerCollector(w.metrics).collect()
                      for s in m.samples}["thorbis_cache_worker_standby"]
                  for w in (reader, standby)}
        assert sorted(gauges.values()) == [0, 1]
    finally:
        for w in (reader, standby):
            w.stop()
        await asyncio.gather(*tasks)
        for w in (reader, standby):
            await w.aclose()
