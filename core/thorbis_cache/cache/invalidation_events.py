"""Invalidation events: published after every invalidation, received by near caches.

Every invalidation a :class:`~thorbis_cache.Cache` makes (``delete``, ``invalidate``,
``invalidate_tags``, hence the outbox worker; and ``set`` of a near-cached schema)
PUBLISHes one small JSON message on ``<prefix>:~events`` *after* Redis acknowledged it::

    {"v": 1, "tenant": "acme", "keys": ["tc:{acme}:hs.customer:1"], "tags": [],
     "tenant_wide": false, "origin": "<cache id>"}

``tenant_wide`` is set by a cascade (its dependents are not known by name): receivers
drop every entry of the tenant. Publishing never fails the invalidation: an error is
logged and counted, and the near cache's ``near_ttl`` bounds what a lost event costs.

:class:`EventSubscriber` listens on a dedicated ``redis.asyncio`` connection (this is an
adapter module: it imports ``redis``). On a Cluster a plain PUBLISH reaches the
subscribers of every node, so it subscribes on one node (the first startup node). It
reports the subscription confirmed and lost, so the near cache flushes on both, and it
reconnects with backoff. The driver's silent reconnect is disabled: a reconnection must
be seen, since events published meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import redis.exceptions as rexc

from thorbis_cache.cache.metrics import CoherenceCounters
from thorbis_cache.cache.settings import CacheSettings
from thorbis_cache.errors import CacheBackendError
from thorbis_cache.store.event_loops import refuse_if_still_running
from thorbis_cache.store.redis_store import RedisStore

__all__ = [
    "EVENT_VERSION",
    "Coherence",
    "EventPublisher",
    "EventSubscriber",
    "InvalidationEvent",
    "events_channel",
]

if TYPE_CHECKING:
    from thorbis_cache.cache.near import NearCache

log = logging.getLogger(__name__)

EVENT_VERSION = 1


def events_channel(prefix: str) -> str:
    """The pub/sub channel of a cache's invalidation events."""
    return f"{prefix}:~events"


