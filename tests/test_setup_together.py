"""Host processes starting together on a fresh database each set it up, and none fails.

Found as a user would: a host application deployed with six replicas, each starting
with ``apply_sql=True`` against a database set up for the first time (a new
environment, a new tenant database). Under logical capture, all but one start failed:
``publication "thorbis_main" already exists`` (or a unique violation on
``pg_publication_pubname_index``, or ``tuple concurrently updated``): each process had
found no publication and created one. Restarting them made them pass, so it looked
like a flaky start.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres.setup import DatabaseSetup, setup_database

PROCESSES = 6
PLUGINS = ["home_services", "automotive", "restaurant"]


async def _start(dsn: str, capture: str) -> DatabaseSetup:
    plugins = PluginManager()
    await plugins.load(PLUGINS)
    return await setup_database(dsn, plugins, capture=capture, slot="together")  # type: ignore[arg-type]


@pytest.mark.parametrize("capture", ["triggers", "logical", "auto"])
async def test_processes_starting_together_on_a_fresh_database_all_set_it_up(
    thorbis_pg_dsn: str, capture: str
) -> None:
    done = await asyncio.gather(*(_start(thorbis_pg_dsn, capture) for _ in range(PROCESSES)),
                                return_exceptions=True)
    failed = [repr(d) for d in done if isinstance(d, BaseException)]
    assert not failed, failed
    setups = [d for d in done if isinstance(d, DatabaseSetup)]
    mode = "triggers" if capture == "triggers" else "logical"
    assert {s.capture for s in setups} == {mode}
    # One of them applied the plugins' SQL; the others found it applied.
    assert sum(not s.sql.unchanged for s in setups) >= 1
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        slots = await conn.fetchval("SELECT count(*) FROM pg_replication_slots "
                                    "WHERE slot_name = 'thorbis_together'")
        assert slots == (0 if mode == "triggers" else 1)
        if slots:
            await conn.execute("SELECT pg_drop_replication_slot('thorbis_together')")
    finally:
        await conn.close()
