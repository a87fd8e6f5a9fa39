"""Read-through of every schema kind against real Redis (single server and Cluster):
fill leases, stale fills refused, single flight, negative caching, empty sets, markers
seen by plain reads and writers, XFetch, degraded mode, and what a loaded answer
computes matching what Redis answers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thorbis_cache import Cache, CacheSettings, KeyRing, KeySchema, SchemaRegistry
from thorbis_cache.cache.geo import geo_distance, geohash_position
from thorbis_cache.cache.keys import SchemaKind
from thorbis_cache.cache.read_through import ABSENT, EMPTY
from thorbis_cache.cache.structure_args import score_range
from thorbis_cache.cache.structures import _pairs
from thorbis_cache.errors import (
    InvalidParameterError,
    InvalidSchemaError,
    MissingRow,
    RedisUnavailableError,
    ValueTypeError,
    WrongSchemaKindError,
)
from thorbis_cache.testing.servers import RedisServer


@attrs.frozen
class Person:
    id: int
    name: str
    email: str


PERSON = KeySchema("rt.person", Person, params={"id": int}, ttl=300, sensitive=True,
                   kind=SchemaKind.HASH, tags=("rt.people",), negative_ttl=30)
HISTORY = KeySchema("rt.history", int, params={"id": int}, ttl=300, kind=SchemaKind.ZSET,
                    tags=("rt.people",), negative_ttl=30)
SITES = KeySchema("rt.sites", int, params={"day": int}, ttl=300, kind=SchemaKind.GEO,
                  tags=("rt.sites",))
LABEL = KeySchema("rt.label", str, params={"id": int}, ttl=300, tags=("rt.people",),
                  negative_ttl=30)
PLAIN_LABEL = KeySchema("rt.plain_label", str, params={"id": int}, ttl=300)
HOT_SET = KeySchema("rt.hot_set", int, params={"id": int}, ttl=1, kind=SchemaKind.ZSET,
                    early_recompute=10.0)

RING = KeyRing.generate()


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (PERSON, HISTORY, SITES, LABEL, PLAIN_LABEL, HOT_SET):
        reg.register(schema, owner="tests")
    return reg


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING) as c:
        yield c


class Source:
    """A loader over a mutable 'database' that counts its calls and can be held open."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    def hold(self) -> None:
        self.release.clear()

    async def __call__(self) -> Any:
        self.calls += 1
        value = self.value  # read "the database" now...
        self.loaded.set()
        await self.release.wait()  # ...and return it later (a slow loader)
        if isinstance(value, Exception):
            raise value
        return value


def ann(name: str = "Ann") -> Person:
    return Person(1, name, f"{name.lower()}@example.com")


# --------------------------------------------------------------------------- basics


async def test_each_kind_loads_once_then_hits(cache: Cache) -> None:
    person = Source(ann())
    history = Source({3: 30.0, 1: 10.0, 2: 20.0})
    sites = Source({7: (2.35, 48.85), 8: (2.29, 48.86)})
    for _ in range(3):
        assert await cache.hash(PERSON.key("acme", id=1)).get_or_load(person) == ann()
        assert await cache.zset(HISTORY.key("acme", id=1)).get_or_load(history) == [
            (1, 10.0), (2, 20.0), (3, 30.0)]
        got = await cache.geo(SITES.key("acme", day=1)).get_or_load(sites)
        assert set(got) == {7, 8}
        assert all(abs(got[m][0] - sites.value[m][0]) < 1e-5
                   and abs(got[m][1] - sites.value[m][1]) < 1e-5 for m in got)
    assert (person.calls, history.calls, sites.calls) == (1, 1, 1)
    counters = cache.metrics.for_schema(PERSON.name)
    assert (counters.misses, counters.hits) == (1, 2)
    # The structures are real Redis structures: the plain readers see them.
    assert await cache.hash(PERSON.key("acme", id=1)).get() == ann()
    assert await cache.zset(HISTORY.key("acme", id=1)).top(1) == [(3, 30.0)]


