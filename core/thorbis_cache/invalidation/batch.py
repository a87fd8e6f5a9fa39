"""One batch of captured changes, whatever its source (``thorbis.outbox`` or the WAL):
what it is applied with, what it did, and the worker's counters.

:func:`apply_changes` is the step both of the worker's sources share: plan every change
with the plugins' rules, dead-letter what can never be applied, delete the keys, hand
the tags to the tag invalidator, log the batch for failover replay and append the audit
records, all inside the caller's transaction (the caller commits, then confirms).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.cache.meta_sweep import MetaSweep
from thorbis_cache.cache.metrics import Histogram
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.lacking_rules import RulesChanged
from thorbis_cache.invalidation.planning import Plan, PoisonRow
from thorbis_cache.invalidation.shard_outage import apply_reachable
from thorbis_cache.invalidation.tag_lanes import TagInvalidator
from thorbis_cache.postgres import audit, outbox, parked
from thorbis_cache.postgres.replication import ReplicationError

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.invalidation.replay import FailoverReplay

__all__ = [
    "BLAMELESS",
    "Apply",
    "BatchResult",
    "Incomplete",
    "TagInvalidator",
    "UnconfiguredTagInvalidator",
    "WorkerMetrics",
    "applied_rows",
    "apply_and_count",
    "apply_changes",
    "count_attempt",
]

log = logging.getLogger(__name__)

#: Failures that are not the changes' fault (Redis, PostgreSQL or the replication
#: stream unavailable): no attempt is counted, the changes wait for recovery. Anything
#: else counts toward ``max_attempts``.
BLAMELESS: tuple[type[BaseException], ...] = (
    RedisUnavailableError, ReplicationError, *outbox.DB_ERRORS)


class UnconfiguredTagInvalidator:
    """The tag invalidator of a worker given no cache tag engine: counts and logs.

    It does not raise (the keys of a batch must still be deleted) and does not pretend:
    every call logs a warning and increments :attr:`calls` / :attr:`tags`.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.tags = 0

    async def __call__(self, tenant: str, tags: Sequence[str]) -> None:
        """Count and log ``tags`` of ``tenant``."""
        self.calls += 1
        self.tags += len(tags)
        log.warning("tag invalidation not configured: tenant %r tags %s not invalidated",
                    tenant, ", ".join(tags))


