"""The multiplexed connections to one Redis server, opened lazily and replaced when lost."""

from __future__ import annotations

import asyncio
import ssl

import attrs
import redis.exceptions as rexc

from thorbis_cache.transport.connection import MultiplexedConnection

__all__ = ["ConnectOptions", "NodeConnections"]


@attrs.frozen
class ConnectOptions:
    """How to reach and log in to the servers of one store (every node alike)."""

    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    db: int = 0
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 2.0
    unix_path: str | None = None


class NodeConnections:
    """``size`` multiplexed connections to one server, used in turn.

    A connection found lost is replaced on the next call that needs it: every caller
    that arrives meanwhile waits for the same connection attempt, and an attempt that
    fails fails them all at once (a stopped server costs one refused connect, not one
    per caller).
    """

    def __init__(self, host: str, port: int, options: ConnectOptions, size: int = 2) -> None:
        self.host = host
        self.port = port
        self.options = options
        self._slots: list[MultiplexedConnection | None] = [None] * size
        self._connecting: list[asyncio.Future[MultiplexedConnection] | None] = [None] * size
        self._next = 0

    def ready(self) -> MultiplexedConnection | None:
        """A usable connection without waiting (the hot path), or None."""
        slots = self._slots
        index = self._next
        self._next = (index + 1) % len(slots)
        connection = slots[index]
        if connection is not None and connection.usable:
            return connection
        for connection in slots:
            if connection is not None and connection.usable:
                return connection
        return None

    def silent(self, now: float, after: float | None) -> bool:
        """True when one of the connections has owed replies for ``after`` seconds
        without reading a byte (see
        :meth:`~MultiplexedConnection.owed_without_progress`); called once per
        watchdog tick, which is what the count is made of. ``after=None`` starts every
        count again."""
        found = False
        for connection in self._slots:
            if connection is None or not connection.usable:
                continue
            owed = connection.owed_without_progress(now, restart=after is None)
            if after is not None and owed >= after:
                found = True
        return found

    async def connection(self) -> MultiplexedConnection:
        """A usable connection, opening one if none is."""
        found = self.ready()
        if found is not None:
            return found
        index = self._next
        pending = self._connecting[index]
        if pending is None:
            pending = self._connecting[index] = asyncio.get_running_loop().create_future()
            try:
                opened = await self._open()
            except BaseException as exc:
                if self._connecting[index] is pending:
                    self._connecting[index] = None
                if not pending.done():
                    # The others waiting on this attempt get an error of their own,
                    # never a CancelledError they did not ask for.
                    pending.set_exception(rexc.ConnectionError(
                        f"connecting to {self.host}:{self.port}: abandoned")
                        if isinstance(exc, asyncio.CancelledError) else exc)
                    pending.exception()  # retrieved: only the waiters re-raise it
                raise
            if self._connecting[index] is pending:
                self._connecting[index] = None
            if pending.done():  # closed (found stale) while connecting
                opened.close()
                raise rexc.ConnectionError(
                    f"connections to {self.host}:{self.port} closed while connecting")
            self._slots[index] = opened
            pending.set_result(opened)
            return opened
        return await asyncio.shield(pending)

    async def _open(self) -> MultiplexedConnection:
        options = self.options
        return await MultiplexedConnection.open(
            self.host, self.port, unix_path=options.unix_path,
            ssl_context=options.ssl_context,
            username=options.username, password=options.password, db=options.db,
            connect_timeout=options.connect_timeout)

    def close(self) -> list[MultiplexedConnection]:
        """Close every connection (pending callers fail); the connections closed, whose
        :meth:`~MultiplexedConnection.wait_closed` says when their sockets are."""
        closed = [c for c in self._slots if c is not None]
        for connection in closed:
            connection.close()
        self._slots = [None] * len(self._slots)
        for pending in self._connecting:
            # (an attempt left on a loop that has stopped has no caller left to fail)
            if pending is not None and not pending.done() and pending.get_loop().is_running():
                pending.set_exception(rexc.ConnectionError(
                    f"connections to {self.host}:{self.port} closed"))
                pending.exception()
        self._connecting = [None] * len(self._connecting)
        return closed