async def test_ranged_reads_answer_the_same_from_a_load_and_from_the_cache(
    cache: Cache,
) -> None:
    members = {i: float(i % 7) for i in range(40)}
    zset = cache.zset(HISTORY.key("acme", id=2))
    queries: list[dict[str, Any]] = [
        {}, {"desc": True}, {"low": 2, "high": "(5"}, {"low": "(1", "high": 6, "desc": True,
                                                      "offset": 3, "count": 5},
        {"count": 0}, {"offset": 38, "count": 10},
    ]
    for query in queries:
        await cache.delete(zset._key)
        loaded = await zset.range_by_score(**query, loader=Source(members))
        cached = await zset.range_by_score(**query, loader=Source(members))
        assert loaded == cached == await zset.range_by_score(**query), query
    geo = cache.geo(SITES.key("acme", day=2))
    points = {1: (2.35, 48.85), 2: (2.30, 48.86), 3: (2.40, 48.80), 4: (-0.12, 51.5)}
    loaded_near = await geo.within(2.35, 48.85, 10_000, loader=Source(points))
    cached_near = await geo.within(2.35, 48.85, 10_000, loader=Source(points))
    assert [m for m, _ in loaded_near] == [m for m, _ in cached_near] == [1, 2, 3]
    for (_, d1), (_, d2) in zip(loaded_near, cached_near):
        assert abs(d1 - d2) < 1.0  # loaded positions vs 52-bit geohash cells


async def test_get_or_load_on_a_structure_names_the_read_through_to_use(cache: Cache) -> None:
    with pytest.raises(WrongSchemaKindError, match=r"cache\.hash\(key\).*get_or_load"):
        await cache.get_or_load(PERSON.key("acme", id=1), Source(ann()))
    with pytest.raises(WrongSchemaKindError, match=r"cache\.zset\(key\)"):
        await cache.get_or_load(HISTORY.key("acme", id=1), Source({}))


async def test_a_loader_of_the_wrong_shape_is_refused_and_nothing_is_cached(
    cache: Cache,
) -> None:
    key = PERSON.key("acme", id=9)
    with pytest.raises(ValueTypeError):
        await cache.hash(key).get_or_load(Source({"id": 9}))
    with pytest.raises(ValueTypeError):
        await cache.zset(HISTORY.key("acme", id=9)).get_or_load(Source([1, 2]))
    assert await cache.store.command("EXISTS", cache.redis_key(key)) == 0
    assert await cache.store.command("EXISTS", cache.lease_key(key)) == 0  # released


# --------------------------------------------------------------------------- races


@pytest.mark.parametrize("invalidate", ["delete", "tag", "write"])
async def test_content_loaded_before_an_invalidation_is_never_written_after_it(
    cache: Cache, invalidate: str
) -> None:
    """The race the soak found: load old row, UPDATE commits, invalidation finds no
    key, the reader writes the old row. Here the fill is refused, for every kind."""
    cases: list[tuple[Any, Any, Any, Any]] = [
        (PERSON.key("acme", id=1), ann("Old"), ann("New"), "hash"),
        (HISTORY.key("acme", id=1), {1: 1.0, 2: 2.0}, {2: 2.0}, "zset"),
        (SITES.key("acme", day=1), {1: (1.0, 1.0)}, {2: (2.0, 2.0)}, "geo"),
    ]
    for key, old, new, kind in cases:
        source = Source(old)
        source.hold()
        handle: Any = getattr(cache, kind)(key)
        reader = asyncio.create_task(handle.get_or_load(source))
        await source.loaded.wait()
        source.value = new  # the UPDATE commits...
        if invalidate == "delete":  # ...and the worker's DEL finds no key
            await cache.delete(key)
        elif invalidate == "tag":
            await cache.invalidate_tags("acme", list(key.schema.tags))
        elif kind == "hash":  # ...or a writer holding the truth writes it
            await handle.replace(new)
        else:
            await handle.add(new, replace=True)
        source.release.set()
        assert _normal(await reader, kind) == _normal(old, kind)  # the reader gets its load
        fresh = Source(new)
        assert _normal(await handle.get_or_load(fresh), kind) == _normal(new, kind), kind
        expected_calls = 0 if invalidate == "write" else 1
        assert fresh.calls == expected_calls, kind
        assert cache.metrics.for_schema(key.schema.name).fills_rejected == 1


