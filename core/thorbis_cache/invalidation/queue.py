"""The reliable invalidation queue: a Redis Stream read by a consumer group.

Layout (one stream per cache prefix, not per tenant: a group per tenant stream would
multiply the groups every worker must read)::

    <prefix>:~jobs:{_queue}            the jobs (XADD ... MAXLEN ~ maxlen)
    <prefix>:~jobs:failures:{_queue}   hash: entry id -> last error, while it waits to retry
    <prefix>:~jobs:dead:{_queue}       the dead letters (see :mod:`.deadletters`)

The three keys share the ``{_queue}`` hash tag, so they live in one slot and the
scripts that move an entry between them are legal on a Cluster and atomic. The price:
the whole queue lives on one shard, which bounds its throughput to what one Redis
process does (tens of thousands of jobs per second, far beyond the outbox's rate).
``~jobs`` can never be a tenant key: those continue with ``{tenant}`` after the prefix.

Life of an entry:

* ``enqueue`` adds it; ``consume`` reads it with ``XREADGROUP >`` (delivery 1).
* The handler succeeds: the entry is acknowledged **and deleted** (one script, one round
  trip per batch), so ``XLEN`` is the backlog and ``MAXLEN`` only bites when the backlog
  itself exceeds it (the oldest jobs are then trimmed, and the sweep counts them as
  ``lost``).
* The handler fails: the entry stays pending and its error is recorded in the failures
  hash. The sweep reclaims it once it has been idle ``backoff(deliveries)``
  (exponential, capped); the delivery count that Redis keeps is the attempt count.
* A consumer dies with entries in flight: the sweep's ``XAUTOCLAIM`` takes the entries
  idle longer than ``claim_idle_ms``. Set it above the longest handler run: a slower
  handler has its entry claimed by another consumer and run twice.
* After ``max_attempts`` deliveries, or at once for an entry that does not decode, the
  entry moves to the dead-letter stream with the reason (one script: XACK + XADD dead +
  XDEL, so a crash neither loses it nor leaves it in both streams).

Delivery is at least once: a consumer that dies after the handler ran but before the
acknowledgement runs the job again elsewhere. Invalidations are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs
import cattrs
from cattrs.preconf.json import JsonConverter, make_converter

from thorbis_cache.cache.keys import validate_prefix, validate_tenant
from thorbis_cache.errors import (
    CacheBackendError,
    ConfigurationError,
    InvalidJobError,
)
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script, load_lua

__all__ = [
    "FORMAT_VERSION",
    "InvalidJobError",
    "InvalidationJob",
    "InvalidationQueue",
    "Invalidator",
    "QueueCounters",
    "QueueKeys",
    "QueueSettings",
    "check_tenant_keys",
    "decode_job",
    "default_consumer_name",
    "encode_job",
    "job_as_dict",
]

log = logging.getLogger(__name__)

#: Version of the entry encoding, stored in field ``v`` of every entry.
FORMAT_VERSION = b"1"

@functools.cache
def _script(name: str) -> Script:
    """A queue script from ``lua/`` (read on first use, not at import)."""
    return Script(name, load_lua(name))



# --------------------------------------------------------------------------- jobs


def _strings(_i: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if not isinstance(item, str) or not item:
            raise InvalidJobError(f"job {attribute.name}: expected non-empty strings, "
                                  f"got {item!r}")


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    # A lone string would otherwise become a tuple of its characters.
    if isinstance(value, str):
        raise InvalidJobError(f"job keys and tags: expected a sequence of strings, got {value!r}")
    return tuple(value)


def _tenant(_i: object, _a: attrs.Attribute[Any], value: str) -> None:
    validate_tenant(value)


@attrs.frozen(slots=True)
class InvalidationJob:
    """What to invalidate for one tenant.

    :ivar tenant: the tenant every key and tag belongs to.
    :ivar keys: full Redis keys (``<prefix>:{tenant}:...``, as built by
        :meth:`CacheKey.redis_key`), so the queue needs no schema registry; a handler
        turns them back into keys with :meth:`SchemaRegistry.parse`. The queue refuses
        a key outside the tenant's namespace.
    :ivar tags: tag names of the tenant.
    :ivar cascade: also invalidate what depends on those keys and tags.
    :ivar replays: how many times the job came back from the dead letters. Attempts
        are not stored here: they are the stream's delivery count, reset by a replay.
    :ivar first_enqueued_at: epoch seconds of the first enqueue, kept across replays.
    """

    tenant: str = attrs.field(validator=_tenant)
    keys: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_strings)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_strings)
    cascade: bool = False
    replays: int = 0
    first_enqueued_at: float = attrs.field(factory=time.time)

    def __attrs_post_init__(self) -> None:
        if not self.keys and not self.tags:
            raise InvalidJobError(f"job of tenant {self.tenant!r} has neither keys nor tags")


def _make_converter() -> JsonConverter:
    # A private converter (never the process-wide one). Unknown fields are ignored so
    # that a later minor addition stays readable by older workers; a breaking change
    # bumps FORMAT_VERSION instead.
    return make_converter()


_CONVERTER = _make_converter()


def encode_job(job: InvalidationJob) -> dict[bytes, bytes]:
    """The stream fields of ``job``: ``v`` (format version) and ``job`` (JSON)."""
    return {b"v": FORMAT_VERSION, b"job": _CONVERTER.dumps(job).encode("utf-8")}


def job_as_dict(job: InvalidationJob) -> dict[str, Any]:
    """``job`` as JSON-ready data (the shape of the ``job`` field)."""
    data: dict[str, Any] = _CONVERTER.unstructure(job)
    return data


def decode_job(fields: dict[bytes, bytes], prefix: str) -> InvalidationJob:
    """The job in stream ``fields``, checked as :meth:`InvalidationQueue.enqueue` does.

    :raises InvalidJobError: unknown version, undecodable JSON, missing or mistyped
        field, or a key outside the job's tenant.
    """
    version = fields.get(b"v")
    if version != FORMAT_VERSION:
        raise InvalidJobError(f"entry format version {version!r}, expected {FORMAT_VERSION!r}")
    try:
        job = _CONVERTER.loads(fields[b"job"].decode("utf-8"), InvalidationJob)
    except KeyError:
        raise InvalidJobError("entry has no 'job' field") from None
    except (ValueError, TypeError, cattrs.BaseValidationError) as exc:
        raise InvalidJobError(f"entry does not decode: {exc}") from None
    check_tenant_keys(job, prefix)
    return job


def check_tenant_keys(job: InvalidationJob, prefix: str) -> None:
    """Refuse a job naming a key of another tenant (or of another prefix).

    :raises InvalidJobError: naming the first such key.
    """
    head = f"{prefix}:{{{job.tenant}}}:"
    for key in job.keys:
        if not key.startswith(head):
            raise InvalidJobError(f"job of tenant {job.tenant!r}: key {key[:200]!r} "
                                  f"does not start with {head!r}")


class Invalidator(Protocol):
    """Applies a job; what the queue's consumers call.

    It must be idempotent (delivery is at least once) and raise to report a failure:
    the job is then retried, and dead-lettered after the last attempt.
    """

    async def apply(self, job: InvalidationJob) -> None:
        """Invalidate what ``job`` names.

        :param job: the decoded job.
        """


# --------------------------------------------------------------------------- settings


def _at_least(minimum: int) -> Any:
    def check(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < minimum:
            raise ConfigurationError(f"{attribute.name} must be >= {minimum}, got {value!r}")
    return check


@attrs.frozen(slots=True)
class QueueSettings:
    """How an :class:`InvalidationQueue` reads, retries and bounds its streams.

    :ivar maxlen: approximate bound of the job stream (``XADD MAXLEN ~``).
    :ivar dead_maxlen: approximate bound of the dead-letter stream.
    :ivar count: entries read per ``XREADGROUP`` and claimed per sweep.
    :ivar block_ms: how long :meth:`InvalidationQueue.run` blocks waiting for entries;
        keep it below the store's call timeout.
    :ivar max_attempts: deliveries before an entry is dead-lettered.
    :ivar backoff_base_ms: wait after the first failure; doubled after each further one.
    :ivar backoff_max_ms: cap of that wait (``claim_idle_ms`` caps it as well).
    :ivar claim_idle_ms: idle time after which an in-flight entry counts as abandoned
        by a dead consumer; longer than the slowest handler run.
    :ivar sweep_interval: seconds between sweeps in :meth:`InvalidationQueue.run`.
    :ivar scan_count: pending entries the retry sweep inspects per call (bounds the
        script's work).
    """

    maxlen: int = attrs.field(default=1_000_000, validator=_at_least(1))
    dead_maxlen: int = attrs.field(default=100_000, validator=_at_least(1))
    count: int = attrs.field(default=100, validator=_at_least(1))
    block_ms: int = attrs.field(default=1000, validator=_at_least(0))
    max_attempts: int = attrs.field(default=5, validator=_at_least(1))
    backoff_base_ms: int = attrs.field(default=500, validator=_at_least(1))
    backoff_max_ms: int = attrs.field(default=30_000, validator=_at_least(1))
    claim_idle_ms: int = attrs.field(default=60_000, validator=_at_least(1))
    sweep_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    scan_count: int = attrs.field(default=1000, validator=_at_least(1))

    def backoff_ms(self, deliveries: int) -> int:
        """How long an entry that failed after ``deliveries`` deliveries waits before
        its retry: ``backoff_base_ms * 2 ** (deliveries - 1)``, capped by
        ``backoff_max_ms`` and by ``claim_idle_ms`` (past which any consumer claims it)."""
        wait = self.backoff_base_ms << min(max(deliveries - 1, 0), 40)
        return min(wait, self.backoff_max_ms, self.claim_idle_ms)


@attrs.frozen(slots=True)
class QueueKeys:
    """The Redis keys of the queue under ``prefix`` (one slot, see the module doc)."""

    stream: str
    failures: str
    dead: str

    @classmethod
    def for_prefix(cls, prefix: str) -> QueueKeys:
        """The keys of the queue of the cache prefix ``prefix``."""
        validate_prefix(prefix)
        return cls(f"{prefix}:~jobs:{{_queue}}", f"{prefix}:~jobs:failures:{{_queue}}",
                   f"{prefix}:~jobs:dead:{{_queue}}")


@attrs.define
class QueueCounters:
    """What a queue instance did, for metrics and tests (in-process, never in Redis)."""

    processed: int = 0
    failed: int = 0
    retried: int = 0
    claimed: int = 0
    dead_lettered: int = 0
    malformed: int = 0
    lost: int = 0
    backend_errors: int = 0


# --------------------------------------------------------------------------- scripts
# In lua/queue_*.lua, each with a header stating keys, arguments, bounds and why
# the script must be atomic.





# --------------------------------------------------------------------------- queue


@attrs.frozen(slots=True)
class _Delivery:
    """An entry this consumer now holds: id, fields (None if trimmed), delivery count,
    and the error of its last failed attempt, if one was recorded."""

    id: str
    fields: dict[bytes, bytes] | None
    deliveries: int
    last_error: str | None = None


def default_consumer_name() -> str:
    """``host:pid:random``: unique per process, and readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _pairs(flat: Sequence[bytes] | dict[bytes, bytes] | None) -> dict[bytes, bytes] | None:
    # Script replies carry fields as a flat array; command replies as a dict.
    if flat is None or isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


class InvalidationQueue:
    """Producer and consumer of the invalidation stream of one cache prefix.

    :param store: the Redis adapter.
    :param prefix: the cache prefix (:attr:`CacheSettings.prefix`).
    :param group: the consumer group; every worker of a deployment uses the same one.
    :param consumer: this consumer's name, unique per process (the default is).
    :param settings: bounds, retries and timings.
    """

    def __init__(
        self,
        store: RedisStore,
        prefix: str,
        *,
        group: str = "thorbis",
        consumer: str | None = None,
        settings: QueueSettings | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.keys = QueueKeys.for_prefix(prefix)
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.settings = settings or QueueSettings()
        self.counters = QueueCounters()
        self._cursor = "0-0"
        self._group_ready = False

    # ----------------------------------------------------------------- producer

    async def ensure_group(self) -> None:
        """Create the stream and the group if missing (``XGROUP CREATE ... MKSTREAM``).

        The group starts at ``0``, so jobs enqueued before any worker existed are read.
        """
        try:
            await self.store.command("XGROUP", "CREATE", self.keys.stream, self.group, "0",
                                     "MKSTREAM")
        except CacheBackendError as exc:
            if "BUSYGROUP" not in exc.problem:
                raise
        self._group_ready = True

    async def enqueue(self, job: InvalidationJob) -> str:
        """Append ``job`` to the stream (approximately trimmed to ``maxlen``).

        :returns: the entry id.
        :raises InvalidJobError: a key outside the job's tenant.
        """
        check_tenant_keys(job, self.prefix)
        fields = encode_job(job)
        entry_id = await self.store.command(
            "XADD", self.keys.stream, "MAXLEN", "~", self.settings.maxlen, "*",
            *(x for pair in fields.items() for x in pair),
        )
        return _text(entry_id)

    # ----------------------------------------------------------------- consumer

    async def run_once(self, handler: Invalidator, *, block_ms: int = 0) -> int:
        """One round: the sweep (abandoned and due entries), then new entries.

        :param handler: applies each job.
        :param block_ms: how long to wait for new entries; 0 returns at once.
        :returns: how many entries were handled (done, failed or dead-lettered).
        """
        handled = await self.sweep(handler)
        return handled + await self.consume(handler, block_ms=block_ms)

    async def consume(self, handler: Invalidator, *, count: int | None = None,
                      block_ms: int = 0) -> int:
        """Read new entries (``XREADGROUP >``) and handle them.

        :param count: at most this many (default ``settings.count``).
        :param block_ms: how long to wait when there is none; 0 returns at once.
        :returns: how many entries were handled.
        """
        if not self._group_ready:
            await self.ensure_group()
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer,
                           "COUNT", count or self.settings.count]
        if block_ms > 0:  # BLOCK 0 would mean "forever"
            args += ["BLOCK", block_ms]
        reply = await self.store.command(*args, "STREAMS", self.keys.stream, ">")
        batch = [_Delivery(_text(eid), _pairs(fields), 1)
                 for _stream, entries in reply or () for eid, fields in entries]
        return await self._handle(handler, batch)

    async def sweep(self, handler: Invalidator) -> int:
        """Claim entries abandoned by dead consumers and failed entries due for a
        retry, and handle them.

        :returns: how many entries were handled.
        """
        if not self._group_ready:
            await self.ensure_group()
        s = self.settings
        cursor, claimed, trimmed = await self.store.run(
            _script("queue_sweep"), [self.keys.stream, self.keys.failures],
            [self.group, self.consumer, s.claim_idle_ms, s.count, s.scan_count, self._cursor,
             *(s.backoff_ms(n) for n in range(1, s.max_attempts + 1))],
        )
        self._cursor = _text(cursor)
        if trimmed:
            # MAXLEN trimmed entries that were still pending: their jobs are gone.
            self.counters.lost += int(trimmed)
            log.error("invalidation queue %s: %d pending entries were trimmed by MAXLEN "
                      "before being processed", self.keys.stream, trimmed)
        batch = [
            _Delivery(_text(eid), _pairs(fields) if fields else None, int(n),
                      _text(err) if err else None)
            for eid, fields, n, err in claimed
        ]
        for d in batch:
            if d.last_error is None:
                self.counters.claimed += 1
            else:
                self.counters.retried += 1
        return await self._handle(handler, batch)

    async def run(self, handler: Invalidator, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set: block for new entries, sweep every
        ``sweep_interval`` seconds.

        A Redis error is logged and counted, then the loop waits a backoff and goes on:
        the entries it held stay pending and are claimed again.
        """
        next_sweep = 0.0
        pause = self.settings.backoff_base_ms / 1000
        while not stop.is_set():
            try:
                if time.monotonic() >= next_sweep:
                    await self.sweep(handler)
                    next_sweep = time.monotonic() + self.settings.sweep_interval
                await self.consume(handler, block_ms=self.settings.block_ms)
                pause = self.settings.backoff_base_ms / 1000
            except CacheBackendError as exc:
                self.counters.backend_errors += 1
                log.warning("invalidation queue %s: %s; retrying in %.1fs",
                            self.keys.stream, exc, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, self.settings.backoff_max_ms / 1000)

    # ----------------------------------------------------------------- handling

    async def _handle(self, handler: Invalidator, batch: list[_Delivery]) -> int:
        done: list[str] = []
        try:
            for d in batch:
                if await self._handle_one(handler, d):
                    done.append(d.id)
        finally:
            # Acknowledge what succeeded even if a later entry's bookkeeping failed.
            if done:
                await self.store.run(_script("queue_ack"), [self.keys.stream, self.keys.failures],
                                     [self.group, *done])
                self.counters.processed += len(done)
        return len(batch)

    async def _handle_one(self, handler: Invalidator, d: _Delivery) -> bool:
        """Run one delivery; True when it succeeded and must be acknowledged."""
        max_attempts = self.settings.max_attempts
        if d.deliveries > max_attempts:
            # Delivered again after the last attempt: its consumer died or stalled.
            reason = d.last_error or (f"ConsumerLost: delivered {d.deliveries} times "
                                      "without an acknowledgement")
            await self._dead_letter(d, reason, d.deliveries - 1)
            return False
        if d.fields is None:
            await self._dead_letter(d, "malformed: entry has no fields", d.deliveries)
            self.counters.malformed += 1
            return False
        try:
            job = decode_job(d.fields, self.prefix)
        except InvalidJobError as exc:
            await self._dead_letter(d, f"malformed: {exc}", d.deliveries)
            self.counters.malformed += 1
            return False
        try:
            await handler.apply(job)
        except Exception as exc:
            self.counters.failed += 1
            reason = f"{type(exc).__qualname__}: {exc}"[:1000]
            if d.deliveries >= max_attempts:
                await self._dead_letter(d, reason, d.deliveries, tenant=job.tenant)
            else:
                log.info("invalidation job %s of tenant %r failed (attempt %d of %d): %s",
                         d.id, job.tenant, d.deliveries, max_attempts, reason)
                await self.store.command("HSET", self.keys.failures, d.id, reason)
            return False
        return True

    async def _dead_letter(self, d: _Delivery, reason: str, attempts: int, *,
                           tenant: str = "") -> None:
        log.warning("invalidation job %s dead-lettered after %d attempt(s): %s",
                    d.id, attempts, reason)
        fields = {"reason": reason, "attempts": attempts, "consumer": self.consumer,
                  "dead_at": repr(time.time()), "tenant": tenant}
        moved = await self.store.run(
            _script("queue_dead_letter"), [self.keys.stream, self.keys.dead, self.keys.failures],
            [self.group, d.id, self.settings.dead_maxlen,
             *(x for pair in fields.items() for x in pair)],
        )
        if moved:
            self.counters.dead_lettered += 1
