"""Resharding a live Redis Cluster: a tenant's hash slot moved to another master (as
``redis-cli --cluster reshard`` moves it) while the cache is read, filled and
invalidated, for that tenant and for another.

Found as a user would, scaling a Cluster out: while the slot moved, every script and
multi-key command of the moving tenant whose keys were split between the two nodes got
``TRYAGAIN``. The multiplexed transport took it for an error: the call failed at once,
and four such failures opened the store's circuit breaker, so that every tenant's calls,
on every node, were refused for a while (``RedisUnavailableError: circuit open``). Now a
``TRYAGAIN`` goes to redis-py, which follows the migration, and is retried until the
call's deadline; it never opens the breaker (the server answers; one slot is moving).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator

import attrs
import pytest
from core_testing import stale_customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, CacheApp, KeyRing
from thorbis_cache.testing.servers import RedisCluster
from thorbis_cache.testing.servers.cluster_resharding import migrate_slot


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(3) as cluster:
        yield cluster


def _listed(errors: list[str]) -> str:
    """Each distinct error with its count, one per line (in full: a Counter's repr is
    cut short in an assertion message)."""
    return "\n".join(f"{n} x {e}" for e, n in Counter(errors).most_common())


async def _move_under_traffic(cluster: RedisCluster, cache: Cache, slot: int, to: int,
                             pause: float) -> tuple[list[str], dict[str, int]]:
    """Move ``slot`` to master ``to`` in batches of 10 keys, ``pause`` seconds apart,
    while 4 lanes per tenant fill, read, delete and invalidate (each lane its own
    keys); every error a call raised, and the rounds each tenant made."""
    errors: list[str] = []
    done = asyncio.Event()
    rounds = {"acme": 0, "globex": 0}

    async def traffic(tenant: str, lane: int) -> None:
        while not done.is_set():
            i = lane * 100 + rounds[tenant] % 50
            key = CUSTOMER.key(tenant, customer_id=i)
            try:
                value = attrs.evolve(stale_customer(i), phone=f"{tenant} {rounds[tenant]}")
                await cache.hash(key).replace(value)  # a script: value, tags, index
                assert await cache.hash(key).get() == value
                await cache.delete(key)
                assert await cache.hash(key).get() is None
                await cache.invalidate_tags(tenant, ["hs.customer_lists"])
            except Exception as exc:  # every failure is the finding
                errors.append(re.sub(r"127\.0\.0\.1:\d+", "", f"{tenant}: {exc!r}")[:300])
            rounds[tenant] += 1

    lanes = [asyncio.create_task(traffic(t, n)) for t in ("acme", "globex") for n in range(4)]
    await asyncio.sleep(0.2)
    moved = await asyncio.to_thread(migrate_slot, cluster, slot, to, batch=10, pause=pause)
    await asyncio.sleep(0.3)
    done.set()
    await asyncio.gather(*lanes)
    assert moved > 300  # 30 batches: the slot was split for a while
    assert cluster.master_of_slot(slot) == to
    return errors, rounds


async def test_a_tenant_slot_moves_under_traffic(cluster: RedisCluster) -> None:
    app = await CacheApp(cluster.url, keyring=KeyRing.generate()).start(["home_services"])
    cache = app.cache
    try:
        # Keys of acme's slot that the traffic leaves alone (no tag reaches them), so
        # that moving the slot takes 30 batches.
        for i in range(300):
            await cache.store.command("SET", f"ballast:{{acme}}:{i}", b"x")
        slot = int(cluster.nodes[0].command(
            "CLUSTER", "KEYSLOT", cache.redis_key(CUSTOMER.key("acme", customer_id=0))))
        source = cluster.master_of_slot(slot)
        target = (source + 1) % cluster.masters
        # Moved within the calls' deadline (2 s): not one call fails.
        errors, rounds = await _move_under_traffic(cluster, cache, slot, target, 0.02)
        assert not errors, _listed(errors)
        assert min(rounds.values()) > 20
        assert cache.store.handovers["redirect"] > 0  # ASK and TRYAGAIN: redis-py's way
        # Moved back slowly (3 s or more): acme's calls whose keys stayed split past
        # their deadline fail, saying so; no other tenant's call ever does, since a
        # moving slot never opens the breaker (it refused every tenant's calls).
        errors, rounds = await _move_under_traffic(cluster, cache, slot, source, 0.1)
        assert not [e for e in errors if not e.startswith("acme: ")], _listed(errors)
        assert all("still being moved (TRYAGAIN)" in e for e in errors), _listed(errors)
        assert rounds["globex"] > 20
        assert [b.opens for b in cache.store.breakers.every().values()] == \
            [0] * len(cache.store.breakers.every())
    finally:
        await app.aclose()
