"""The demo's last scene: an UPDATE committed in PostgreSQL invalidates the cache.

What ``thorbis-cache db init`` and ``thorbis-cache worker`` do in production, in the demo
process: the core schema and the capture triggers generated from the plugin's rules,
then an :class:`~thorbis_cache.invalidation.worker.OutboxWorker` running its LISTEN loop. The scene
caches a customer hash and the customer's summary, commits a change of the customer's
account status (a significant column of the plugin's rules), and measures the time until
the worker has deleted the hash -- the application never calls the cache; the next
read-through loads the new row. The summary mirrors the customer summary view, which the
UPDATE does not change until the view is refreshed: no base-table rule touches it, and
it stays cached until the view's refresh drops it through the view's tags.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from thorbis_home_services import Customer, loaders
from thorbis_home_services.models import AccountStatus
from thorbis_home_services.schemas import CUSTOMER, CUSTOMER_SUMMARY

from thorbis_cache.app import CacheApp
from thorbis_cache.cache.core import Cache
from thorbis_cache.demo.database import Database
from thorbis_cache.demo.results import Check, DemoFailure, OutboxResult
from thorbis_cache.errors import MissingRow
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.mv.refresh import refresh_and_invalidate

__all__ = ["outbox_scene"]

# Every wait of the scene is bounded: a worker that never comes must fail a check, not
# hang the demo.
_WAIT = 5.0


async def _customer(cache: Cache, db: Database, tenant: str, customer_id: int
                    ) -> tuple[Customer, bool]:
    """Read-through of the customer hash (fill lease, compare-and-set): the customer,
    and whether this read loaded it from PostgreSQL."""
    entity = cache.hash(CUSTOMER.key(tenant, customer_id=customer_id))
    queries = db.queries
    try:
        found = await entity.get_or_load(lambda: loaders.customer(db.fetch, tenant, customer_id))
    except MissingRow:
        raise DemoFailure(
            f"customer {customer_id} of tenant {tenant!r} is not in hs.customers") from None
    return found, db.queries > queries


async def _exists(cache: Cache, redis_key: str) -> bool:
    return bool(await cache.store.command("EXISTS", redis_key))


async def _gone_after(cache: Cache, redis_key: str, since: float) -> float | None:
    """Poll until ``redis_key`` is gone: ms since ``since``, or None after the bound."""
    while await _exists(cache, redis_key):
        if time.perf_counter() - since > _WAIT:
            return None
    return (time.perf_counter() - since) * 1000


async def outbox_scene(app: CacheApp, db: Database, dsn: str, tenant: str,
                       customer_id: int) -> OutboxResult:
    """Install capture, run the worker, commit an UPDATE, watch the entries go.

    :param app: the demo's started app (its cache and the plugin's rules).
    :param db: the demo application's data access (the UPDATE and the loader).
    :param dsn: the demo database (the worker's connections).
    :param tenant: the customer's tenant.
    :param customer_id: the customer (its account status is changed).
    :returns: what was measured and the checks made.
    :raises DemoFailure: the customer does not exist.
    """
    cache = app.cache
    tables = await db.install_capture(app.plugins.all_rules(), app.plugins.all_views())
    key = CUSTOMER.key(tenant, customer_id=customer_id)
    summary_key = CUSTOMER_SUMMARY.key(tenant, customer_id=customer_id)
    rk, summary_rk = cache.redis_key(key), cache.redis_key(summary_key)
    await cache.delete(key)  # start from a miss, so the first read visibly loads
    before, _ = await _customer(cache, db, tenant, customer_id)
    await cache.get_or_load(
        summary_key, lambda: loaders.customer_summary(db.fetch, tenant, customer_id))
    cached = await _exists(cache, rk) and await _exists(cache, summary_rk)
    new = AccountStatus.ACTIVE if before.account_status is AccountStatus.VIP else AccountStatus.VIP

    worker = OutboxWorker.from_app(app, dsn)
    task = asyncio.create_task(worker.run(), name="demo-outbox-worker")
    try:
        listening = await db.wait_for_listener(_WAIT)
        await db.set_account_status(tenant, customer_id, new.value)
        committed = time.perf_counter()
        gone_ms = await _gone_after(cache, rk, committed)
        # The batch that deleted the hash is done: had a rule reached the summary, it
        # would be gone by now.
        summary_kept = await _exists(cache, summary_rk)
    finally:
        worker.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, _WAIT)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await worker.aclose()
    view = next(v for v in app.plugins.all_views() if v.name == CUSTOMER_SUMMARY.mirrors)
    async with db.pool.acquire() as conn:
        refreshed = await refresh_and_invalidate(app, conn, "home_services", view)
    summary_dropped = refreshed.ok and not await _exists(cache, summary_rk)
    queries = db.queries
    after, loaded = await _customer(cache, db, tenant, customer_id)
    intact, records = await db.verify_audit()
    shown = "never" if gone_ms is None else f"{gone_ms:.1f} ms"
    checks = (
        Check(f"capture triggers installed on {len(tables)} tables", "hs.customers" in tables),
        Check("customer hash and summary cached before the UPDATE", cached),
        Check("worker LISTENs on thorbis_outbox", listening),
        # Short enough for one line of the report: the measured time must stay readable.
        Check(f"UPDATE {before.account_status.value} → {new.value} committed; the worker "
              "deleted the hash", gone_ms is not None, f"commit → gone {shown}"),
        Check(f"summary kept (it mirrors the view {view.name}, unchanged by the UPDATE), "
              "then dropped by the view's refresh", summary_kept and summary_dropped),
        Check("next read loads the new row from PostgreSQL",
              loaded and after.account_status is new and db.queries == queries + 1,
              f"account_status {after.account_status.value}, "
              f"{db.queries - queries} query"),
        Check("every batch is on an intact audit chain", intact and records > 0,
              f"{records} record(s)"),
    )
    return OutboxResult(
        tuple(tables), rk, summary_rk, customer_id, before.account_status.value, new.value,
        gone_ms, after.account_status.value, records, checks,
    )
