"""The dead letters of the invalidation queue: inspect, replay, purge.

An entry lands in ``<prefix>:~jobs:dead:{_queue}`` (see :mod:`.queue`) with these
fields: ``orig_id`` (its id in the job stream), ``reason`` (``Type: message`` of the
last failure, ``malformed: ...`` or ``ConsumerLost: ...``), ``attempts``, ``consumer``
(who gave up), ``dead_at`` (epoch seconds), ``tenant`` (empty when the entry did not
decode), and the original payload with ``p.`` before each field name.

A replay adds the job back to the job stream as a new entry, so its attempts start
again from zero, and removes the dead letter in the same script: both keys share the
queue's slot, so the move is atomic and two operators replaying at once replay it once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import attrs

from thorbis_cache.errors import DeadLetterNotFound
from thorbis_cache.invalidation.queue import (
    InvalidationJob,
    InvalidJobError,
    QueueKeys,
    QueueSettings,
    _script,
    decode_job,
    encode_job,
)
from thorbis_cache.store.redis_store import RedisStore

__all__ = ["DeadLetter", "DeadLetterNotFound", "DeadLetters", "ReplayReport"]

_PAYLOAD = b"p."



@attrs.frozen(slots=True)
class DeadLetter:
    """One dead letter.

    :ivar id: its id in the dead-letter stream (what ``show``/``replay`` take).
    :ivar original_id: its id in the job stream.
    :ivar tenant: the job's tenant, ``None`` when the entry did not decode.
    :ivar reason: why it was given up.
    :ivar attempts: deliveries made before giving up.
    :ivar consumer: the consumer that gave up.
    :ivar dead_at: epoch seconds.
    :ivar job: the decoded job, ``None`` for a malformed entry.
    :ivar payload: the original stream fields, as stored.
    """

    id: str
    original_id: str
    tenant: str | None
    reason: str
    attempts: int
    consumer: str
    dead_at: float
    job: InvalidationJob | None
    payload: dict[bytes, bytes]

    def age(self, now: float | None = None) -> float:
        """Seconds since the entry was dead-lettered."""
        return max(0.0, (time.time() if now is None else now) - self.dead_at)


@attrs.frozen(slots=True)
class ReplayReport:
    """What :meth:`DeadLetters.replay` did.

    :ivar replayed: dead-letter id -> new id in the job stream.
    :ivar missing: ids that were not (or no longer) dead letters.
    :ivar malformed: ids left in place because their payload does not decode.
    """

    replayed: dict[str, str]
    missing: tuple[str, ...]
    malformed: tuple[str, ...]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(value: bytes | None, kind: type[int] | type[float]) -> float:
    try:
        return kind(_text(value))
    except ValueError:
        return 0


class DeadLetters:
    """The dead-letter stream of the queue of one cache prefix.

    :param store: the Redis adapter.
    :param prefix: the cache prefix.
    :param settings: the queue's settings (replays honour its ``maxlen``).
    """

    def __init__(self, store: RedisStore, prefix: str,
                 settings: QueueSettings | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.keys = QueueKeys.for_prefix(prefix)
        self.settings = settings or QueueSettings()

    def _parse(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
        payload = {k[len(_PAYLOAD):]: v for k, v in fields.items() if k.startswith(_PAYLOAD)}
        try:
            job: InvalidationJob | None = decode_job(payload, self.prefix)
        except InvalidJobError:
            job = None
        tenant = _text(fields.get(b"tenant")) or (job.tenant if job else None)
        return DeadLetter(
            id=_text(entry_id), original_id=_text(fields.get(b"orig_id")), tenant=tenant,
            reason=_text(fields.get(b"reason")),
            attempts=int(_number(fields.get(b"attempts"), int)),
            consumer=_text(fields.get(b"consumer")),
            dead_at=float(_number(fields.get(b"dead_at"), float)), job=job, payload=payload,
        )

    async def count(self) -> int:
        """How many dead letters there are (``XLEN``)."""
        return int(await self.store.command("XLEN", self.keys.dead))

    async def list(self, *, count: int = 100, after: str = "-",
                   until: str = "+") -> list[DeadLetter]:
        """The oldest ``count`` dead letters after id ``after`` (exclusive) up to id
        ``until`` (inclusive)."""
        start = "-" if after == "-" else f"({after}"
        entries = await self.store.command("XRANGE", self.keys.dead, start, until,
                                           "COUNT", count)
        return [self._parse(eid, fields) for eid, fields in entries]

    async def get(self, entry_id: str) -> DeadLetter | None:
        """The dead letter ``entry_id``, or ``None``."""
        entries = await self.store.command("XRANGE", self.keys.dead, entry_id, entry_id)
        return self._parse(*entries[0]) if entries else None

    async def replay(self, ids: Iterable[str]) -> ReplayReport:
        """Move the dead letters ``ids`` back to the job stream as new entries (attempts
        reset, ``replays`` incremented, ``first_enqueued_at`` kept).

        A malformed entry is left in place: replaying it would only dead-letter it again.
        """
        replayed: dict[str, str] = {}
        missing: list[str] = []
        malformed: list[str] = []
        for entry_id in ids:
            letter = await self.get(entry_id)
            if letter is None:
                missing.append(entry_id)
                continue
            if letter.job is None:
                malformed.append(entry_id)
                continue
            job = attrs.evolve(letter.job, replays=letter.job.replays + 1)
            fields = encode_job(job)
            new_id = await self.store.run(
                _script("queue_replay"), [self.keys.dead, self.keys.stream],
                [entry_id, self.settings.maxlen, *(x for kv in fields.items() for x in kv)],
            )
            if new_id:
                replayed[entry_id] = _text(new_id)
            else:
                missing.append(entry_id)  # replayed or purged by someone else meanwhile
        return ReplayReport(replayed, tuple(missing), tuple(malformed))

    async def replay_all(self, *, batch: int = 100) -> ReplayReport:
        """Replay every dead letter present when the call starts, in batches."""
        replayed: dict[str, str] = {}
        missing: list[str] = []
        malformed: list[str] = []
        # Stop at the newest id seen now: a replayed job that fails again fast must not
        # be replayed again by the same call.
        last = await self.store.command("XREVRANGE", self.keys.dead, "+", "-", "COUNT", 1)
        if not last:
            return ReplayReport({}, (), ())
        until = _text(last[0][0])
        after = "-"
        while True:
            letters = await self.list(count=batch, after=after, until=until)
            if not letters:
                break
            after = letters[-1].id
            report = await self.replay(letter.id for letter in letters)
            replayed.update(report.replayed)
            missing += report.missing
            malformed += report.malformed
        return ReplayReport(replayed, tuple(missing), tuple(malformed))

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete the dead letters ``ids``, or all of them when ``ids`` is ``None``.

        :returns: how many were deleted.
        """
        if ids is None:
            n = await self.count()
            await self.store.command("DEL", self.keys.dead)
            return n
        if not ids:
            return 0
        return int(await self.store.command("XDEL", self.keys.dead, *ids))