@pytest.mark.parametrize("invalidate", ["delete", "cascade", "tag", "write"])
async def test_a_load_revoked_by_an_invalidation_serves_no_caller_after_it(
    cache: Cache, invalidate: str
) -> None:
    """Found when the project was tried as a user would: after ``delete`` returned, a
    new read in the same process joined the load that began before it and got the
    pre-delete value. Callers that arrive after an invalidation start a load of their
    own; the one that was waiting keeps its own load's answer."""
    cases: list[tuple[Any, Any, Any, str]] = [
        (LABEL.key("acme", id=9), "old", "new", "value"),
        (PERSON.key("acme", id=9), ann("Old"), ann("New"), "hash"),
        (HISTORY.key("acme", id=9), {1: 1.0, 2: 2.0}, {2: 2.0}, "zset"),
        (SITES.key("acme", day=9), {1: (1.0, 1.0)}, {2: (2.0, 2.0)}, "geo"),
    ]
    for key, old, new, kind in cases:
        source = Source(old)
        source.hold()
        if kind == "value":
            def read(loader: Any, key: Any = key) -> Any:
                return cache.get_or_load(key, loader)
        else:
            handle: Any = getattr(cache, kind)(key)
            read = handle.get_or_load
        first = asyncio.create_task(read(source))
        await source.loaded.wait()
        source.value = new  # the UPDATE commits, then this process invalidates
        if invalidate == "delete":
            await cache.delete(key)
        elif invalidate == "cascade":
            await cache.invalidate(key, cascade=True)
        elif invalidate == "tag":
            await cache.invalidate_tags("acme", list(key.schema.tags))
        elif kind == "value":
            await cache.set(key, new)
        elif kind == "hash":
            await handle.replace(new)
        else:
            await handle.add(new, replace=True)
        fresh = Source(new)
        later = asyncio.create_task(read(fresh))
        if invalidate != "write":
            await asyncio.wait_for(fresh.loaded.wait(), 5)  # its own load, not the old one
        source.release.set()
        assert _normal(await first, kind) == _normal(old, kind)
        assert _normal(await later, kind) == _normal(new, kind), (kind, invalidate)


def _normal(value: Any, kind: str) -> Any:
    if kind == "zset":
        return sorted(dict(value).items())
    if kind == "geo":
        return sorted((m, round(p[0], 4), round(p[1], 4)) for m, p in dict(value).items())
    return value


async def test_concurrent_misses_share_one_load_in_a_process(cache: Cache) -> None:
    source = Source({1: 1.0})
    source.hold()
    zset = cache.zset(HISTORY.key("acme", id=3))
    readers = [asyncio.create_task(zset.top(5, loader=source)) for _ in range(20)]
    await source.loaded.wait()
    source.release.set()
    assert all(r == [(1, 1.0)] for r in await asyncio.gather(*readers))
    assert source.calls == 1


async def test_other_processes_wait_for_the_lease_holders_fill(thorbis_redis_url: str) -> None:
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING) as one, \
            Cache.from_url(thorbis_redis_url, registry(), keyring=RING) as two:
        first, second = Source(ann()), Source(ann("Other"))
        first.hold()
        key = PERSON.key("acme", id=4)
        a = asyncio.create_task(one.hash(key).get_or_load(first))
        await first.loaded.wait()
        b = asyncio.create_task(two.hash(key).get_or_load(second))
        counters = two.metrics.for_schema(PERSON.name)
        for _ in range(1000):  # until the other process waits (its first call maps
            if counters.lease_waits:  # the cluster: not within a fixed sleep on a busy box)
                break
            await asyncio.sleep(0.01)
        first.release.set()
        assert await a == await b == ann()
        assert second.calls == 0
        assert counters.lease_waits == 1