@attrs.define
class WorkerMetrics:
    """In-process counters of one worker (exported by the observability layer).

    :ivar lag_seconds: age of the oldest row of the last non-empty batch.
    :ivar redis_waits: Redis outages :meth:`OutboxWorker.run` waited out (from a batch
        finding Redis unavailable to the next batch that went through).
    :ivar redis_wait_seconds: time spent probing for Redis, in total.
    :ivar redis_probes: probes sent while waiting.
    :ivar capture_losses: times capture lost track, and every tag the rules reach was
        flushed: a replication slot found lost (then recreated), or the database found
        on a new timeline (a failover or a restore:
        :mod:`~thorbis_cache.invalidation.database_origin`).
    :ivar incomplete_changes: changes whose images lacked a column the rules read (a
        migration renamed or dropped it), applied through their schemas' tags
        (:class:`~thorbis_cache.invalidation.planning.RulePlanner`).
    :ivar bulk_transactions: transactions of more watched changes than logical capture
        holds for a commit, applied by tenant instead of by row
        (:data:`~thorbis_cache.postgres.logical_rows.MAX_HELD`).
    :ivar replica_echoes: batches whose invalidations were applied again once every
        standby had replayed them (readers on replicas:
        :mod:`~thorbis_cache.invalidation.replica_echo`).
    :ivar uncaptured_tables: rule tables found captured by nothing at the running
        worker's last check (a gauge; see ``capture_check_interval``).
    :ivar standby: 1 while another session (another worker) reads the logical
        capture's slot and this worker stands by, else 0 (a gauge;
        :class:`~thorbis_cache.invalidation.slot_reader.SlotReader`).
    :ivar lacking_rules: rules the database's capture was set up for (``db init`` of a
        newer release) that this worker does not have, applied through stand-ins (a
        gauge; :mod:`~thorbis_cache.invalidation.lacking_rules`).
    :ivar parked: changes parked (``thorbis.parked_changes``) because their Cluster
        shard did not answer while others did
        (:mod:`~thorbis_cache.invalidation.shard_outage`); each is counted again if a
        try that reached its tenant's shard parks it again (a change that also names
        another tenant, whose shard is away).
    :ivar parked_applied: parked changes applied, once their shard answered.
    :ivar parked_tries: tries of a tenant's parked changes that found its shard still
        away (each puts the next try off: :mod:`~thorbis_cache.postgres.parked`).
    :ivar commit_latency: per applied change, seconds from its capture (the outbox
        row's insert; under logical capture, its commit) to its batch's commit, after
        which its keys are gone.
    """

    processed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    failed_batches: int = 0
    keys_deleted: int = 0
    tags_invalidated: int = 0
    lag_seconds: float = 0.0
    redis_waits: int = 0
    capture_losses: int = 0
    incomplete_changes: int = 0
    replica_echoes: int = 0
    bulk_transactions: int = 0
    uncaptured_tables: int = 0
    standby: int = 0
    lacking_rules: int = 0
    redis_wait_seconds: float = 0.0
    redis_probes: int = 0
    parked: int = 0
    parked_applied: int = 0
    parked_tries: int = 0
    commit_latency: Histogram = attrs.field(factory=Histogram, eq=False, repr=False)
    #: when each table's incomplete changes were last logged (monotonic seconds)
    _reported: dict[str, float] = attrs.field(factory=dict, eq=False, repr=False)
    #: per set of tenants out of reach: when its parking was last logged, and the
    #: changes and batches parked since
    _parkings: dict[tuple[str, ...], tuple[float, int, int]] = attrs.field(
        factory=dict, eq=False, repr=False)

    def count(self, result: BatchResult, rows: Sequence[outbox.OutboxRow],
              claimed: float) -> None:
        """Count a committed batch; ``claimed`` is when its rows' ``age`` was taken."""
        since_claim = time.perf_counter() - claimed
        applied = applied_rows(rows, result)
        for row in applied:
            self.commit_latency.observe(row.age + since_claim)
        self.batches += 1
        self.processed += len(result.processed)
        self.dead_lettered += len(result.dead_letters)
        self.keys_deleted += len(result.keys)
        self.tags_invalidated += len(result.tags)
        self.parked += len(result.parked)
        self.lag_seconds = max(r.age for r in rows)
        if result.incomplete:
            self.report_incomplete(result.incomplete)
        if result.parked:
            self.report_parked(result)

    def report_parked(self, result: BatchResult) -> None:
        """Say that a batch parked changes, as a warning: once per set of tenants out of
        reach, then at most every :data:`PARKING_LOG_INTERVAL` seconds with what was
        parked meanwhile (a shard lost under writes parks changes in every batch,
        hundreds a second; :attr:`parked` counts each)."""
        tenants = tuple(tenant for tenant, _ in result.unreached)
        now = time.monotonic()
        at, held, batches = self._parkings.get(tenants, (float("-inf"), 0, 0))
        held, batches = held + len(result.parked), batches + 1
        if now - at < PARKING_LOG_INTERVAL:
            self._parkings[tenants] = (at, held, batches)
            return
        if len(self._parkings) > 1000:  # sets of tenants come and go: forget old ones
            self._parkings.clear()
        self._parkings[tenants] = (now, 0, 0)
        log.warning("%d change(s) parked in %d batch(es)%s: the Redis shard of tenant(s) "
                    "%s did not answer (%s); the last batch applied %d", held, batches,
                    f" over {now - at:.0f} s" if batches > 1 else "", ", ".join(tenants),
                    result.unreached[0][1], len(result.processed))

    def report_incomplete(self, incomplete: Sequence[Incomplete]) -> None:
        """Count changes planned without some of their rules' columns, and say so as an
        error, at most once a minute per table (a migration that renamed a column makes
        every change of its table incomplete until the rules are updated)."""
        now = time.monotonic()
        for item in incomplete:
            self.incomplete_changes += item.changes
            last = self._reported.get(item.table)
            if last is not None and now - last < INCOMPLETE_LOG_INTERVAL:
                continue
            self._reported[item.table] = now
            log.error(
                "%d change(s) to %s lack column(s) %s that its invalidation rules read (a "
                "migration renamed or dropped them?): applied conservatively, a rule on a "
                "missing significant column firing and a key that needs one replaced by "
                "its schema's tags%s. Update the rules to the table, then run "
                "`thorbis-cache db init`", item.changes, item.table, ", ".join(item.unseen),
                f"; schemas without tags left to their TTL: {', '.join(item.unreached)}"
                if item.unreached else "")


