"""Failover replay: invalidations that a promotion or a restart undid are applied again.

Redis replicates asynchronously. A ``DEL`` acknowledged by a master that dies before
its replicas receive it is lost when one of them is promoted, and a server restarted
from an AOF written ``everysec`` may lose its last second: either way a deleted,
stale value comes back. ``WAIT`` after every invalidation (:meth:`RedisStore.replicated
<thorbis_cache.store.redis_store.RedisStore.replicated>`) makes that rare but, bounded by a
timeout, not impossible. What closes the gap for the outbox worker:

* each batch appends one ``thorbis.invalidation_log`` row per tenant (in the transaction
  that claims the rows) and, after the batch's deletes, raises the tenant's marker
  ``<prefix>:~applied:{tenant}`` to that row's id (``lua/mark_applied.lua``), WAITed
  for. Replication is in order per master, so a replica holding the marker holds every
  delete before it; the invariant is *marker >= the tenant's last committed row*;
* a marker found below the tenant's last committed row proves lost writes: the rows
  after the marker are applied again. It is checked when a batch raises a marker (the
  script returns the old value), and for every tenant of the window when a master's
  ``run_id`` changes (a failover or a restart), which :meth:`FailoverReplay.check` polls;
* rows older than :attr:`FailoverReplay.window` are pruned: a failover that completes
  later than that after an invalidation is not repaired (docs/architecture.md).

A fill lease granted by the old master cannot land a stale value on the new one for
long either: the replay deletes the keys' leases with the keys.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.tag_lanes import apply_again
from thorbis_cache.postgres import replay_log
from thorbis_cache.store.scripts import load_lua

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from thorbis_cache.cache.core import Cache

__all__ = ["FailoverReplay"]

log = logging.getLogger(__name__)

_MARK = load_lua("mark_applied")


class FailoverReplay:
    """Records a worker's invalidations and applies them again after lost writes.

    :param cache: the cache the worker invalidates.
    :param invalidate_tags: how the worker invalidates tags (``async (tenant, tags)``);
        ``cache.invalidate_tags`` by default.
    :param window: seconds of invalidations kept for replay.
    :param check_interval: seconds between two looks at the masters' ``run_id``.
    """

    def __init__(self, cache: Cache, *,
                 invalidate_tags: Callable[[str, Sequence[str]], Awaitable[Any]] | None = None,
                 window: float = 300.0, check_interval: float = 0.25) -> None:
        self.cache = cache
        self.invalidate_tags = invalidate_tags or cache.invalidate_tags
        self.window = window
        self.check_interval = check_interval
        #: invalidation log rows applied again, and tenants that needed it
        self.replayed_rows = 0
        self.replays = 0
        self._run_ids: frozenset[str] | None = None
        self._next_check = 0.0
        self._next_prune = 0.0

    def marker_key(self, tenant: str) -> str:
        """The tenant's applied-invalidation marker (in the tenant's slot)."""
        return f"{self.cache.settings.prefix}:~applied:{{{tenant}}}"

    async def applied(self, conn: Any,
                      batch: Mapping[str, tuple[Sequence[str], Sequence[str]]]
                      ) -> dict[str, int]:
        """Log a batch's invalidations (already done in Redis) of each tenant, raise the
        tenants' markers and wait for the replicas; replay a tenant first if its marker
        shows lost writes.

        The batch's tenants share the round trips: one statement reads their last rows,
        one appends theirs, and the markers of one master are raised on one connection
        with one ``WAIT`` (:meth:`RedisStore.replicated_each`). A batch spans every
        tenant whose rows changed, so this is what keeps a worker serving many tenants
        near its one-tenant rate.

        :param conn: the worker's connection, inside the batch's transaction.
        :param batch: ``{tenant: (deleted keys' bodies, tags)}``.
        :returns: each tenant's log row id.
        """
        tenants = sorted(batch)
        if not tenants:
            return {}
        lasts = await replay_log.last_ids(conn, tenants)
        ids = await replay_log.append_many(
            conn, [(tenant, *batch[tenant]) for tenant in tenants])
        olds = await self._mark_each({tenant: ids[tenant] for tenant in tenants})
        for tenant in tenants:
            last, old = lasts.get(tenant), olds[tenant]
            if last is not None and (old is None or old < last):
                await self._replay(conn, tenant, old, last)
                await self._mark(tenant, ids[tenant])
        return ids

    async def check(self, conn: Any, *, force: bool = False) -> int:
        """When due (or ``force``): if a master's ``run_id`` changed since the last look
        (always on the first), compare every recent tenant's marker with its last
        logged row and replay what is missing; prune old rows now and then.

        :returns: rows replayed.
        """
        now = time.monotonic()
        if not force and now < self._next_check:
            return 0
        self._next_check = now + self.check_interval
        if now >= self._next_prune:
            self._next_prune = now + 60.0
            await replay_log.prune(conn, self.window)
        try:
            run_ids = await self.cache.store.master_run_ids()
        except RedisUnavailableError as exc:
            if not self.cache.store.is_cluster:
                raise
            # One shard out of reach must not hold back the others' batches (their
            # changes are applied, its own are parked): the check waits for every
            # master to answer, as a failed-over one does, with its new run_id.
            log.info("failover replay check put off: a Cluster master did not answer "
                     "(%s)", exc)
            return 0
        if run_ids == self._run_ids:
            return 0
        before = self.replayed_rows
        rows = await conn.fetch(
            "SELECT tenant, max(id) AS last FROM thorbis.invalidation_log "
            "WHERE applied_at > clock_timestamp() - make_interval(secs => $1) "
            "GROUP BY tenant", self.window)
        for row in rows:
            marker_key = self.marker_key(row["tenant"])
            raw = await self.cache.store.command("GET", marker_key, route=marker_key)
            marker = None if raw is None else int(raw)
            if marker is None or marker < row["last"]:
                await self._replay(conn, row["tenant"], marker, row["last"])
                await self._mark(row["tenant"], row["last"])
        # Only once every tenant is checked: a failure above retries the whole check.
        self._run_ids = run_ids
        return self.replayed_rows - before

    async def _mark(self, tenant: str, row_id: int) -> int | None:
        return (await self._mark_each({tenant: row_id}))[tenant]

    async def _mark_each(self, row_ids: Mapping[str, int]) -> dict[str, int | None]:
        """Raise each tenant's marker to its row id; the values they had."""
        keys = {tenant: self.marker_key(tenant) for tenant in row_ids}
        replies = await self.cache.store.replicated_each(
            [(keys[tenant], ("EVAL", _MARK, 1, keys[tenant], row_id))
             for tenant, row_id in row_ids.items()])
        return {tenant: None if old is None else int(old)
                for tenant, old in zip(row_ids, replies, strict=True)}

    async def _replay(self, conn: Any, tenant: str, marker: int | None, last: int) -> None:
        entries = await replay_log.since(conn, tenant, marker or 0, self.window)
        keys = {body for entry in entries for body in entry.keys}
        tags = sorted({tag for entry in entries for tag in entry.tags})
        log.warning(
            "Redis lost acknowledged writes of tenant %r (its applied marker is %s, the "
            "last logged invalidation %d; a failover or a restart): applying %d logged "
            "invalidation(s) again (%d key(s), %d tag(s))",
            tenant, marker, last, len(entries), len(keys), len(tags))
        # Replicated by the marker's WAIT that follows.
        await apply_again(self.cache, self.invalidate_tags, keys, {tenant: tags},
                          replicate=False)
        self.replays += 1
        self.replayed_rows += len(entries)
