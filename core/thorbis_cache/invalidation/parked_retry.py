"""The worker's tries of parked changes: one due tenant at a time, once its shard answers.

Changes whose Cluster shard did not answer while the others did wait in
``thorbis.parked_changes`` (:mod:`~thorbis_cache.postgres.parked`), each tenant with
its retry time. At most every :data:`LOOK_EVERY` seconds the worker looks for due
tenants. For each, in a transaction that locks its schedule:

* while its master's circuit breaker is open, the next try is put off (the wait
  doubles up to :data:`~thorbis_cache.postgres.parked.MAX_RETRY`), nothing of the
  tenant's changes is read or written, and its shard is watched beside the batches
  (:class:`ShardProbes`: asked every :data:`PROBE_EVERY` seconds through its breaker;
  the answer closes it and makes the tenant due at once). Through a batch, the
  breaker's probe call to a silent master would hold every tenant's changes for a
  call's timeout;
* otherwise up to a batch of its changes, oldest first, is taken and applied as any
  batch (:func:`~thorbis_cache.invalidation.batch.apply_changes`, under a savepoint).
  Once none is left the tenant is forgotten; otherwise the rest is due at once. If
  the shard does not answer, the savepoint is rolled back: the changes stay parked,
  and the tenant is put off.

A failure that is not the shard's (a tag invalidator error) counts an attempt on the
changes taken, as a failed outbox batch does, so that a change that can never be
applied is dead-lettered after ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from thorbis_cache.cache.meta_keys import MetaKeys
from thorbis_cache.errors import CacheBackendError, RedisUnavailableError
from thorbis_cache.invalidation.batch import (
    Apply,
    BatchResult,
    WorkerMetrics,
    apply_and_count,
    count_attempt,
)
from thorbis_cache.invalidation.lacking_rules import RulesChanged
from thorbis_cache.postgres import outbox, parked

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.store.redis_store import RedisStore

__all__ = ["LOOK_EVERY", "PROBE_EVERY", "TENANTS_PER_LOOK", "ShardProbes", "retry_parked"]

log = logging.getLogger(__name__)

#: Seconds between two looks for due tenants (one indexed query of an empty table
#: when nothing is parked).
LOOK_EVERY = 0.25
#: Seconds between two calls to a master whose breaker is open, while tenants of it
#: wait with parked changes (each a probe through the breaker, or refused at once
#: while it cools down): how soon a shard that answers again is found.
PROBE_EVERY = 0.5
#: Due tenants whose shard is still away looked at in one look, at most (a shard of
#: many tenants is asked about each in turn, refused at once by its open breaker).
TENANTS_PER_LOOK = 100

class ShardProbes:
    """Watches, beside the worker's batches, the masters whose breaker opened while
    tenants of theirs have parked changes: one task per master asks it (``EXISTS`` of a
    tenant's key, let through as its breaker's probe, or refused at once while the
    breaker cools down) every :data:`PROBE_EVERY` seconds until it answers; the answer
    closes the breaker, and every tenant waiting on that master is due at once.

    :param store: the worker's cache's store.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, set[str]] = {}
        self._answered: set[str] = set()

    def start(self, tenant: str, route: str) -> None:
        """Wait for the master serving ``route`` (a key of ``tenant``) to answer,
        watching it unless it is watched already."""
        master = self._store.master_name(route)
        if master is None:  # no master serves the slot now: the next try finds one
            return
        self._waiting.setdefault(master, set()).add(tenant)
        watch = self._watches.get(master)
        if watch is None or watch.done():
            self._watches[master] = asyncio.get_running_loop().create_task(
                self._watch(master, route), name=f"thorbis-shard-probe:{master}")

    def answered(self) -> list[str]:
        """The tenants whose shard answered since the last call (their tries are due
        at once: their schedules were put off while their shard was watched)."""
        tenants, self._answered = sorted(self._answered), set()
        return tenants

    async def _watch(self, master: str, route: str) -> None:
        while True:
            try:
                await self._store.command("EXISTS", route, route=route)
            except CacheBackendError:  # its breaker counted it
                await asyncio.sleep(PROBE_EVERY)
                continue
            self._answered.update(self._waiting.pop(master, ()))
            return

    async def aclose(self) -> None:
        """Stop watching."""
        watches, self._watches = list(self._watches.values()), {}
        self._waiting.clear()
        for watch in watches:
            watch.cancel()
        for watch in watches:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch


async def retry_parked(conn: Any, *, cache: Cache, batch_size: int, apply: Apply,
                       rules_changed: Callable[[Any], Awaitable[bool]],
                       metrics: WorkerMetrics, probes: ShardProbes) -> BatchResult:
    """Look at the due tenants until one's shard answers: apply up to ``batch_size`` of
    its changes (the batch's result), or put off those still away (an empty result).

    :raises Exception: applying failed otherwise than by the shard being away (an
        attempt is counted on the changes taken, which stay parked).
    """
    answered = probes.answered()
    if answered:
        await parked.due_now(conn, answered)
    for _ in range(TENANTS_PER_LOOK):
        result = await _try_one(conn, cache, batch_size, apply, rules_changed, metrics,
                                probes)
        if result is None or result.claimed:
            return result or BatchResult()
    return BatchResult()


async def _try_one(conn: Any, cache: Cache, batch_size: int, apply: Apply,
                   rules_changed: Callable[[Any], Awaitable[bool]],
                   metrics: WorkerMetrics, probes: ShardProbes) -> BatchResult | None:
    """One due tenant: its batch's result (empty when put off); None when none is due."""
    rows: list[outbox.OutboxRow] = []
    claimed = 0.0
    try:
        async with conn.transaction():
            due = await parked.due_tenant(conn)
            if due is None:
                return None
            try:
                # '': changes of every tenant (a TRUNCATE), of no one shard
                route = MetaKeys(cache.settings.prefix).index(due.tenant)
                if due.tenant and cache.store.breakers.route_suspect(route):
                    probes.start(due.tenant, route)
                    raise RedisUnavailableError("EXISTS", cache.store.address,
                                                "its master's circuit is open")
                async with conn.transaction():  # a savepoint: rolled back if the shard goes
                    rows = await parked.claim_parked(conn, due.tenant, batch_size)
                    claimed = time.perf_counter()
                    result = await apply_and_count(conn, rows, apply, rules_changed)
            except RedisUnavailableError as exc:
                wait = await parked.retry_later(conn, due, str(exc))
                metrics.parked_tries += 1
                log.debug("parked changes of tenant %r: its shard is still away (%s); "
                          "next try in %.1fs", due.tenant, exc, wait)
                return BatchResult()
            except RulesChanged:  # rolled back, and taken again under the new rules
                return BatchResult()  # (the tenant stays due)
            if result.parked:  # some also name a tenant whose shard is away
                await parked.retry_later(conn, due, "a change names a tenant out of reach")
            elif await parked.forget_if_empty(conn, due.tenant):
                log.info("every parked change of tenant %r applied", due.tenant)
    except Exception as exc:
        await count_attempt(conn, [row.id for row in rows], exc, "thorbis.parked_changes")
        raise
    if rows:
        metrics.count(result, rows, claimed)
        metrics.parked_applied += len(result.processed)
    return result