def applied_rows(rows: Sequence[outbox.OutboxRow],
                 result: BatchResult) -> Sequence[outbox.OutboxRow]:
    """``rows`` without those ``result`` parked (they are counted when applied)."""
    if not result.parked:
        return rows
    held = set(result.parked)
    return [row for row in rows if row.id not in held]


#: Seconds between two error logs of one table's incomplete changes.
INCOMPLETE_LOG_INTERVAL = 60.0
#: Seconds between two warnings that one set of tenants' changes were parked.
PARKING_LOG_INTERVAL = 30.0
#: Rows planned between two turns of the event loop (a 50,000-change batch is a few
#: hundred milliseconds of planning).
PLAN_CHUNK = 1024


@attrs.frozen(slots=True)
class Incomplete:
    """The changes of one table in a batch that lacked columns the rules read.

    :ivar unseen: the columns missing; :ivar unreached: schemas left to their TTL.
    """

    table: str
    changes: int
    unseen: tuple[str, ...]
    unreached: tuple[str, ...]


@attrs.frozen(slots=True)
class BatchResult:
    """What one batch did.

    :ivar processed: outbox ids applied (empty plans included), in claim order.
    :ivar dead_letters: ``(outbox id, reason)`` of rows dead-lettered.
    :ivar keys: the Redis key bodies deleted (``{tenant}:schema:...``), sorted.
    :ivar tags: ``(tenant, tag)`` handed to the tag invalidator, sorted.
    :ivar audit_ids: ids of the audit records appended.
    :ivar incomplete: per table, the changes planned without some of their rules'
        columns (see :class:`~thorbis_cache.invalidation.planning.Plan`).
    :ivar parked: ids of the rows parked (``thorbis.parked_changes``), their Cluster
        shard out of reach while others answered
        (:mod:`~thorbis_cache.invalidation.shard_outage`).
    :ivar unreached: ``(tenant, error)`` of the tenants whose shard did not answer, by
        tenant (:data:`EVERY_TENANT` for a shard whose tenants could not be listed).
    """

    processed: tuple[int, ...] = ()
    dead_letters: tuple[tuple[int, str], ...] = ()
    keys: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    audit_ids: tuple[int, ...] = ()
    incomplete: tuple[Incomplete, ...] = ()
    parked: tuple[int, ...] = ()
    unreached: tuple[tuple[str, str], ...] = ()

    @property
    def claimed(self) -> int:
        """Rows this batch took off the outbox (or the stream), parked ones included."""
        return len(self.processed) + len(self.dead_letters) + len(self.parked)


#: Stands, among the tenants out of reach, for those of a shard that could not even be
#: listed (the changes of every tenant then wait for it).
EVERY_TENANT = "(every tenant)"



#: How a batch's rows are applied in the caller's transaction (the worker's
#: :func:`apply_changes` with its settings).
Apply = Callable[[Any, Sequence[outbox.OutboxRow]], Awaitable[BatchResult]]


