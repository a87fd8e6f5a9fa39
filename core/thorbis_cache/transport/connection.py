"""One multiplexed Redis connection: an asyncio protocol with a ``hiredis.Reader``.

Many callers share it: each request is appended to the socket's write buffer and its
reply future to a FIFO, and replies are matched to futures strictly in order, which is
how Redis answers. Requests written in one turn of the event loop leave in one write
(automatic pipelining), so 64 concurrent readers cost the server and the kernel a few
large reads instead of 64 small ones.

The property that matters more than speed is that no reply is ever handed to the wrong
caller. The FIFO never loses a slot: a caller that gives up (cancelled by its owner or
by the store's deadline watchdog) leaves its future cancelled in place, and the reply
that arrives for it is dropped when its turn comes. Anything that could break the
order (the connection lost, a protocol error, a reply with nobody waiting) closes the
connection and fails every pending future; nothing is ever re-matched. This is the
failure of CVE-2023-28858/28859, where a cancelled request left its reply for the next
caller, designed out rather than patched.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from typing import Any, cast

import hiredis
import redis.exceptions as rexc
from redis._parsers.base import BaseParser

__all__ = ["MultiplexedConnection", "pack_command"]


def pack_command(*args: Any) -> bytes:
    """One command in RESP (an array of bulk strings), packed by hiredis (in C).

    :raises redis.exceptions.DataError: an argument that is not str, bytes, int or
        float (a bool included, as redis-py refuses it).
    """
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError as exc:
        raise rexc.DataError(f"invalid command argument: {exc}") from exc
    return packed


def _reply_error(message: str) -> Exception:
    # redis-py's own table (NOSCRIPT, MOVED, OOM, WRONGTYPE...), so the store's error
    # seam sees the same exception classes whichever path a command took.
    error: Exception = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


class MultiplexedConnection(asyncio.Protocol):
    """A connection many concurrent callers share; see the module docstring.

    Build it with :meth:`open`. :meth:`request` returns a future for the reply: a value,
    or a redis-py exception for an error reply; the future fails with
    :class:`redis.exceptions.ConnectionError` if the connection is lost first.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self._reader = hiredis.Reader(replyError=_reply_error)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._lost: BaseException | None = None
        self._closed: asyncio.Future[None] | None = None
        #: reads from the socket so far: progress, as :meth:`owed_without_progress` sees it
        self.received = 0
        self._seen = 0
        self._progress_at = 0.0

    @classmethod
    async def open(cls, host: str, port: int, *, unix_path: str | None = None,
                   ssl_context: ssl.SSLContext | None = None,
                   username: str | None = None, password: str | None = None, db: int = 0,
                   connect_timeout: float = 2.0) -> MultiplexedConnection:
        """Connect, then authenticate and select ``db`` before any caller's request.

        :raises redis.exceptions.ConnectionError: unreachable, refused or timed out.
        :raises redis.exceptions.AuthenticationError: credentials refused.
        """
        loop = asyncio.get_running_loop()
        where = unix_path or f"{host}:{port}"
        protocol = cls(where)
        try:
            async with asyncio.timeout(connect_timeout):
                if unix_path is not None:
                    await loop.create_unix_connection(lambda: protocol, unix_path)
                else:
                    # With TLS, asyncio checks the certificate against ``host``
                    # when the context asks for hostname checks.
                    await loop.create_connection(lambda: protocol, host, port,
                                                 ssl=ssl_context)
                if password is not None:
                    auth = ("AUTH", password) if username is None else \
                        ("AUTH", username, password)
                    await protocol.request(pack_command(*auth))
                if db:
                    await protocol.request(pack_command("SELECT", db))
        except TimeoutError as exc:
            protocol.close()
            raise rexc.TimeoutError(f"connecting to {where}: timed out") from exc
        except OSError as exc:
            protocol.close()
            raise rexc.ConnectionError(f"connecting to {where}: {exc}") from exc
        except BaseException:
            protocol.close()
            raise
        return protocol

    # ----------------------------------------------------------------- callers

    @property
    def usable(self) -> bool:
        """Connected and not lost: new requests may be sent."""
        return self._transport is not None and self._lost is None

    @property
    def pending(self) -> int:
        """Replies owed (including those of callers who gave up)."""
        return len(self._waiters)

    def request(self, payload: bytes) -> asyncio.Future[Any]:
        """Send one packed command (see :func:`pack_command`); its reply's future.

        On a busy connection the bytes leave with the others written in this loop
        turn, in one write; on an idle one, at once.
        :raises redis.exceptions.ConnectionError: the connection is lost or closed.
        """
        if self._lost is not None or self._transport is None or self._loop is None:
            raise rexc.ConnectionError(f"connection to {self.where} lost: {self._lost}")
        future: asyncio.Future[Any] = self._loop.create_future()
        waiters = self._waiters
        waiters.append(future)
        if len(waiters) == 1 and not self._outgoing:
            # An idle connection: nothing to coalesce with, so the request leaves now
            # (a sequential caller saves a turn of the loop).
            self._transport.write(payload)
            return future
        self._outgoing.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def owed_without_progress(self, now: float, *, restart: bool = False) -> float:
        """Seconds this connection has owed replies without reading a byte, as seen by
        successive calls (one per watchdog tick): 0 when nothing is owed, or when
        something arrived since the previous call, which starts the count again.

        A server that stops answering but keeps its connections open (a hung or
        stopped process, a host gone behind a partition, a middlebox dropping the
        flow) is not reported lost by the kernel for many minutes; this is how the
        router notices it (see :meth:`Router.sweep
        <thorbis_cache.transport.router.Router.sweep>`). ``restart`` starts the count
        again whatever happened (the calls were not made at every tick).
        """
        if restart or not self._waiters or self.received != self._seen:
            self._seen = self.received
            self._progress_at = now
            return 0.0
        return now - self._progress_at

    def close(self) -> None:
        """Close the connection; pending callers fail with a ConnectionError."""
        self._fail(rexc.ConnectionError(f"connection to {self.where} closed"))

    # ----------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, by create_connection's contract. Not checked with
        # isinstance: uvloop's transports (uvicorn's loop) do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiters = self._waiters
        self.received += 1
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(rexc.ConnectionError(f"protocol error from {self.where}: {exc}"))
                return
            if reply is False:
                return
            if not waiters:
                # A reply nobody asked for: the order can no longer be trusted.
                self._fail(rexc.ConnectionError(f"unexpected reply from {self.where}"))
                return
            future = waiters.popleft()
            if future.done():
                continue  # its caller gave up: the reply is dropped, in its turn
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rexc.ConnectionError(
            f"connection to {self.where} lost" + (f": {exc}" if exc else "")))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Return once the socket is closed (after :meth:`close`, or a loss); at once
        when called from another event loop than the connection's."""
        if self._closed is not None and self._loop is asyncio.get_running_loop():
            await asyncio.shield(self._closed)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and self._lost is None and self._transport is not None:
            self._transport.write(b"".join(outgoing) if len(outgoing) > 1 else outgoing[0])

    def _fail(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        self._outgoing = []
        waiters, self._waiters = self._waiters, collections.deque()
        # Closed from the next loop once this one has stopped (the store moved on):
        # nothing there runs again, so its callers (gone with it) are not failed, and
        # the socket is shut down so the server lets go of it now, not when collected.
        stopped = self._loop is not None and not self._loop.is_running()
        if not stopped:
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        transport, self._transport = self._transport, None
        if transport is None:
            return
        if stopped:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(RuntimeError):  # a closed loop: "Event loop is closed"
            transport.abort()
