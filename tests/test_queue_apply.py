"""Queued invalidation applied through a real cache (both topologies)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import InvalidKeyError
from thorbis_cache.invalidation.apply import CacheInvalidator
from thorbis_cache.invalidation.queue import InvalidationJob, InvalidationQueue

NOTE = KeySchema("qa.note", str, params={"id": int}, ttl=300, tags=("qa.notes",))
OTHER = KeySchema("qa.other", str, params={"id": int}, ttl=300)


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    registry = SchemaRegistry()
    registry.register(NOTE)
    registry.register(OTHER)
    async with Cache.from_url(thorbis_redis_url, registry) as c:
        yield c


async def test_a_queued_job_deletes_its_keys_and_tags(cache: Cache) -> None:
    tagged = [NOTE.key("acme", id=i) for i in range(5)]
    plain = OTHER.key("acme", id=1)
    untouched = NOTE.key("globex", id=1)
    for key in [*tagged, untouched]:
        await cache.set(key, "v")
    await cache.set(plain, "v")
    queue = InvalidationQueue(cache.store, cache.settings.prefix)
    await queue.enqueue(InvalidationJob("acme", keys=[cache.redis_key(plain)], tags=["qa.notes"]))
    assert await queue.run_once(CacheInvalidator(cache)) == 1
    assert await cache.get_many([*tagged, plain]) == [None] * 6
    assert await cache.get(untouched) == "v"  # another tenant's entry of the same tag


async def test_a_key_of_no_registered_schema_is_refused_by_name(cache: Cache) -> None:
    job = InvalidationJob("acme", keys=[f"{cache.settings.prefix}:{{acme}}:qa.gone:1"])
    with pytest.raises(InvalidKeyError, match=r"qa\.gone"):
        await CacheInvalidator(cache).apply(job)
