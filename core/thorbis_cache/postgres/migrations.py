"""Apply the core SQL (``sql/core/NNN_*.sql``) in order, once each, with a checksum ledger.

``thorbis.schema_migrations`` (created by ``sql/core/bootstrap.sql``) records the
version, file name and SHA-256 of every applied file. :func:`migrate`:

* applies the files whose version is not recorded, in version order, each with its
  ledger row in one transaction;
* does nothing for files already recorded with the same checksum (re-running is a no-op);
* refuses, before applying anything, when an applied file's text changed
  (:class:`MigrationError` naming the file): released SQL is never edited, a change is a
  new numbered file.

Concurrent migrators (several hosts starting at once) are serialized by an advisory lock.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import asyncpg
import attrs

from thorbis_cache.errors import MigrationError
from thorbis_cache.postgres import connection
from thorbis_cache.postgres.ddl_locks import bound_locks, with_lock_retries
from thorbis_cache.postgres.sql_apply import split_sql

__all__ = ["Migration", "MigrationError", "MigrationReport", "core_migrations", "migrate"]

_FILE_RE = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('thorbis_cache.migrations'))"


@attrs.frozen(slots=True)
class Migration:
    """One numbered core SQL file.

    :ivar version: the number prefix (``1`` for ``001_outbox.sql``).
    :ivar name: the file name.
    :ivar sql: its text.
    """

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the text, hex."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@attrs.frozen(slots=True)
class MigrationReport:
    """What :func:`migrate` did.

    :ivar applied: file names applied by this call, in order.
    :ivar already: file names that were already applied (unchanged).
    """

    applied: tuple[str, ...]
    already: tuple[str, ...]


def _core_dir() -> Any:
    return resources.files("thorbis_cache.sql") / "core"


def core_migrations() -> list[Migration]:
    """The numbered core SQL files shipped with the package, by version.

    :raises MigrationError: two files share a version.
    """
    found: dict[int, Migration] = {}
    for entry in _core_dir().iterdir():
        match = _FILE_RE.fullmatch(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"core SQL files {found[version].name!r} and {entry.name!r} share version "
                f"{version}"
            )
        found[version] = Migration(version, entry.name, entry.read_text("utf-8"))
    return [found[v] for v in sorted(found)]


def _bootstrap_sql() -> str:
    return str((_core_dir() / "bootstrap.sql").read_text("utf-8"))


async def migrate(dsn_or_conn: str | asyncpg.Connection,
                  migrations: Sequence[Migration] | None = None) -> MigrationReport:
    """Apply the pending core migrations.

    :param dsn_or_conn: a DSN (a connection is opened and closed) or an open connection
        that is not inside a transaction.
    :param migrations: what to apply (default: :func:`core_migrations`); for tests.
    :returns: which files were applied and which already were.
    :raises MigrationError: an applied file changed (named, with both checksums), or a
        statement failed (file, statement, PostgreSQL's message); nothing of the failing
        file is kept, files applied before it are.
    :raises TableLockedError: a file's table locks were not granted through every
        attempt (:func:`~thorbis_cache.postgres.ddl_locks.with_lock_retries`; the
        sessions holding them named).
    """
    if isinstance(dsn_or_conn, str):
        conn = await connection.connect(dsn_or_conn, writes="applying the core migrations")
        try:
            return await migrate(conn, migrations)
        finally:
            await conn.close()
    conn = dsn_or_conn
    todo = list(core_migrations() if migrations is None else migrations)
    applied: list[str] = []
    already: list[str] = []
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute(_bootstrap_sql())
        rows = await conn.fetch("SELECT version, name, checksum FROM thorbis.schema_migrations")
        recorded = {r["version"]: (r["name"], r["checksum"]) for r in rows}
        # Check every applied file first: a changed one stops everything, so the database
        # is never migrated past a ledger that no longer matches the shipped SQL.
        for m in todo:
            if m.version in recorded:
                name, checksum = recorded[m.version]
                if checksum != m.checksum:
                    raise MigrationError(
                        f"core migration {m.name!r} (version {m.version}) was changed after it "
                        f"was applied as {name!r}: recorded sha256 {checksum}, file has "
                        f"{m.checksum}; add a new numbered file instead of editing it"
                    )
                already.append(m.name)
    pending = [m for m in todo if m.version not in recorded]
    # A migration may alter the host's captured tables (their capture triggers): its
    # locks are bounded and tried again, as db init's are, so that a host transaction
    # left open never queues the host's writes behind the upgrade (found as an operator
    # would: a writer waited 7 s behind a migration waiting for a batch job).
    hosts = await conn.fetch(_CAPTURED) if pending and await conn.fetchval(
        "SELECT to_regclass('thorbis.captured_tables') IS NOT NULL") else []
    for m in pending:
        was_applied = await with_lock_retries(
            conn, functools.partial(_apply, conn, m),
            what=f"applying core migration {m.name}", tables=[r[0] for r in hosts])
        (applied if was_applied else already).append(m.name)
    return MigrationReport(tuple(applied), tuple(already))


_CAPTURED = "SELECT table_name FROM thorbis.captured_tables ORDER BY 1"


async def _apply(conn: asyncpg.Connection, m: Migration) -> bool:
    """Apply ``m`` in a transaction of its own, its table locks waited for
    :data:`~thorbis_cache.postgres.ddl_locks.LOCK_TIMEOUT` at most; False when another
    migrator applied it meanwhile.

    :raises asyncpg.LockNotAvailableError: a lock was not granted in time (nothing kept).
    :raises MigrationError: a statement failed (named).
    """
    async with conn.transaction():
        await conn.execute(_LOCK)
        # Another migrator may have applied it while we waited for the lock.
        if await conn.fetchval(
            "SELECT 1 FROM thorbis.schema_migrations WHERE version = $1", m.version
        ):
            return False
        await bound_locks(conn)  # after the migrators' own lock, which may wait
        for statement in split_sql(m.sql):
            try:
                await conn.execute(statement)
            except asyncpg.LockNotAvailableError:
                raise  # tried again, the whole file
            except asyncpg.PostgresError as exc:
                shown = " ".join(statement.split())[:200]
                raise MigrationError(
                    f"core migration {m.name!r}: statement failed: {shown!r}: "
                    f"PostgreSQL {exc.sqlstate}: {exc}"
                ) from exc
        await conn.execute(
            "INSERT INTO thorbis.schema_migrations (version, name, checksum) "
            "VALUES ($1, $2, $3)", m.version, m.name, m.checksum,
        )
    return True
