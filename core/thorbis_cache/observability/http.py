"""A small HTTP/1.1 server for an ASGI application, on asyncio's streams: what
``thorbis-cache serve`` and ``worker --metrics-port`` listen with, so the endpoint runs
in the event loop that holds the figures (no thread, no web server dependency).

It serves what a Prometheus scrape and a health probe send: one request per
connection (``Connection: close``), no request body, headers bounded to 16 KiB, 10 s
to send them. Anything else gets 400/413/505 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.observability.asgi import MetricsApp

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_HEAD_TIMEOUT = 10.0


class HttpServer:
    """Serves an ASGI application on ``host:port`` until :meth:`aclose`.

    :param app: the application (:class:`~thorbis_cache.observability.MetricsApp`).
    :param host: address to listen on (``127.0.0.1``; ``0.0.0.0`` for a scraper on
        another machine).
    :param port: port to listen on; 0 picks a free one (see :attr:`port`).
    """

    def __init__(self, app: MetricsApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one picked, for port 0)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> HttpServer:
        """Listen.

        :raises ConfigurationError: the address cannot be bound (in use, not local).
        """
        try:
            self._server = await asyncio.start_server(self._connection, self.host, self._port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self._port}: {exc.strerror or exc}"
            ) from exc
        return self

    async def __aenter__(self) -> HttpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and end the connections being served."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception:
            log.exception("metrics endpoint: request failed")
            with contextlib.suppress(Exception):
                await _simple(writer, 500)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _simple(writer, 413)
            return
        except TimeoutError:
            return
        if len(head) > _MAX_HEAD:
            await _simple(writer, 413)
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await _simple(writer, 400)
            return
        method, target, version = parts
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            await _simple(writer, 505)
            return
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower().encode("latin-1"),
                                value.strip().encode("latin-1")))
        path, _, query = target.partition("?")
        peer = writer.get_extra_info("peername")
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version[5:], "method": method.upper(), "scheme": "http",
            "path": unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "", "headers": headers,
            "client": tuple(peer[:2]) if peer else None,
            "server": (self.host, self.port),
        }
        received = False

        async def receive() -> MutableMapping[str, Any]:
            nonlocal received
            if received:  # the request is over: wait as a disconnected client would
                await asyncio.Event().wait()
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                reason = HTTPStatus(status).phrase
                out = [f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")]
                out += [name + b": " + value + b"\r\n"
                        for name, value in message.get("headers", [])]
                out.append(b"connection: close\r\n\r\n")
                writer.write(b"".join(out))
            elif message["type"] == "http.response.body":
                writer.write(message.get("body", b""))
                if not message.get("more_body", False):
                    await writer.drain()

        await self.app(scope, receive, send)


async def _simple(writer: asyncio.StreamWriter, status: int) -> None:
    phrase = HTTPStatus(status).phrase.encode()
    writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n"
                 b"connection: close\r\n\r\n%s\n" % (status, phrase, len(phrase) + 1, phrase))
    await writer.drain()
