"""Long multi-key calls are cut into bounded commands, on every topology.

A ``get_many`` or ``delete`` of tens of thousands of keys was one MGET or DEL: Redis ran it
to the end while every other client waited, and built the whole reply (tens of MB) in
one buffer. Now each command carries at most ``RedisStore.keys_per_command`` keys (512 by
default); the commands are written at once, so a long call still costs about one round
trip, and the server serves other clients between them. Deletes are UNLINK, in the Lua
scripts too (tag invalidation, cascades, fills that replace a structure): a big hash,
sorted set or geo index is freed by a background thread instead of blocking the server.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thorbis_cache import Cache, KeySchema, SchemaKind, SchemaRegistry
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.loop_thread import LoopThread


async def _calls(store: RedisStore, command: str) -> int:
    """How many times ``command`` ran, summed over every master (``INFO commandstats``)."""
    client: Any = store._client  # the servers' own counters
    if store.is_cluster:
        replies = await client.info("commandstats", target_nodes=client.PRIMARIES)
        infos = list(replies.values()) if isinstance(replies, dict) and all(
            isinstance(v, dict) for v in replies.values()) else [replies]
    else:
        infos = [await client.info("commandstats")]
    total = 0
    for info in infos:
        stats = info.get(f"cmdstat_{command.lower()}")
        if isinstance(stats, dict):
            total += int(stats["calls"])
    return total


async def test_a_long_get_many_and_delete_are_bounded_commands(thorbis_redis_url: str) -> None:
    async with RedisStore.from_url(thorbis_redis_url) as store:
        store.keys_per_command = 100
        keys = [f"tc:{{t{i % 2}}}:long:{i}" for i in range(1_050)]
        for i, key in enumerate(keys[::3]):
            await store.set(key, f"v{i}".encode(), 60_000)
        expected = [f"v{i // 3}".encode() if i % 3 == 0 else None for i in range(len(keys))]

        # One server: 1,050 keys in 11 commands. A Cluster: 525 keys per tenant's slot,
        # 6 commands each.
        commands = 12 if store.is_cluster else 11
        before = await _calls(store, "MGET")
        assert await store.mget(keys) == expected
        assert await _calls(store, "MGET") - before == commands

        before = await _calls(store, "UNLINK")
        assert await store.delete(keys) == 350
        assert await _calls(store, "UNLINK") - before == commands
        assert await store.mget(keys[:5]) == [None] * 5


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 59), max_size=80), per=st.integers(1, 9))
def test_mget_answers_in_the_order_asked_across_command_boundaries(
        thorbis_standalone_redis_url: str, picks: list[int], per: int) -> None:
    """Any keys, repeated or absent, of two tenants, cut at any size: the values come back
    in the order of the keys, each its own."""
    with LoopThread() as loop:
        async def main() -> None:
            async with RedisStore.from_url(thorbis_standalone_redis_url) as store:
                names = [f"tc:{{p{i % 2}}}:order:{i}" for i in range(60)]
                for i in range(0, 60, 2):  # odd keys stay absent
                    await store.set(names[i], names[i].encode(), 60_000)
                store.keys_per_command = per
                asked = [names[i] for i in picks]
                got = await store.mget(asked)
                assert got == [n.encode() if int(n.rsplit(":", 1)[1]) % 2 == 0 else None
                               for n in asked]

        loop.run(main())


HISTORY = KeySchema("long.history", int, params={"customer_id": int}, kind=SchemaKind.ZSET,
                    ttl=600, tags=("long.histories",))


async def test_a_big_structure_is_unlinked_by_every_invalidation(
        thorbis_standalone_redis_url: str) -> None:
    """The scripts free a cached structure with UNLINK too: a sorted set of 20,000 members
    invalidated by its tag or by a cascade is freed off the server's main thread."""
    registry = SchemaRegistry()
    registry.register(HISTORY, owner="tests")
    async with Cache.from_url(thorbis_standalone_redis_url, registry) as cache:
        key = HISTORY.key("acme", customer_id=1)

        async def load() -> dict[int, float]:
            return {i: float(i) for i in range(20_000)}

        async def unlinks() -> int:
            return await _calls(cache.store, "UNLINK")

        for invalidate in (
            lambda: cache.invalidate_tags("acme", ["long.histories"]),
            lambda: cache.invalidate(key, cascade=True),
        ):
            top = await cache.zset(key).top(3, loader=load)
            assert [member for member, _ in top] == [19_999, 19_998, 19_997]
            before = await unlinks()
            await invalidate()
            assert await unlinks() > before
            assert await cache.store.command("EXISTS", cache.redis_key(key)) == 0
