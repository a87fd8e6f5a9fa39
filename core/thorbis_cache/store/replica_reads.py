"""Reads from replicas, for the schemas that opt in, with a bounded staleness.

The seed sends reads to replicas through HAProxy. A client that knows the topology
does better without a proxy: it knows which replicas serve a key's slot, and it can
measure how far behind each one is. So a schema declared with
``KeySchema(read_from_replicas=True)`` reads its values from a replica of the master
that owns the key, when that replica is known to be at most ``max_lag`` seconds behind:

* a **heartbeat** every ``interval`` seconds writes the current time to a key on every
  master (``<prefix>:~heartbeat:{...}``, a hash tag chosen per master so that the key
  lives there) and reads it back from each replica: ``now - the value a replica has``
  is how old its view of the master is;
* a read goes to a replica whose last measured lag is within ``max_lag``, round-robin;
  none fits (lagging, unreachable, not yet measured, a failover in progress) -> the
  master. A replica that fails a read is not used again until a heartbeat succeeds;
* so an entry invalidated on the master may still be read from a replica for at most
  ``max_lag + interval`` seconds (0.6 s by default): the staleness a schema accepts by
  opting in. Schemas that must never serve a value after its invalidation returns
  (the default) read the master.

Sentinel: the replicas are the ones the sentinels report up (re-asked every second).
Cluster: each slot's replicas from the client's slot map, with ``READONLY`` on their
connections. A single server has no replicas: reads go to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

from thorbis_cache.store.redis_store import RedisStore

__all__ = ["ReplicaReads"]

log = logging.getLogger(__name__)

_UNKNOWN = float("inf")


async def _readonly(connection: Any) -> None:
    """Connect callback of a Cluster replica's connections: reads are allowed there
    only after READONLY."""
    await connection.on_connect()
    await connection.send_command("READONLY")
    await connection.read_response()


class _Replica:
    __slots__ = ("address", "client", "lag")

    def __init__(self, address: str, client: aioredis.Redis) -> None:
        self.address = address
        self.client = client
        self.lag = _UNKNOWN


class ReplicaReads:
    """Routes the GETs of opted-in schemas to replicas that keep up (see module doc).

    :param store: the cache's store (its master reads and topology).
    :param prefix: the cache's key prefix (for the heartbeat keys).
    :param max_lag: seconds a replica may be behind and still be read.
    :param interval: seconds between heartbeats.
    """

    def __init__(self, store: RedisStore, prefix: str, *, max_lag: float = 0.5,
                 interval: float = 0.1) -> None:
        self.store = store
        self.prefix = prefix
        self.max_lag = max_lag
        self.interval = interval
        #: reads served by a replica, and reads sent to the master instead
        self.replica_reads = 0
        self.master_reads = 0
        self._replicas: dict[str, _Replica] = {}
        #: heartbeat key of each master -> the replicas of that master
        self._groups: dict[str, list[_Replica]] = {}
        #: Cluster: slot -> the replicas serving it (empty map elsewhere)
        self._by_slot: dict[int, list[_Replica]] = {}
        self._round = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._discovered = 0.0

    # ----------------------------------------------------------------- reads

    async def get(self, key: str) -> bytes | None:
        """GET ``key`` from a replica within the lag bound, else from the master."""
        if self._task is None:
            self._start()
        candidates = (self._by_slot.get(key_slot(key.encode())) if self._by_slot
                      else next(iter(self._groups.values()), None))
        if candidates:
            fresh = [r for r in candidates if r.lag <= self.max_lag]
            if fresh:
                replica = fresh[next(self._round) % len(fresh)]
                try:
                    data: bytes | None = await replica.client.get(key)  # type: ignore[assignment]
                except (rexc.RedisError, OSError) as exc:
                    log.info("replica %s failed a read (%s); reading the master",
                             replica.address, exc)
                    replica.lag = _UNKNOWN
                else:
                    self.replica_reads += 1
                    return data
        self.master_reads += 1
        return await self.store.get(key)

    # ----------------------------------------------------------------- heartbeat

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._beat_forever(), name="thorbis-replica-heartbeat")

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:  # a failover in progress: keep beating
                log.debug("replica heartbeat failed: %s", exc)
                for replica in self._replicas.values():
                    replica.lag = _UNKNOWN
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        """One heartbeat: rediscover the replicas (every second), write the time on
        every master, read it back from every replica."""
        now = time.monotonic()
        if now - self._discovered > 1.0 or not self._groups:
            await self._discover()
            self._discovered = now
        stamp = time.time()
        for hb_key, replicas in self._groups.items():
            await self.store.command("SET", hb_key, repr(stamp))
            for replica in replicas:
                try:
                    seen = await asyncio.wait_for(replica.client.get(hb_key), self.interval * 5)
                except (rexc.RedisError, OSError, TimeoutError):
                    replica.lag = _UNKNOWN
                    continue
                replica.lag = _UNKNOWN if seen is None else time.time() - float(seen)

    async def _discover(self) -> None:
        client: Any = self.store._client
        groups: dict[str, list[tuple[str, int]]] = {}
        by_slot: dict[int, list[str]] = {}
        readonly = False
        if isinstance(client, RedisCluster):
            readonly = True
            # Asked here rather than taken from the client's slot map: that map is only
            # refreshed after errors, and Redis lists a replica in CLUSTER SLOTS only once
            # it has replicated something.
            masters: dict[str, list[tuple[str, int]]] = {}
            owner: dict[int, str] = {}
            for (first, last), nodes in (await self.store.cluster_slots()).items():
                host, port = nodes["primary"]
                master = f"{host}:{port}"
                found = [(str(h), int(p)) for h, p in nodes["replicas"]]
                masters[master] = found
                for slot in range(int(first), int(last) + 1):
                    owner[slot] = master
                    by_slot[slot] = [f"{h}:{p}" for h, p in found]
            # A heartbeat key per master: the first "_hbN" hash tag landing on one of
            # its slots (a few tries per master).
            for n in itertools.count():
                if len(groups) == len(masters):
                    break
                tag = f"_hb{n}"
                master = owner.get(key_slot(tag.encode()), "")
                key = f"{self.prefix}:~heartbeat:{{{tag}}}"
                if master in masters and not any(
                        groups.get(k) is masters[master] for k in groups):
                    groups[key] = masters[master]
                if n > 100_000:  # slots not all served: beat the masters found so far
                    break
        elif isinstance(client.connection_pool, SentinelConnectionPool):
            pool = client.connection_pool
            found = await pool.sentinel_manager.discover_slaves(pool.service_name)
            groups[f"{self.prefix}:~heartbeat:{{_replicas}}"] = [
                (str(h), int(p)) for h, p in found]
        else:
            groups = {}
        kwargs = self.store.redis_address.connection_options() if (
            self.store.redis_address is not None) else {}
        db = self.store.redis_address.db if self.store.redis_address is not None else 0
        live: dict[str, _Replica] = {}
        for replicas in groups.values():
            for host, port in replicas:
                address = f"{host}:{port}"
                replica = self._replicas.get(address)
                if replica is None:
                    replica = _Replica(address, aioredis.Redis(
                        host=host, port=port, db=db, decode_responses=False,
                        socket_connect_timeout=self.interval * 5,
                        socket_timeout=self.store._deadlines.timeout,
                        redis_connect_func=_readonly if readonly else None, **kwargs))
                live[address] = replica
        for address, gone in self._replicas.items():
            if address not in live:
                await gone.client.aclose()
        self._replicas = live
        self._groups = {k: [live[f"{h}:{p}"] for h, p in v] for k, v in groups.items()}
        self._by_slot = {s: [live[a] for a in addresses] for s, addresses in by_slot.items()}

    def lags(self) -> dict[str, float]:
        """Each replica's last measured lag in seconds (``inf``: unknown or down)."""
        return {address: r.lag for address, r in self._replicas.items()}

    async def aclose(self) -> None:
        """Stop the heartbeat and close the replicas' connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for replica in self._replicas.values():
            await replica.client.aclose()
        self._replicas.clear()
        self._groups.clear()
        self._by_slot.clear()
