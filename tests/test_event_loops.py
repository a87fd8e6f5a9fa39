"""The store and the cache on uvloop, the event loop uvicorn (and so most ASGI hosts)
runs when it is installed, on every topology.

uvloop's transports do not subclass ``asyncio.Transport``. A check that they did once
failed every multiplexed connection as it opened: each hot command went back to
redis-py and the loop logged an error per connection, so the cache answered rightly
but without its transport. Here the answers must be right, carried by the multiplexed
connections, and the loop must have nothing to report. The wrong-reply property runs
on uvloop too (tests/test_wrong_reply.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import uvloop
from test_redis_url import _certificates

from thorbis_cache import Cache, KeyRing, KeySchema, NearCache, SchemaRegistry
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer
from thorbis_cache.testing.servers._ports import free_port

R = TypeVar("R")


@attrs.frozen
class Visit:
    visit_id: int
    technician: str


VISIT = KeySchema("loops.visit", Visit, params={"id": int}, ttl=300, sensitive=True,
                  tags=("loops.visits",))


def _registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(VISIT, owner="tests")
    return registry


def on_uvloop(main: Callable[[], Awaitable[R]]) -> tuple[R, list[dict[str, Any]]]:
    """Run ``main`` on a uvloop loop; its result and whatever the loop reported."""
    reported: list[dict[str, Any]] = []

    async def watched() -> R:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__.startswith("uvloop")
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        return await main()

    return uvloop.run(watched()), reported


def _carried(store: RedisStore, key: str) -> bool:
    """Whether a multiplexed connection serving ``key`` is open and usable, and no hot
    command was handed to redis-py."""
    if store.handovers != {"redirect": 0, "connection": 0}:
        return False
    router = store._hot.router  # which path carried the calls
    assert router is not None
    node = router.for_key(key)
    return node is not None and node.ready() is not None


def test_hot_commands_ride_the_multiplexed_transport_on_uvloop(thorbis_redis_url: str) -> None:
    async def main() -> bool:
        store = RedisStore.from_url(thorbis_redis_url)
        try:
            keys = [f"tc:{{t{i % 3}}}:k{i}" for i in range(30)]
            for i, key in enumerate(keys):
                await store.set(key, f"v{i}".encode(), 60_000)
            assert await store.mget(keys) == [f"v{i}".encode() for i in range(30)]
            assert await store.get(keys[4]) == b"v4"
            assert await store.delete(keys[:10]) == 10
            assert await store.mget(keys[:12]) == [None] * 10 + [b"v10", b"v11"]
            return all(_carried(store, key) for key in keys)
        finally:
            await store.aclose()

    carried, reported = on_uvloop(main)
    assert reported == []
    assert carried


def test_the_cache_reads_fills_and_invalidates_on_uvloop(thorbis_redis_url: str) -> None:
    async def main() -> None:
        async with Cache.from_url(thorbis_redis_url, _registry(), keyring=KeyRing.generate(),
                                  near=NearCache(100)) as cache:
            keys = [VISIT.key("acme", id=i) for i in range(20)]
            loads: list[int] = []

            async def load(i: int) -> Visit:
                loads.append(i)
                return Visit(i, f"tech-{i}")

            # Concurrent misses of one key: one load, one value for every caller.
            got = await asyncio.gather(*(cache.get_or_load(keys[0], lambda: load(0))
                                         for _ in range(16)))
            assert got == [Visit(0, "tech-0")] * 16
            assert loads == [0]
            for i, key in enumerate(keys[1:], start=1):
                await cache.set(key, Visit(i, f"tech-{i}"))
            assert await cache.get_many(keys) == [Visit(i, f"tech-{i}") for i in range(20)]
            assert await cache.get(keys[3]) == Visit(3, "tech-3")
            assert await cache.invalidate_tags("acme", ["loops.visits"]) == 20
            assert await cache.get_many(keys) == [None] * 20
            assert _carried(cache.store, cache.redis_key(keys[0]))

    _, reported = on_uvloop(main)
    assert reported == []


def test_tls_with_a_password_opens_multiplexed_connections_on_uvloop(tmp_path: Path) -> None:
    """uvloop's TLS transport (its own, not asyncio's sslproto) and the ACL login after it
    (the default user stays open: the launcher's readiness probe does not log in)."""
    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
        "--user", "thorbis", "on", ">s3cret", "~*", "&*", "+@all"])
    server.start()

    async def main() -> bool:
        url = f"rediss://thorbis:s3cret@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
        async with RedisStore.from_url(url) as store:
            await store.set("tc:{t}:k", b"over tls", 60_000)
            assert await store.get("tc:{t}:k") == b"over tls"
            assert await store.mget(["tc:{t}:k", "tc:{t}:absent"]) == [b"over tls", None]
            return _carried(store, "tc:{t}:k")

    try:
        carried, reported = on_uvloop(main)
    finally:
        server.stop()
    assert reported == []
    assert carried
