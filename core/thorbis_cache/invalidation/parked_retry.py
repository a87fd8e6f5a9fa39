"""The worker's tries of parked changes: one due tenant at a time, its shard asked first.

Changes whose Cluster shard did not answer while the others did wait in
``thorbis.parked_changes`` (:mod:`~thorbis_cache.postgres.parked`), each tenant with
its retry time. At most every :data:`LOOK_EVERY` seconds the worker looks for due
tenants. For each, in a transaction that locks its schedule:

* its shard is asked first (``EXISTS`` of the tenant's index key, under its master's
  breaker: refused at once while that is open). Still away: the next try is put off
  (the wait doubles up to :data:`~thorbis_cache.postgres.parked.MAX_RETRY`) and
  nothing of the tenant's changes is read or written;
* it answers: up to a batch of its changes, oldest first, is taken and applied as any
  batch (:func:`~thorbis_cache.invalidation.batch.apply_changes`, under a savepoint).
  Once none is left the tenant is forgotten; otherwise the rest is due at once. If
  the shard is lost again meanwhile, the savepoint is rolled back: the changes stay
  parked, and the tenant is put off.

A failure that is not the shard's (a tag invalidator error) counts an attempt on the
changes taken, as a failed outbox batch does, so that a change that can never be
applied is dead-lettered after ``max_attempts``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from thorbis_cache.cache.meta_keys import MetaKeys
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.batch import BLAMELESS, BatchResult, WorkerMetrics, applied_rows
from thorbis_cache.invalidation.lacking_rules import RulesChanged
from thorbis_cache.postgres import outbox, parked

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache

__all__ = ["LOOK_EVERY", "TENANTS_PER_LOOK", "retry_parked"]

log = logging.getLogger(__name__)

#: Seconds between two looks for due tenants (one indexed query of an empty table
#: when nothing is parked).
LOOK_EVERY = 0.25
#: Due tenants whose shard is still away looked at in one look, at most (a shard of
#: many tenants is asked about each in turn, refused at once by its open breaker).
TENANTS_PER_LOOK = 100

Apply = Callable[[Any, Sequence[outbox.OutboxRow]], Awaitable[BatchResult]]


async def retry_parked(conn: Any, *, cache: Cache, batch_size: int, apply: Apply,
                       rules_changed: Callable[[Any], Awaitable[bool]],
                       metrics: WorkerMetrics) -> BatchResult:
    """Look at the due tenants until one's shard answers: apply up to ``batch_size`` of
    its changes (the batch's result), or put off those still away (an empty result).

    :raises Exception: applying failed otherwise than by the shard being away (an
        attempt is counted on the changes taken, which stay parked).
    """
    for _ in range(TENANTS_PER_LOOK):
        result = await _try_one(conn, cache, batch_size, apply, rules_changed, metrics)
        if result is None or result.claimed:
            return result or BatchResult()
    return BatchResult()


async def _try_one(conn: Any, cache: Cache, batch_size: int, apply: Apply,
                   rules_changed: Callable[[Any], Awaitable[bool]],
                   metrics: WorkerMetrics) -> BatchResult | None:
    """One due tenant: its batch's result (empty when put off); None when none is due."""
    rows: list[outbox.OutboxRow] = []
    ids: list[int] = []
    claimed = 0.0
    try:
        async with conn.transaction():
            due = await parked.due_tenant(conn)
            if due is None:
                return None
            try:
                if due.tenant:  # '': changes of every tenant (a TRUNCATE), no one shard
                    index = MetaKeys(cache.settings.prefix).index(due.tenant)
                    await cache.store.command("EXISTS", index, route=index)
                async with conn.transaction():  # a savepoint: rolled back if the shard goes
                    rows = await parked.claim_parked(conn, due.tenant, batch_size)
                    ids = [row.id for row in rows]
                    claimed = time.perf_counter()
                    result = await apply(conn, rows)
                    if await rules_changed(conn):
                        raise RulesChanged
                    await outbox.count_changes(conn, applied_rows(rows, result))
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
        if ids and not isinstance(exc, BLAMELESS) and not conn.is_closed():
            try:
                await parked.record_failure(conn, ids, f"{type(exc).__name__}: {exc}")
            except outbox.DB_ERRORS:
                log.exception("outbox worker: could not count the failed attempt")
        raise
    if rows:
        metrics.count(result, rows, claimed)
        metrics.parked_applied += len(result.processed)
    return result
