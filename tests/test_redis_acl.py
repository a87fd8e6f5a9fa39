"""The Redis user the shipped ``redis.conf`` recommends for the cache (keys and channels
under its prefix, ``-@dangerous`` but ``+info``), created on real servers exactly as the
file writes it: the application, its near cache and the worker run with nothing more,
on a single server and on a Cluster."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import attrs
import pytest
import redis
from core_testing import CUSTOMER_SQL, run_cli, stale_customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing, NearCache
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.testing.servers import RedisCluster, RedisServer

REDIS_CONF = Path(__file__).resolve().parents[1] / "deploy" / "redis" / "redis.conf"


def documented_user() -> list[str]:
    """The cache's user line of the example ``redis.conf``, as ``ACL SETUSER``
    arguments after the name (its password replaced by the test's)."""
    [line] = [m.group(1) for m in re.finditer(r"^#\s+user thorbis (.*)$",
                                               REDIS_CONF.read_text(), re.M)]
    return ["s3cret" if rule.startswith(">") else rule for rule in line.split()]


def _servers(request: pytest.FixtureRequest) -> tuple[str, list[RedisServer]]:
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("thorbis_redis_cluster")
        cluster.flushall()
        return cluster.url, cluster.nodes
    server: RedisServer = request.getfixturevalue("thorbis_redis_server")
    server.flushall()
    return server.url, [server]


@pytest.fixture(params=["standalone", "cluster"])
def user_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The topology's URL, logged in as a user made from :func:`documented_user`."""
    url, nodes = _servers(request)
    name = f"thorbis_{uuid.uuid4().hex[:8]}"
    rules = [">s3cret" if rule == "s3cret" else rule for rule in documented_user()]
    for node in nodes:
        with redis.Redis(port=node.port) as admin:
            admin.execute_command("ACL", "SETUSER", name, *rules)
    parts = urlsplit(url)
    try:
        yield urlunsplit(parts._replace(netloc=f"{name}:s3cret@{parts.netloc}"))
    finally:
        for node in nodes:
            with redis.Redis(port=node.port) as admin:
                admin.execute_command("ACL", "DELUSER", name)


def test_the_documented_user_keeps_to_the_cache_prefix() -> None:
    rules = documented_user()
    assert "~tc:*" in rules
    assert "&tc:*" in rules
    assert "-@dangerous" in rules


async def test_the_app_and_the_worker_run_as_the_documented_user(
    user_url: str, thorbis_pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "triggers")
    # start() checks the eviction policy (INFO, through a script on a Cluster).
    app = await CacheApp(user_url, keyring=KeyRing.generate(), postgres_dsn=thorbis_pg_dsn,
                         near=NearCache()).start(["home_services"])
    db = await asyncpg.connect(thorbis_pg_dsn)
    try:
        cache = app.cache
        assert await cache.near_ready()  # SUBSCRIBE on the events channel
        await db.execute(CUSTOMER_SQL, "acme", 3)
        async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
            await worker.drain()
            one, two = (CUSTOMER.key("acme", customer_id=i) for i in (1, 2))
            # A fill under its lease (INFO inside the lease scripts), then L1.
            loaded = await cache.hash(one).get_or_load(lambda: asyncio.sleep(
                0, attrs.evolve(stale_customer(1), phone="loaded")))
            assert loaded.phone == "loaded"
            assert (await cache.hash(one).get()) == loaded
            await cache.hash(two).replace(stale_customer(2))
            await db.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")
            results = await worker.drain()
            assert "{acme}:hs.customer:1" in {k for r in results for k in r.keys}
            assert await cache.hash(one).get() is None  # Redis and L1, by the event
            # A delete that waits for the replicas (WAIT, and INFO for their count).
            assert await cache.delete(two) == 1
            assert worker.metrics.failed_batches == 0
    finally:
        await db.close()
        await app.aclose()
    refused = [r.getMessage() for r in caplog.records
               if "permission" in r.getMessage() or "NOPERM" in r.getMessage()]
    assert not refused, refused
