"""Server-side invalidation by key, by tag and in cascade.

Membership is recorded at write time, inside the scripts that write (see
``lua/lease_acquire.lua``, ``lua/store.lua``...): each key of a schema with tags is added
to ``<prefix>:~tag:{<tenant>}:<tag>`` in the same atomic step that writes it or grants its
fill lease; the same step samples 3 members and removes those whose key is gone and that
hold no fill lease, so a tag written constantly stays bounded (about a third dead at
most). Dependencies are edges recorded by :meth:`Cache.depend
<thorbis_cache.cache.core.Cache.depend>` in ``<prefix>:~deps:{<tenant>}:<body>``. All of them
carry the tenant's hash tag, so every script here touches one slot and is legal on a
Redis Cluster; none is ever found by ``KEYS`` or ``SCAN``: they are read by name only.

None of these sets, nor the work keys of an invalidation, carries a TTL: under every
supported ``maxmemory-policy`` Redis never evicts them, so eviction can drop entries
but never the record of an entry that survives. Their entries in the tenant index
(:mod:`thorbis_cache.cache.meta_sweep`) let :class:`~.sweep.MetaSweep` prune a set
once everything recorded in it has expired, and delete the work keys of an invalidation
whose caller died.

Invalidations are synchronous (the call returns when the keys are gone) and proceed in
bounded steps: each Lua call handles at most :attr:`InvalidationLimits.tag_batch`
members, or :attr:`~InvalidationLimits.cascade_keys` keys and
:attr:`~InvalidationLimits.cascade_edges` edges, so a tag of 100k keys or a cascade of
100k dependents never blocks Redis for more than a few milliseconds at a time. They run
with ``allow-oom``: a server full under ``noeviction`` still invalidates.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import Protocol

import attrs

from thorbis_cache.cache.meta_keys import MetaKeys
from thorbis_cache.errors import ConfigurationError, RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script, load_lua

__all__ = ["CacheTagInvalidator", "InvalidatesTags", "InvalidationLimits", "TagEngine"]

log = logging.getLogger(__name__)

#: Lua's ``unpack`` fails past a few thousand values; batches stay well below.
_MAX_BATCH = 4096


def _positive_batch(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= _MAX_BATCH:
        raise ConfigurationError(
            f"InvalidationLimits.{attribute.name} must be in [1, {_MAX_BATCH}], got {value!r}"
        )


@attrs.frozen(slots=True)
class InvalidationLimits:
    """How much work one server-side call may do.

    :ivar tag_batch: tag members deleted per call of ``tag_invalidate.lua``.
    :ivar cascade_keys: frontier keys handled per call of ``cascade.lua``.
    :ivar cascade_edges: dependency edges moved per call of ``cascade.lua``.
    :ivar work_ttl: seconds after its last call that the work keys of a cascade
        (frontier, visited set) are deleted by the sweep if their caller died mid-way
        (they carry no TTL: see :mod:`~thorbis_cache.cache.meta_sweep`).
    """

    tag_batch: int = attrs.field(default=256, validator=_positive_batch)
    cascade_keys: int = attrs.field(default=128, validator=_positive_batch)
    cascade_edges: int = attrs.field(default=512, validator=_positive_batch)
    work_ttl: float = 60.0


class TagEngine:
    """Runs the invalidation scripts for a cache (composed by :class:`~thorbis_cache.Cache`).

    It works on Redis key strings of one tenant at a time; the cache validates keys and
    tenants before calling it.

    :param store: the Redis adapter.
    :param prefix: the cache's key prefix.
    :param limits: the per-call bounds.
    """

    __slots__ = ("_cascade", "_depend", "_prefix", "_store", "_tag_invalidate", "limits",
                 "meta")

    def __init__(self, store: RedisStore, prefix: str,
                 limits: InvalidationLimits | None = None) -> None:
        self._store = store
        self._prefix = prefix
        self.limits = limits or InvalidationLimits()
        #: the names of the tenant indexes and their slot registries
        self.meta = MetaKeys(prefix)
        self._tag_invalidate = Script("tag_invalidate", load_lua("tag_invalidate"))
        self._cascade = Script("cascade", load_lua("cascade"))
        self._depend = Script("depend", load_lua("depend"))

    # ----------------------------------------------------------------- key names

    def tag_key(self, tenant: str, tag: str) -> str:
        """The tag set of ``tag`` for ``tenant`` (the tenant's slot)."""
        return f"{self._prefix}:~tag:{{{tenant}}}:{tag}"

    def deps_key(self, body: str) -> str:
        """The set of the keys that depend on the key of ``body`` (``{tenant}:...``)."""
        return f"{self._prefix}:~deps:{body}"

    def _work_key(self, kind: str, tenant: str) -> str:
        # A random suffix per invalidation: concurrent invalidations never share state.
        return f"{self._prefix}:~{kind}:{{{tenant}}}:{secrets.token_hex(8)}"

    # ----------------------------------------------------------------- edges

    async def depend(self, on_body: str, dependent_redis_key: str, ttl_ms: int) -> bool:
        """Record an edge; returns True when it is new. Both keys share one tenant, the
        one ``on_body`` (``{tenant}:...``) starts with."""
        tenant = on_body[1:on_body.index("}")]
        added = await self._store.run(
            self._depend,
            [self.deps_key(on_body), self.meta.index(tenant), self.meta.registry(tenant)],
            [dependent_redis_key, ttl_ms, tenant],
        )
        return bool(added)

    # ----------------------------------------------------------------- invalidation

    async def invalidate_tags(self, tenant: str, tags: Iterable[str], *, cascade: bool) -> int:
        """Delete every key recorded under ``tags`` for ``tenant`` (and, with
        ``cascade``, their dependents); returns how many keys existed."""
        deleted = 0
        frontier = self._work_key("cascade", tenant) if cascade else None
        done = False
        try:
            for tag in dict.fromkeys(tags):
                deleted += await self._drain_tag(tenant, tag, frontier)
            if frontier is not None:
                deleted += await self._run_cascade(tenant, frontier, ())
            done = True
        finally:
            # The call that empties the frontier deletes the work keys; after a failure
            # they are deleted here (or, if Redis is gone, by the sweep).
            if frontier is not None and not done:
                await self._discard(frontier)
        return deleted

    async def _drain_tag(self, tenant: str, tag: str, frontier: str | None) -> int:
        limits = self.limits
        # The drain set is per tag, not per call: what an invalidation that died
        # mid-way left there is drained by the next one instead of lingering stale.
        keys = [self.tag_key(tenant, tag), f"{self._prefix}:~drain:{{{tenant}}}:{tag}",
                self.meta.index(tenant), self.meta.registry(tenant)]
        tail: list[int] = []
        if frontier is not None:
            keys.append(frontier)
            tail.append(int(limits.work_ttl * 1000))
        deleted, pending, calls = 0, True, 0
        while True:
            gone, left, renamed = await self._store.run(
                self._tag_invalidate, keys,
                [limits.tag_batch, self._prefix, "1" if pending else "0", tenant, *tail],
            )
            deleted += int(gone)
            calls += 1
            pending = pending and not int(renamed)
            if not pending and int(left) == 0:
                break
        log.debug("tag %s of tenant %s: %d key(s) deleted in %d call(s)",
                  tag, tenant, deleted, calls)
        return deleted

    async def cascade(self, tenant: str, redis_keys: Sequence[str]) -> int:
        """Delete ``redis_keys`` of ``tenant`` and, transitively, every key that depends
        on them; cycle-safe. Returns how many keys existed."""
        frontier = self._work_key("cascade", tenant)
        done = False
        try:
            deleted = await self._run_cascade(tenant, frontier, redis_keys)
            done = True
            return deleted
        finally:
            if not done:
                await self._discard(frontier)

    async def _run_cascade(self, tenant: str, frontier: str, seeds: Sequence[str]) -> int:
        limits = self.limits
        keys = [frontier, frontier + ":v", self.meta.index(tenant), self.meta.registry(tenant)]
        head = [limits.cascade_keys, limits.cascade_edges, self._prefix,
                int(limits.work_ttl * 1000), tenant]
        deleted = 0
        # Seeds ride on the first call, in chunks so no single call takes unbounded input.
        chunks = [list(seeds[i:i + _MAX_BATCH]) for i in range(0, len(seeds), _MAX_BATCH)]
        while True:
            left, gone = await self._store.run(
                self._cascade, keys, head + (chunks.pop(0) if chunks else [])
            )
            deleted += int(gone)
            if int(left) == 0 and not chunks:
                return deleted

    async def _discard(self, frontier: str) -> None:
        # UNLINK frees a large visited set in the background instead of blocking Redis.
        # If Redis is gone the sweep deletes the work keys once work_ttl has passed: do
        # not mask the outcome of the invalidation with a cleanup failure. Their index
        # entries, if any, leave at that sweep (it finds the keys gone).
        with contextlib.suppress(RedisUnavailableError):
            await self._store.command("UNLINK", frontier, frontier + ":v")


class InvalidatesTags(Protocol):
    """What :class:`CacheTagInvalidator` calls: a :class:`~thorbis_cache.cache.core.Cache`
    (which composes this module, so it is not imported here)."""

    async def invalidate_tags(self, tenant: str, tags: Sequence[str], *,
                              cascade: bool = False, replicate: bool = True) -> int: ...


class CacheTagInvalidator:
    """The outbox worker's tag invalidator on a cache: ``await inv(tenant, tags)``.

    :param cache: the cache whose tag sets are drained.
    :param cascade: also delete the dependents of the tagged keys.
    """

    __slots__ = ("cache", "cascade")

    def __init__(self, cache: InvalidatesTags, *, cascade: bool = False) -> None:
        self.cache = cache
        self.cascade = cascade

    async def __call__(self, tenant: str, tags: Sequence[str]) -> None:
        """Invalidate ``tags`` of ``tenant``; returns when the keys are gone."""
        await self.cache.invalidate_tags(tenant, tags, cascade=self.cascade)
