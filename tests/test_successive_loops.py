"""One cache, used from one event loop after another, on every topology.

A host does not always keep one event loop for its whole life: a command-line tool calls
``asyncio.run`` once per command, Django's ``async_to_sync`` runs each call on a loop of
its own, and pytest-asyncio gives each test a fresh loop. Found when the project was
tried as a user would: a ``Cache`` built once and used from a second ``asyncio.run``
failed every call from then on ("got Future attached to a different loop", then "Event
loop is closed"), because its multiplexed connections stayed bound to the first, closed
loop; redis-py alone failed one call per new loop. Here every call on every loop
succeeds, the multiplexed connections carry them, and nothing is reported by the loops.

A loop that is still running (in another thread) keeps the cache: a call from a second
loop meanwhile gets :class:`EventLoopInUseError`, which says what to do, and the first
loop goes on undisturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import attrs
import pytest
import uvloop

from thorbis_cache import (
    Cache,
    CacheSettings,
    KeyRing,
    KeySchema,
    NearCache,
    SchemaKind,
    SchemaRegistry,
)
from thorbis_cache.cache.fill import SingleFlight
from thorbis_cache.errors import EventLoopInUseError, RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.loop_thread import LoopThread
from thorbis_cache.testing.servers import RedisServer
from thorbis_cache.testing.servers._ports import free_port

R = TypeVar("R")


@attrs.frozen
class Shift:
    shift_id: int
    technician: str


SHIFT = KeySchema("loops.shift", Shift, params={"id": int}, ttl=300, sensitive=True, near_ttl=30,
                  tags=("loops.shifts",))
SHIFT_HASH = KeySchema("loops.shift_hash", Shift, params={"id": int}, ttl=300,
                       kind=SchemaKind.HASH)


def _registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(SHIFT, owner="tests")
    registry.register(SHIFT_HASH, owner="tests")
    return registry


def _run(runner: Callable[[Awaitable[R]], R], main: Callable[[], Awaitable[R]]
         ) -> tuple[R, list[dict[str, Any]]]:
    """Run ``main`` on a fresh loop by ``runner``; its result and what the loop reported."""
    reported: list[dict[str, Any]] = []

    async def watched() -> R:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: reported.append(context))
        return await main()

    return runner(watched()), reported


RUNNERS: list[Callable[[Awaitable[Any]], Any]] = [asyncio.run, uvloop.run, asyncio.run,
                                                   asyncio.run]


@contextlib.contextmanager
def _unclosed() -> Iterator[list[str]]:
    """The sockets and transports collected unclosed meanwhile (a ResourceWarning each)."""
    found: list[str] = []
    gc.collect()  # what earlier tests left unclosed is theirs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield found
        gc.collect()
    found.extend(str(w.message) for w in caught if issubclass(w.category, ResourceWarning))


def _carried(store: RedisStore) -> bool:
    return store.handovers == {"redirect": 0, "connection": 0}


def test_a_store_serves_one_loop_after_another(thorbis_redis_url: str) -> None:
    store = RedisStore.from_url(thorbis_redis_url)
    keys = [f"tc:{{t{i % 3}}}:k{i}" for i in range(12)]

    with _unclosed() as unclosed:
        for round_, runner in enumerate(RUNNERS):
            async def main(round_: int = round_) -> list[bytes | None]:
                for i, key in enumerate(keys):
                    await store.set(key, f"r{round_}-{i}".encode(), 60_000)
                got = await store.mget(keys)
                assert await store.get(keys[5]) == f"r{round_}-5".encode()
                assert await store.delete(keys[:2]) == 2
                await store.command("PING")  # a redis-py connection too
                return got

            got, reported = _run(runner, main)
            assert got == [f"r{round_}-{i}".encode() for i in range(12)]
            assert reported == []
            assert _carried(store)

        async def close() -> None:
            await store.aclose()

        asyncio.run(close())
    assert unclosed == []


def test_a_cache_serves_one_loop_after_another(thorbis_redis_url: str) -> None:
    """Reads, fills, get_many, tag invalidation and the near cache, on four loops in turn
    (the last on uvloop's neighbour, asyncio): the same ``Cache`` object throughout."""
    cache = Cache.from_url(thorbis_redis_url, _registry(), keyring=KeyRing.generate(),
                           near=NearCache(100))
    keys = [SHIFT.key("acme", id=i) for i in range(10)]

    with _unclosed() as unclosed:
        for round_, runner in enumerate(RUNNERS):
            async def main(round_: int = round_) -> None:
                loads: list[int] = []

                async def load(i: int) -> Shift:
                    loads.append(i)
                    await asyncio.sleep(0.01)
                    return Shift(i, f"tech-{round_}-{i}")

                got = await asyncio.gather(*(cache.get_or_load(keys[0], lambda: load(0))
                                             for _ in range(8)))
                assert got == [Shift(0, f"tech-{round_}-0")] * 8
                assert loads == [0]
                for i, key in enumerate(keys[1:], start=1):
                    await cache.set(key, Shift(i, f"tech-{round_}-{i}"))
                expected = [Shift(i, f"tech-{round_}-{i}") for i in range(10)]
                assert await cache.get_many(keys) == expected
                assert await cache.get(keys[3]) == expected[3]
                assert await cache.get(keys[3]) == expected[3]  # a near-cache hit, if enabled
                assert await cache.invalidate_tags("acme", ["loops.shifts"]) == 10
                assert await cache.get_many(keys) == [None] * 10
                assert await cache.get(keys[3]) is None

            _, reported = _run(runner, main)
            assert reported == []
            assert _carried(cache.store)

        async def close() -> None:
            await cache.aclose()

        asyncio.run(close())
    assert unclosed == []


def test_a_loop_switch_releases_the_old_connections(thorbis_redis_server: RedisServer) -> None:
    """The first loop's connections are closed when the cache moves to the next loop, so
    a host that runs a loop per call does not pile them up on the server."""
    store = RedisStore.from_url(thorbis_redis_server.url)

    def clients() -> int:
        listing = thorbis_redis_server.command("CLIENT", "LIST")
        text = listing.decode() if isinstance(listing, bytes) else str(listing)
        return len([line for line in text.splitlines() if line.strip()])

    async def use() -> None:
        await store.set("tc:{t}:probe", b"x", 60_000)
        await asyncio.gather(*(store.get("tc:{t}:probe") for _ in range(20)))
        await store.command("PING")  # a redis-py connection too

    counts = []
    reported: list[dict[str, Any]] = []
    with _unclosed() as unclosed:
        for _ in range(6):
            asyncio.run(use())
            counts.append(clients())
    # Closed as each loop ended, on the server's side too.
    assert counts == [counts[0]] * 6, counts
    assert unclosed == []

    # A loop closed without shutting down its generators (a host's own loop handling):
    # what it left open is let go of by the first call on the next loop.
    # redis-py's sockets are closed as they are collected, ours are shut down at once.
    for _ in range(4):
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        loop.run_until_complete(use())
        loop.close()
        asyncio.run(use())
        with _unclosed():
            pass
        counts.append(clients())
    assert counts[6:] == [counts[0]] * 4, counts
    assert reported == []  # no task left pending on the closed loops

    async def close() -> None:
        await store.aclose()

    asyncio.run(close())


def test_a_loop_still_running_elsewhere_keeps_the_cache(thorbis_redis_url: str) -> None:
    cache = Cache.from_url(thorbis_redis_url, _registry(), keyring=KeyRing.generate(),
                           near=NearCache(100))
    near = cache.near
    assert near is not None
    key = SHIFT.key("acme", id=1)
    with LoopThread() as owner:
        assert owner.run(cache.near_ready(5.0))
        owner.run(cache.set(key, Shift(1, "ana")))
        assert owner.run(cache.get(key)) == Shift(1, "ana")
        assert cache.redis_key(key) in near  # an L1 entry of the owner's loop

        async def intruder() -> list[Shift | None]:
            return await cache.get_many([key, SHIFT.key("acme", id=2)])

        for attempt in (intruder, lambda: cache.get(SHIFT.key("acme", id=3))):
            with pytest.raises(EventLoopInUseError) as caught:
                asyncio.run(attempt())  # type: ignore[arg-type]
            message = str(caught.value)
            assert cache.store.address in message
            assert "one event loop" in message
        # A fill in flight on the owner's loop is not joined from another loop.
        gate = asyncio.Event()  # waited on and set on the owner's loop only
        hash_key = SHIFT_HASH.key("acme", id=5)

        async def slow() -> Shift:
            await gate.wait()
            return Shift(5, "owner's load")

        async def open_gate() -> None:
            gate.set()

        async def start_fill() -> asyncio.Task[Shift]:
            task = asyncio.get_running_loop().create_task(
                cache.hash(hash_key).get_or_load(slow))
            await asyncio.sleep(0.1)
            return task

        fill = owner.run(start_fill())
        with pytest.raises(EventLoopInUseError, match="one event loop"):
            asyncio.run(cache.hash(hash_key).get_or_load(slow))  # type: ignore[arg-type]
        owner.run(open_gate())
        assert owner.run(fill) == Shift(5, "owner's load")
        # The owner's loop was not disturbed: its L1 and its subscription are intact.
        assert near.ready
        assert cache.redis_key(key) in near
        assert owner.run(cache.get(key)) == Shift(1, "ana")
        assert owner.run(cache.get_many([key])) == [Shift(1, "ana")]
        assert _carried(cache.store)
        owner.run(cache.aclose())


def test_the_near_cache_listens_again_on_the_next_loop(thorbis_redis_url: str) -> None:
    """L1 is only filled while the invalidation events are heard. The subscriber of the
    first loop ends with it; on the next loop a new one must start, so that L1 serves
    again and an invalidation made by another process reaches it."""
    keyring = KeyRing.generate()
    here = Cache.from_url(thorbis_redis_url, _registry(), keyring=keyring,
                          near=NearCache(100))
    elsewhere = Cache.from_url(thorbis_redis_url, _registry(), keyring=keyring)
    key = SHIFT.key("acme", id=7)
    redis_key = here.redis_key(key)

    for round_, runner in enumerate(RUNNERS):
        async def main(round_: int = round_) -> None:
            assert await here.near_ready(5.0)
            await _set_elsewhere(Shift(7, f"before-{round_}"))
            assert await here.get(key) == Shift(7, f"before-{round_}")
            assert redis_key in here.near  # filled: L1 serves on this loop
            await _set_elsewhere(Shift(7, f"after-{round_}"))
            assert redis_key not in here.near  # the other process's event was heard
            assert await here.get(key) == Shift(7, f"after-{round_}")

        async def _set_elsewhere(value: Shift) -> None:
            heard = here.metrics.coherence.events_received
            await elsewhere.set(key, value)
            for _ in range(500):
                if here.metrics.coherence.events_received > heard:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the event of another process was not heard")

        _, reported = _run(runner, main)
        assert reported == []

    async def close() -> None:
        await here.aclose()
        await elsewhere.aclose()

    asyncio.run(close())


def test_deadlines_hold_after_every_task_was_cancelled(thorbis_redis_server: RedisServer
                                                       ) -> None:
    """A host's clean-up that cancels every task of a loop it keeps running must not
    stop the store's deadlines (the watchdog was once a task, and stayed cancelled)."""
    async def main() -> None:
        store = RedisStore.from_url(thorbis_redis_server.url, timeout=0.3)
        try:
            await store.set("tc:{t}:deadline", b"x", 60_000)
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    task.cancel()
            await asyncio.sleep(0.05)
            thorbis_redis_server.command("CLIENT", "PAUSE", 1500, "ALL")
            with pytest.raises(RedisUnavailableError, match=r"no reply within 0\.3s"):
                await store.get("tc:{t}:deadline")
        finally:
            await asyncio.sleep(1.5)  # the pause over
            await store.aclose()

    asyncio.run(main())


def test_degraded_loads_are_bounded_on_every_loop() -> None:
    """With Redis unreachable the loader answers, at most ``degraded_concurrency`` at
    once: on the first loop and on the next (the bound once belonged to the first)."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cache = Cache.from_url(url, _registry(), keyring=KeyRing.generate(),
                           settings=CacheSettings(degraded_concurrency=2))

    async def main() -> int:
        running = most = 0

        async def load(i: int) -> Shift:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            return Shift(i, "from the database")

        got = await asyncio.gather(*(
            cache.get_or_load(SHIFT.key("acme", id=i), lambda i=i: load(i))
            for i in range(8)))
        assert got == [Shift(i, "from the database") for i in range(8)]
        return most

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        assert [asyncio.run(main()) for _ in range(3)] == [2, 2, 2]


@pytest.mark.parametrize("kind", ["value", "hash"])
def test_a_fill_left_on_a_loop_closed_without_ceremony_is_not_joined(
        thorbis_standalone_redis_url: str, kind: str) -> None:
    """A loop closed with a fill still in flight (no task cancelled, no generator shut
    down) leaves that flight behind for good: the next loop's readers of the key must
    load afresh, not wait on it (it was joined once, and failed "attached to a different
    loop" for every later reader)."""
    cache = Cache.from_url(thorbis_standalone_redis_url, _registry(),
                           keyring=KeyRing.generate(),
                           settings=CacheSettings(lease_ttl=0.3, lease_wait=0.5))
    schema = SHIFT if kind == "value" else SHIFT_HASH
    key = schema.key("acme", id=11)

    def read(loader: Callable[[], Awaitable[Shift]]) -> Awaitable[Shift]:
        if kind == "value":
            return cache.get_or_load(key, loader)
        return cache.hash(key).get_or_load(loader)

    async def never() -> Shift:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def start_a_fill() -> list[asyncio.Task[Any]]:
        reader = asyncio.get_running_loop().create_task(read(never))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)  # the flight holds the lease and waits on its loader
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] + [reader]

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # the tasks left pending
    left = loop.run_until_complete(start_a_fill())
    loop.close()

    async def fresh() -> Shift:
        return Shift(11, "fresh")

    async def main() -> Shift:
        return await asyncio.wait_for(read(fresh), 10)

    assert asyncio.run(main()) == Shift(11, "fresh")
    assert asyncio.run(main()) == Shift(11, "fresh")

    async def close() -> None:
        await cache.aclose()

    asyncio.run(close())
    # Closed here rather than whenever the collector finds them (their clean-up code
    # cannot run without their loop: it fails at once, as it would then).
    for task in left:
        with contextlib.suppress(RuntimeError):
            task.get_coro().close()  # type: ignore[union-attr]