async def test_a_failing_loader_releases_the_lease_and_caches_nothing(cache: Cache) -> None:
    key = HISTORY.key("acme", id=5)
    with pytest.raises(ZeroDivisionError):
        await cache.zset(key).get_or_load(Source(ZeroDivisionError("db down")))
    assert await cache.store.command("EXISTS", cache.lease_key(key)) == 0
    assert await cache.zset(key).get_or_load(Source({1: 1.0})) == [(1, 1.0)]


# --------------------------------------------------------------------------- absence


async def test_an_absent_row_is_cached_until_an_insert_invalidates_it(cache: Cache) -> None:
    for key, handle_of, row in [
        (PERSON.key("acme", id=6), "hash", ann()),
        (HISTORY.key("acme", id=6), "zset", {1: 1.0}),
    ]:
        handle: Any = getattr(cache, handle_of)(key)
        missing = Source(MissingRow(key.schema.name, "acme", 6))
        for _ in range(3):
            with pytest.raises(MissingRow, match=key.schema.name):
                await handle.get_or_load(missing)
        assert missing.calls == 1  # the database was asked once
        counters = cache.metrics.for_schema(key.schema.name)
        assert (counters.absent_loads, counters.negative_hits, counters.load_errors) == (1, 2, 0)
        assert await cache.store.command("GET", cache.redis_key(key)) == ABSENT
        assert 0 < await cache.store.command("PTTL", cache.redis_key(key)) <= 30_000
        # Plain readers see nothing there.
        if handle_of == "hash":
            assert await handle.get() is None
            assert await handle.get_fields("name") == {}
            assert await handle.version() is None
        else:
            assert (await handle.range_by_score(), await handle.card()) == ([], 0)
            assert await handle.score(1) is None
        # The INSERT rule's tag invalidation drops the absence like any entry.
        await cache.invalidate_tags("acme", ["rt.people"])
        assert _normal(await handle.get_or_load(Source(row)), handle_of) == _normal(
            row, handle_of)


async def test_value_schemas_cache_absence_too_and_only_when_asked(cache: Cache) -> None:
    key = LABEL.key("acme", id=1)
    missing = Source(MissingRow(LABEL.name, "acme", 1))
    for _ in range(3):
        with pytest.raises(MissingRow):
            await cache.get_or_load(key, missing)
    assert missing.calls == 1
    assert await cache.get(key) is None
    assert await cache.get_many([key]) == [None]
    assert cache.metrics.for_schema(LABEL.name).corrupt == {}  # a marker is no corrupt entry
    await cache.delete(key)  # the rule of an INSERT
    assert await cache.get_or_load(key, Source("now here")) == "now here"
    plain = PLAIN_LABEL.key("acme", id=1)
    missing = Source(MissingRow(PLAIN_LABEL.name, "acme", 1))
    for _ in range(2):
        with pytest.raises(MissingRow):
            await cache.get_or_load(plain, missing)
    assert missing.calls == 2  # no negative_ttl: every read asks the database
    assert await cache.store.command("EXISTS", cache.lease_key(plain)) == 0


async def test_an_absence_loaded_before_an_insert_is_not_cached_after_it(cache: Cache) -> None:
    key = PERSON.key("acme", id=7)
    missing = Source(MissingRow(PERSON.name, "acme", 7))
    missing.hold()
    reader = asyncio.create_task(cache.hash(key).get_or_load(missing))
    await missing.loaded.wait()
    await cache.delete(key)  # the INSERT's rule
    missing.release.set()
    with pytest.raises(MissingRow):
        await reader
    assert await cache.hash(key).get_or_load(Source(ann())) == ann()


async def test_an_empty_member_set_is_cached_and_writers_replace_the_marker(
    cache: Cache,
) -> None:
    key = HISTORY.key("acme", id=8)
    empty = Source({})
    for _ in range(3):
        assert await cache.zset(key).get_or_load(empty) == []
    assert empty.calls == 1
    assert await cache.store.command("GET", cache.redis_key(key)) == EMPTY
    assert await cache.zset(key).remove(1) == 0
    assert await cache.zset(key).add({5: 5.0}) == 1  # a writer holding the truth
    assert await cache.zset(key).get_or_load(Source({})) == [(5, 5.0)]
    geo_key = SITES.key("acme", day=8)
    assert await cache.geo(geo_key).within(0, 0, 1000, loader=Source({})) == []
    assert await cache.geo(geo_key).within(0, 0, 1000) == []
    assert await cache.geo(geo_key).position(1) is None


