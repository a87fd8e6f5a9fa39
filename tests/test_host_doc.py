"""docs/host-application.md's complete example, run as written against real servers: the
lifespan starts the app (database prepared as ``db init`` does), reads go through the
cache, a committed UPDATE is applied by the in-process worker, and shutdown leaves
nothing running."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from core_testing import HS_TENANTS
from thorbis_home_services import datagen

from thorbis_cache import KeyRing

DOC = Path(__file__).resolve().parents[1] / "docs" / "host-application.md"


def example() -> str:
    """The doc's python block that defines the lifespan (exactly one)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.S | re.M)
    [code] = [b for b in blocks if "async def lifespan" in b]
    return str(code)


async def test_the_host_page_example_runs_as_written(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THORBIS_REDIS_URL", thorbis_standalone_redis_url)
    monkeypatch.setenv("THORBIS_POSTGRES_DSN", thorbis_pg_dsn)
    monkeypatch.setenv("THORBIS_KEYRING", KeyRing.generate().to_string())
    namespace: dict[str, Any] = {"__name__": "host_example"}
    exec(compile(example(), str(DOC), "exec"), namespace)  # noqa: S102 -- the doc's own code
    lifespan, get_customer = namespace["lifespan"], namespace["get_customer"]

    async with lifespan() as state:
        cache, pool, worker = state["cache"], state["pool"], state["worker"]
        async with pool.acquire() as conn:
            await datagen.load(conn, HS_TENANTS, per_tenant=3, seed=1)
        await worker.drained()
        customer = await get_customer(cache, pool, "acme", 1)
        assert customer.id == 1
        assert await get_customer(cache, pool, "acme", 1) == customer  # a hit now
        await pool.execute("UPDATE hs.customers SET phone = '555-0142' "
                           "WHERE tenant_id = 'acme' AND id = 1")
        await asyncio.wait_for(worker.drained(), 20)
        assert (await get_customer(cache, pool, "acme", 1)).phone == "555-0142"
        assert worker.metrics.processed > 0
        # The override: at most 600 s (+ jitter), where the plugin's 900 s is >= 810 s.
        overridden = cache.registry.get("hs.customer_summary")
        assert cache.ttl_ms(overridden) <= 600_000 * (1 + overridden.ttl_jitter) + 1
        assert cache.near is not None
    # Shutdown: the worker's task ended, nothing of it is left running.
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "thorbis-outbox-worker"]
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
    finally:
        await conn.close()
