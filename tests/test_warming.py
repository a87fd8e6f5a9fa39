"""Warm batches under fill leases, against real Redis (single server and Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import pytest

from thorbis_cache import (
    Cache,
    CacheSettings,
    KeyRing,
    KeySchema,
    SchemaRegistry,
    WarmBatch,
    WarmOutcome,
    warm,
)
from thorbis_cache.cache.codec import CodecSettings
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.errors import InvalidParameterError, MissingRow, ValueTypeError
from thorbis_cache.warming import batch_of


@attrs.frozen
class Row:
    id: int
    name: str


ROW = KeySchema("wm.row", Row, params={"id": int}, ttl=300, sensitive=True, negative_ttl=20)
ROW_HASH = KeySchema("wm.row_hash", Row, params={"id": int}, ttl=300, kind=SchemaKind.HASH)
LIST = KeySchema("wm.list", int, params={"id": int}, ttl=300, kind=SchemaKind.ZSET,
                 negative_ttl=20)
SITES = KeySchema("wm.sites", int, params={"id": int}, ttl=300, kind=SchemaKind.GEO)


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    registry = SchemaRegistry()
    for schema in (ROW, ROW_HASH, LIST, SITES):
        registry.register(schema, owner="tests")
    async with Cache.from_url(thorbis_redis_url, registry, keyring=KeyRing.generate()) as c:
        yield c


def entry(key: CacheKey[Any]) -> Any:
    n = key.values[0]
    kind = key.schema.kind
    if kind is SchemaKind.ZSET:
        return {n: float(n), n + 1: 0.5}
    if kind is SchemaKind.GEO:
        return {n: (2.0, 48.0)}
    return Row(n, f"row {n}")


async def test_a_batch_fills_every_kind_with_one_load(cache: Cache) -> None:
    keys = [s.key("acme", id=i) for s in (ROW, ROW_HASH, LIST, SITES) for i in (1, 2)]
    calls: list[list[CacheKey[Any]]] = []

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        calls.append(list(leased))
        return {k: entry(k) for k in leased}

    outcome = await warm(cache, WarmBatch(keys, load, "all kinds"))
    assert outcome == WarmOutcome(filled=8)
    assert len(calls) == 1
    assert await cache.get(ROW.key("acme", id=1)) == Row(1, "row 1")
    assert await cache.hash(ROW_HASH.key("acme", id=2)).get() == Row(2, "row 2")
    assert await cache.zset(LIST.key("acme", id=1)).range_by_score() == [(2, 0.5), (1, 1.0)]
    assert await cache.geo(SITES.key("acme", id=2)).position(2) is not None
    # Warming again finds everything cached: no load, nothing written.
    assert await warm(cache, WarmBatch(keys, load)) == WarmOutcome(cached=8)
    assert len(calls) == 1


async def test_an_entry_invalidated_while_loading_is_not_written(cache: Cache) -> None:
    keys = [ROW_HASH.key("acme", id=i) for i in range(1, 6)]

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        rows = {k: entry(k) for k in leased}  # read before the change...
        await cache.delete(keys[0], keys[3])  # ...which commits and is invalidated
        return rows

    outcome = await warm(cache, WarmBatch(keys, load))
    assert (outcome.filled, outcome.rejected) == (3, 2)
    assert await cache.hash(keys[0]).get() is None
    assert await cache.hash(keys[1]).get() == Row(2, "row 2")


async def test_keys_being_filled_elsewhere_are_left_to_their_filler(cache: Cache) -> None:
    key = ROW.key("acme", id=7)
    held = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> Row:
        held.set()
        await release.wait()
        return Row(7, "from the reader")

    reader = asyncio.create_task(cache.get_or_load(key, slow))
    await held.wait()

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        raise AssertionError("nothing to load: the only key is being filled")

    assert await warm(cache, WarmBatch([key], load)) == WarmOutcome(busy=1)
    release.set()
    assert await reader == Row(7, "from the reader")
    assert await cache.get(key) == Row(7, "from the reader")


async def test_keys_the_loader_did_not_return_are_absent_rows(cache: Cache) -> None:
    keys = [ROW.key("acme", id=1), ROW.key("acme", id=2), LIST.key("acme", id=3),
            ROW_HASH.key("acme", id=4)]

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        return {keys[0]: entry(keys[0])}

    assert await warm(cache, WarmBatch(keys, load)) == WarmOutcome(filled=1, absent=3)
    with pytest.raises(MissingRow):  # negative_ttl: cached absence, no loader call
        await cache.get_or_load(keys[1], _never)
    with pytest.raises(MissingRow):
        await cache.zset(keys[2]).get_or_load(_never)
    # No negative_ttl: the lease is released and nothing is cached.
    assert await cache.store.command("EXISTS", cache.redis_key(keys[3]),
                                     cache.lease_key(keys[3])) == 0


async def _never() -> Any:
    raise AssertionError("the loader was called: the absence was not cached")


@pytest.mark.parametrize("defect", ["foreign key", "wrong type", "raises"])
async def test_a_bad_batch_writes_nothing_and_releases_its_leases(
    cache: Cache, defect: str
) -> None:
    keys = [ROW.key("acme", id=1), ROW_HASH.key("acme", id=2)]

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        out: dict[CacheKey[Any], Any] = {k: entry(k) for k in leased}
        if defect == "foreign key":
            out[ROW.key("acme", id=99)] = Row(99, "not asked")
        elif defect == "wrong type":
            out[keys[1]] = {"id": 2}
        else:
            raise ConnectionError("database went away")
        return out

    expected = {"foreign key": InvalidParameterError, "wrong type": ValueTypeError,
                "raises": ConnectionError}[defect]
    with pytest.raises(expected, match=r"wm\.row|wm\.row_hash|database"):
        await warm(cache, WarmBatch(keys, load, "bad batch"))
    for key in keys:
        assert await cache.store.command("EXISTS", cache.redis_key(key),
                                         cache.lease_key(key)) == 0


async def test_an_empty_batch_does_nothing(cache: Cache) -> None:
    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        raise AssertionError("not called")

    assert await warm(cache, WarmBatch([], load)) == WarmOutcome()
    assert WarmOutcome(1, 2, 3, 4, 5) + WarmOutcome(1, 1, 1, 1, 1) == WarmOutcome(2, 3, 4, 5, 6)


async def test_batch_of_keys_a_one_parameter_schema_by_its_values(cache: Cache) -> None:
    asked: list[list[int]] = []

    async def rows(ids: list[int]) -> list[Row]:
        asked.append(ids)
        return [Row(i, f"row {i}") for i in ids if i != 3]  # 3 was deleted meanwhile

    await cache.hash(ROW_HASH.key("acme", id=2)).replace(Row(2, "cached"))
    outcome = await warm(cache, batch_of(ROW_HASH, "acme", [1, 2, 3, 1], rows,
                                         key_of=lambda r: r.id, description="rows"))
    assert outcome == WarmOutcome(filled=1, cached=1, absent=1)
    assert asked == [[1, 3]]  # the leased values only, each once

    async def lists(ids: list[int]) -> dict[int, dict[int, float]]:
        return {i: {i: 1.0} for i in ids}

    assert (await warm(cache, batch_of(LIST, "acme", [5, 6], lists))).filled == 2
    assert await cache.zset(LIST.key("acme", id=6)).range_by_score() == [(6, 1.0)]


async def test_batch_of_refuses_what_it_cannot_key(cache: Cache) -> None:
    async def strays(ids: list[int]) -> dict[int, Row]:
        return {99: Row(99, "not asked")}

    async def records(ids: list[int]) -> list[Row]:
        return [Row(i, "x") for i in ids]

    with pytest.raises(InvalidParameterError, match="loaded 99, not one of the values"):
        await warm(cache, batch_of(ROW, "acme", [1], strays, description="strays"))
    with pytest.raises(InvalidParameterError, match="pass key_of"):
        await warm(cache, batch_of(ROW, "acme", [2], records, description="records"))
    two = KeySchema("wm.two", int, params={"a": int, "b": int})
    with pytest.raises(InvalidParameterError, match="one parameter"):
        batch_of(two, "acme", [1], records)
    for key in (ROW.key("acme", id=1), ROW.key("acme", id=2)):  # leases released
        assert await cache.store.command("EXISTS", cache.lease_key(key)) == 0


async def test_an_entry_too_large_to_cache_is_left_out_alone(thorbis_redis_url: str) -> None:
    """Found in review: one entry over ``max_value_size`` failed the whole batch,
    nothing of it warmed. It is left out, counted and its lease released, as a
    read-through does; the others are written."""
    registry = SchemaRegistry()
    registry.register(ROW, owner="tests")
    settings = CacheSettings(codec=CodecSettings(max_value_size=4096))
    async with Cache.from_url(thorbis_redis_url, registry, keyring=KeyRing.generate(),
                              settings=settings) as cache:
        keys = [ROW.key("acme", id=i) for i in (1, 2)]

        async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
            return {k: Row(k.values[0], "x" * (10_000 if k.values[0] == 2 else 10))
                    for k in leased}

        assert await warm(cache, WarmBatch(keys, load)) == WarmOutcome(filled=1, oversized=1)
        assert await cache.get(keys[0]) == Row(1, "x" * 10)
        assert await cache.get(keys[1]) is None
        assert await cache.store.get(cache.lease_key(keys[1])) is None
        assert cache.metrics.value("oversized_loads", schema=ROW.name) == 1