async def test_hash_writers_replace_or_drop_an_absence(cache: Cache) -> None:
    key = PERSON.key("acme", id=10)
    with pytest.raises(MissingRow):
        await cache.hash(key).get_or_load(Source(MissingRow(PERSON.name, "acme", 10)))
    assert await cache.hash(key).update({"name": "Zed"}) is None  # a half entity: no
    assert await cache.store.command("EXISTS", cache.redis_key(key)) == 0  # marker gone
    with pytest.raises(MissingRow):
        await cache.hash(key).get_or_load(Source(MissingRow(PERSON.name, "acme", 10)))
    assert await cache.hash(key).replace(ann()) == 1
    assert await cache.hash(key).get() == ann()


def test_negative_ttl_and_mirrors_are_validated() -> None:
    with pytest.raises(InvalidSchemaError, match="negative_ttl"):
        KeySchema("rt.bad", int, ttl=10, negative_ttl=20)
    with pytest.raises(InvalidSchemaError, match="negative_ttl"):
        KeySchema("rt.bad", int, ttl=10, negative_ttl=0)
    with pytest.raises(InvalidSchemaError, match="mirrors"):
        KeySchema("rt.bad", int, mirrors="no_schema_part")


# --------------------------------------------------------------------------- big, hot, down


async def test_large_sets_fill_in_one_atomic_write(cache: Cache) -> None:
    """More members than Lua can unpack at once (8000 stack slots)."""
    members = {i: float(i) for i in range(12_000)}
    key = HISTORY.key("acme", id=11)
    assert len(await cache.zset(key).get_or_load(Source(members))) == 12_000
    assert await cache.zset(key).card() == 12_000
    points = {i: (i % 360 - 180 + 0.5, (i % 170) - 84.5) for i in range(5_000)}
    got = await cache.geo(SITES.key("acme", day=11)).get_or_load(Source(points))
    assert len(got) == 5_000
    assert await cache.zset(key).add({i: 1.0 for i in range(9_000)}, replace=True) == 9_000


async def test_early_recompute_reloads_a_structure_before_it_expires(cache: Cache) -> None:
    key = HOT_SET.key("acme", id=1)
    async def slow() -> dict[int, float]:  # XFetch's delta: this process's load time
        await asyncio.sleep(0.05)
        return {1: 1.0}

    assert await cache.zset(key).get_or_load(slow) == [(1, 1.0)]
    fresh = Source({1: 2.0})
    for _ in range(200):  # within the 1 s TTL, beta=10: a recompute soon fires
        got = await cache.zset(key).get_or_load(fresh)
        if fresh.calls:
            break
        await asyncio.sleep(0.005)
    assert fresh.calls == 1
    assert got == [(1, 2.0)]
    assert cache.metrics.for_schema(HOT_SET.name).early_recomputes >= 1


async def test_redis_down_serves_structures_from_the_loader(
    thorbis_redis_server: RedisServer, thorbis_standalone_redis_url: str
) -> None:
    url = thorbis_standalone_redis_url
    async with Cache.from_url(url, registry(), keyring=RING,
                              settings=CacheSettings(lease_wait=0.2)) as cache:
        thorbis_redis_server.kill()
        try:
            source = Source({1: 1.0})
            assert await cache.zset(HISTORY.key("acme", id=12)).top(1, loader=source) == [
                (1, 1.0)]
            assert await cache.hash(PERSON.key("acme", id=12)).get_or_load(
                Source(ann())) == ann()
            assert cache.metrics.for_schema(HISTORY.name).degraded_loads == 1
        finally:
            thorbis_redis_server.restart()
    strict = CacheSettings(serve_from_loader_when_unavailable=False)
    async with Cache.from_url(url, registry(), keyring=RING, settings=strict) as cache:
        thorbis_redis_server.kill()
        try:
            with pytest.raises(RedisUnavailableError):
                await cache.zset(HISTORY.key("acme", id=12)).get_or_load(Source({}))
        finally:
            thorbis_redis_server.restart()


