"""The failover scenarios of ``bench/ha.py`` (one module per concern: ha.py holds the
command line, the restart scenario and the report).

``failover``
    Per replicated topology -- a Sentinel group (1 master, 2 replicas, 3 sentinels,
    ``down-after-milliseconds`` 1000) and a Cluster (3 masters with a replica each,
    ``cluster-node-timeout`` 1000) -- a client writes and reads one key every 5 ms
    through the cache while the master serving it is SIGKILLed. Measured: the
    **unavailability window**, from the kill to the first write acknowledged again (no
    manual step: the client finds the new master itself), median and max over the
    repetitions; how many writes were refused meanwhile (``RedisUnavailableError``, never
    a driver exception) and how many reads the loader answered (``get_or_load``
    degrades). The window is dominated by the failure detection the servers are
    configured with (1 s here, 5-30 s in common production settings).

``wait``
    What ``WAIT`` after invalidations costs: ``cache.delete`` of one key at a time
    (sequential, and 16 concurrent callers) with the replication wait on
    (``replicate=True``, the default) and off, in the same run, on each replicated
    topology and on a single server (where no WAIT is sent): deletes/s and the ratio.

``resurrection``
    The case WAIT cannot close, repeated: the replicas of the tenant's master are cut
    off, a committed change is applied by the outbox worker (acknowledged by the master
    alone; its WAIT times out after 100 ms), the master is SIGKILLed and a replica
    without the delete is promoted. Counted per round: whether the stale entry came back
    (it should, every round: that is the failure mode), whether it was still there
    after the worker's first batch following the failover (must be never: the replay),
    and the time from the new master's first acknowledged write to the entry gone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from thorbis_home_services import loaders
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, CacheApp, KeyRing, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.testing.servers import PostgresServer, RedisCluster, RedisSentinelGroup

NOTE: KeySchema[str] = KeySchema("ha.note", str, params={"id": int}, ttl=600)
WINDOW_TARGET_S = 5.0  # a failover must not need a manual step; this bounds "automatic"

Figures = dict[str, Any]
Targets = list[tuple[str, bool]]


def _registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(NOTE, owner="bench")
    return registry


class _Topology:
    """A replicated topology as the scenarios use it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.group: RedisSentinelGroup | None = None
        self.cluster: RedisCluster | None = None
        if name == "sentinel":
            self.group = RedisSentinelGroup().start()
        else:
            self.cluster = RedisCluster(3, replicas=1, node_timeout_ms=1000).start()

    @property
    def url(self) -> str:
        return self.group.url if self.group is not None else self.cluster.url  # type: ignore[union-attr]

    def kill_master(self, key: str) -> Any:
        if self.group is not None:
            return self.group.kill_master()
        assert self.cluster is not None
        return self.cluster.kill_master_for_key(key)

    def wait_failover(self, killed: Any) -> None:
        (self.group or self.cluster).wait_failover(killed)  # type: ignore[union-attr]

    def cut_replicas(self, key: str) -> list[Any]:
        if self.group is not None:
            replicas = self.group.replicas()
            for replica in replicas:
                self.group.freeze(replica)
            return replicas
        assert self.cluster is not None
        found = self.cluster.replicas_of(self.cluster.master_for_key(key))
        for index in found:
            self.cluster.freeze(index)
        return found

    def thaw(self, member: Any) -> None:
        (self.group or self.cluster).thaw(member)  # type: ignore[union-attr]

    def repair(self) -> None:
        (self.group or self.cluster).repair()  # type: ignore[union-attr]

    def stop(self) -> None:
        (self.group or self.cluster).stop()  # type: ignore[union-attr]


async def _until(what: str, check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:g} s waiting until {what}")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- failover

async def _one_failover(topology: _Topology) -> tuple[float, int, int]:
    async with Cache.from_url(topology.url, _registry()) as cache:
        key = NOTE.key("acme", id=1)
        await cache.set(key, "v0")
        refused = loaded = 0

        async def loader() -> str:
            nonlocal loaded
            loaded += 1
            return "from the database"

        killed_at = time.monotonic()
        killed = topology.kill_master(cache.redis_key(key))
        n = 0
        while True:
            n += 1
            await cache.get_or_load(key, loader)
            try:
                await cache.set(key, f"v{n}")
                break
            except RedisUnavailableError:
                refused += 1
            if time.monotonic() - killed_at > 60:
                raise RuntimeError("writes did not come back within 60 s")
            await asyncio.sleep(0.005)
        window = time.monotonic() - killed_at
    topology.wait_failover(killed)
    topology.repair()
    return window, refused, loaded


async def failover(repeat: int) -> tuple[Figures, Targets]:
    """The unavailability window per topology (see the module doc)."""
    figures: Figures = {}
    targets: Targets = []
    for name in ("sentinel", "cluster"):
        topology = _Topology(name)
        try:
            runs = [await _one_failover(topology) for _ in range(repeat)]
        finally:
            topology.stop()
        windows = [w for w, _, _ in runs]
        figures[name] = {"windows_s": windows, "refused_writes": [r for _, r, _ in runs],
                         "loader_reads": [x for _, _, x in runs]}
        print(f"failover {name:8}: unavailable median {statistics.median(windows):.2f} s, "
              f"max {max(windows):.2f} s over {repeat} kills; writes refused per kill "
              f"{statistics.median(figures[name]['refused_writes']):.0f} (median), reads "
              f"answered by the loader {sum(figures[name]['loader_reads'])} in all")
        targets.append((f"failover {name}: writes back by themselves within "
                        f"{WINDOW_TARGET_S:g} s (max {max(windows):.2f} s)",
                        max(windows) <= WINDOW_TARGET_S))
    return figures, targets


# --------------------------------------------------------------------------- wait

