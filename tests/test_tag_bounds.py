"""Tag sets stay bounded: a tag written constantly keeps few dead members (expired
entries, fills refused or failed), pruned by bounded work on every write that records a
member -- on a single Redis and on a Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.keys import SchemaKind

ENTRY = KeySchema("tb.entry", str, params={"id": int}, ttl=3600, tags=("tb.hot",))
BOARD = KeySchema("tb.board", int, params={"id": int}, ttl=3600, kind=SchemaKind.ZSET,
                  tags=("tb.hot",))
WRITES = 2000
LIVE = 10


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    registry = SchemaRegistry()
    registry.register(ENTRY, owner="tests")
    registry.register(BOARD, owner="tests")
    async with Cache.from_url(thorbis_redis_url, registry) as c:
        yield c


async def _card(cache: Cache) -> int:
    return int(await cache.store.command("SCARD", cache.tag_key("acme", "tb.hot")))


async def test_a_tag_written_constantly_stays_bounded(cache: Cache) -> None:
    """2,000 writes under one tag, each entry gone (as if expired) ten writes later:
    without pruning the tag set would hold 2,000 members; it holds a few times the ten
    live ones, and still invalidates every live one."""
    peak = 0
    for i in range(WRITES):
        await cache.set(ENTRY.key("acme", id=i), f"v{i}")
        if i >= LIVE:  # the entry written LIVE writes ago expires: its key goes, not its tag
            await cache.store.delete([cache.redis_key(ENTRY.key("acme", id=i - LIVE))])
        peak = max(peak, await _card(cache))
    print(f"\npeak tag set: {peak} members for {LIVE} live entries over {WRITES} writes")
    assert peak <= 6 * LIVE
    live = [ENTRY.key("acme", id=i) for i in range(WRITES - LIVE, WRITES)]
    assert await cache.invalidate_tags("acme", ["tb.hot"]) == LIVE
    assert await cache.get_many(live) == [None] * LIVE


async def test_failed_and_refused_fills_leave_no_member_behind(cache: Cache) -> None:
    async def fails() -> str:
        raise ConnectionError("database down")

    for i in range(300):
        with pytest.raises(ConnectionError):
            await cache.get_or_load(ENTRY.key("acme", id=i), fails)
        await cache.zset(BOARD.key("acme", id=i)).get_or_load(_board)
        await cache.delete(BOARD.key("acme", id=i))  # a board dropped by its key
    assert await _card(cache) <= 6 * 3


async def test_a_member_being_filled_is_never_pruned(cache: Cache) -> None:
    """A lease's member must stay in its tag set: a tag invalidation during the load has
    to find it and revoke the fill."""
    key = ENTRY.key("acme", id=1)
    await cache.store.run(cache._scripts.lease_acquire,
                          [cache.redis_key(key), cache.lease_key(key), *cache.tag_keys(key)],
                          ["token", 60_000, "miss"])
    for i in range(2, 400):  # many writes sample the set; the leased member has no key
        await cache.set(ENTRY.key("acme", id=i), "v")
        await cache.store.delete([cache.redis_key(ENTRY.key("acme", id=i))])
    members = await cache.store.command("SMEMBERS", cache.tag_key("acme", "tb.hot"))
    assert cache.redis_key(key).encode() in members


async def _board() -> dict[int, float]:
    return {1: 1.0}
