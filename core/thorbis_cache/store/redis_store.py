"""The Redis adapter: with the rest of :mod:`thorbis_cache.store`, the only code of the
cache path that imports ``redis``.

It hides the topology (one server or a Cluster), groups multi-key calls by hash slot,
runs Lua scripts by SHA with a fallback to EVAL, and translates driver exceptions
into :mod:`thorbis_cache.errors` at one seam. The writes that wait for replicas, and
the reads of the masters, are :mod:`~thorbis_cache.store.replicated_writes`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.cluster import get_node_name
from redis.crc import key_slot

from thorbis_cache.errors import (
    CacheBackendError,
    RedisOutOfMemoryError,
    RedisUnavailableError,
    RedisWritesRefusedError,
    WrongRedisTypeError,
)
from thorbis_cache.store.circuit import Breakers, CircuitBreaker
from thorbis_cache.store.clients import client_for, dedicated_client_for
from thorbis_cache.store.event_loops import LoopEnd, refuse_if_still_running, release_connections
from thorbis_cache.store.hot_commands import HotCommands
from thorbis_cache.store.redis_url import RedisAddress, parse_redis_url
from thorbis_cache.store.replica_waits import ReplicaWaits
from thorbis_cache.store.replicated_writes import ReplicatedWrites
from thorbis_cache.store.scripts import Script
from thorbis_cache.transport import Router
from thorbis_cache.transport.bounds import CallDeadlines, InFlightGate

__all__ = ["RedisStore"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)

class RedisStore(ReplicatedWrites):
    """Byte-level access to Redis for the cache: get/mget/set/delete, scripts, commands.

    Build it with :meth:`from_url`; use ``async with`` or call :meth:`aclose`.

    :param client: a ``redis.asyncio`` Redis or RedisCluster client (bytes responses)
        built without ``socket_timeout`` (this store bounds every call itself).
    :param address: shown in error messages.
    :param timeout: seconds any call may wait for its reply (queueing for a connection
        included).
    :param max_in_flight: calls sent at once; more wait their turn instead of failing.
        Must not exceed the client's pool size (per node on a Cluster).
    :param breaker: fails calls fast while Redis is down (see :mod:`.circuit`); a
        breaker opening after 3 consecutive failures for 0.2 s by default. On a
        Cluster it answers for the calls that span several slots; each master gets a
        breaker of the same settings for the calls of one slot (:attr:`breakers`).
    :param multiplexed: send GET, MGET, SET and scripts over a few shared, pipelined
        connections per server (:mod:`thorbis_cache.transport`) rather than one
        redis-py connection per call in flight. Topology, pub/sub and every other
        command stay with ``client``, which is also the fallback for a call that meets a
        redirect or a lost connection.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        address: str,
        *,
        timeout: float = 2.0,
        max_in_flight: int = 128,
        breaker: CircuitBreaker | None = None,
        multiplexed: bool = True,
    ) -> None:
        self._client = client
        router = Router(client) if multiplexed else None
        self._hot = HotCommands(client, router)
        # Bound once: the hot path calls them without another attribute lookup.
        self._send = self._hot.send
        self._send_all = self._hot.send_all
        self._cluster = isinstance(client, RedisCluster)
        # A Cluster client learns its slot map on first use. Commands sent concurrently
        # before that are routed by a default policy and retried, and redis-py 8 was
        # seen running a script twice that way (a lease taken, then reported as held
        # by another client). So the first call maps the cluster alone; the rest wait.
        self._ready = not self._cluster
        self._ready_lock = asyncio.Lock()
        # Left on a loop that has stopped, to be let go of before the next call.
        self._left_behind = False
        self._loop_end = LoopEnd(self._let_go)
        self._deadlines = CallDeadlines(timeout, on_new_loop=self._moved_from,
                                        on_tick=self._tick if router else None)
        self._gate = InFlightGate(max_in_flight)
        self.breaker = breaker or CircuitBreaker()
        #: every breaker of the store (see :class:`~.circuit.Breakers`)
        self.breakers = Breakers(self.breaker, self.master_name if self._cluster else None)
        # Empty while every breaker is closed: all the hot path looks at.
        self._alarmed = self.breakers.alarmed
        if router is not None:
            router.on_silent = self._silent
        self.address = address
        #: the parsed URL when built by :meth:`from_url`
        self.redis_address: RedisAddress | None = None
        #: keys in one MGET or UNLINK at most: a longer call is sent as several (written
        #: at once, so still about one round trip), and the server serves other clients
        #: between them instead of building one huge reply while they wait
        self.keys_per_command = 512
        #: seconds :meth:`replicated` waits for replicas before going on without them
        self.wait_timeout = 0.1
        #: at most this many replicas waited for (None: every connected replica)
        self.wait_replicas: int | None = None
        #: WAITs that ended before every replica waited for acknowledged
        self.replication_timeouts = 0
        #: hot commands the multiplexed transport handed to redis-py, by reason (see
        #: :attr:`HotCommands.handovers <thorbis_cache.store.hot_commands.HotCommands>`)
        self.handovers = self._hot.handovers
        self._waits = ReplicaWaits(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        multiplexed: bool = True,
    ) -> RedisStore:
        """Connect lazily to the Redis a URL names, on any topology (see
        :mod:`thorbis_cache.store.redis_url` for the forms: ``redis://``, ``rediss://``,
        ``redis+cluster://``, ``redis+sentinel://``, with ACL credentials and TLS).

        :param timeout: seconds a call may wait for its reply, enforced by one watchdog
            rather than a timer per call (see
            :class:`~thorbis_cache.transport.bounds.CallDeadlines`); else the URL's
            ``socket_timeout``, else 2.
        :param connect_timeout: seconds to establish a connection; else the URL's
            ``socket_connect_timeout``, else 2.
        :param max_connections: calls in flight at once (the rest wait their turn), and
            the size of redis-py's pool; else the URL's ``max_connections``, else 128.
        :param multiplexed: see the class.
        :raises ConfigurationError: for a URL this project does not understand.
        """
        address = parse_redis_url(url)
        timeout = timeout or address.call_timeout or 2.0
        connect_timeout = connect_timeout or address.connect_timeout or 2.0
        max_connections = max_connections or address.max_connections or 128
        client = client_for(address.url, address, connect_timeout=connect_timeout,
                            max_connections=max_connections)
        store = cls(client, address.describe(), timeout=timeout,
                    max_in_flight=max_connections, multiplexed=multiplexed)
        store.redis_address = address
        return store

    def dedicated_client(self) -> aioredis.Redis:
        """A new single-node client (for pub/sub) to the server this store talks to --
        the first startup node of a Cluster, where PUBLISH reaches every node; the
        current master of a Sentinel group -- with the driver's silent retries off, so
        its owner notices a lost connection."""
        return dedicated_client_for(self._client, self.redis_address)

    @property
    def silent_servers(self) -> int:
        """Times a server owed replies on the multiplexed connections for a call's
        timeout and one watchdog tick without sending a byte, and was given up (see
        :meth:`Router.sweep <thorbis_cache.transport.router.Router.sweep>`)."""
        router = self._hot.router
        return 0 if router is None else router.silent_found

    @property
    def timeout(self) -> float:
        """Seconds any call may wait for its reply (queueing included)."""
        return self._deadlines.timeout

    @property
    def is_cluster(self) -> bool:
        """True when talking to a Redis Cluster."""
        return self._cluster

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection and stop the deadline watchdog.

        :raises EventLoopInUseError: called from another loop while the store's loop
            still runs.
        """
        previous = self._deadlines.loop
        if previous is not None and previous is not asyncio.get_running_loop():
            self._moved_from(previous)  # refused while it runs; fresh locks otherwise
        self._loop_end.disarm()
        await self._deadlines.aclose()
        await self._let_go()  # works from the next loop too, once the store's has stopped
        await self._client.aclose()

    # ----------------------------------------------------------------- error seam

    def _silent(self, host: str, port: int) -> None:
        """The router gave up a silent server: open its breaker (its master's on a
        Cluster), so that the calls after it fail at once instead of each waiting out
        its deadline, until a probe finds it (or its successor) answering."""
        self.breakers.trip(get_node_name(host, port) if self._cluster else None,
                           time.monotonic())

    def _tick(self, now: float, silence: float) -> None:
        """Every tick of the deadline watchdog: the router gives up silent servers; and
        on a Cluster, while a master's breaker is open, the slot map is asked for again
        (at most once a second): the Cluster may have promoted its replica, which no
        call routed by the old map would find (they are refused, or time out)."""
        router = self._hot.router
        assert router is not None
        router.sweep(now, silence)
        if self._cluster and self._alarmed:
            for name, breaker in self._alarmed.items():
                if name and breaker.open_until:
                    router.remap(name, now)
                    return

    def master_name(self, key: str) -> str | None:
        """The Cluster master serving ``key`` as the slot map says now (its breaker's
        name); None off a Cluster, or while no master serves the key's slot."""
        if not isinstance(self._client, RedisCluster):
            return None
        try:
            node = self._client.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        except Exception:  # no master serves the slot now: a failover in progress
            return None
        return str(node.name)

    def every_master_suspect(self) -> bool:
        """On a Cluster, whether the breaker of every master in the slot map has opened
        and not closed since: no shard is known to answer (False off a Cluster). Asks
        nothing of the servers."""
        if not isinstance(self._client, RedisCluster):
            return False
        return all(self.breakers.suspect(str(node.name))
                   for node in self._client.get_primaries())

    def _route_of(self, keys: Sequence[str]) -> str | None:
        """The key a call of ``keys`` answers to its breaker by: the first one, unless
        they span several hash slots of a Cluster (None: the store's own breaker)."""
        first = keys[0]
        if not self._cluster or len(keys) == 1:
            return first
        slot = key_slot(first.encode())
        return first if all(key_slot(k.encode()) == slot for k in keys) else None

    def _fail(self, operation: str, exc: BaseException,
              route: str | None = None) -> CacheBackendError:
        # CLUSTERDOWN / MASTERDOWN / TRYAGAIN are replies, but they say the server cannot
        # serve now (a Cluster converging after a failover or a repair), not that the
        # command is wrong: unavailability, which the worker waits out without blaming
        # the changes in hand.
        if isinstance(exc, rexc.TryAgainError):
            # One slot being moved (resharding): the server answers, and serves every
            # other slot; opening the breaker would refuse every tenant's calls.
            return RedisUnavailableError(operation, self.address, _describe(exc))
        if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError
                      | rexc.RedisClusterException | rexc.ClusterDownError):
            self.breakers.failure(route, time.monotonic())
            return RedisUnavailableError(operation, self.address, _describe(exc))
        if self._alarmed:  # an error reply: the server is there
            self.breakers.success(route)
        if isinstance(exc, rexc.OutOfMemoryError):
            return RedisOutOfMemoryError(operation, self.address, _describe(exc))
        if isinstance(exc, rexc.ReadOnlyError) or (
                isinstance(exc, rexc.ResponseError) and str(exc).startswith("MISCONF")):
            # Writes refused by a server that answers (its snapshots fail, or it serves
            # a replica now): unavailable for writes, as out of memory is.
            return RedisWritesRefusedError(operation, self.address, _describe(exc))
        if isinstance(exc, rexc.ResponseError) and str(exc).startswith("WRONGTYPE"):
            return WrongRedisTypeError(operation, self.address, _describe(exc))
        return CacheBackendError(operation, self.address, _describe(exc))

    def _timed_out(self, operation: str, route: str | None = None) -> RedisUnavailableError:
        task = asyncio.current_task()
        if task is not None and task in self._hot.migrating:
            # Waiting for a slot being moved (TRYAGAIN), not for a server that is gone.
            self._hot.migrating.discard(task)
            return RedisUnavailableError(
                operation, self.address, f"its keys' slot was still being moved (TRYAGAIN) "
                f"after {self._deadlines.timeout}s")
        now = time.monotonic()
        self.breakers.failure(route, now)
        router = self._hot.router
        if route is not None and router is not None and self._cluster:
            # The master may have been replaced (a failover) while redis-py, whose
            # call was cancelled before any error, still routes there.
            master = self.master_name(route)
            if master is not None:
                router.remap(master, now)
        return RedisUnavailableError(
            operation, self.address, f"no reply within {self._deadlines.timeout}s"
        )

    def _refuse(self, operation: str, route: str | None = None) -> None:
        """Raise at once while the call's breaker is open (called before a call is
        armed: our own error must not be taken for the driver's)."""
        refusal = self.breakers.refusal(route, time.monotonic())
        if refusal is not None:
            raise RedisUnavailableError(operation, self.address, refusal)

    def _abandoned(self, task: asyncio.Task[Any], route: str | None = None) -> bool:
        """After a CancelledError: True when the deadline cancelled the call; else the
        caller did, and a probe it carried is given back."""
        if self._deadlines.expired(task):
            return True
        self.breakers.abandoned(route)
        self._hot.migrating.discard(task)  # a later call's timeout is its own
        return False

    def _moved_from(self, previous: asyncio.AbstractEventLoop | None) -> None:
        """The first call from an event loop (see :mod:`.event_loops`). From another
        one than before: refused while ``previous`` still runs; otherwise what was
        opened there is let go of by :meth:`_prepare`, before this call goes on."""
        if previous is not None:
            refuse_if_still_running(previous, self.address)
            self._left_behind = True
            self._ready = False
            # Locks and waiters of the stopped loop cannot be awaited from this one.
            self._ready_lock = asyncio.Lock()
            self._gate = InFlightGate(self._gate.limit)
        self._loop_end.arm()

    async def _prepare(self) -> None:
        """Before the first call on a loop, alone: let go of the connections of a
        stopped loop, and on a Cluster learn the slot map."""
        async with self._ready_lock:
            if self._left_behind:
                await self._let_go()
            if not self._ready:
                if self._cluster:
                    await self._client.initialize()
                self._ready = True

    async def _let_go(self) -> None:
        """Drop the connections of the store's loop: closed properly on that loop as it
        ends, or let go of from the next one once it has stopped."""
        self._left_behind = False
        if self._hot.router is not None:
            await self._hot.router.aclose()
        await self._waits.aclose()
        await release_connections(self._client)

    async def _enter(self) -> None:
        if not self._ready:
            await self._prepare()
        gate = self._gate
        if gate.busy < gate.limit:
            gate.busy += 1
        else:
            await gate.wait()

    @contextlib.asynccontextmanager
    async def _call(self, operation: str, route: str | None = None) -> AsyncIterator[None]:
        """Deadline, breaker and error translation for the calls off the hot path;
        ``route``: the key of a call of one slot (its master's breaker on a Cluster)."""
        if self._alarmed:
            self._refuse(operation, route)
        task = self._deadlines.arm()
        try:
            await self._enter()
            try:
                yield
            finally:
                self._gate.release()
            if self._alarmed:
                self.breakers.success(route)
        except asyncio.CancelledError:
            if not self._abandoned(task, route):
                raise
            raise self._timed_out(operation, route) from None
        except (rexc.RedisError, rexc.RedisClusterException, OSError) as exc:
            raise self._fail(operation, exc, route) from exc
        finally:
            self._deadlines.disarm(task)

    # ----------------------------------------------------------------- hot path
    # Written out with try/except rather than through _call: an async context manager
    # costs a few microseconds per call, which the hit path cannot afford.

    async def get(self, key: str) -> bytes | None:
        """GET ``key``."""
        if self._alarmed:
            self._refuse("GET", key)
        task = self._deadlines.arm()
        gate = self._gate
        try:
            if not self._ready:
                await self._prepare()
            if gate.busy < gate.limit:
                gate.busy += 1
            else:
                await gate.wait()
            try:
                data: bytes | None = await self._send(key, ("GET", key))
            finally:
                gate.release()
            if self._alarmed:
                self.breakers.success(key)
            return data
        except asyncio.CancelledError:
            if not self._abandoned(task, key):
                raise
            raise self._timed_out("GET", key) from None
        except (rexc.RedisError, rexc.RedisClusterException, OSError) as exc:
            raise self._fail("GET", exc, key) from exc
        finally:
            self._deadlines.disarm(task)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET, one call per hash slot (one call in total on a single server) and per
        :attr:`keys_per_command` keys; the values in the order of ``keys``."""
        if not keys:
            return []
        # A Cluster's keys by hash slot, found once: the call's route (its master's
        # breaker when there is one slot) and the grouping of the MGETs both read it.
        by_slot: dict[int, list[int]] | None = None
        if self._cluster:
            by_slot = {}
            for i, k in enumerate(keys):
                by_slot.setdefault(key_slot(k.encode()), []).append(i)
        route = keys[0] if by_slot is None or len(by_slot) == 1 else None
        if self._alarmed:
            self._refuse("MGET", route)
        task = self._deadlines.arm()
        try:
            await self._enter()
            try:
                found = await self._mget(keys, by_slot)
            finally:
                self._gate.release()
            if self._alarmed:
                self.breakers.success(route)
            return found
        except asyncio.CancelledError:
            if not self._abandoned(task, route):
                raise
            raise self._timed_out("MGET", route) from None
        except (rexc.RedisError, rexc.RedisClusterException, OSError) as exc:
            raise self._fail("MGET", exc, route) from exc
        finally:
            self._deadlines.disarm(task)

    async def _mget(self, keys: Sequence[str], by_slot: dict[int, list[int]] | None
                    ) -> list[bytes | None]:
        per = self.keys_per_command
        if by_slot is None:
            if len(keys) <= per:
                got: list[bytes | None] = await self._send(keys[0], ("MGET", *keys))
                return got
            replies = await self._send_all([(part[0], ("MGET", *part))
                                            for part in _cut(keys, per)])
            return [value for reply in replies for value in reply]
        chunks = [part for positions in by_slot.values() for part in _cut(positions, per)]
        groups = [[keys[i] for i in positions] for positions in chunks]
        replies = await self._send_all([(group[0], ("MGET", *group)) for group in groups])
        out: list[bytes | None] = [None] * len(keys)
        for positions, values in zip(chunks, replies, strict=True):
            for i, v in zip(positions, values, strict=True):
                out[i] = v
        return out

    async def set(self, key: str, data: bytes, ttl_ms: int) -> None:
        """SET ``key`` with a TTL in milliseconds."""
        async with self._call("SET", key):
            await self._send(key, ("SET", key, data, "PX", ttl_ms))

    async def delete(self, keys: Iterable[str]) -> int:
        """UNLINK, one call per hash slot (one in all on a single server) and per
        :attr:`keys_per_command` keys; returns how many keys existed. UNLINK rather than
        DEL: a big hash, sorted set or geo index is freed by a background thread instead
        of blocking the server. Over the multiplexed transport, as the hot commands:
        the worker sends one per batch of invalidations, hundreds of keys, which
        redis-py packs at about 0.5 µs a key and ``hiredis.pack_command`` at 0.06."""
        if self._cluster:
            groups: dict[int, list[str]] = {}
            for k in keys:
                groups.setdefault(key_slot(k.encode()), []).append(k)
            batches = list(groups.values())
        else:
            batches = [names] if (names := list(keys)) else []
        parts = [part for group in batches for part in _cut(group, self.keys_per_command)]
        # One slot (a tenant's keys): its master's breaker on a Cluster.
        route = batches[0][0] if len(batches) == 1 else None
        async with self._call("UNLINK", route):
            replies = await self._send_all([(part[0], ("UNLINK", *part)) for part in parts])
        return sum(replies)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script (all ``keys`` must share one slot)."""
        route = keys[0] if keys else None
        if self._alarmed:
            self._refuse(f"script {script.name}", route)
        task = self._deadlines.arm()
        try:
            await self._enter()
            try:
                reply = await self._send(route or "", ("EVALSHA", script.sha, len(keys),
                                                       *keys, *args))
            except rexc.NoScriptError:
                reply = await self._send(route or "", ("EVAL", script.source, len(keys),
                                                       *keys, *args))
            finally:
                self._gate.release()
            if self._alarmed:
                self.breakers.success(route)
            return reply
        except asyncio.CancelledError:
            if not self._abandoned(task, route):
                raise
            raise self._timed_out(f"script {script.name}", route) from None
        except (rexc.RedisError, rexc.RedisClusterException, OSError) as exc:
            raise self._fail(f"script {script.name}", exc, route) from exc
        finally:
            self._deadlines.disarm(task)

    async def publish_each(self, channel: str, messages: Sequence[tuple[str, bytes]]) -> None:
        """PUBLISH every ``(routing_key, message)`` to ``channel`` in one round trip, over
        the multiplexed connections (on a Cluster, through the node serving the key:
        any node broadcasts a message to the whole cluster)."""
        route = self._route_of([r for r, _ in messages]) if messages else None
        async with self._call("PUBLISH", route):
            await self._send_all([(route, ("PUBLISH", channel, message))
                                  for route, message in messages])

    async def command(self, *args: Any, route: str | None = None) -> Any:
        """Run one command (routed by its key on a Cluster; tried again until the
        deadline while its slot is being moved, as the hot commands are). ``route``:
        its key, when it names keys of one slot only (on a Cluster, it then answers to
        that master's breaker rather than the store's)."""
        async with self._call(str(args[0]), route):
            return await self._hot.through_redis_py(args)

    async def ping(self) -> bool:
        """PING the server (every master of a Cluster)."""
        async with self._call("PING"):
            return bool(await self._client.ping())

    async def probe(self) -> bool:
        """Whether the server answers a PING right now, asked past the breaker on a
        connection of its own (:meth:`dedicated_client`, the driver's retries off); an
        answer closes the breaker, like the reply to any call.

        For an owner waiting for a server that went away (the outbox worker): through
        the pool, a PING would be refused until the breaker's cooldown is over (and on
        a Cluster wait out the client's retries), and learn late that the server is
        back. A server still loading its data set answers ``LOADING``, which counts as
        not answering.

        :returns: True on PONG; False when the server is unavailable or no answer came
            within the store's call timeout.
        :raises CacheBackendError: the server answered PING with an error.
        """
        client = self.dedicated_client()
        try:
            async with asyncio.timeout(self._deadlines.timeout):
                answered = bool(await client.ping())
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.RedisClusterException,
                OSError, TimeoutError):
            return False
        except rexc.RedisError as exc:
            raise CacheBackendError("PING (probe)", self.address, _describe(exc)) from exc
        finally:
            await client.aclose()
        if answered:
            # The store's breaker: on a Cluster this reached one node, and each
            # master's breaker waits for its own calls (or its probe) to answer.
            self.breakers.success(None)
        return answered


def _cut(items: Sequence[_T], per: int) -> list[Sequence[_T]]:
    """``items`` in consecutive parts of at most ``per``."""
    return [items[i:i + per] for i in range(0, len(items), per)]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
