"""Invalidation under memory pressure, on real servers filled past ``maxmemory``.

For each supported ``maxmemory-policy`` a fresh server with 4 MB of memory gets 200
tagged entries, each with a dependent (an edge recorded by ``Cache.depend``), then
ballast written through the cache until Redis has evicted 1,500 keys (under
``noeviction``: until it refuses writes). Readers keep touching half of the entries, and
half of them have a shorter TTL than the ballast, so that every policy evicts some
entries and keeps others. Then one cascading tag invalidation must leave none of the
entries readable, and the sets it relies on must all have survived (they carry no TTL,
which ``volatile-*`` policies never evict; before, a dependency set or tag set could go
while entries it named stayed readable). Each run prints how many entries survived
eviction and were then invalidated.

The ``allkeys-*`` policies, which may evict anything, are refused at start with an error
naming the policy, the server and the fix. A server out of memory under ``noeviction``
still invalidates.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from thorbis_cache import Cache, CacheApp, KeySchema, SchemaRegistry
from thorbis_cache.cache.eviction import REFUSED_POLICIES, SUPPORTED_POLICIES, refusal
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.cache.meta_sweep import MetaSweep
from thorbis_cache.errors import CacheBackendError, ConfigurationError, EvictionPolicyError
from thorbis_cache.testing.servers import RedisCluster, RedisServer

ITEM: KeySchema[str] = KeySchema("ev.item", str, params={"id": int}, ttl=3600,
                                 tags=("ev.items",))
DERIVED: KeySchema[str] = KeySchema("ev.derived", str, params={"id": int}, ttl=3600)
BALLAST: KeySchema[bytes] = KeySchema("ev.ballast", bytes, params={"id": int}, ttl=1800)
ENTRIES = 200
EVICTIONS = 1500
MAXMEMORY = "4mb"


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (ITEM, DERIVED, BALLAST):
        reg.register(schema, owner="tests")
    return reg


def small_server(policy: str) -> RedisServer:
    return RedisServer(extra_args=["--maxmemory", MAXMEMORY, "--maxmemory-policy", policy])


async def evicted_keys(cache: Cache) -> int:
    return int((await cache.store.command("INFO", "stats"))["evicted_keys"])


async def existing(cache: Cache, names: list[str]) -> int:
    return int(await cache.store.command("EXISTS", *names))


async def record(cache: Cache) -> tuple[list[CacheKey[str]], list[CacheKey[str]]]:
    """Tagged entries and their dependents; odd ones expire sooner than the ballast."""
    items = [ITEM.key("acme", id=i) for i in range(ENTRIES)]
    derived = [DERIVED.key("acme", id=i) for i in range(ENTRIES)]
    for i, (item, dependent) in enumerate(zip(items, derived)):
        ttl = 300.0 if i % 2 else 3600.0
        await cache.set(item, f"item {i}", ttl=ttl)
        await cache.set(dependent, f"derived {i}", ttl=ttl)
        await cache.depend(dependent, on=item, ttl=ttl)
    return items, derived


async def fill_past_maxmemory(cache: Cache, touched: list[CacheKey[str]]) -> int:
    """Write 1 KiB ballast entries until Redis evicted EVICTIONS keys or refuses writes;
    reads of ``touched`` in between keep them recently and frequently used."""
    written = 0
    while await evicted_keys(cache) < EVICTIONS:
        for _ in range(50):
            try:
                await cache.set(BALLAST.key("acme", id=written), os.urandom(1024))
            except CacheBackendError as exc:
                if "maxmemory" not in str(exc):  # noeviction: Redis is full; else a bug
                    raise
                return written
            written += 1
        await cache.get_many(touched)
    return written


@pytest.mark.parametrize("policy", SUPPORTED_POLICIES)
async def test_invalidation_stays_complete_when_redis_evicts(policy: str) -> None:
    with small_server(policy) as server:
        async with Cache.from_url(server.url, registry()) as cache:
            assert await cache.verify_server() == policy
            items, derived = await record(cache)
            ballast = await fill_past_maxmemory(cache, items[::2] + derived[::2])
            evicted = await evicted_keys(cache)
            if policy == "noeviction":
                assert evicted == 0
            else:
                assert evicted >= EVICTIONS
            # What invalidation reads was never evicted: the tag set names every item,
            # every edge set is there, and the tenant index too.
            tag = cache.tag_key("acme", "ev.items")
            assert int(await cache.store.command("SCARD", tag)) == ENTRIES
            assert await existing(cache, [cache.tags.deps_key(k.body) for k in items]) \
                == ENTRIES
            assert await existing(cache, [cache.tags.meta.index("acme")]) == 1
            survivors = await existing(cache, [cache.redis_key(k) for k in items + derived])
            assert survivors > 0, "nothing left to invalidate: the test would prove nothing"

            deleted = await cache.invalidate_tags("acme", ["ev.items"], cascade=True)

            assert await cache.get_many(items + derived) == [None] * (2 * ENTRIES)
            # Fewer than the survivors when Redis evicted some more in between (the
            # invalidation's own work keys take memory too).
            assert 0 < deleted <= survivors
            print(f"\n{policy}: {ballast} ballast entries, {evicted} keys evicted; "
                  f"{2 * ENTRIES - survivors} of {2 * ENTRIES} tagged/dependent entries "
                  f"evicted, {survivors} survived, {deleted} invalidated, 0 readable after")


async def test_sets_written_by_an_older_version_lose_their_ttl_when_written(
    thorbis_redis_url: str,
) -> None:
    """Before this version tag and dependency sets had a TTL, so a volatile-* policy
    could evict them: the first write that records into one makes it permanent."""
    async with Cache.from_url(thorbis_redis_url, registry()) as cache:
        tag = cache.tag_key("acme", "ev.items")
        item, dependent = ITEM.key("acme", id=1), DERIVED.key("acme", id=1)
        deps = cache.tags.deps_key(item.body)
        for name, member in ((tag, cache.redis_key(item)), (deps, cache.redis_key(dependent))):
            await cache.store.command("SADD", name, member)
            await cache.store.command("PEXPIRE", name, 60_000)
        await cache.set(item, "v")
        await cache.depend(dependent, on=item)
        assert [await cache.store.command("PTTL", name) for name in (tag, deps)] == [-1, -1]
        index = cache.tags.meta.index("acme")
        assert await cache.store.command("ZSCORE", index, tag) is not None
        assert await cache.store.command("ZSCORE", index, deps) is not None


# --------------------------------------------------------------------------- refused


@pytest.fixture(scope="module")
def plain_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def policy_server(plain_server: RedisServer) -> Iterator[RedisServer]:
    yield plain_server
    plain_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    plain_server.flushall()


@pytest.mark.parametrize("policy", REFUSED_POLICIES)
async def test_policies_that_evict_any_key_are_refused(
    policy: str, policy_server: RedisServer
) -> None:
    policy_server.command("CONFIG", "SET", "maxmemory-policy", policy)
    async with Cache.from_url(policy_server.url, registry()) as cache:
        with pytest.raises(EvictionPolicyError) as info:
            await cache.verify_server()
    error = info.value
    assert (error.policy, error.address) == (policy, f"127.0.0.1:{policy_server.port}")
    message = str(error)
    assert f"maxmemory-policy {policy}" in message
    assert f"127.0.0.1:{policy_server.port}" in message
    assert "CONFIG SET maxmemory-policy volatile-lru" in message
    assert isinstance(error, ConfigurationError)


async def test_each_supported_policy_passes_and_unknown_ones_do_not(
    policy_server: RedisServer,
) -> None:
    async with Cache.from_url(policy_server.url, registry()) as cache:
        for policy in SUPPORTED_POLICIES:
            policy_server.command("CONFIG", "SET", "maxmemory-policy", policy)
            assert await cache.verify_server() == policy
    # A policy a later Redis may add is refused until someone checks what it evicts.
    assert "does not know" in (refusal("allkeys-future") or "")
    assert "may evict any key" in (refusal("allkeys-lru") or "")


async def test_an_app_does_not_start_on_a_refused_policy(policy_server: RedisServer) -> None:
    policy_server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    app = CacheApp(policy_server.url)
    with pytest.raises(EvictionPolicyError, match="allkeys-lru"):
        await app.start([])
    with pytest.raises(ConfigurationError, match=r"after `await app\.start"):
        _ = app.cache  # nothing of the failed start is kept


async def test_redis_down_at_start_is_not_a_refusal() -> None:
    async with Cache.from_url("redis://127.0.0.1:1/0", registry()) as cache:
        assert await cache.verify_server() is None


async def test_every_master_of_a_cluster_is_checked(
    thorbis_cluster_redis_url: str, thorbis_redis_cluster: RedisCluster
) -> None:
    # The last master (replicas, if the cluster has any, are not asked: they do not
    # evict, and one promoted later is checked by the sweep after its next pass).
    node = [n for n in thorbis_redis_cluster.nodes if n.command("ROLE")[0] == b"master"][-1]
    # The harness's nodes run deploy/redis/redis.conf: volatile-lru.
    before = node.command("CONFIG", "GET", "maxmemory-policy")[1].decode()
    async with Cache.from_url(thorbis_cluster_redis_url, registry()) as cache:
        assert await cache.verify_server() == before == "volatile-lru"
        node.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu")
        try:
            with pytest.raises(EvictionPolicyError) as info:
                await cache.verify_server()
        finally:
            node.command("CONFIG", "SET", "maxmemory-policy", before)
    assert info.value.address == f"127.0.0.1:{node.port}"
    assert info.value.policy == "allkeys-lfu"


# --------------------------------------------------------------------------- out of memory


@pytest.fixture
async def full_cache() -> AsyncIterator[Cache]:
    """A cache on a server under noeviction that refuses writes: out of memory."""
    with small_server("noeviction") as server:
        async with Cache.from_url(server.url, registry()) as cache:
            yield cache


async def test_a_server_out_of_memory_still_invalidates(full_cache: Cache) -> None:
    cache = full_cache
    items, derived = await record(cache)
    await fill_past_maxmemory(cache, [])
    with pytest.raises(CacheBackendError, match="maxmemory"):
        await cache.set(BALLAST.key("acme", id=-1), os.urandom(1024))  # still full
    # Every kind of invalidation runs (the scripts are allow-oom; without it Redis
    # refuses a script whose first write may grow memory, as the cascade's RPUSH):
    assert await cache.delete(items[0]) == 1
    assert await cache.invalidate(items[1], cascade=True) == 2  # the item and its dependent
    assert await cache.depend(derived[2], on=items[4])  # an edge of an entry already held
    assert await cache.invalidate_tags("acme", ["ev.items"], cascade=True) == 2 * ENTRIES - 3
    assert await cache.get_many(items + derived) == [None] * (2 * ENTRIES)
    # ...and so does the sweep, which frees memory.
    sweep = MetaSweep.for_cache(cache)
    while not (await sweep.sweep_once()).pass_complete:
        pass


async def test_a_fill_on_a_server_out_of_memory_returns_the_value_uncached(
    full_cache: Cache,
) -> None:
    cache = full_cache
    await fill_past_maxmemory(cache, [])
    key = ITEM.key("acme", id=10_000)

    async def load() -> str:
        return "loaded"

    assert await cache.get_or_load(key, load) == "loaded"
    assert await cache.get(key) is None
    assert cache.metrics.for_schema(ITEM.name).degraded_loads == 1
