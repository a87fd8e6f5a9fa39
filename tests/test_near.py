"""The near cache (L1) and invalidation events, against real Redis: every cache test body
runs on a single server and on a 3-master Cluster (``thorbis_redis_url``).

Two :class:`Cache` objects on one Redis stand for two processes. No assertion is made on
wall time: the ``near_ttl`` bound is checked with a clock the test moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from thorbis_cache import Cache, CacheSettings, KeySchema, SchemaRegistry
from thorbis_cache.cache.invalidation_events import EventPublisher, InvalidationEvent
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.cache.metrics import CoherenceCounters
from thorbis_cache.cache.near import MISS, NearCache
from thorbis_cache.errors import InvalidSchemaError, RedisUnavailableError
from thorbis_cache.testing.clients import master_clients
from thorbis_cache.testing.servers import RedisServer


@attrs.frozen
class Job:
    id: int
    title: str


JOB: KeySchema[Job] = KeySchema("hs.job", Job, params={"job_id": int}, ttl=300, near_ttl=0.5,
                tags=("hs.jobs",))
SUMMARY: KeySchema[str] = KeySchema("hs.job_summary", str, params={"job_id": int}, ttl=300,
                                    near_ttl=0.5)
PLAIN: KeySchema[str] = KeySchema("hs.plain", str, params={"id": int}, ttl=300)


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (JOB, SUMMARY, PLAIN):
        reg.register(schema, owner="tests")
    return reg


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def l1(cache: Cache) -> NearCache:
    """The near cache of ``cache`` (which has one)."""
    assert cache.near is not None
    return cache.near


def get_calls(url: str) -> int:
    """GET calls served, summed over every master (INFO commandstats)."""
    total = 0
    for node in master_clients(url):
        total += int(node.info("commandstats").get("cmdstat_get", {}).get("calls", 0))
        node.close()
    return total


async def until(condition: Callable[[], bool], what: str, tries: int = 500) -> None:
    """Wait for ``condition`` (an event crossing processes), bounded."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def put(writer: Cache, reader: Cache, key: CacheKey[Any], value: Any) -> None:
    """``writer.set`` and wait until ``reader`` has heard of it: a fill whose read is in
    flight when an event for its key lands is (rightly) not kept."""
    heard = reader.metrics.coherence.events_received
    await writer.set(key, value)
    await until(lambda: reader.metrics.coherence.events_received > heard, "the set was heard")


