"""A logical replication stream read on the event loop, confirmed only where told.

asyncpg speaks no replication protocol, so the stream goes through psycopg's libpq
binding (the ``logical`` extra): :func:`psycopg.AsyncConnection.connect` opens a
``replication=database`` connection (authentication, TLS, ``pg_hba`` as for any
connection), then ``START_REPLICATION`` switches it to COPY BOTH, and this module reads
the ``XLogData`` and keepalive messages from libpq's buffer without blocking and writes
the standby status updates itself (https://www.postgresql.org/docs/15/protocol-replication.html).

Why not psycopg2's ``LogicalReplicationConnection``: it is blocking, and when a keepalive
arrives it moves the confirmed position on by itself whenever the last message read is
at or before the last explicit confirmation -- which is the case while the first
messages of a transaction that began before the confirmed one's commit are buffered but
not applied. Here the confirmed position is exactly what the caller passed to
:meth:`ReplicationStream.confirm`, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thorbis_cache.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

__all__ = ["ReplicationError", "ReplicationStream", "XLogData", "reader_name"]

_XLOGDATA = struct.Struct("!QQq")  # dataStart, walEnd, sendTime
_KEEPALIVE = struct.Struct("!Qq?")  # walEnd, sendTime, reply requested
_STATUS = struct.Struct("!cQQQq?")  # 'r', written, flushed, applied, clock, reply requested
#: Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
_PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000
#: A status update at least this often (seconds), so the server never times the
#: stream out (``wal_sender_timeout``, 60 s by default) and sees the slot's progress.
#: Each asks the server for a keepalive in return: a stream that then hears nothing for
#: :data:`SILENCE_INTERVALS` of them is taken for lost.
STATUS_INTERVAL = 10.0

#: Status intervals without a message from the server after which the stream is taken
#: for lost (:class:`ReplicationError`): a server that hung, or a network partition
#: without a reset, keeps the connection open and silent, and the worker would read
#: nothing from it, saying nothing, until TCP gave up (about 15 minutes, or never).
SILENCE_INTERVALS = 3


class ReplicationError(Exception):
    """The server ended or refused the stream.

    :ivar sqlstate: the server's error code (``42704``: no such slot; ``55000``: the
        slot was invalidated; ``55006``: another session reads it), or None when the
        connection itself broke.
    """

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


XLogData = tuple[int, bytes]
"""One message of the stream: ``(data_start, payload)``. For ``pgoutput``,
``data_start`` is the change's LSN (the transaction's first LSN for ``BEGIN``, its end
for ``COMMIT``)."""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the logical extra is not installed
        raise ConfigurationError(
            "logical capture streams the WAL through psycopg (libpq), which is not "
            "installed: pip install 'thorbis-cache[logical]'") from exc
    return psycopg


def reader_name() -> str:
    """The ``application_name`` of this process's replication sessions, unless its DSN
    sets one: ``thorbis-cache <host>:<pid>``, so that ``pg_stat_replication`` (and a
    worker standing by) says which process reads a slot. PostgreSQL keeps 63 bytes."""
    return f"thorbis-cache {socket.gethostname()}:{os.getpid()}"[-63:]


def _libpq_params(dsn: str) -> tuple[dict[str, Any], int]:
    """The DSN's parameters as libpq reads them, and how many hosts it lists (empty
    and 1 for a DSN libpq refuses: connecting says why)."""
    psycopg = _psycopg()
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return {}, 1
    return given, max(1, len(str(given.get("host") or "").split(",")))


def _named(given: dict[str, Any]) -> dict[str, str]:
    return {} if given.get("application_name") else {"application_name": reader_name()}


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class ReplicationStream:
    """One ``START_REPLICATION`` session on a logical slot.

    Open with :meth:`start`; read with :meth:`read` (never blocks) and
    :meth:`readable`; confirm with :meth:`confirm`; :meth:`close` at the end. Single
    task use: nothing here is safe to call from two tasks at once.

    :ivar server_lsn: the server's position in its last keepalive (everything that
        commits before it has been sent); 0 before the first.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any], slot: str,
                 status_interval: float = STATUS_INTERVAL) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn
        self.slot = slot
        self._status_interval = status_interval
        self.server_lsn = 0
        self._confirmed = 0
        self._last_status = 0.0
        self._last_heard = time.monotonic()
        self._reply_requested = False
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def start(cls, dsn: str, slot: str, options: dict[str, str],
                    *, connect_timeout: float = 10.0,
                    sender_timeout: float | None = None) -> ReplicationStream:
        """Connect and start streaming the slot from its confirmed position.

        :param dsn: a libpq connection string or URI.
        :param options: the output plugin's options (``pgoutput``: ``proto_version``,
            ``publication_names``).
        :param sender_timeout: the session's ``wal_sender_timeout`` in seconds (None:
            the server's): a reader that stops answering (a hung process, a host cut
            off) loses the slot after it, to another reader. Status updates go at
            least four times as often.
        :raises ReplicationError: the server refused (no such slot, slot invalidated or
            in use, ``wal_level`` not logical, no replication permission).
        """
        psycopg = _psycopg()
        # libpq's connect_timeout is per host: a first host that hangs (a failed-over
        # primary that was not fenced) leaves time for the next, the new primary.
        given, hosts = _libpq_params(dsn)
        per_host = {} if given.get("connect_timeout") else {
            "connect_timeout": str(max(2, round(connect_timeout)))}
        try:
            settings = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=1"
            if sender_timeout is not None:
                settings += f" -c wal_sender_timeout={round(sender_timeout * 1000)}"
            conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
                dsn, autocommit=True, replication="database",
                # ISO dates and UTC timestamps in the decoded text (see logical.py).
                options=settings, **per_host, **_named(given)), connect_timeout * hosts + 1)
        except psycopg.Error as exc:
            raise ReplicationError(f"replication connection to slot {slot!r}: {exc}",
                                   getattr(exc, "sqlstate", None)) from exc
        stream = cls(conn, slot, STATUS_INTERVAL if sender_timeout is None
                     else min(STATUS_INTERVAL, sender_timeout / 4))
        try:
            await asyncio.wait_for(stream._start(options), connect_timeout)
        except BaseException:
            await stream.close()
            raise
        return stream

    @staticmethod
    async def refused(dsn: str, *, connect_timeout: float = 10.0) -> str | None:
        """Why the server (or whatever stands at ``dsn``) refuses a replication
        connection, or None when one opens and answers ``IDENTIFY_SYSTEM``: the check
        to make before choosing logical capture (a pooler such as PgBouncer before 1.23
        refuses the ``replication`` startup parameter; ``pg_hba.conf`` may have no
        ``replication`` line for the role)."""
        psycopg = _psycopg()
        try:
            conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
                dsn, autocommit=True, replication="database"), connect_timeout)
        except (psycopg.Error, TimeoutError) as exc:
            return " ".join(str(exc).split()) or type(exc).__name__
        try:
            await conn.execute("IDENTIFY_SYSTEM")
        except psycopg.Error as exc:
            return " ".join(str(exc).split()) or type(exc).__name__
        finally:
            await conn.close()
        return None

    async def _start(self, options: dict[str, str]) -> None:
        psycopg = _psycopg()
        pq = psycopg.pq
        args = ", ".join(f"{_quote_ident(k)} {_quote_literal(v)}" for k, v in options.items())
        query = f"START_REPLICATION SLOT {_quote_ident(self.slot)} LOGICAL 0/0 ({args})"
        pg = self._pgconn
        pg.nonblocking = 1
        pg.send_query(query.encode())
        await self._flush()
        while True:
            pg.consume_input()  # raises when the connection broke
            if not pg.is_busy():
                break
            await self.readable(None)
        result = pg.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            raise self._error(result)
        self._last_status = time.monotonic()

    def _error(self, result: Any) -> ReplicationError:
        psycopg = _psycopg()
        if result is None:
            message = self._pgconn.get_error_message() or "no result"
            return ReplicationError(f"slot {self.slot!r}: {message}")
        diag = psycopg.pq.DiagnosticField
        state = result.error_field(diag.SQLSTATE)
        text = (result.error_field(diag.MESSAGE_PRIMARY) or result.error_message or b"")
        detail = result.error_field(diag.MESSAGE_DETAIL)
        message = text.decode(errors="replace").strip()
        if detail:
            message += f" ({detail.decode(errors='replace').strip()})"
        return ReplicationError(f"slot {self.slot!r}: {message}",
                                state.decode() if state else None)

    # ----------------------------------------------------------------- reading

    def read(self) -> XLogData | None:
        """The next data message buffered, or None when none is (then wait with
        :meth:`readable`). Keepalives are consumed here: they move :attr:`server_lsn`
        and, when the server asks, get a status update carrying only what was
        confirmed.

        :raises ReplicationError: the server ended the stream or the connection broke.
        """
        pg = self._pgconn
        consumed = False
        while True:
            now = time.monotonic()
            if now - self._last_heard > SILENCE_INTERVALS * self._status_interval:
                raise ReplicationError(
                    f"slot {self.slot!r}: the server sent nothing for "
                    f"{now - self._last_heard:.0f} s, though a keepalive was asked every "
                    f"{self._status_interval:g} s: taken for lost (a server that hung, or "
                    "a network partition)")
            if now - self._last_status >= self._status_interval:
                self._send_status(reply=True)
            try:
                size, data = pg.get_copy_data(1)
            except Exception as exc:  # psycopg raises on a broken connection
                raise ReplicationError(f"slot {self.slot!r}: stream broke: {exc}") from exc
            if size == 0:
                if consumed:
                    return None
                # Read from the socket only when libpq's buffer is empty, so that a fast
                # server cannot grow the buffer without bound.
                try:
                    pg.consume_input()  # raises when the connection broke
                except Exception as exc:
                    raise ReplicationError(f"slot {self.slot!r}: stream broke: {exc}") from exc
                consumed = True
                continue
            if size < 0:
                raise self._error(pg.get_result())
            self._last_heard = time.monotonic()
            kind = data[0]
            if kind == 0x77:  # 'w' XLogData
                start, _end, _clock = _XLOGDATA.unpack_from(data, 1)
                return start, bytes(data[1 + _XLOGDATA.size:])
            if kind == 0x6B:  # 'k' keepalive
                wal_end, _clock, reply = _KEEPALIVE.unpack_from(data, 1)
                self.server_lsn = max(self.server_lsn, wal_end)
                self._reply_requested = False
                if reply:
                    self._send_status()
                continue
            raise ReplicationError(f"slot {self.slot!r}: unknown replication message "
                                   f"{chr(kind)!r}")

    async def readable(self, max_wait: float | None) -> bool:
        """Wait until the socket has data (True) or ``max_wait`` seconds pass (False)."""
        fd = self._pgconn.socket
        ready: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(fd, _resolve, ready)
        try:
            await asyncio.wait_for(ready, max_wait)
            return True
        except TimeoutError:
            return False
        finally:
            self._loop.remove_reader(fd)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever the socket has data; returns the undo."""
        fd = self._pgconn.socket
        self._loop.add_reader(fd, callback)

        def unwatch() -> None:
            self._loop.remove_reader(fd)

        return unwatch

    # ----------------------------------------------------------------- confirming

    @property
    def confirmed(self) -> int:
        """The highest position passed to :meth:`confirm`."""
        return self._confirmed

    def confirm(self, lsn: int) -> None:
        """Tell the server everything before ``lsn`` is applied: the slot will not send
        it again and may free its WAL. Sent at once when it moves the position."""
        if lsn > self._confirmed:
            self._confirmed = lsn
            self._send_status()

    def request_position(self) -> None:
        """Ask the server for a keepalive (it answers with its position,
        :attr:`server_lsn`); one request in flight at a time."""
        if not self._reply_requested:
            self._reply_requested = True
            self._send_status(reply=True)

    def _send_status(self, reply: bool = False) -> None:
        clock = int(time.time() * 1_000_000) - _PG_EPOCH_OFFSET_US
        lsn = self._confirmed
        message = _STATUS.pack(b"r", lsn, lsn, lsn, clock, reply)
        pg = self._pgconn
        if pg.put_copy_data(message) != 1:
            raise ReplicationError(f"slot {self.slot!r}: could not send a status update: "
                                   f"{pg.get_error_message()}")
        # Tiny messages: flushed at once on any socket not full; one still pending is
        # flushed on the next read or status update.
        pg.flush()
        self._last_status = time.monotonic()

    async def _flush(self) -> None:
        pg = self._pgconn
        while pg.flush() == 1:
            writable: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_writer(pg.socket, _resolve, writable)
            try:
                await writable
            finally:
                self._loop.remove_writer(pg.socket)

    async def close(self) -> None:
        """Close the connection (the slot keeps the last confirmed position)."""
        conn = self._conn
        if not conn.closed:
            # Closing a broken stream: nothing left to save, nothing to report.
            with contextlib.suppress(Exception):
                await conn.close()
