"""Driver anchors for ``bench/hit_path.py``: what other clients do with the same GET.

Two clients the benchmark measures beside redis-py, in the same process and run:

* :class:`FloorClient`, the bare hiredis-protocol floor: one TCP connection driven by an
  :class:`asyncio.Protocol` with a :class:`hiredis.Reader`. Every request is written the
  moment it is made (no batching, no lock, no pool), the replies are matched in order to
  the futures waiting for them. No deadline, no reconnect, no cancellation handling: it
  is not a client anyone should use, only the floor of what a Python asyncio client can
  cost on this loop, against which a real transport's overhead is read.
* :func:`open_glide`, valkey-glide's asyncio ``GlideClient`` (its Rust core multiplexes
  one connection), or the reason it could not be opened (the package is the ``bench``
  extra: ``pip install -e '.[bench]'``); the benchmark then skips that anchor and says why.

Neither is used by ``thorbis_cache``; both live here so that the hit-path script keeps to
measuring and reporting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis

__all__ = ["FloorClient", "open_glide"]

#: Per-request timeout given to glide (ms): its default of 250 ms can fire under 64-way
#: load on a shared 2-core machine; redis-py's anchor has no per-call timeout at all.
GLIDE_REQUEST_TIMEOUT_MS = 5_000


class _FloorProtocol(asyncio.Protocol):
    """RESP2 over one connection: requests written at once, replies matched FIFO."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while (reply := self._reader.gets()) is not False:
            future = waiting.popleft()
            if future.done():  # cancelled by its caller: the reply is consumed all the same
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("connection closed")
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost: {self._lost}"))

    def send(self, packed: bytes, future: asyncio.Future[Any]) -> None:
        if self._transport is None or self._lost is not None:
            raise ConnectionError(f"not connected: {self._lost}")
        self._transport.write(packed)
        self._waiting.append(future)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class FloorClient:
    """The bare hiredis-protocol floor: ``get``/``mget``/``set`` on one pipelined connection.

    Open with :meth:`connect`, close with :meth:`aclose` (or ``async with``).
    """

    def __init__(self, protocol: _FloorProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self._protocol = protocol
        self._loop = loop

    @classmethod
    async def connect(cls, host: str, port: int) -> FloorClient:
        """Open one connection to ``host:port`` (asyncio sets ``TCP_NODELAY`` on it).

        :raises OSError: the server cannot be reached.
        """
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_FloorProtocol, host, port)
        return cls(protocol, loop)

    def execute(self, *args: str | bytes | int) -> asyncio.Future[Any]:
        """Send one command now; the future gets its reply (a ``ReplyError`` is raised)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        # hiredis's stub types the argument as a 1-tuple; it takes any number of items.
        packed = hiredis.pack_command(args)  # type: ignore[arg-type]
        self._protocol.send(packed, future)
        return future

    def get(self, key: str | bytes) -> asyncio.Future[bytes | None]:
        return self.execute(b"GET", key)

    def mget(self, keys: list[str]) -> asyncio.Future[list[bytes | None]]:
        return self.execute(b"MGET", *keys)

    def set(self, key: str | bytes, value: bytes, ex: int) -> asyncio.Future[Any]:
        return self.execute(b"SET", key, value, b"EX", ex)

    async def aclose(self) -> None:
        self._protocol.close()
        await asyncio.sleep(0)  # let the transport's close callback run

    async def __aenter__(self) -> FloorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def open_glide(host: str, port: int) -> tuple[Any | None, str]:
    """valkey-glide's asyncio ``GlideClient`` on ``host:port``, and its version.

    :returns: ``(client, version)``, or ``(None, why)`` when glide is not installed or
        does not connect; the caller closes the client with ``await client.close()``.
    """
    try:
        from importlib.metadata import version

        from glide import GlideClient, GlideClientConfiguration, NodeAddress
    except ImportError as exc:
        return None, (f"valkey-glide is not installed ({exc}); "
                      "pip install -e '.[bench]' to measure it")
    try:
        config = GlideClientConfiguration(
            [NodeAddress(host, port)], request_timeout=GLIDE_REQUEST_TIMEOUT_MS
        )
        client = await GlideClient.create(config)
    except Exception as exc:  # any failure only means: no glide anchor in this run
        return None, f"valkey-glide did not connect to {host}:{port}: {exc!r}"
    return client, version("valkey-glide")
