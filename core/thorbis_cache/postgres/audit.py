"""The hash-chained, tamper-evident audit log (``thorbis.audit_log``).

Each record stores ``prev_hash`` (the previous record's hash; 32 zero bytes for the
first) and ``hash = SHA-256(prev_hash || canonical JSON of the record)``, where the
record is ``{"at", "detail", "id", "kind", "tenant"}`` serialized with sorted keys, no
spaces, UTF-8, ``at`` as UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. Ids are assigned as
previous id + 1 under an advisory lock held to the end of the appending transaction, so
several workers never fork the chain and a deleted record shows as a gap.

:func:`verify` walks the chain and reports the first broken link: a record whose hash
does not match its content (edited), whose ``prev_hash`` is not the previous hash
(edited or deleted neighbour), or a missing id (deleted). Deleting the newest records is
not detectable from the chain alone; keep an external copy of the head hash for that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import attrs

__all__ = ["GENESIS", "AuditRecord", "VerifyResult", "append", "append_many", "record_hash",
           "verify"]

#: ``prev_hash`` of the first record.
GENESIS = bytes(32)

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('thorbis_cache.audit_log'))"


def _at_text(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(prev_hash: bytes, record_id: int, at: dt.datetime, kind: str,
                tenant: str | None, detail: Mapping[str, Any]) -> bytes:
    """SHA-256 of ``prev_hash`` followed by the canonical JSON of the record."""
    canonical = json.dumps(
        {"at": _at_text(at), "detail": detail, "id": record_id, "kind": kind, "tenant": tenant},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")
    return hashlib.sha256(prev_hash + canonical).digest()


@attrs.frozen(slots=True)
class AuditRecord:
    """One appended record."""

    id: int
    at: dt.datetime
    kind: str
    tenant: str | None
    detail: Mapping[str, Any]
    prev_hash: bytes
    hash: bytes


async def append(conn: asyncpg.Connection, kind: str, tenant: str | None,
                 detail: Mapping[str, Any]) -> AuditRecord:
    """Append a record; must run inside the caller's transaction.

    The record becomes part of the chain when that transaction commits (a batch and its
    audit record commit together). The advisory lock serializes appenders to the end of
    the transaction, so keep it short after calling this.

    :param conn: a connection inside a transaction.
    :param kind: ``"invalidation"``, ``"mv_refresh"``...
    :param tenant: the tenant concerned, if any.
    :param detail: JSON-serializable facts (counts, digests; never cached values).
    :returns: the record as stored.
    """
    return (await append_many(conn, kind, [(tenant, detail)]))[0]


async def append_many(conn: asyncpg.Connection, kind: str,
                      records: Sequence[tuple[str | None, Mapping[str, Any]]]
                      ) -> list[AuditRecord]:
    """:func:`append` for several records of one kind, chained in the given order,
    with one lock, one read of the chain's head and one INSERT (a worker's batch
    writes one per tenant).

    :param records: ``(tenant, detail)`` each.
    """
    if not records:
        return []
    await conn.execute(_LOCK)
    last = await conn.fetchrow("SELECT id, hash FROM thorbis.audit_log ORDER BY id DESC LIMIT 1")
    record_id = 0 if last is None else last["id"]
    prev = GENESIS if last is None else bytes(last["hash"])
    # Microseconds are what timestamptz stores, so the text hashed now is what verify reads.
    at = dt.datetime.now(dt.UTC)
    appended: list[AuditRecord] = []
    for tenant, detail in records:
        record_id += 1
        # Round-trip detail through JSON so what is hashed equals what jsonb gives back.
        stored = json.loads(json.dumps(detail, sort_keys=True))
        digest = record_hash(prev, record_id, at, kind, tenant, stored)
        appended.append(AuditRecord(record_id, at, kind, tenant, stored, prev, digest))
        prev = digest
    await conn.execute(
        "INSERT INTO thorbis.audit_log (id, at, kind, tenant, detail, prev_hash, hash) "
        "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], "
        "                     $5::jsonb[], $6::bytea[], $7::bytea[])",
        [r.id for r in appended], [r.at for r in appended], [r.kind for r in appended],
        [r.tenant for r in appended], [json.dumps(r.detail) for r in appended],
        [r.prev_hash for r in appended], [r.hash for r in appended],
    )
    return appended


@attrs.frozen(slots=True)
class VerifyResult:
    """The outcome of :func:`verify`.

    :ivar ok: the whole chain is intact.
    :ivar count: records checked (up to and including the broken one).
    :ivar broken_id: the id of the first broken record, or None.
    :ivar reason: why it is broken ("hash mismatch", "prev mismatch", "gap"), with detail.
    """

    ok: bool
    count: int
    broken_id: int | None = None
    reason: str | None = None


async def verify(conn: asyncpg.Connection, *, batch: int = 1000) -> VerifyResult:
    """Walk the chain in id order and report the first broken link.

    :param conn: an open connection.
    :param batch: rows fetched per round trip.
    """
    prev = GENESIS
    expected_id = 1
    count = 0
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT id, at, kind, tenant, detail, prev_hash, hash FROM thorbis.audit_log "
            "WHERE id > $1 ORDER BY id LIMIT $2", after, batch,
        )
        if not rows:
            return VerifyResult(True, count)
        for row in rows:
            count += 1
            rid = row["id"]
            if rid != expected_id:
                return VerifyResult(False, count, rid, f"gap: record {expected_id} is missing "
                                    f"(next present is {rid})")
            if bytes(row["prev_hash"]) != prev:
                return VerifyResult(False, count, rid, "prev mismatch: prev_hash is not the "
                                    "hash of the previous record")
            detail = json.loads(row["detail"])
            computed = record_hash(prev, rid, row["at"], row["kind"], row["tenant"], detail)
            if computed != bytes(row["hash"]):
                return VerifyResult(False, count, rid, "hash mismatch: the record's content "
                                    "does not match its hash")
            prev = computed
            expected_id += 1
            after = rid