# --------------------------------------------------------------------------- exactness


@pytest.fixture
def sync_redis(thorbis_standalone_redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(thorbis_standalone_redis_url)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lon=st.floats(-180, 180, allow_nan=False),
    lat=st.floats(-85.05112878, 85.05112878, allow_nan=False),
)
def test_geohash_positions_match_geopos(sync_redis: redis.Redis, lon: float, lat: float) -> None:
    sync_redis.delete("rt:geo")
    sync_redis.geoadd("rt:geo", (lon, lat, "m"))
    score = sync_redis.zscore("rt:geo", "m")
    assert score is not None
    (expected,) = sync_redis.geopos("rt:geo", "m")
    got = geohash_position(int(score))
    assert math.isclose(got[0], expected[0], abs_tol=1e-9)
    assert math.isclose(got[1], expected[1], abs_tol=1e-9)
    far = (lon + 0.5 if lon < 179 else lon - 0.5, lat)
    sync_redis.geoadd("rt:geo", (*far, "n"))
    dist = sync_redis.geodist("rt:geo", "m", "n", unit="m")
    assert dist is not None
    assert math.isclose(geo_distance(*got, *geohash_position(int(sync_redis.zscore(
        "rt:geo", "n") or 0))), dist, rel_tol=1e-4, abs_tol=1e-3)


_SCORES = st.dictionaries(st.integers(0, 50), st.sampled_from([0.0, 1.0, 1.5, -2.0, 7.0]),
                          max_size=20)
_BOUND = st.one_of(st.sampled_from(["-inf", "+inf"]), st.sampled_from([-2, 0, 1, 1.5, 7]),
                   st.sampled_from(["(0", "(1.5", "(7", "(-2"]))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(members=_SCORES, low=_BOUND, high=_BOUND, desc=st.booleans(),
       offset=st.integers(0, 5), count=st.one_of(st.none(), st.integers(-1, 6)))
def test_loaded_score_ranges_match_zrange(
    sync_redis: redis.Redis, members: Mapping[int, float], low: Any, high: Any, desc: bool,
    offset: int, count: int | None,
) -> None:
    sync_redis.delete("rt:z")
    if members:
        sync_redis.zadd("rt:z", {str(m): s for m, s in members.items()})
    args: list[Any] = [high, low, "BYSCORE", "REV"] if desc else [low, high, "BYSCORE"]
    if count is not None:
        args += ["LIMIT", offset, count]
    raw = sync_redis.execute_command("ZRANGE", "rt:z", *args, "WITHSCORES")
    expected = [(int(m), float(s)) for m, s in _pairs(raw)]
    got = score_range(members, str, low, high, desc, offset if count is not None else 0, count)
    assert got == expected


async def test_foreign_data_under_our_keys_is_a_miss_then_replaced(cache: Cache) -> None:
    """Another client's list, hash or string under one of our keys: every read is a
    miss (never a driver error), and a read-through replaces it with the loaded entry."""
    label, person = LABEL.key("acme", id=30), PERSON.key("acme", id=30)
    history, sites = HISTORY.key("acme", id=30), SITES.key("acme", day=30)
    await cache.store.command("RPUSH", cache.redis_key(label), "a", "b")
    await cache.store.command("RPUSH", cache.redis_key(person), "a")
    await cache.store.command("HSET", cache.redis_key(history), "f", "v")
    await cache.store.command("SET", cache.redis_key(sites), "not ours")
    assert await cache.get(label) is None
    assert await cache.get_many([label]) == [None]
    assert await cache.hash(person).get() is None
    assert await cache.zset(history).range_by_score() == []
    assert await cache.geo(sites).within(0, 0, 1000) == []
    assert await cache.get_or_load(label, Source("loaded")) == "loaded"
    assert await cache.get(label) == "loaded"
    assert await cache.hash(person).get_or_load(Source(ann())) == ann()
    assert await cache.hash(person).get() == ann()
    assert await cache.zset(history).get_or_load(Source({1: 1.0})) == [(1, 1.0)]
    assert await cache.zset(history).card() == 1
    assert await cache.geo(sites).get_or_load(Source({1: (1.0, 1.0)})) != {}
    assert await cache.geo(sites).position(1) is not None


