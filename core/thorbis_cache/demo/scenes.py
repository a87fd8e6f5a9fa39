"""The demo's scenes: an encrypted entry, tampered entries, a stale fill racing an update.

Each scene runs against the demo's servers on the home_services plugin's sensitive
schemas -- ``hs.customer_summary`` for the first two, ``hs.work_order`` for the race --
with the plugin's own loaders, and returns its :class:`Check` list; a check is a claim
that this run could have falsified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import msgpack
from thorbis_home_services import CustomerSummary, Priority, WorkOrder, loaders
from thorbis_home_services.schemas import CUSTOMER_SUMMARY, WORK_ORDER

from thorbis_cache.cache.codec import make_converter
from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.envelope import FLAG_ENCRYPTED, FLAG_TIMING
from thorbis_cache.demo.data import counter
from thorbis_cache.demo.database import Database
from thorbis_cache.demo.results import (
    Check,
    DemoFailure,
    EncryptionResult,
    RaceResult,
    TamperResult,
)

__all__ = ["encryption_scene", "race_scene", "tamper_scene"]

# Stalled loaders and checks must never hang the demo, whatever goes wrong.
_SCENE_TIMEOUT = 10.0


async def _stored(cache: Cache, redis_key: str, how: str) -> bytes:
    """The bytes Redis holds at ``redis_key``, which the scene has just written.

    :param how: how it was written (``filled``, ``reloaded``), for the error message.
    :raises DemoFailure: the key is empty.
    """
    raw = await cache.store.get(redis_key)
    if raw is None:
        raise DemoFailure(f"{redis_key} was just {how} but is not in Redis")
    return raw


async def _summary(db: Database, tenant: str, customer_id: int) -> CustomerSummary:
    """One customer's summary row, by the plugin's loader (one counted query)."""
    return await loaders.customer_summary(db.fetch, tenant, customer_id)


async def _work_order(db: Database, tenant: str, work_order_id: int) -> WorkOrder:
    """One work order, by the plugin's loader (one counted query).

    :raises DemoFailure: no such row (the demo only reads ids it generated).
    """
    found = await loaders.work_orders(db.fetch, tenant, [work_order_id])
    if not found:
        raise DemoFailure(
            f"work order {work_order_id} of tenant {tenant!r} is not in hs.work_orders"
        )
    return found[0]


def _key_id(raw: bytes) -> str:
    """The master key id recorded in an encrypted envelope (layout: envelope.py)."""
    pos = 6 + (12 if raw[3] & FLAG_TIMING else 0)
    return raw[pos + 1 : pos + 1 + raw[pos]].decode("ascii", "replace")


async def encryption_scene(
    cache: Cache, db: Database, tenant: str, customer_id: int
) -> EncryptionResult:
    """Fill one customer's summary entry and show that its stored bytes reveal none of
    its personal data.

    :param cache: the demo's cache.
    :param db: the loader's data access.
    :param tenant: the customer's tenant.
    :param customer_id: the customer.
    :returns: the stored entry and the checks made on it.
    :raises DemoFailure: the entry is not in Redis after the fill.
    """
    key = CUSTOMER_SUMMARY.key(tenant, customer_id=customer_id)
    summary = await cache.get_or_load(key, lambda: _summary(db, tenant, customer_id))
    rk = cache.redis_key(key)
    raw = await _stored(cache, rk, "filled")
    # The control: the same value serialized without encryption does show the data,
    # so "not found in the stored bytes" below is a check that could fail.
    plain = msgpack.packb(make_converter().unstructure(summary), use_bin_type=True)
    secrets = {
        "last name": summary.last_name,
        "email": summary.email,
        "phone": summary.phone,
    }
    checks = [
        Check("entry is flagged encrypted", bool(raw[3] & FLAG_ENCRYPTED), f"flags {raw[3]:#04x}"),
        Check(
            "unencrypted msgpack would reveal name and email (control)",
            all(text.encode() in plain for text in secrets.values()),
        ),
    ]
    for field, text in secrets.items():
        checks.append(
            Check(f"customer {field} not in the stored bytes", text.encode() not in raw, text)
        )
    return EncryptionResult(rk, raw, _key_id(raw), summary, tuple(checks))


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@contextlib.contextmanager
def _captured_warnings(records: list[str]) -> Iterator[None]:
    """Collect the cache's log lines (it logs every dropped entry) to show them in the
    report instead of letting them interleave with it."""
    logger = logging.getLogger("thorbis_cache")
    handler = _ListHandler(records)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


async def tamper_scene(
    cache: Cache, db: Database, tenant: str, other: str, customer_id: int, logs: list[str]
) -> TamperResult:
    """Flip a byte of a stored summary entry, then copy a valid one under another
    tenant's key; both must read as counted misses and the true rows be reloaded.

    :param cache: the demo's cache.
    :param db: the loaders' data access.
    :param tenant: the tenant whose entry is tampered with.
    :param other: the tenant whose key receives ``tenant``'s ciphertext.
    :param customer_id: the customer (of both tenants).
    :param logs: receives the cache's warnings logged meanwhile.
    :returns: what was done and the checks made.
    :raises DemoFailure: an entry is not in Redis after a fill.
    """
    key = CUSTOMER_SUMMARY.key(tenant, customer_id=customer_id)
    rk = cache.redis_key(key)
    truth = await _summary(db, tenant, customer_id)
    await cache.get_or_load(key, lambda: _summary(db, tenant, customer_id))
    raw = await _stored(cache, rk, "filled")
    reason = "auth_failed"
    ttl_ms = cache.ttl_ms(CUSTOMER_SUMMARY)
    checks: list[Check] = []

    # 1. Flip one byte of the ciphertext, in place.
    offset = len(raw) // 2
    tampered = raw[:offset] + bytes((raw[offset] ^ 0xFF,)) + raw[offset + 1 :]
    await cache.store.set(rk, tampered, ttl_ms)
    before = counter(cache, "corrupt_entries", CUSTOMER_SUMMARY, reason=reason)
    with _captured_warnings(logs):
        got = await cache.get(key)
    corrupt_delta = counter(cache, "corrupt_entries", CUSTOMER_SUMMARY, reason=reason) - before
    checks.append(
        Check(
            "tampered entry reads as a miss (None, no exception)",
            got is None,
            f"flipped byte {offset} of {len(raw)}",
        )
    )
    checks.append(Check("tampered entry was deleted", await cache.store.get(rk) is None))
    checks.append(
        Check(
            f"corrupt_entries{{reason={reason}}} went up by 1",
            corrupt_delta == 1,
            f"+{corrupt_delta:g}",
        )
    )
    queries = db.queries
    reloaded = await cache.get_or_load(key, lambda: _summary(db, tenant, customer_id))
    checks.append(
        Check(
            "get_or_load reloaded the true row from PostgreSQL",
            reloaded == truth and db.queries == queries + 1,
            f"{db.queries - queries} query",
        )
    )

    # 2. Copy tenant A's (valid) ciphertext under tenant B's key for the same id.
    fresh = await _stored(cache, rk, "reloaded")
    other_key = CUSTOMER_SUMMARY.key(other, customer_id=customer_id)
    other_rk = cache.redis_key(other_key)
    other_truth = await _summary(db, other, customer_id)
    await cache.store.set(other_rk, fresh, ttl_ms)
    before = counter(cache, "corrupt_entries", CUSTOMER_SUMMARY, reason=reason)
    with _captured_warnings(logs):
        moved = await cache.get(other_key)
    cross_delta = counter(cache, "corrupt_entries", CUSTOMER_SUMMARY, reason=reason) - before
    checks.append(
        Check(
            f"{tenant}'s ciphertext under {other}'s key is a miss",
            moved is None and cross_delta == 1,
            f"corrupt_entries +{cross_delta:g}",
        )
    )
    checks.append(
        Check(f"{other}'s key holds nothing afterwards", await cache.store.get(other_rk) is None)
    )
    other_loaded = await cache.get_or_load(other_key, lambda: _summary(db, other, customer_id))
    checks.append(
        Check(f"{other} then gets its own customer's summary", other_loaded == other_truth)
    )
    return TamperResult(rk, offset, reason, corrupt_delta, other_rk, cross_delta, tuple(checks))


async def race_scene(cache: Cache, db: Database, tenant: str, work_order_id: int) -> RaceResult:
    """Run a slow fill of a work order across an UPDATE of its priority and the
    invalidation of its entry; the stale value must not be written, and the next read
    must return the updated row.

    :param cache: the demo's cache.
    :param db: the loaders' data access, also used for the UPDATE.
    :param tenant: the work order's tenant.
    :param work_order_id: the work order (updated by this scene).
    :returns: the priorities seen and the checks made.
    """
    key = WORK_ORDER.key(tenant, work_order_id=work_order_id)
    rk = cache.redis_key(key)
    await cache.delete(key)  # start from a miss
    stale = await _work_order(db, tenant, work_order_id)
    # An escalation (a de-escalation for an order that is an emergency already).
    updated = Priority.URGENT if stale.priority is Priority.EMERGENCY else Priority.EMERGENCY
    row_read = asyncio.Event()
    invalidated = asyncio.Event()

    async def slow_loader() -> WorkOrder:
        value = await _work_order(db, tenant, work_order_id)
        row_read.set()
        # Stall until the writer has committed and invalidated: the window in which a
        # plain get -> load -> set would write this (now stale) value after the delete.
        await asyncio.wait_for(invalidated.wait(), _SCENE_TIMEOUT)
        return value

    rejected_before = counter(cache, "fills_rejected", WORK_ORDER)
    slow = asyncio.create_task(cache.get_or_load(key, slow_loader), name="demo-slow-fill")
    try:
        await asyncio.wait_for(row_read.wait(), _SCENE_TIMEOUT)
        await db.set_priority(tenant, work_order_id, updated.value)
        await cache.delete(key)  # the application's invalidation after its commit
        invalidated.set()
        slow_value = await slow
    finally:
        slow.cancel()
    rejected = counter(cache, "fills_rejected", WORK_ORDER) - rejected_before
    after = await cache.store.get(rk)
    fresh = await cache.get_or_load(key, lambda: _work_order(db, tenant, work_order_id))
    checks = (
        Check(
            "slow caller got the row it had read",
            slow_value == stale,
            f"priority {slow_value.priority.value}",
        ),
        Check(
            f"UPDATE to {updated.value} committed + cache.delete while it loaded; "
            "its fill was not written",
            after is None,
        ),
        Check("fills_rejected went up by 1", rejected == 1, f"+{rejected:g}"),
        Check(
            "next get_or_load returns the updated row",
            fresh.priority is updated and fresh.updated_at > stale.updated_at,
            f"priority {fresh.priority.value}",
        ),
    )
    return RaceResult(
        rk, work_order_id, stale.priority.value, updated.value, slow_value.priority.value,
        rejected, fresh.priority.value, checks,
    )  # fmt: skip