async def apply_and_count(conn: Any, rows: Sequence[outbox.OutboxRow], apply: Apply,
                          rules_changed: Callable[[Any], Awaitable[bool]] | None
                          ) -> BatchResult:
    """A batch's step inside its transaction, whatever its source (the outbox, the
    stream, the parked changes): ``apply`` the rows; then, off the commit-to-invalidated
    path and before anything is confirmed, read the rules record
    (:exc:`~thorbis_cache.invalidation.lacking_rules.RulesChanged`: the caller rolls
    back and reads the rows again under the new rules); then count the applied rows per
    table (:func:`outbox.count_changes <thorbis_cache.postgres.outbox.count_changes>`:
    a row is counted exactly when it is applied)."""
    result = await apply(conn, rows)
    if rules_changed is not None and await rules_changed(conn):
        raise RulesChanged
    await outbox.count_changes(conn, applied_rows(rows, result))
    return result


async def count_attempt(conn: Any, ids: Sequence[int], exc: BaseException,
                        table: str = outbox.ATTEMPTED[0]) -> None:
    """After a batch rolled back by ``exc``: count a failed attempt on its changes in
    ``table`` (the outbox, or the parked changes: :data:`outbox.ATTEMPTED
    <thorbis_cache.postgres.outbox.ATTEMPTED>`), unless the failure is not theirs
    (:data:`BLAMELESS`) or the connection is gone."""
    if ids and not isinstance(exc, BLAMELESS) and not conn.is_closed():
        try:
            await outbox.record_failure(conn, ids, f"{type(exc).__name__}: {exc}",
                                        table=table)
        except outbox.DB_ERRORS:
            log.exception("outbox worker: could not count the failed attempt")


