"""The near cache (L1): decoded values kept in process, for schemas that opt in.

A :class:`NearCache` given to a :class:`~thorbis_cache.Cache` answers ``get`` and
``get_or_load`` for the schemas declared with ``near_ttl`` without a Redis call. It is
kept coherent by the invalidation events every cache publishes
(:mod:`thorbis_cache.cache.invalidation_events`):

* an invalidation made by this cache evicts L1 before the call returns;
* an event from another process evicts the keys it names, the entries of the tags it
  names (a tag -> keys index is kept here), or every entry of the tenant for a cascade;
* an entry never outlives its schema's ``near_ttl``, counted from *before* the Redis read
  that produced it, so a lost event costs at most ``near_ttl`` of staleness;
* while the event subscription is not confirmed (not yet, or lost) L1 is empty and is not
  filled: losing the connection flushes it, and it fills again only once resubscribed;
* a fill is dropped when an eviction that concerns it (its key, one of its tags, its
  tenant, or a flush) happened while its Redis read was in flight (generation marks), so
  a read that raced an invalidation never lands in L1.

Hence the bound: after an invalidation acknowledged by Redis, no process serves the old
value from L1 for longer than min(event delivery, ``near_ttl``).

Values are shared, not copied: every hit returns the very object that was decoded. attrs
frozen values (the usual case) are safe; a mutable container inside a value (a ``list``
field) must not be mutated by callers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from thorbis_cache.cache.metrics import CoherenceCounters
from thorbis_cache.errors import ConfigurationError


class Invalidation(Protocol):
    """What L1 reads of an invalidation (an
    :class:`~thorbis_cache.cache.invalidation_events.InvalidationEvent`, which the layer above
    this one defines)."""

    @property
    def tenant(self) -> str: ...

    @property
    def keys(self) -> Sequence[str]: ...

    @property
    def tags(self) -> Sequence[str]: ...

    @property
    def tenant_wide(self) -> bool: ...

__all__ = ["MISS", "Invalidation", "NearCache"]


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


#: What :meth:`NearCache.lookup` returns when L1 cannot answer (a value may be None).
MISS: Final = _Miss()


#: Evictions remembered for racing fills; older ones refuse every fill read before them.
_MAX_MARKS = 4096


class _Entry:
    __slots__ = ("expires_at", "tags", "tenant", "value")

    def __init__(self, value: Any, expires_at: float, tenant: str,
                 tags: tuple[str, ...]) -> None:
        self.value = value
        self.expires_at = expires_at
        self.tenant = tenant
        self.tags = tags


class NearCache:
    """A bounded LRU of decoded values, per process, for one :class:`~thorbis_cache.Cache`.

    :param max_entries: entries kept; the least recently used is evicted beyond.
    :param clock: monotonic seconds; injectable so tests can move time.
    :raises ConfigurationError: ``max_entries`` is not a positive int.
    """

    __slots__ = ("_by_tag", "_clock", "_entries", "_event_loop", "_floor", "_marks",
                 "_ready", "_ready_event", "counters", "generation", "max_entries", "owner")

    def __init__(self, max_entries: int = 10_000, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"NearCache.max_entries must be an int >= 1, "
                                     f"got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._by_tag: dict[tuple[str, str], set[str]] = {}
        self._ready = False
        self._ready_event: asyncio.Event | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        #: bumped by every eviction and flush; a fill whose read started before an
        #: eviction that concerns it is dropped
        self.generation = 0
        # What was evicted, at which generation (key, ("tag", tenant, tag), or tenant),
        # bounded: what falls out raises the floor, which refuses every older fill.
        self._marks: collections.OrderedDict[object, int] = collections.OrderedDict()
        self._floor = 0
        self.counters = CoherenceCounters()
        #: the id of the cache this L1 belongs to (one cache per near cache)
        self.owner: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, redis_key: object) -> bool:
        return redis_key in self._entries

    @property
    def ready(self) -> bool:
        """True while the event subscription is confirmed (L1 may be filled)."""
        return self._ready

    def attach(self, owner: str, counters: CoherenceCounters) -> None:
        """Bind this L1 to the cache ``owner`` and count into ``counters``.

        :raises ConfigurationError: it already belongs to another cache (its coherence
            depends on that cache's event subscription).
        """
        if self.owner is not None and self.owner != owner:
            raise ConfigurationError("a NearCache belongs to one Cache; build one per cache")
        self.owner = owner
        self.counters = counters

    def detach(self, owner: str) -> None:
        """Let go of the cache ``owner`` (closed): flushed and unconfirmed, so that
        another cache may take it (a host whose start failed tries again with the same
        L1)."""
        if self.owner == owner:
            self.set_ready(False)
            self.owner = None

    # ----------------------------------------------------------------- reads and fills

    def lookup(self, redis_key: str) -> Any:
        """The value of ``redis_key`` if L1 holds a live one, else :data:`MISS`."""
        entry = self._entries.get(redis_key)
        if entry is None:
            return MISS
        if entry.expires_at <= self._clock():
            self._drop(redis_key)
            self.counters.near_evictions += 1
            return MISS
        self._entries.move_to_end(redis_key)
        return entry.value

    def begin(self) -> tuple[int, float]:
        """Mark the start of a Redis read meant to fill L1: (generation, clock).

        Pass the result to :meth:`put`; the entry's lifetime counts from here.
        """
        return self.generation, self._clock()

    def put(self, redis_key: str, value: Any, tenant: str, tags: tuple[str, ...],
            near_ttl: float, started: tuple[int, float]) -> bool:
        """Keep ``value`` for at most ``near_ttl`` seconds from ``started``.

        :param started: what :meth:`begin` returned before the read of ``value``.
        :returns: False (nothing kept) when the subscription is not confirmed or an
            eviction happened since ``started``.
        """
        generation, t0 = started
        if not self._ready or self._floor > generation:
            return False
        if generation != self.generation:
            marks = self._marks
            if marks.get(redis_key, 0) > generation or marks.get(tenant, 0) > generation:
                return False
            for tag in tags:
                if marks.get(("tag", tenant, tag), 0) > generation:
                    return False
        if redis_key in self._entries:
            self._drop(redis_key)
        self._entries[redis_key] = _Entry(value, t0 + near_ttl, tenant, tags)
        for tag in tags:
            self._by_tag.setdefault((tenant, tag), set()).add(redis_key)
        if len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.counters.near_evictions += 1
        return True

    # ----------------------------------------------------------------- evictions

    def evict_keys(self, redis_keys: Iterable[str]) -> int:
        """Remove ``redis_keys``; returns how many were held."""
        self.generation += 1
        removed = 0
        for rk in redis_keys:
            self._mark(rk)
            if rk in self._entries:
                self._drop(rk)
                removed += 1
        self.counters.near_evictions += removed
        return removed

    def evict_tags(self, tenant: str, tags: Iterable[str]) -> int:
        """Remove every entry of ``tenant`` written under one of ``tags``."""
        self.generation += 1
        removed = 0
        for tag in tags:
            self._mark(("tag", tenant, tag))
            for rk in tuple(self._by_tag.get((tenant, tag), ())):
                self._drop(rk)
                removed += 1
        self.counters.near_evictions += removed
        return removed

    def evict_tenant(self, tenant: str) -> int:
        """Remove every entry of ``tenant`` (after a cascade: its dependents are not
        known by name here)."""
        removed = self.evict_keys([rk for rk, e in self._entries.items() if e.tenant == tenant])
        self._mark(tenant)
        return removed

    def flush(self) -> None:
        """Remove everything."""
        self.generation += 1
        self._floor = self.generation
        self._marks.clear()
        self.counters.near_evictions += len(self._entries)
        self.counters.near_flushes += 1
        self._entries.clear()
        self._by_tag.clear()

    def _mark(self, what: object) -> None:
        marks = self._marks
        marks[what] = self.generation
        marks.move_to_end(what)
        if len(marks) > _MAX_MARKS:
            _, generation = marks.popitem(last=False)
            self._floor = max(self._floor, generation)

    def _drop(self, redis_key: str) -> None:
        entry = self._entries.pop(redis_key)
        for tag in entry.tags:
            keys = self._by_tag.get((entry.tenant, tag))
            if keys is not None:
                keys.discard(redis_key)
                if not keys:
                    del self._by_tag[(entry.tenant, tag)]

    # ----------------------------------------------------------------- subscription state

    def set_ready(self, ready: bool) -> None:
        """The event subscription was confirmed (True) or lost (False); either way L1 is
        flushed, since events may have been missed in between."""
        self.flush()
        self._ready = ready
        event = self._ready_event
        if event is None:
            return  # nobody waited yet: :meth:`_event` makes one in the right state
        if not ready:
            event.clear()
            return
        # Waiters left on a loop that has stopped cannot be woken ("Event loop is
        # closed"); those of the running loop are.
        with contextlib.suppress(RuntimeError):
            event.set()

    async def wait_ready(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the subscription; returns :attr:`ready`."""
        if not self._ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event().wait(), wait)
        return self._ready

    def _event(self) -> asyncio.Event:
        # One per event loop: an asyncio.Event waited on from one loop cannot be waited
        # on from the next (a host that moves from loop to loop, tests/test_successive_loops.py).
        loop = asyncio.get_running_loop()
        if self._ready_event is None or self._event_loop is not loop:
            self._ready_event = asyncio.Event()
            self._event_loop = loop
            if self._ready:
                self._ready_event.set()
        return self._ready_event

    # ----------------------------------------------------------------- events

    def apply(self, event: Invalidation) -> int:
        """Evict what an invalidation event names; returns how many entries went."""
        removed = self.evict_keys(event.keys)
        if event.tags:
            removed += self.evict_tags(event.tenant, event.tags)
        if event.tenant_wide:
            removed += self.evict_tenant(event.tenant)
        return removed