async def test_members_that_do_not_decode_are_a_miss_then_replaced(cache: Cache) -> None:
    """A sorted set or geo index holding members that are not of the schema's member
    type (another release's member type, or another client's ZADD) is unreadable, as
    a value of another type is: every read is a counted miss that drops it, never a
    ValueError, and a read-through loads it whole again."""
    history, sites = HISTORY.key("acme", id=31), SITES.key("acme", day=31)
    zset, geo = cache.zset(history), cache.geo(sites)
    for foreign in (["ZADD", cache.redis_key(history), 1, "not-an-int"],
                    ["ZADD", cache.redis_key(history), 1, "007"],  # not canonical
                    ["ZADD", cache.redis_key(history), 1, b"\xff\xfe"]):
        await cache.store.command(*foreign)
        assert await zset.range_by_score() == []  # without a loader: as not cached
        assert await cache.store.command("EXISTS", cache.redis_key(history)) == 0
        await cache.store.command(*foreign)
        assert await zset.top(5, loader=Source({5: 5.0})) == [(5, 5.0)]
        assert await zset.get_or_load(Source({6: 6.0})) == [(5, 5.0)]  # cached now
        await cache.delete(history)
    await cache.store.command("GEOADD", cache.redis_key(sites), 2.35, 48.85, "x")
    assert await geo.within(2.35, 48.85, 1000) == []
    await cache.store.command("GEOADD", cache.redis_key(sites), 2.35, 48.85, "x")
    assert [m for m, _ in await geo.within(2.35, 48.85, 1000,
                                           loader=Source({7: (2.35, 48.85)}))] == [7]
    await cache.store.command("GEOADD", cache.redis_key(sites), 2.35, 48.85, "y")
    assert set(await geo.get_or_load(Source({8: (2.35, 48.85)}))) == {8}
    assert cache.metrics.for_schema(HISTORY.name).corrupt == {"member": 6}
    assert cache.metrics.for_schema(SITES.name).corrupt == {"member": 3}


@pytest.mark.parametrize(("read", "parameter"), [
    (lambda c: c.zset(HISTORY.key("acme", id=40)).top("20"), "n"),
    (lambda c: c.zset(HISTORY.key("acme", id=40)).top(-1), "n"),
    (lambda c: c.zset(HISTORY.key("acme", id=40)).range_by_score("low"), "low"),
    (lambda c: c.zset(HISTORY.key("acme", id=40)).range_by_score(0, math.nan), "high"),
    (lambda c: c.zset(HISTORY.key("acme", id=40)).range_by_score(count=2.5), "count"),
    (lambda c: c.zset(HISTORY.key("acme", id=40)).range_by_score(offset=-1, count=2),
     "offset"),
    (lambda c: c.geo(SITES.key("acme", day=40)).within(None, 48.8, 1000), "longitude"),
    (lambda c: c.geo(SITES.key("acme", day=40)).within(2.3, 91, 1000), "latitude"),
    (lambda c: c.geo(SITES.key("acme", day=40)).within(2.3, 48.8, math.nan), "radius_m"),
    (lambda c: c.geo(SITES.key("acme", day=40)).within(2.3, 48.8, 1000, count=0), "count"),
])
async def test_a_read_s_bad_arguments_name_the_schema_and_the_parameter(
    cache: Cache, read: Any, parameter: str
) -> None:
    """Found as a host would, through the plugins' patterns: these reached Redis and
    came back as backend errors (which a host takes for Redis failing, and falls back),
    or as a bare TypeError naming nothing."""
    with pytest.raises(InvalidParameterError) as refused:
        await read(cache)
    assert refused.value.parameter == parameter
    assert refused.value.schema in (HISTORY.name, SITES.name)