@attrs.frozen(slots=True)
class InvalidationEvent:
    """One invalidation, as published.

    :ivar tenant: the tenant whose keys are gone.
    :ivar keys: full Redis keys deleted.
    :ivar tags: tags of ``tenant`` whose members were deleted.
    :ivar tenant_wide: a cascade: unnamed dependents of ``tenant`` went too.
    :ivar origin: the id of the cache that published it.
    """

    tenant: str
    keys: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tenant_wide: bool = False
    origin: str = ""

    def encode(self) -> bytes:
        """The message published (compact JSON)."""
        return json.dumps({
            "v": EVENT_VERSION, "tenant": self.tenant, "keys": list(self.keys),
            "tags": list(self.tags), "tenant_wide": self.tenant_wide, "origin": self.origin,
        }, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> InvalidationEvent:
        """Parse a message.

        :raises ValueError: not an event of a version this code reads.
        """
        try:
            raw = json.loads(data)
            if raw.get("v") != EVENT_VERSION:
                raise ValueError(f"event version {raw.get('v')!r}, expected {EVENT_VERSION}")
            return cls(str(raw["tenant"]), tuple(map(str, raw.get("keys", ()))),
                       tuple(map(str, raw.get("tags", ()))), bool(raw.get("tenant_wide")),
                       str(raw.get("origin", "")))
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not an invalidation event: {exc}") from exc


class EventPublisher:
    """Publishes a cache's invalidation events; never raises.

    :param store: where to PUBLISH (any node of a Cluster: Redis forwards it).
    :param channel: see :func:`events_channel`.
    :param counters: ``events_published`` / ``event_publish_errors`` go here.
    """

    __slots__ = ("_store", "channel", "counters")

    def __init__(self, store: RedisStore, channel: str, counters: CoherenceCounters) -> None:
        self._store = store
        self.channel = channel
        self.counters = counters

    async def publish(self, *events: InvalidationEvent) -> bool:
        """PUBLISH ``events`` in one round trip, over the multiplexed connections (a
        worker's batch announces every tenant that wrote); returns False (logged and
        counted) if they could not be sent."""
        try:
            # Any node of a Cluster broadcasts a message: each goes through the node of
            # its tenant's slot, so one tenant's events keep their order.
            await self._store.publish_each(self.channel, [
                (f"{self.channel}:{{{event.tenant}}}", event.encode()) for event in events])
        except CacheBackendError as exc:
            self.counters.event_publish_errors += len(events)
            log.warning("could not publish the invalidation of %d key(s) and tags %s of "
                        "tenant(s) %s: %s; near caches elsewhere expire it within near_ttl",
                        sum(len(event.keys) for event in events),
                        sorted({tag for event in events for tag in event.tags}),
                        ", ".join(sorted({event.tenant for event in events})), exc)
            return False
        self.counters.events_published += len(events)
        return True


class EventSubscriber:
    """Listens to a cache's invalidation events until closed; owned by the cache.

    :param store: the cache's store (where to connect).
    :param channel: see :func:`events_channel`.
    :param on_event: called with each event received.
    :param on_ready: called with True once subscribed, with False when the connection is
        lost (or before a reconnection).
    :param health_interval: seconds of silence after which a PING is sent; the
        connection is declared lost after three such intervals without any reply.
    """

    def __init__(
        self,
        store: RedisStore,
        channel: str,
        on_event: Callable[[InvalidationEvent], None],
        on_ready: Callable[[bool], None],
        *,
        health_interval: float = 1.0,
    ) -> None:
        self._store = store
        self.channel = channel
        self._on_event = on_event
        self._on_ready = on_ready
        self.health_interval = health_interval
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None

    @property
    def running(self) -> bool:
        """True while the listening task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start listening (in the running loop); idempotent.

        A subscriber left on a loop that has stopped (the host moved to another loop)
        heard nothing since: L1 is flushed and marked unconfirmed, and a new subscriber
        starts on the running loop.

        :raises EventLoopInUseError: the subscriber runs on another loop, still running
            (in another thread); nothing is changed.
        """
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        if task is not None and task.get_loop() is not loop:
            if not task.done():
                refuse_if_still_running(task.get_loop(), self._store.address)
            self._pubsub = None
            self._on_ready(False)
        self._task = loop.create_task(self._run(), name=f"thorbis-events:{self.channel}")

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drop_connection(self) -> None:
        """Close the current connection (as a network failure would); the subscriber
        reports the loss and reconnects. For tests and operational drills."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            await pubsub.connection.disconnect()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            _raise_if_cancelled()
            client = self._store.dedicated_client()
            pubsub = client.pubsub()
            self._pubsub = pubsub
            try:
                await pubsub.subscribe(self.channel)
                await self._listen(pubsub)
            except (rexc.RedisError, OSError, _Silent) as exc:
                log.warning("invalidation events on %s lost (%s); near cache flushed, "
                            "reconnecting", self.channel, exc or type(exc).__name__)
            finally:
                self._pubsub = None
                self._on_ready(False)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _listen(self, pubsub: Any) -> None:
        interval = self.health_interval
        heard = time.monotonic()
        pinged = subscribed = False
        while True:
            _raise_if_cancelled()
            msg = await pubsub.get_message(timeout=interval)
            now = time.monotonic()
            if msg is None:
                if now - heard > 3 * interval:
                    raise _Silent(f"no reply for {now - heard:.1f}s")
                if not pinged and now - heard > interval:
                    await pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            kind = msg.get("type")
            if kind == "subscribe":
                if subscribed:
                    # redis-py reconnects and resubscribes by itself when it finds the
                    # connection closed between two reads: events were missed meanwhile,
                    # so this is a loss like any other.
                    log.warning("invalidation events on %s lost (the driver reconnected); "
                                "near cache flushed", self.channel)
                    self._on_ready(False)
                subscribed = True
                self._on_ready(True)
            elif kind == "message":
                try:
                    event = InvalidationEvent.decode(msg["data"])
                except ValueError as exc:
                    log.warning("ignoring a message on %s: %s", self.channel, exc)
                    continue
                self._on_event(event)


class _Silent(Exception):
    """The subscription connection stopped answering."""


def _raise_if_cancelled() -> None:
    """End the subscriber's task if it was asked to end and a driver call swallowed the
    request. redis-py sends under ``asyncio.wait_for``, which on Python 3.11 can return
    normally though its caller was cancelled meanwhile (found as a host would: a loop
    per request, ended while the SUBSCRIBE was sent; the subscriber went on pinging and
    ``asyncio.run`` never returned). The task still says it is being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Coherence:
    """What a cache does around its invalidations and its near cache: evict L1, publish
    events, and own the subscriber that applies the others' events to L1.

    :param store: the cache's store.
    :param settings: the cache's settings (prefix, ``publish_events``, health interval).
    :param counters: the cache's coherence counters.
    :param near: the cache's L1, if any (bound to this cache here).
    """

    def __init__(self, store: RedisStore, settings: CacheSettings,
                 counters: CoherenceCounters, near: NearCache | None) -> None:
        #: identifies this cache's own events (ignored when they come back)
        self.origin = secrets.token_hex(8)
        self._store = store
        self._settings = settings
        self._counters = counters
        self.near = near
        if near is not None:
            near.attach(self.origin, counters)
        self.publisher = EventPublisher(store, events_channel(settings.prefix), counters)
        self.subscriber: EventSubscriber | None = None
        self._closed = False

    async def announce(self, tenant: str, keys: Sequence[str], tags: Sequence[str] = (),
                       *, tenant_wide: bool = False) -> None:
        """After an invalidation Redis acknowledged: evict this process's L1, then tell
        the other processes (never raises)."""
        await self._announce(
            [InvalidationEvent(tenant, tuple(keys), tuple(tags), tenant_wide, self.origin)])

    async def announce_deletes(self, by_tenant: Mapping[str, Sequence[str]]) -> None:
        """:meth:`announce` of each tenant's deleted keys, the events published together
        (a worker's batch deletes keys of every tenant that wrote)."""
        await self._announce([InvalidationEvent(tenant, tuple(keys), (), False, self.origin)
                              for tenant, keys in by_tenant.items()])

    async def _announce(self, events: Sequence[InvalidationEvent]) -> None:
        if self.near is not None:
            for event in events:
                self.near.apply(event)
        if self._settings.publish_events and events:
            await self.publisher.publish(*events)

    def begin(self, near: NearCache) -> tuple[int, float]:
        """:meth:`NearCache.begin`, starting the subscriber on first use (and again on
        the first use from another event loop than its own); after :meth:`aclose`, L1
        stays unconfirmed and reads go to Redis."""
        if self._closed:
            return near.begin()
        if self.subscriber is None:
            self.subscriber = EventSubscriber(
                self._store, self.publisher.channel, self._on_event, near.set_ready,
                health_interval=self._settings.events_health_interval,
            )
        self.subscriber.start()
        return near.begin()

    async def ready(self, wait: float) -> bool:
        """Start the subscriber if needed; wait until subscribed (False on timeout, or
        at once after :meth:`aclose`)."""
        if self.near is None or self._closed:
            return False
        self.begin(self.near)
        return await self.near.wait_ready(wait)

    def _on_event(self, event: InvalidationEvent) -> None:
        if event.origin == self.origin or self.near is None:
            return  # our own: L1 was evicted before the invalidation returned
        self._counters.events_received += 1
        self.near.apply(event)

    async def aclose(self) -> None:
        """Stop the subscriber and let go of L1 (flushed): it is not started again by
        a read of this cache after it (found as a host would: a handler still holding
        the cache past the app's close restarted it, a task nothing would close), and
        another cache may take L1 (a start that failed, tried again)."""
        self._closed = True
        if self.subscriber is not None:
            await self.subscriber.aclose()
        if self.near is not None:
            self.near.detach(self.origin)