@pytest.fixture
async def writer(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    """Process A: no near cache; publishes its invalidations."""
    async with Cache.from_url(thorbis_redis_url, registry()) as c:
        yield c


@pytest.fixture
async def reader(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    """Process B: a near cache, subscribed."""
    async with Cache.from_url(thorbis_redis_url, registry(), near=NearCache(100)) as c:
        assert await c.near_ready(10)
        yield c


# --------------------------------------------------------------------------- hits


async def test_l1_hit_makes_no_redis_call(
    writer: Cache, reader: Cache, thorbis_redis_url: str
) -> None:
    key = JOB.key("acme", job_id=1)
    await put(writer, reader, key, Job(1, "boiler"))
    assert await reader.get(key) == Job(1, "boiler")  # from Redis, fills L1
    assert reader.redis_key(key) in l1(reader)
    before = get_calls(thorbis_redis_url)
    for _ in range(5):
        assert await reader.get(key) == Job(1, "boiler")
    assert await reader.get_or_load(key, _never) == Job(1, "boiler")
    assert get_calls(thorbis_redis_url) == before
    assert reader.metrics.value("near_hits", schema="hs.job") == 6
    assert reader.metrics.value("near_misses", schema="hs.job") == 1


async def _never() -> Job:
    raise AssertionError("the loader must not be called on an L1 hit")


class _Observed:
    """A CacheObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def observe(self, key: CacheKey[Any], operation: str, seconds: float) -> None:
        self.calls.append((key.schema.name, operation))

    def failed(self, key: CacheKey[Any], operation: str, error: BaseException,
               seconds: float) -> None:
        self.calls.append((key.schema.name, f"{operation} failed"))


async def test_reads_past_l1_are_observed_as_other_schemas_are(reader: Cache) -> None:
    """A near-cached schema's get_or_load that reaches Redis is timed and counted for
    its tenant like any other (it was not: only get was), and an L1 hit is not."""
    observed = reader.observer = _Observed()
    key = SUMMARY.key("acme", job_id=4)

    async def load() -> str:
        return "4 visits"

    for _ in range(3):
        assert await reader.get_or_load(key, load) == "4 visits"
    assert await reader.get(JOB.key("acme", job_id=4)) is None
    assert observed.calls == [("hs.job_summary", "get_or_load"), ("hs.job", "get")]


async def test_get_or_load_fills_l1(reader: Cache) -> None:
    key = SUMMARY.key("acme", job_id=3)

    async def load() -> str:
        return "3 visits"

    assert await reader.get_or_load(key, load) == "3 visits"
    assert reader.redis_key(key) in l1(reader)


async def test_schemas_without_near_ttl_and_caches_without_near_skip_l1(
    writer: Cache, reader: Cache, thorbis_redis_url: str
) -> None:
    plain, job = PLAIN.key("acme", id=1), JOB.key("acme", job_id=2)
    await writer.set(plain, "x")
    await writer.set(job, Job(2, "pipe"))
    before = get_calls(thorbis_redis_url)
    for _ in range(3):
        assert await reader.get(plain) == "x"
        assert await writer.get(job) == Job(2, "pipe")
    assert get_calls(thorbis_redis_url) == before + 6
    assert len(l1(reader)) == 0
    assert writer.near is None
    assert writer._runtime(JOB).near is None  # the hot path's single check


# --------------------------------------------------------------------------- coherence


@pytest.mark.parametrize("how", ["delete", "set", "invalidate_tags", "cascade"])
async def test_another_process_invalidation_evicts_l1(
    writer: Cache, reader: Cache, thorbis_redis_url: str, how: str
) -> None:
    key = JOB.key("acme", job_id=7)
    other = JOB.key("globex", job_id=7)
    await put(writer, reader, key, Job(7, "old"))
    await put(writer, reader, other, Job(7, "other tenant"))
    assert await reader.get(key) == Job(7, "old")
    assert await reader.get(other) == Job(7, "other tenant")
    near = l1(reader)
    rk = reader.redis_key(key)
    assert rk in near
    if how == "delete":
        await writer.delete(key)
    elif how == "set":
        await writer.set(key, Job(7, "new"))
    elif how == "invalidate_tags":
        await writer.invalidate_tags("acme", ["hs.jobs"])
    else:
        await writer.invalidate(key, cascade=True)
    await until(lambda: rk not in near, "B's L1 dropped the key")
    before = get_calls(thorbis_redis_url)
    assert await reader.get(key) == (Job(7, "new") if how == "set" else None)
    assert get_calls(thorbis_redis_url) == before + 1  # read from Redis
    assert reader.redis_key(other) in near  # another tenant is untouched
    assert reader.metrics.coherence.events_received >= 1
    assert writer.metrics.coherence.events_published >= 1


async def test_a_delete_over_many_tenants_reaches_every_l1_in_one_publish_round(
    writer: Cache, reader: Cache, thorbis_redis_url: str
) -> None:
    keys = [JOB.key(f"t{i}", job_id=i) for i in range(12)]
    for i, key in enumerate(keys):
        await put(writer, reader, key, Job(i, "old"))
        assert await reader.get(key) == Job(i, "old")
    near = l1(reader)
    assert all(reader.redis_key(key) in near for key in keys)
    published = writer.metrics.coherence.events_published
    await writer.delete(*keys)  # one event per tenant, published together
    assert writer.metrics.coherence.events_published == published + len(keys)
    await until(lambda: not any(reader.redis_key(key) in near for key in keys),
                "B's L1 dropped every tenant's key")
    assert [await reader.get(key) for key in keys] == [None] * len(keys)


async def test_own_invalidation_evicts_l1_before_returning(reader: Cache) -> None:
    key = JOB.key("acme", job_id=8)
    await reader.set(key, Job(8, "old"))
    assert await reader.get(key) == Job(8, "old")
    await reader.delete(key)
    assert reader.redis_key(key) not in l1(reader)
    assert await reader.get(key) is None


async def test_lost_event_is_bounded_by_near_ttl(thorbis_redis_url: str) -> None:
    clock = Clock()
    silent = CacheSettings(publish_events=False)  # A's events are lost
    async with (
        Cache.from_url(thorbis_redis_url, registry(), settings=silent) as a,
        Cache.from_url(thorbis_redis_url, registry(), near=NearCache(clock=clock)) as b,
    ):
        assert await b.near_ready(10)
        key = JOB.key("acme", job_id=9)
        await a.set(key, Job(9, "old"))
        t_read = clock.now
        assert await b.get(key) == Job(9, "old")
        clock.now += 0.1
        await a.delete(key)  # acknowledged by Redis; B never hears of it
        t_invalidated = clock.now
        # Within the bound B may still serve the old value from L1...
        clock.now = t_read + JOB.near_ttl - 0.001  # type: ignore[operator]
        assert await b.get(key) == Job(9, "old")
        # ...and never at or past near_ttl after the read (hence after the invalidation).
        clock.now = t_read + JOB.near_ttl  # type: ignore[operator]
        assert clock.now <= t_invalidated + JOB.near_ttl  # type: ignore[operator]
        assert await b.get(key) is None
        assert b.metrics.coherence.near_evictions >= 1


async def test_fill_that_raced_an_invalidation_is_not_kept() -> None:
    near = NearCache()
    near.set_ready(True)
    started = near.begin()  # a Redis read starts...
    near.apply(InvalidationEvent("acme", ("tc:{acme}:hs.job:1",)))  # ...an event lands
    assert not near.put("tc:{acme}:hs.job:1", Job(1, "old"), "acme", (), 0.5, started)
    assert near.lookup("tc:{acme}:hs.job:1") is MISS


async def test_dropped_subscription_flushes_l1_until_resubscribed(reader: Cache) -> None:
    key = JOB.key("acme", job_id=10)
    await reader.set(key, Job(10, "x"))
    await reader.get(key)
    near = l1(reader)
    assert reader.redis_key(key) in near
    flushes = reader.metrics.coherence.near_flushes
    subscriber = reader._coherence.subscriber
    assert subscriber is not None
    await subscriber.drop_connection()
    # Lost (flush), then resubscribed (flush again): the entry is gone either way.
    await until(lambda: reader.metrics.coherence.near_flushes >= flushes + 2,
                "the subscription was lost and re-established")
    assert reader.redis_key(key) not in near
    assert await reader.near_ready(10)
    await reader.get(key)
    assert reader.redis_key(key) in near


async def test_redis_killed_flushes_l1_and_it_refills_after_restart(
    thorbis_redis_server: RedisServer, thorbis_standalone_redis_url: str
) -> None:
    async with Cache.from_url(thorbis_standalone_redis_url, registry(),
                              near=NearCache()) as b:
        assert await b.near_ready(10)
        key = SUMMARY.key("acme", job_id=1)
        await b.set(key, "before")
        assert await b.get(key) == "before"
        near = l1(b)
        assert b.redis_key(key) in near
        thorbis_redis_server.kill()
        try:
            await until(lambda: not near.ready, "the lost connection was noticed")
            assert len(near) == 0
            # Not filled while unsubscribed, whatever reaches it.
            assert not near.put(b.redis_key(key), "stale", "acme", (), 0.5, near.begin())
            with pytest.raises(RedisUnavailableError):
                await b.get(key)
        finally:
            thorbis_redis_server.restart()
        assert await b.near_ready(15)
        await b.set(key, "after")
        assert await b.get(key) == "after"
        assert b.redis_key(key) in near


# --------------------------------------------------------------------------- bounds, config


def test_lru_bound() -> None:
    near = NearCache(max_entries=3)
    near.set_ready(True)
    for i in range(3):
        near.put(f"k{i}", i, "acme", ("hs.jobs",), 1.0, near.begin())
    assert near.lookup("k0") == 0  # k0 becomes the most recent
    near.put("k3", 3, "acme", ("hs.jobs",), 1.0, near.begin())
    assert len(near) == 3
    assert near.lookup("k1") is MISS  # the least recently used went
    assert {k for k in ("k0", "k2", "k3") if k in near} == {"k0", "k2", "k3"}
    assert near.evict_tags("acme", ["hs.jobs"]) == 3  # the tag index followed
    assert len(near) == 0


def test_near_cache_belongs_to_one_cache() -> None:
    near = NearCache()
    near.attach("a", CoherenceCounters())
    with pytest.raises(Exception, match="one Cache"):
        near.attach("b", CoherenceCounters())


@pytest.mark.parametrize("bad", [0, -1, 61, "1"])
def test_near_ttl_is_validated(bad: object) -> None:
    with pytest.raises(InvalidSchemaError, match="near_ttl"):
        KeySchema("hs.bad", str, near_ttl=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSchemaError, match="value schemas"):
        KeySchema("hs.bad", Job, kind=SchemaKind.HASH, near_ttl=1)


async def test_publish_failure_is_counted_not_raised() -> None:
    class DeadStore:
        async def publish_each(self, *args: object) -> None:
            raise RedisUnavailableError("PUBLISH", "127.0.0.1:1", "connection refused")

    counters = CoherenceCounters()
    publisher = EventPublisher(DeadStore(), "tc:~events", counters)  # type: ignore[arg-type]
    assert await publisher.publish(InvalidationEvent("acme", ("k",))) is False
    assert counters.event_publish_errors == 1


def test_events_round_trip_and_reject_garbage() -> None:
    event = InvalidationEvent("acme", ("a", "b"), ("hs.jobs",), True, "me")
    assert InvalidationEvent.decode(event.encode()) == event
    for garbage in (b"nope", b"[]", b'{"v": 99, "tenant": "x"}', b'{"v": 1}'):
        with pytest.raises(ValueError, match="event"):
            InvalidationEvent.decode(garbage)
