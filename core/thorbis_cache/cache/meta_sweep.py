"""The tenant indexes that bound TTL-less invalidation sets, and their sweep.

Tag sets, drain sets, dependency sets and cascade work keys carry no TTL, so that no
supported ``maxmemory-policy`` (``noeviction``, ``volatile-*``) ever evicts one while an
entry it names survives (see ``docs/architecture.md``, "Memory eviction"). Something else
must then remove what is dead in them:

* the scripts that record a member (``lua/_record_tags.lua``, ``lua/depend.lua``,
  ``lua/tag_invalidate.lua``, ``lua/cascade.lua``) keep a **tenant index**
  ``<prefix>:~meta:{<tenant>}``, a sorted set in the tenant's slot: one entry per set,
  scored with the time (server clock, ms) after which everything recorded in it so far
  has expired -- raised with ``ZADD GT``, never lowered;
* a tenant index is listed in the **registry of its slot**,
  ``<prefix>:~tenants:{<slot tag>}``, where the slot tag is a 5-character hash tag
  (:func:`slot_tag`) chosen so the registry lives in the tenant's own slot: the script
  that creates an index registers it in the same atomic step, and the sweep's script
  unregisters it in the step that empties it, so no race can leave an index unlisted;
* :class:`MetaSweep` walks the 16384 registries in bounded pages (an existence probe
  per page of a few hundred slots of one master, then ``ZRANGE BYLEX`` pages of
  tenants -- never ``SCAN``), and for each tenant runs
  ``lua/meta_sweep.lua`` on the entries that are due: dead members (key gone, no fill
  lease) leave their set in ``SSCAN`` batches, a set still holding live members is due
  again when the longest-lived expires, a set that is gone leaves the index, and a
  cascade work key whose caller died is deleted.

Every Redis call the sweep makes is bounded (a batch of members, a page of tenants, a
probe of a few hundred keys), and :meth:`MetaSweep.sweep_once` makes at most ``budget``
of them, resuming where it stopped: it never blocks Redis, and it can be paced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.eviction import check_eviction_policy
from thorbis_cache.cache.meta_keys import SLOTS, MetaKeys, key_slot, slot_tag
from thorbis_cache.errors import CacheBackendError, ConfigurationError, RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script, load_lua

if TYPE_CHECKING:
    from thorbis_cache.cache.protocol import CacheCore

__all__ = ["SLOTS", "MetaKeys", "MetaSweep", "SweepReport", "key_slot", "slot_tag"]

log = logging.getLogger(__name__)

@attrs.frozen(slots=True)
class SweepReport:
    """What one :meth:`MetaSweep.sweep_once` did.

    :ivar calls: Redis calls made (each one bounded).
    :ivar members_removed: dead members removed from tag, drain and dependency sets.
    :ivar entries_removed: index entries removed (their set or work key was gone, or
        deleted as a cascade leftover).
    :ivar tenants_removed: tenants whose index was gone, removed from their registry.
    :ivar pass_complete: the pass over every slot ended during this call.
    """

    calls: int
    members_removed: int
    entries_removed: int
    tenants_removed: int
    pass_complete: bool


@attrs.define(slots=True)
class _Tally:
    calls: int = 0
    members: int = 0
    entries: int = 0
    tenants: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MetaSweep:
    """Prunes the TTL-less invalidation sets of every tenant, in bounded steps.

    One sweeper per deployment is enough (the outbox worker's); several are harmless,
    each step being one atomic script. Close it with :meth:`aclose`.

    :param store: the Redis adapter.
    :param prefix: the cache's key prefix.
    :param batch: members examined per call (``SSCAN`` ``COUNT``).
    :param budget: Redis calls per :meth:`sweep_once` by default.
    :param probe: slot registries probed per call (on a Cluster, a page of slots of one
        master).
    :param tenant_page: tenants read per page of a registry.
    :param min_delay: seconds before a swept set that still has live members is swept
        again, at the soonest.
    :param recheck: seconds before a set is swept again when a live member has no TTL
        (foreign or legacy data: its expiry is unknown).
    """

    def __init__(self, store: RedisStore, prefix: str = "tc", *, batch: int = 256,
                 budget: int = 512, probe: int = 256, tenant_page: int = 64,
                 min_delay: float = 1.0, recheck: float = 3600.0) -> None:
        if min(batch, budget, probe, tenant_page) < 1:
            raise ConfigurationError(
                "MetaSweep: batch, budget, probe and tenant_page must be at least 1, got "
                f"{batch}, {budget}, {probe}, {tenant_page}")
        self._store = store
        self.keys = MetaKeys(prefix)
        self.batch = batch
        self.budget = budget
        self.probe = probe
        self.tenant_page = tenant_page
        self.min_delay_ms = max(1, int(min_delay * 1000))
        self.recheck_ms = max(1, int(recheck * 1000))
        self._sweep = Script("meta_sweep", load_lua("meta_sweep"))
        self._probe = Script("meta_probe", load_lua("meta_probe"))
        self._work: AsyncGenerator[int, None] | None = None
        self._tally = _Tally()
        self._next_slot = 0

    @classmethod
    def for_cache(cls, cache: CacheCore, **options: Any) -> MetaSweep:
        """The sweeper of ``cache``'s store and prefix (``options``: see the class)."""
        return cls(cache.store, cache.settings.prefix, **options)

    async def aclose(self) -> None:
        """Abandon a pass in progress (the next :meth:`sweep_once` starts a new one, from
        the page of slots this one had reached)."""
        work, self._work = self._work, None
        if work is not None:
            await work.aclose()

    # ----------------------------------------------------------------- driving

    async def sweep_once(self, budget: int | None = None) -> SweepReport:
        """Advance the current pass (or start one) by at most ``budget`` Redis calls.

        A pass visits every slot registry, every registered tenant and every index entry
        that is due. It resumes where the previous call stopped; after an error it
        restarts at the slot where it failed.

        :param budget: calls allowed (default: the sweeper's ``budget``); one step may
            exceed it by the probes of one page of slots.
        :raises RedisUnavailableError: Redis cannot be reached (nothing is lost: the
            next call resumes).
        """
        limit = self.budget if budget is None else budget
        tally = self._tally = _Tally()
        complete = False
        if self._work is None:
            self._work = self._pass()
        try:
            while tally.calls < limit:
                try:
                    tally.calls += await anext(self._work)
                except StopAsyncIteration:
                    self._work, complete = None, True
                    break
        except BaseException:
            self._work = None  # an exception closed the generator
            raise
        return SweepReport(tally.calls, tally.members, tally.entries, tally.tenants,
                           complete)

    async def sweep_forever(self, interval: float = 60.0, pause: float = 0.05) -> None:
        """Sweep until cancelled: a pass in steps of ``budget`` calls ``pause`` seconds
        apart, then ``interval`` seconds of rest; the server's eviction policy is
        checked again after every pass (a refused policy set at run time is logged as
        an error: the invalidation sets may then be evicted). Redis being down or
        answering with an error is logged and retried after ``interval``.
        """
        try:
            await self._sweep_forever(interval, pause, check_eviction_policy)
        finally:
            await self.aclose()

    async def _sweep_forever(self, interval: float, pause: float,
                             check: Callable[[RedisStore, str], Awaitable[str]]) -> None:
        while True:
            try:
                report = await self.sweep_once()
                if report.pass_complete:
                    await check(self._store, self.keys.prefix)
            except ConfigurationError as exc:
                log.error("%s", exc)
                await asyncio.sleep(interval)
                continue
            except RedisUnavailableError as exc:
                log.warning("tenant index sweep: %s; retrying in %.0fs", exc, interval)
                await asyncio.sleep(interval)
                continue
            except CacheBackendError:
                log.exception("tenant index sweep failed; retrying in %.0fs", interval)
                await asyncio.sleep(interval)
                continue
            await asyncio.sleep(interval if report.pass_complete else pause)

    # ----------------------------------------------------------------- one pass

    async def _pass(self) -> AsyncGenerator[int, None]:
        """Yield the number of Redis calls of each step of one pass over every slot."""
        ranges = await self._slot_ranges()
        if self._store.is_cluster:
            yield 1
        for first, last in ranges:
            for start in range(max(first, self._next_slot), last + 1, self.probe):
                self._next_slot = start
                occupied, calls = await self._occupied(start, last)
                yield calls
                for registry in occupied:
                    async for calls in self._registry(registry):
                        yield calls
        self._next_slot = 0

    async def _slot_ranges(self) -> list[tuple[int, int]]:
        if not self._store.is_cluster:
            return [(0, SLOTS - 1)]
        # Pages of slots served by one master: one probe call reads a whole page.
        return sorted(await self._store.cluster_slots())

    async def registered_tenants(self, missed: list[RedisUnavailableError] | None = None
                                 ) -> AsyncIterator[str]:
        """Every tenant listed in a slot registry (every tenant with a tag or dependency
        set), page by page: bounded calls, no SCAN. For what must reach every tenant,
        such as flushing a schema's tags after change capture lost track.

        :param missed: when given, a Cluster master's slots that cannot be read (its
            shard out of reach) are skipped and the error appended here, so that the
            other shards' tenants are still listed; otherwise the error is raised.
        :raises RedisUnavailableError: see ``missed``; or the slot map cannot be read.
        """
        for first, last in await self._slot_ranges():
            try:
                for start in range(first, last + 1, self.probe):
                    for registry in (await self._occupied(start, last))[0]:
                        async for page in self._pages(registry):
                            for tenant in page:
                                yield tenant
            except RedisUnavailableError as exc:
                if missed is None:
                    raise
                missed.append(exc)

    async def _occupied(self, start: int, last: int) -> tuple[list[str], int]:
        """The existing registries of the page of slots from ``start`` (one master's,
        at most ``probe`` of them, not past ``last``), and the calls it took."""
        keys = [self.keys.registry_of_slot(s)
                for s in range(start, min(start + self.probe, last + 1))]
        try:
            return await self._probe_page(keys), 1
        except RedisUnavailableError:
            raise
        except CacheBackendError:
            # A slot of the page moved to another master during the pass.
            found = await asyncio.gather(*(self._probe_page([k]) for k in keys))
            return [k for k, hit in zip(keys, found) if hit], 1 + len(keys)

    async def _pages(self, registry: str) -> AsyncIterator[list[str]]:
        """The tenants of ``registry``, one ``ZRANGE`` page (one call) at a time: BYLEX
        pages from the last tenant seen, stable while tenants come and go."""
        after = "-"
        while True:
            page = [_text(raw) for raw in await self._store.command(
                "ZRANGE", registry, after, "+", "BYLEX", "LIMIT", 0, self.tenant_page)]
            yield page
            if len(page) < self.tenant_page:
                return
            after = "(" + page[-1]

    async def _probe_page(self, keys: list[str]) -> list[str]:
        """The registries of ``keys`` (one master's slots) that exist."""
        positions = await self._store.run(self._probe, keys[:1], keys[1:])
        return [keys[int(p) - 1] for p in positions]

    async def _registry(self, registry: str) -> AsyncIterator[int]:
        async for page in self._pages(registry):
            yield 1
            for tenant in page:
                async for calls in self._tenant(registry, tenant):
                    yield calls

    async def _tenant(self, registry: str, tenant: str) -> AsyncIterator[int]:
        keys = [self.keys.index(tenant), registry]
        current, cursor, longest = "", "0", 0
        while True:
            reply = await self._store.run(self._sweep, keys, [
                tenant, self.keys.prefix, self.batch, current, cursor, longest,
                self.min_delay_ms, self.recheck_ms,
            ])
            # The generator only runs inside sweep_once: this is that call's tally.
            tally = self._tally
            swept, cursor = _text(reply[0]), _text(reply[1])
            tally.members += int(reply[2])
            tally.entries += int(reply[4])
            tally.tenants += int(reply[5])
            yield 1
            if not swept:
                return
            if cursor == "0":
                current, longest = "", 0
            else:
                current, longest = swept, int(reply[3])
