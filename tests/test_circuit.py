"""The store's circuit breaker: its state machine, and a real Redis that stops answering
(SIGSTOP) -- calls fail fast once it is open, reads degrade to their loaders, and the
first probe after the server answers again closes it."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.store.circuit import Breakers, CircuitBreaker
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer


def test_opens_at_the_threshold_probes_once_after_the_cooldown_and_closes() -> None:
    b = CircuitBreaker(failure_threshold=3, cooldown=1.0)
    assert b.state == "closed"
    b.failure(10.0)
    b.failure(10.1)
    assert b.allow(10.2)
    b.failure(10.2)
    assert (b.state, b.opens) == ("open", 1)
    assert not b.allow(10.5)  # cooling down
    assert b.allow(11.3)  # the probe
    assert b.state == "half-open"
    assert not b.allow(11.4)  # one probe at a time
    b.failure(11.5)  # the probe failed: open again, for another cooldown
    assert (b.state, b.opens) == ("open", 1)
    assert not b.allow(12.0)
    assert b.allow(12.6)
    b.abandoned()  # its caller gave up: another probe may go
    assert b.allow(12.7)
    b.success()
    assert (b.state, b.failures, b.refused) == ("closed", 0, 3)
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)


LABEL = KeySchema("cb.label", str, params={"id": int}, ttl=60)


async def _label() -> str:
    return "from the loader"


def test_a_masters_breaker_is_suspect_from_its_opening_to_its_next_success() -> None:
    """What the worker asks before it sends a tenant's invalidations (a call let
    through as the probe of a silent master would hold its whole batch)."""
    breakers = Breakers(CircuitBreaker(2, cooldown=0.5),
                        node_of=lambda key: "10.0.0.1:7000" if "{a" in key else "10.0.0.2:7000")
    assert not breakers.route_suspect("tc:~meta:{a1}")
    breakers.failure("tc:~meta:{a1}", 100.0)
    assert not breakers.route_suspect("tc:~meta:{a1}")  # one failure: not open yet
    breakers.failure("tc:~meta:{a2}", 100.0)  # the same master
    assert breakers.route_suspect("tc:~meta:{a1}")
    assert not breakers.route_suspect("tc:~meta:{b1}")  # another master
    assert breakers.refusal("tc:~meta:{a1}", 101.0) is None  # the cooldown is over: a probe
    assert breakers.route_suspect("tc:~meta:{a1}")  # until it answers
    breakers.success("tc:~meta:{a1}")
    assert not breakers.route_suspect("tc:~meta:{a2}")
    # Off a Cluster, no master is suspect: the store's one breaker is for every call.
    single = Breakers(CircuitBreaker(1))
    single.failure("tc:~meta:{a1}", 100.0)
    assert not single.route_suspect("tc:~meta:{a1}")


async def test_a_stopped_server_opens_the_circuit_and_a_probe_closes_it(
    thorbis_redis_server: RedisServer, thorbis_standalone_redis_url: str
) -> None:
    pid = thorbis_redis_server.pid
    assert pid is not None
    registry = SchemaRegistry()
    registry.register(LABEL, owner="tests")
    store = RedisStore.from_url(thorbis_standalone_redis_url, timeout=0.3)
    async with Cache(store, registry, owns_store=True) as cache:
        key = LABEL.key("acme", id=1)
        await cache.set(key, "cached")
        os.kill(pid, signal.SIGSTOP)  # alive, connected, silent: every call would wait
        try:
            # The first call waits out its deadline; the breaker opens after three
            # (or sooner: the server is found silent past a call's timeout and a tick).
            errors: list[str] = []
            for _ in range(3):
                with pytest.raises(RedisUnavailableError) as raised:
                    await cache.get(key)
                errors.append(str(raised.value))
            assert "no reply within" in errors[0], errors
            assert (store.breaker.state, store.breaker.opens) == ("open", 1)
            with pytest.raises(RedisUnavailableError, match="circuit open"):
                await cache.get(key)
            refused = store.breaker.refused
            # Readers degrade to their loaders without waiting for the server.
            assert await cache.get_or_load(key, _label) == "from the loader"
            assert store.breaker.refused == refused + 1
            assert cache.metrics.for_schema(LABEL.name).degraded_loads == 1
        finally:
            os.kill(pid, signal.SIGCONT)
        for _ in range(100):  # the first probe after the cooldown finds it answering
            try:
                got = await cache.get(key)
                break
            except RedisUnavailableError:
                await asyncio.sleep(0.05)
        assert got == "cached"
        assert store.breaker.state == "closed"
        assert store.breaker.opens == 1
