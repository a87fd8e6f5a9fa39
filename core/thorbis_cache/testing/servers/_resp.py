"""A minimal RESP2 client: one command per connection, for readiness checks and set-up.

Start-up and teardown of the Redis servers depend on no client library.
"""

from __future__ import annotations

import socket
from typing import IO, Any

from thorbis_cache.testing.servers._ports import HOST


class _RespError(Exception):
    """An error reply from Redis."""


def _read_reply(stream: IO[bytes]) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by redis")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return _RespError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed by redis")
        return data[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected reply from redis: {line[:80]!r}")


def _redis_command(port: int, *args: str | int, timeout: float = 5.0) -> Any:
    """Send one command to 127.0.0.1:``port`` and return its reply.

    A tiny RESP2 client, so that start-up and teardown depend on no client library.

    :raises _RespError: Redis answered with an error.
    :raises OSError: Redis could not be reached.
    """
    parts = [str(arg).encode() for arg in args]
    payload = b"*%d\r\n" % len(parts) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in parts
    )
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            reply = _read_reply(stream)
    if isinstance(reply, _RespError):
        raise reply
    return reply


def _info_fields(text: Any) -> dict[str, str]:
    if isinstance(text, bytes):
        text = text.decode()
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