def test_single_flight_on_another_loop() -> None:
    """The flights themselves: one on a loop still running elsewhere is refused (and
    left alone); one on a loop that has stopped is forgotten, and a new one starts."""
    flights: SingleFlight[str] = SingleFlight()

    async def value(text: str) -> str:
        return text

    with LoopThread() as owner:
        gate = asyncio.Event()

        async def slow() -> str:
            await gate.wait()
            return "owner's"

        async def start() -> asyncio.Future[tuple[str, bool]]:
            flight = asyncio.ensure_future(flights.do("k", slow))
            await asyncio.sleep(0.05)
            return flight

        async def open_gate() -> None:
            gate.set()

        flight = owner.run(start())
        with pytest.raises(EventLoopInUseError, match="the in-process fill of k is in use"):
            asyncio.run(flights.do("k", lambda: value("intruder's")))
        owner.run(open_gate())
        assert owner.run(flight) == ("owner's", False)

    stopped = asyncio.new_event_loop()
    stopped.set_exception_handler(lambda _loop, _context: None)

    async def never() -> str:
        await asyncio.Event().wait()
        return "never"

    async def leave() -> asyncio.Task[tuple[str, bool]]:
        task = asyncio.ensure_future(flights.do("k", never))
        await asyncio.sleep(0.01)
        return task

    left = stopped.run_until_complete(leave())
    stopped.close()
    assert asyncio.run(flights.do("k", lambda: value("fresh"))) == ("fresh", False)
    with contextlib.suppress(RuntimeError):
        left.get_coro().close()  # type: ignore[union-attr]


