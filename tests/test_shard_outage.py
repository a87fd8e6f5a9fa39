"""One Cluster shard out of reach must not take the other shards' tenants with it.

A tenant's keys share one hash slot, so on a Cluster each tenant lives on one shard.
When one master stops answering (frozen, partitioned, or dead until the Cluster fails
it over: ``cluster-node-timeout``, 15 s by default), Redis keeps serving every other
shard; so must the cache, instead of refusing everyone's calls and sending every
tenant's reads to the database at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from capture_env import Env, capture_env
from core_testing import wait_until
from prometheus_client import CollectorRegistry, generate_latest
from test_invalidation_proof import CUSTOMERS_SQL
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.worker import OUTBOX_EVERY, OutboxWorker
from thorbis_cache.observability.health import assess
from thorbis_cache.observability.probe import Probe
from thorbis_cache.observability.transport import TransportCollector
from thorbis_cache.testing.servers import RedisCluster

pytestmark = pytest.mark.slow

NOTE: KeySchema[str] = KeySchema("shard.note", str, params={"id": int}, ttl=600)


def _tenants_on_two_shards(cache: Cache, cluster: RedisCluster) -> tuple[str, str]:
    by_master: dict[int, str] = {}
    for i in range(200):
        tenant = f"t{i}"
        by_master.setdefault(cluster.master_for_key(cache.redis_key(NOTE.key(tenant, id=1))),
                             tenant)
        if len(by_master) >= 2:
            first, second = list(by_master.values())[:2]
            return first, second
    raise AssertionError("no two tenants on two shards among 200")


async def test_a_silent_shard_leaves_the_other_shards_tenants_served(
        thorbis_redis_cluster: RedisCluster) -> None:
    cluster = thorbis_redis_cluster
    cluster.flushall()
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    # Calls time out after 0.25 s, so that the silent shard's fail several times over
    # within the test kit's node timeout (1 s), before the Cluster reacts.
    async with Cache.from_url(f"{cluster.url}?socket_timeout=0.25", registry) as cache:
        down, up = _tenants_on_two_shards(cache, cluster)
        await cache.set(NOTE.key(down, id=1), "down's")
        await cache.set(NOTE.key(up, id=1), "up's")
        frozen = cluster.master_for_key(cache.redis_key(NOTE.key(down, id=1)))
        cluster.freeze(frozen)
        try:
            refused: list[str] = []
            served = 0

            async def reader_of_the_silent_shard() -> None:
                while time.monotonic() < until:
                    with contextlib.suppress(RedisUnavailableError):
                        await cache.get(NOTE.key(down, id=1))
                    await asyncio.sleep(0.005)

            async def reader_of_a_live_shard() -> None:
                nonlocal served
                while time.monotonic() < until:
                    try:
                        assert await cache.get(NOTE.key(up, id=1)) == "up's"
                        served += 1
                    except RedisUnavailableError as exc:
                        refused.append(str(exc))
                    await asyncio.sleep(0.005)

            # Shorter than the node timeout and the failover: only the one shard is out.
            until = time.monotonic() + 0.9
            await asyncio.gather(*(reader_of_the_silent_shard() for _ in range(8)),
                                 reader_of_a_live_shard())
            assert served > 0
            # The silent shard's calls fail fast on their own breaker, not the store's.
            breakers = cache.store.breakers.every()
            assert breakers[""].opens == 0
            assert sum(b.opens for name, b in breakers.items() if name) >= 1
            # ... and the operator sees which one.
            registry = CollectorRegistry()
            registry.register(TransportCollector(cache.store))
            scraped = generate_latest(registry).decode()
            node = cluster.nodes[frozen]
            assert 'thorbis_cache_redis_circuit_opens_total{breaker="store"} 0.0' in scraped
            opened = [line for line in scraped.splitlines() if line.startswith(
                f'thorbis_cache_redis_circuit_opens_total{{breaker="{node.host}:{node.port}"}}')]
            assert opened, scraped
            assert float(opened[0].split()[-1]) >= 1
            assert refused == [], (
                f"{len(refused)} reads of a live shard refused ({served} served); "
                f"first: {refused[0]}")
        finally:
            cluster.thaw(frozen)
            cluster.wait_ok()


@pytest.fixture(scope="module")
def slow_failing_cluster() -> Iterator[RedisCluster]:
    """A Cluster that takes as long as a default one to declare a master failed
    (``cluster-node-timeout`` 15 s): the window in which one shard is silent and the
    others serve."""
    with RedisCluster(3, replicas=1, node_timeout_ms=15_000) as cluster:
        yield cluster


@pytest.mark.parametrize("mode", ["triggers", "logical"])
async def test_invalidations_of_live_shards_go_on_while_one_shard_is_silent(
        slow_failing_cluster: RedisCluster, thorbis_pg_dsn: str, mode: str) -> None:
    """A change of a tenant on the silent shard, then one of acme's, on another: acme's
    is applied while the other shard is silent (the other's is parked),
    and the other's once its shard answers again."""
    cluster = slow_failing_cluster
    cluster.flushall()
    async with capture_env(mode, thorbis_pg_dsn, cluster.url) as env:
        cache = env.app.cache
        other = await _customers_on_two_shards(env, cluster)
        async with _running(env, cluster) as (worker, frozen):
            for tenant in ("acme", other):
                await env.cache_customer(1, tenant)
            frozen.freeze(
                cluster.master_for_key(cache.redis_key(CUSTOMER.key(other, customer_id=1))))
            update = "UPDATE hs.customers SET phone = '555-0199' WHERE tenant_id = $1"
            await env.conn.execute(update, other)
            await asyncio.sleep(0.5)  # the worker has met the silent shard
            await env.conn.execute(update, "acme")
            await wait_until("acme's change, on a live shard, is applied (another shard "
                             "silent)", lambda: _gone(env, "acme"), within=8)
            await wait_until("the other tenant's change parked",
                             lambda: _parked(worker))
            # A parked change waits for its shard: it does not go round the outbox with
            # the live shards' changes, claimed, refused and written back by every batch.
            parked = worker.metrics.parked
            await env.conn.execute(update.replace("0199", "0200"), "acme")
            await worker.drained()
            await asyncio.sleep(OUTBOX_EVERY + 0.5)  # a look at the outbox, under logical
            assert worker.metrics.parked == parked, (
                f"the parked change was claimed and parked again "
                f"{worker.metrics.parked - parked} time(s) while its shard was silent")
            # A batch of nothing but the silent shard's changes (the live tenants idle)
            # parks them too, instead of failing again and again while the worker
            # waits for a Redis whose other shards answer.
            failed = worker.metrics.failed_batches
            await env.conn.execute(update.replace("0199", "0201"), other)
            await wait_until("the silent shard's second change parked",
                             lambda: _parked(worker, parked + 1))
            assert worker.metrics.failed_batches == failed
            assert await env.conn.fetchval("SELECT count(*) FROM thorbis.parked_changes "
                                           "WHERE tenant_id = $1", other) == 2
            # Pending, and said to be parked (the other shards' changes were applied).
            probe = Probe(cache.store, cache.settings.prefix, env.dsn)
            outbox_check = assess(await probe.refresh()).checks["outbox"]
            assert outbox_check.status == "warning"
            assert outbox_check.figures["parked"] == 2
            assert "2 of them parked" in outbox_check.reason
            figures = await worker.parked()  # what `worker --once` says it left
            assert (figures.changes, figures.tenants) == (2, 1)
            frozen.thaw()

            async def other_applied() -> bool:
                try:
                    return not await env.cached(1, other)
                except RedisUnavailableError:  # its breaker still open, for a moment
                    return False

            await wait_until(f"{other}'s change applied once its shard answers",
                             other_applied)
            await wait_until("nothing left parked", lambda: _outbox_empty(env))
            assert worker.metrics.parked_applied == 2


class _Frozen:
    """The master a test froze, thawed on the way out if the test did not."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self.node: int | None = None

    def freeze(self, node: int) -> None:
        self.cluster.freeze(node)
        self.node = node

    def thaw(self) -> None:
        if self.node is not None:
            self.cluster.thaw(self.node)
            self.node = None


@contextlib.asynccontextmanager
async def _running(env: Env, cluster: RedisCluster
                   ) -> AsyncIterator[tuple[OutboxWorker, _Frozen]]:
    """The env's worker, caught up then running its loop; a master to freeze."""
    worker = env.worker()
    await worker.drain()
    running = asyncio.ensure_future(worker.run())
    frozen = _Frozen(cluster)
    try:
        yield worker, frozen
    finally:
        frozen.thaw()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.aclose()


async def _customers_on_two_shards(env: Env, cluster: RedisCluster) -> str:
    """A tenant on another shard than acme's; customer 1 of each inserted."""
    def master(tenant: str) -> int:
        return cluster.master_for_key(
            env.app.cache.redis_key(CUSTOMER.key(tenant, customer_id=1)))

    other = next(t for t in (f"t{i}" for i in range(500)) if master(t) != master("acme"))
    for tenant in ("acme", other):
        await env.conn.execute(CUSTOMERS_SQL.replace("'acme'", "$2::text"), 1, tenant)
    return other


async def _parked(worker: OutboxWorker, at_least: int = 1) -> bool:
    return worker.metrics.parked >= at_least


async def _outbox_empty(env: Env) -> bool:
    return bool(await env.conn.fetchval(
        "SELECT (SELECT count(*) FROM thorbis.outbox) + (SELECT count(*) FROM "
        "thorbis.parked_changes) + (SELECT count(*) FROM thorbis.parked_tenants)") == 0)


@pytest.fixture
def failing_over_cluster() -> Iterator[RedisCluster]:
    """A Cluster that fails a silent master over within a few seconds (replicas, a
    2 s node timeout)."""
    with RedisCluster(3, replicas=1, node_timeout_ms=2_000) as cluster:
        yield cluster


async def test_the_worker_follows_a_shard_failed_over_while_its_breaker_was_open(
        failing_over_cluster: RedisCluster, thorbis_pg_dsn: str) -> None:
    """A master falls silent under writes, its breaker opens, its tenants' changes are
    parked, and the Cluster promotes its replica while the old master is still frozen.
    Every change must be applied then, without waiting for the old master: found with
    bench/shard_loss.py, the worker called the replaced master for as long as it was
    frozen (no call tells a driver of a failover when its calls are refused by an open
    breaker or cancelled at their deadline), and applied nothing more until it was
    thawed."""
    cluster = failing_over_cluster
    async with capture_env("triggers", thorbis_pg_dsn, cluster.url) as env:
        cache = env.app.cache
        other = await _customers_on_two_shards(env, cluster)
        async with _running(env, cluster) as (_, frozen):
            lost = cluster.master_for_key(cache.redis_key(CUSTOMER.key(other, customer_id=1)))
            frozen.freeze(lost)
            update = "UPDATE hs.customers SET phone = $2 WHERE tenant_id = $1"
            for i in range(40):  # changes of both shards while one is silent
                await env.conn.execute(update, other, f"555-1{i:03d}")
                await env.conn.execute(update, "acme", f"555-2{i:03d}")
                await asyncio.sleep(0.05)
            await asyncio.to_thread(cluster.wait_failover, lost, 30)
            await wait_until("every change applied, the old master still frozen",
                             lambda: _outbox_empty(env), within=20)
            for tenant in ("acme", other):
                await env.cache_customer(1, tenant)
                await env.conn.execute(update, tenant, "555-3000")
            await wait_until("changes after the failover applied, the old master frozen",
                             lambda: _both_gone(env, other), within=20)


async def _gone(env: Env, tenant: str) -> bool:
    return not await env.cached(1, tenant)


async def _both_gone(env: Env, other: str) -> bool:
    try:
        return not await env.cached(1, "acme") and not await env.cached(1, other)
    except RedisUnavailableError:
        return False


async def test_a_truncate_while_one_shard_is_silent_holds_back_no_tenant(
        slow_failing_cluster: RedisCluster, thorbis_pg_dsn: str) -> None:
    """A TRUNCATE invalidates its table's tags for every tenant, listed from every
    shard's slot registries. With one shard silent, listing them failed, the batch with
    it, and every batch after it: no tenant's change was applied until the shard
    answered. Now the reachable shards' tenants are invalidated, the TRUNCATE is parked
    until every shard answers, and the batches go on."""
    cluster = slow_failing_cluster
    cluster.flushall()
    async with capture_env("triggers", thorbis_pg_dsn, cluster.url) as env:
        cache = env.app.cache
        other = await _customers_on_two_shards(env, cluster)
        async with _running(env, cluster) as (_, frozen):
            for tenant in ("acme", other):  # each registered on its shard
                await env.cache_customer(1, tenant)
            frozen.freeze(
                cluster.master_for_key(cache.redis_key(CUSTOMER.key(other, customer_id=1))))
            await env.conn.execute("TRUNCATE hs.work_orders CASCADE")
            started = time.monotonic()
            while not await env.conn.fetchval(
                    "SELECT count(*) FROM thorbis.parked_changes WHERE operation = 'TRUNCATE'"):
                assert time.monotonic() - started < 12, (
                    "the TRUNCATE was neither applied nor parked while a shard was silent")
                await asyncio.sleep(0.02)
            # The batches after it go on (acme's entry may have gone with the TRUNCATE's
            # tags: cached again, then changed).
            await env.cache_customer(1, "acme")
            await env.conn.execute("UPDATE hs.customers SET phone = '555-0199' "
                                   "WHERE tenant_id = 'acme'")
            await wait_until("acme's change is applied after a TRUNCATE (another shard "
                             "silent)", lambda: _gone(env, "acme"), within=12)
            frozen.thaw()
            await wait_until("the TRUNCATE applied once every shard answers",
                             lambda: _outbox_empty(env), within=30)