async def apply_changes(conn: Any, rows: Sequence[outbox.OutboxRow], *,
                        plan: Callable[[outbox.OutboxRow], Plan], cache: Cache,
                        invalidate_tags: TagInvalidator, replay: FailoverReplay | None,
                        audited: bool, max_attempts: int) -> BatchResult:
    """Apply one batch inside ``conn``'s open transaction (see the module docstring).

    A row past ``max_attempts`` failed attempts, or one :exc:`PoisonRow` refuses, is
    dead-lettered with its reason; the others' keys are deleted (``replicate`` only
    without a replay log: the log covers a failover instead) and their tags handed to
    ``invalidate_tags`` per tenant (several tenants at once), the batch logged for
    ``replay`` and, when ``audited``, one audit record appended per tenant (its changes,
    keys, tags and a digest of their names).

    :raises Exception: what deleting, invalidating or writing raised; the caller rolls
        the transaction back.
    """
    dead: list[tuple[int, str]] = []
    keys: dict[str, CacheKey[Any]] = {}
    tags: dict[str, set[str]] = defaultdict(set)
    changes: dict[str, int] = defaultdict(int)
    incomplete: dict[str, tuple[int, set[str], set[str]]] = {}
    every_tenant: set[str] = set()  # tags for every tenant (a TRUNCATE; tenant column gone)
    # Each row applied, with its plan (some may be parked by it), in claim order.
    applied: list[tuple[outbox.OutboxRow, Plan]] = []
    for i, row in enumerate(rows):
        if i and not i % PLAN_CHUNK:
            await asyncio.sleep(0)  # a big batch's planning is CPU work: let others run
        if row.attempts >= max_attempts:
            reason = f"gave up after {row.attempts} attempts: {row.last_error}"
        else:
            try:
                planned = plan(row)
            except PoisonRow as exc:
                reason = str(exc)
            else:
                applied.append((row, planned))
                if planned.every_tenant:
                    every_tenant.update(planned.tags)
                else:
                    # A row moved to another tenant: the one it left, then the other.
                    for part in (planned.moved_from, planned):
                        if part is not None:
                            changes[part.tenant] += 1
                            keys.update((k.body, k) for k in part.keys)
                            tags[part.tenant].update(part.tags)
                if planned.unseen:
                    count, unseen, unreached = incomplete.get(row.table_name,
                                                              (0, set(), set()))
                    unseen.update(planned.unseen)
                    unreached.update(planned.unreached)
                    incomplete[row.table_name] = (count + 1, unseen, unreached)
                continue
        log.error("outbox row %d dead-lettered: %s", row.id, reason)
        await outbox.dead_letter(conn, row, reason)
        dead.append((row.id, reason))
    # The masters whose tenants could not be listed for the changes of every tenant.
    unlisted: list[RedisUnavailableError] = []
    if every_tenant:
        # Every tenant with a tag index (bounded pages, no SCAN), as after a lost slot;
        # then logged for replay and audited like any tenant's tags. On a Cluster, a
        # shard out of reach is skipped: the others' tenants are invalidated now, and
        # the changes parked below until every shard answers (they are idempotent).
        reached = 0
        async for tenant in MetaSweep.for_cache(cache).registered_tenants(
                unlisted if cache.store.is_cluster else None):
            tags[tenant].update(every_tenant)
            changes[tenant] += 0
            reached += 1
        log.warning("a TRUNCATE, or changes whose tenant is unknown: tags %s invalidated "
                    "for every tenant (%d)%s", ", ".join(sorted(every_tenant)), reached,
                    f"; the tenants of {len(unlisted)} shard(s) out of reach could not be "
                    f"listed ({unlisted[0]}): the changes are parked" if unlisted else "")
    out_of_reach = await apply_reachable(
        cache, list(keys.values()), tags, invalidate_tags, replicate=replay is None)
    if unlisted:
        out_of_reach = {**out_of_reach, EVERY_TENANT: unlisted[0]}
    parked_ids: list[int] = []
    if out_of_reach:
        # Their shard did not answer: parked, with what else they reach (applied again
        # then); nothing of them is logged or audited now.
        def within_reach(planned: Plan) -> bool:
            return not planned.every_tenant and all(
                part.tenant not in out_of_reach
                for part in (planned.moved_from, planned) if part is not None)

        held = [row for row, planned in applied if not within_reach(planned)]
        await parked.park(conn, held, str(next(iter(out_of_reach.values()))))
        parked_ids = [row.id for row in held]
        applied = [(row, planned) for row, planned in applied if within_reach(planned)]
        keys = {body: key for body, key in keys.items() if key.tenant not in out_of_reach}
        tags = defaultdict(set, {t: n for t, n in tags.items() if t not in out_of_reach})
        changes = defaultdict(int, {t: c for t, c in changes.items() if t not in out_of_reach})
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for key in keys.values():
        by_tenant[key.tenant].append(key.body)
    if replay is not None:
        await replay.applied(conn, {
            tenant: (sorted(by_tenant[tenant]), sorted(tags[tenant]))
            for tenant in sorted(set(by_tenant) | {t for t, ns in tags.items() if ns})})
    audit_ids: list[int] = []
    if audited:
        details: list[tuple[str | None, dict[str, Any]]] = []
        for tenant in sorted(changes):
            names = sorted(by_tenant[tenant]) + sorted(f"#{t}" for t in tags[tenant])
            digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
            details.append((tenant, {
                "changes": changes[tenant], "keys": len(by_tenant[tenant]),
                "tags": len(tags[tenant]), "digest": digest,
            }))
        audit_ids = [record.id for record in
                     await audit.append_many(conn, "invalidation", details)]
    return BatchResult(
        tuple(row.id for row, _ in applied), tuple(dead), tuple(sorted(keys)),
        tuple(sorted((t, n) for t, ns in tags.items() for n in ns)), tuple(audit_ids),
        tuple(Incomplete(table, count, tuple(sorted(unseen)), tuple(sorted(unreached)))
              for table, (count, unseen, unreached) in sorted(incomplete.items())),
        tuple(parked_ids),
        tuple((tenant, str(error)) for tenant, error in sorted(out_of_reach.items())),
    )