def test_a_store_used_again_after_aclose_still_closes_as_its_loop_ends(
        thorbis_redis_server: RedisServer) -> None:
    store = RedisStore.from_url(thorbis_redis_server.url)

    async def use_close_use() -> None:
        await store.set("tc:{t}:again", b"x", 60_000)
        await store.aclose()
        assert await store.get("tc:{t}:again") == b"x"  # reconnects after aclose

    with _unclosed() as unclosed:
        for _ in range(3):
            asyncio.run(use_close_use())
    assert unclosed == []


def test_a_loop_that_ends_while_the_near_cache_subscribes_still_ends(
    thorbis_redis_url: str
) -> None:
    """``asyncio.run`` per request, with L1 (found as a host would): the first L1 miss
    starts the subscriber, and the loop ends while its SUBSCRIBE is being sent. redis-py
    sends it under a ``wait_for`` that, on Python 3.11, swallows the loop's cancel, and
    the subscriber went on pinging for ever: ``asyncio.run`` never returned (5 of 5)."""
    cache = Cache.from_url(thorbis_redis_url, _registry(), keyring=KeyRing.generate(),
                           near=NearCache(100))
    key = SHIFT.key("acme", id=8)
    done: list[bool] = []

    def requests() -> None:
        for _ in range(5):
            asyncio.run(cache.get(key))
        asyncio.run(cache.aclose())
        done.append(True)

    thread = threading.Thread(target=requests, daemon=True)
    thread.start()
    thread.join(60)
    assert done, "asyncio.run did not return: the subscriber outlived its loop's cancel"
