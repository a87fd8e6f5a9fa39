"""No call ever returns a value stored under another key or another tenant.

A client that multiplexes callers over shared connections can hand a reply to the
wrong caller: in March 2023 a cancelled redis-py asyncio request left its reply on
the connection and the next caller, another user, received it (CVE-2023-28858/28859).
Here every value carries the key it was stored under, so the check is exact; callers
are cancelled at random (the CVE's trigger), run into the store's own deadline, and
meet ``CLIENT PAUSE``, killed connections and (on the single server) a restart,
on every topology, with hypothesis choosing the mix, on asyncio's own loop and on uvloop
(the loop uvicorn runs when it is installed, whose transports are not asyncio's). An
error is an acceptable answer; another key's value never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thorbis_cache import Cache, KeyRing, KeySchema, SchemaRegistry
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.errors import CacheBackendError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.clients import master_clients
from thorbis_cache.testing.servers import RedisServer


@attrs.frozen
class Tagged:
    """A value that names the key it belongs to."""

    key: str
    n: int


PLAIN = KeySchema("wr.plain", Tagged, params={"id": int}, ttl=300)
SEALED = KeySchema("wr.sealed", Tagged, params={"id": int}, ttl=300, sensitive=True)
TENANTS = ("acme", "globex")
IDS = 64
#: Operations per hypothesis example; 4 examples per topology: 100,000 calls.
OPERATIONS = 25_000


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (PLAIN, SEALED):
        reg.register(schema, owner="tests")
    return reg


@attrs.define
class Tally:
    calls: int = 0
    values: int = 0
    errors: int = 0
    cancelled: int = 0
    wrong: list[str] = attrs.field(factory=list)

    def check(self, key: CacheKey[Any], got: Tagged | None) -> None:
        if got is None:
            return
        self.values += 1
        if got.key != key.body:
            self.wrong.append(f"asked {key.body}, got the value of {got.key}")


#: Chaos events per hypothesis example before the callers may stop.
EVENTS = 6


async def _chaos(url: str, server: RedisServer | None, kinds: frozenset[str],
                 stop: asyncio.Event, enough: asyncio.Event, rng: random.Random) -> int:
    """Pause, kill the cache's connections, restart the single server, at random;
    ``enough`` is set after :data:`EVENTS` of them."""
    events = 0
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.02, 0.2))
        kind = rng.choice(sorted(kinds))
        if kind == "restart" and server is not None:
            await asyncio.to_thread(server.restart)
        else:
            def act(kind: str = kind) -> None:
                for client in master_clients(url):
                    try:
                        if kind == "pause":
                            client.execute_command("CLIENT", "PAUSE", rng.randint(5, 40))
                        else:  # every connection but this one: the cache's
                            client.execute_command("CLIENT", "KILL", "TYPE", "normal",
                                                   "SKIPME", "yes")
                    except Exception:  # noqa: S110 -- chaos on a dying server is best effort
                        pass
                    finally:
                        client.close()

            await asyncio.to_thread(act)
        events += 1
        if events >= EVENTS:
            enough.set()
    return events


async def _worker(cache: Cache, rng: random.Random, tally: Tally, budget: list[int],
                  cancel_p: float, enough: asyncio.Event) -> None:
    schemas = (PLAIN, SEALED)

    def key() -> CacheKey[Tagged]:
        return rng.choice(schemas).key(rng.choice(TENANTS), id=rng.randrange(IDS))

    # At least the budget, and on until the chaos has struck a few times: a fast
    # transport must not finish its calls between two events.
    while budget[0] > 0 or not enough.is_set():
        budget[0] -= 1
        op = rng.random()
        k = key()
        call: Callable[[], Awaitable[Any]]
        if op < 0.45:
            async def call(k: CacheKey[Tagged] = k) -> None:
                tally.check(k, await cache.get(k))
        elif op < 0.6:
            keys = [key() for _ in range(rng.randint(1, 8))]

            async def call(keys: list[CacheKey[Tagged]] = keys) -> None:
                for each, got in zip(keys, await cache.get_many(keys), strict=True):
                    tally.check(each, got)
        elif op < 0.8:
            async def call(k: CacheKey[Tagged] = k) -> None:
                async def load() -> Tagged:
                    return Tagged(k.body, 0)

                tally.check(k, await cache.get_or_load(k, load))
        elif op < 0.95:
            async def call(k: CacheKey[Tagged] = k) -> None:
                await cache.set(k, Tagged(k.body, rng.randrange(1000)))
        else:
            # Keys of both tenants: one DEL per slot on a Cluster, all on the wire at once.
            doomed = [key() for _ in range(rng.randint(1, 8))]

            async def call(doomed: list[CacheKey[Tagged]] = doomed) -> None:
                assert 0 <= await cache.delete(*doomed) <= 2 * len(doomed)
        tally.calls += 1
        try:
            if rng.random() < cancel_p:
                # Cancelled mid-flight, as a timed-out HTTP handler would be.
                # A call takes tens of microseconds: most of these windows end
                # mid-flight (request written, reply not yet read).
                await asyncio.wait_for(call(), rng.uniform(0, 0.0005))
            else:
                await call()
        except TimeoutError:
            tally.cancelled += 1
        except CacheBackendError:
            tally.errors += 1
            await asyncio.sleep(0.001)  # as a caller would, not a spin on an open breaker


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("thorbis_redis_url", ["standalone", "cluster", "sentinel"],
                         indirect=True)
def test_no_call_returns_another_keys_value(
    thorbis_redis_url: str, thorbis_redis_server: RedisServer, loop: str
) -> None:
    run_loop = asyncio.run if loop == "asyncio" else uvloop.run
    url = thorbis_redis_url
    server = thorbis_redis_server if url.startswith("redis://") else None
    ring = KeyRing.generate()
    totals = Tally()

    @settings(max_examples=4, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**32 - 1), cancel_p=st.floats(0.0, 0.5),
           concurrency=st.integers(8, 64),
           kinds=st.frozensets(st.sampled_from(["pause", "kill", "restart"]), min_size=1))
    def run(seed: int, cancel_p: float, concurrency: int, kinds: frozenset[str]) -> None:
        async def main() -> Tally:
            rng = random.Random(seed)
            tally = Tally()
            # A short deadline, so the store's own expiry cancels calls too.
            store = RedisStore.from_url(url, timeout=0.1)
            async with Cache(store, registry(), keyring=ring, owns_store=True) as cache:
                stop, enough = asyncio.Event(), asyncio.Event()
                chaos = asyncio.create_task(_chaos(url, server, kinds, stop, enough,
                                                   random.Random(seed + 1)))
                budget = [OPERATIONS]
                try:
                    await asyncio.gather(*(
                        _worker(cache, random.Random(rng.random()), tally, budget, cancel_p,
                                enough)
                        for _ in range(concurrency)))
                finally:
                    stop.set()
                    await chaos
            return tally

        tally = run_loop(main())
        assert not tally.wrong, tally.wrong[:5]
        totals.calls += tally.calls
        totals.values += tally.values
        totals.errors += tally.errors
        totals.cancelled += tally.cancelled
        if server is not None and not server.ping():
            with contextlib.suppress(Exception):
                server.restart()

    run()
    print(totals)
    assert totals.calls >= 100_000
    # The run must have exercised both sides: answers checked, and calls disturbed.
    assert totals.values > 10_000, totals
    assert totals.cancelled + totals.errors > 100, totals
