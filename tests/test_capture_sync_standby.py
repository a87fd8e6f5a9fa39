"""Logical capture on a server whose ``synchronous_standby_names`` lists ``*``.

Found as a user would, on a primary with a streaming standby and
``synchronous_standby_names = '*'`` (a common way to ask for one synchronous standby,
whichever it is): the worker's replication session is a walsender like the standby's,
so it matched ``*`` and was a "potential" synchronous standby. When the standby went
away (a restart, maintenance, a failure) it became *the* synchronous standby: every
commit of the host waited for the worker to apply the invalidations and confirm (a
one-row UPDATE went from 0.26 ms to 2.5 ms at p50), and with the worker paused the
host's commits hung. A cache must never hold the database's commits. ``auto`` now
chooses triggers there, saying why; an explicit ``--capture logical`` is warned, and
``health`` says when a slot's reader is a synchronous standby candidate.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from core_testing import run_cli, wait_until

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.logical import sync_standby_wildcard
from thorbis_cache.testing.servers import PostgresServer


@pytest.fixture(scope="module")
def wildcard_server() -> Iterator[PostgresServer]:
    """A server asking for a synchronous standby named anything. Its own
    ``synchronous_commit=off`` (the test kit's) keeps its commits from waiting for one:
    the tests look at what the server says, not at a hang."""
    with PostgresServer(settings={"synchronous_standby_names": "*"}) as server:
        yield server


@pytest.mark.parametrize(("setting", "wildcard"), [
    ("", False), ("standby1", False), ("standby1, standby2", False),
    ("*", True), ("FIRST 1 (*)", True), ("ANY 2 (s1, *)", True), ("2 (s1, \"*\")", True),
    ("first 1 (\"thorbis\", s2)", False), ("\"a*\"", False),
])
def test_a_wildcard_member_is_found_in_every_form(setting: str, wildcard: bool) -> None:
    assert sync_standby_wildcard(setting) is wildcard


async def test_auto_capture_keeps_the_worker_out_of_synchronous_replication(
    wildcard_server: PostgresServer, thorbis_standalone_redis_url: str,
    caplog: pytest.LogCaptureFixture
) -> None:
    dsn = wildcard_server.dsn()
    out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                  "home_services")
    assert "capture: triggers (synchronous_standby_names lists *" in out, out
    assert "capture trigger on hs.customers" in out
    # Asked for explicitly, logical capture is set up, with the warning.
    name = f"w{uuid.uuid4().hex[:8]}"
    out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                  "home_services", "--capture", "logical", "--slot", name)
    assert f"logical capture thorbis_{name} ready" in out
    assert "warning: synchronous_standby_names lists *" in out
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate()).start(
        ["home_services"])
    try:
        async with OutboxWorker.from_app(app, dsn, slot=name,
                                         capture_check_interval=0.05) as worker:
            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(worker.drained(), 30)

                async def said() -> bool:
                    return "is a synchronous standby" in caplog.text

                await wait_until("the worker says it is a synchronous standby", said)
                report = await asyncio.to_thread(
                    run_cli, "health", "--redis-url", thorbis_standalone_redis_url, "--dsn",
                    dsn, "--plugin", "home_services", "--json", code=1)
            finally:
                worker.stop()
                await running
    finally:
        await app.aclose()
        await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                "home_services", "--capture", "triggers", "--slot", name)
    assert f"this worker's session reading slot thorbis_{name} is a synchronous " \
           "standby" in caplog.text
    check = json.loads(report)["checks"]["capture_slot"]
    assert check["status"] == "warning", check
    assert f"the worker reading slot thorbis_{name} is a synchronous standby" in \
        check["reason"], check
    assert check["slots"][f"thorbis_{name}"]["sync_state"] in ("sync", "potential")