async def _deletes_per_second(cache: Cache, replicate: bool, callers: int, n: int) -> float:
    keys = [NOTE.key(f"t{i % 8}", id=i) for i in range(n)]
    for key in keys[:64]:
        await cache.set(key, "x")
    started = time.perf_counter()

    async def caller(mine: list[Any]) -> None:
        for key in mine:
            await cache.delete(key, replicate=replicate)

    await asyncio.gather(*(caller(keys[c::callers]) for c in range(callers)))
    return n / (time.perf_counter() - started)


async def wait(repeat: int) -> tuple[Figures, Targets]:
    """Deletes/s with and without the replication wait (see the module doc)."""
    from thorbis_cache.testing.servers import RedisServer

    figures: Figures = {}
    single = RedisServer().start()
    try:
        for name in ("standalone", "sentinel", "cluster"):
            topology = None if name == "standalone" else _Topology(name)
            url = single.url if topology is None else topology.url
            try:
                async with Cache.from_url(url, _registry()) as cache:
                    row: dict[str, float] = {}
                    for callers in (1, 16):
                        for replicate in (False, True):
                            rates = [await _deletes_per_second(cache, replicate, callers, 2000)
                                     for _ in range(max(1, repeat // 4))]
                            row[f"{callers}-{'wait' if replicate else 'nowait'}"] = max(rates)
                    timeouts = cache.store.replication_timeouts
            finally:
                if topology is not None:
                    topology.stop()
            figures[name] = {**row, "wait_timeouts": timeouts}
            for callers in (1, 16):
                on, off = row[f"{callers}-wait"], row[f"{callers}-nowait"]
                print(f"wait {name:10} {callers:2} caller(s): {off:8.0f} deletes/s without "
                      f"WAIT, {on:8.0f} with -> {on / off:.2f}x")
            print(f"wait {name:10} WAITs that timed out: {timeouts}")
    finally:
        single.stop()
    return figures, []


# --------------------------------------------------------------------------- resurrection

async def _one_resurrection(topology: _Topology, app: CacheApp, dsn: str,
                            conn: asyncpg.Connection, round_no: int) -> dict[str, Any]:
    cache = app.cache
    worker = OutboxWorker.from_app(app, dsn)

    async def drained() -> bool:
        try:
            await worker.drain()
            return True
        except RedisUnavailableError:  # the previous round's repair is settling
            return False

    try:
        await _until("the worker drains", drained)
        customer = (await loaders.customers(conn.fetch, "acme", [1]))[0]
        key = CUSTOMER.key("acme", customer_id=1)
        await cache.hash(key).replace(customer)
        rk = cache.redis_key(key)

        async def replicated() -> bool:
            acked, wanted = await cache.store.sync_replicas(cache.sync_key("acme"))
            return acked == wanted

        await _until("the replicas have the entry", replicated, within=10)
        cut = topology.cut_replicas(rk)
        try:
            await conn.execute("UPDATE hs.customers SET phone = $1 WHERE tenant_id = 'acme' "
                               "AND id = 1", f"555-{round_no:04d}")
            await worker.drain()
            gone_on_master = await cache.store.command("EXISTS", rk) == 0
            killed = topology.kill_master(rk)
        finally:
            for member in cut:
                topology.thaw(member)
        topology.wait_failover(killed)

        async def answers() -> bool:
            try:
                await cache.store.command("SET", cache.sync_key("acme"), b"", "PX", 1000)
                return True
            except RedisUnavailableError:
                return False

        await _until("the new master takes writes", answers)
        back_at = time.monotonic()
        resurrected = await cache.store.command("EXISTS", rk) == 1
        await _until("the worker drains", drained)
        stale_after_replay = await cache.store.command("EXISTS", rk) == 1
        return {"gone_on_master": gone_on_master, "resurrected": resurrected,
                "stale_after_replay": stale_after_replay,
                "replay_ms": (time.monotonic() - back_at) * 1000}
    finally:
        await worker.aclose()
        topology.repair()


async def resurrection(repeat: int) -> tuple[Figures, Targets]:
    """Acknowledged invalidations lost by a failover, replayed (see the module doc)."""
    from ha import Row, _setup_db  # the restart scenario's database set-up

    figures: Figures = {}
    targets: Targets = []
    postgres = PostgresServer().start()
    try:
        for index, name in enumerate(("sentinel", "cluster")):
            admin = await asyncpg.connect(postgres.dsn())
            await admin.execute(f"CREATE DATABASE ha_resurrection_{index}")
            await admin.close()
            dsn = postgres.dsn(f"ha_resurrection_{index}")
            await _setup_db(dsn, [Row("acme", 1)])
            topology = _Topology(name)
            app = await CacheApp(topology.url, keyring=KeyRing.generate()).start(
                ["home_services"])
            conn = await asyncpg.connect(dsn)
            try:
                rounds = [await _one_resurrection(topology, app, dsn, conn, r)
                          for r in range(repeat)]
            finally:
                await conn.close()
                await app.aclose()
                topology.stop()
            back = sum(r["resurrected"] for r in rounds)
            stale = sum(r["stale_after_replay"] for r in rounds)
            replay = [r["replay_ms"] for r in rounds]
            figures[name] = {"rounds": rounds}
            print(f"resurrection {name:8}: {repeat} kills right after an acknowledged "
                  f"invalidation; the stale entry came back {back} time(s), was left after "
                  f"the worker's replay {stale} time(s); new master -> entry gone median "
                  f"{statistics.median(replay):.0f} ms, max {max(replay):.0f} ms")
            targets.append((f"resurrection {name}: no stale entry after the replay "
                            f"({stale} of {repeat})", stale == 0))
    finally:
        postgres.stop()
    return figures, targets
