"""The Redis adapter: the only module of the cache path that imports ``redis``.

It hides the topology (one server or a Cluster), groups multi-key calls by hash slot,
runs Lua scripts by SHA with a fallback to EVAL, and translates driver exceptions
into :mod:`thorbis_cache.errors` at one seam.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from thorbis_cache.errors import CacheBackendError, ConfigurationError, RedisUnavailableError

__all__ = ["RedisStore", "Script", "load_lua"]

log = logging.getLogger(__name__)

CLUSTER_SCHEME = "redis+cluster"


def load_lua(name: str) -> str:
    """The source of ``thorbis_cache/lua/<name>.lua``."""
    return (resources.files("thorbis_cache") / "lua" / f"{name}.lua").read_text("utf-8")


class Script:
    """A Lua script run by SHA; a NOSCRIPT reply (restarted or new node) falls back to
    EVAL, which also loads it there."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()


class RedisStore:
    """Byte-level access to Redis for the cache: get/mget/set/delete, scripts, commands.

    Build it with :meth:`from_url`; use ``async with`` or call :meth:`aclose`.

    :param client: a ``redis.asyncio`` Redis or RedisCluster client (bytes responses).
    :param address: shown in error messages.
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, address: str) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self.address = address

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        max_connections: int = 128,
    ) -> RedisStore:
        """Connect lazily to ``redis://host:port/db`` or ``redis+cluster://host:port``.

        Timeouts are socket timeouts, not per-call ``wait_for`` (which costs on every call).

        :raises ConfigurationError: for a URL of another scheme.
        """
        parts = urlsplit(url)
        if parts.scheme == CLUSTER_SCHEME:
            client: aioredis.Redis | RedisCluster = RedisCluster(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 6379,
                password=parts.password,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                max_connections=max_connections,
                decode_responses=False,
            )
            return cls(client, f"cluster {parts.hostname}:{parts.port}")
        if parts.scheme in ("redis", "rediss", "unix"):
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                max_connections=max_connections,
                decode_responses=False,
            )
            return cls(client, f"{parts.hostname}:{parts.port or 6379}")
        raise ConfigurationError(
            f"redis url {url!r}: scheme must be redis://, rediss:// or {CLUSTER_SCHEME}://"
        )

    @property
    def is_cluster(self) -> bool:
        """True when talking to a Redis Cluster."""
        return self._cluster

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection."""
        await self._client.aclose()

    # ----------------------------------------------------------------- error seam

    @contextlib.asynccontextmanager
    async def _translate(self, operation: str) -> AsyncIterator[None]:
        try:
            yield
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise RedisUnavailableError(operation, self.address, _describe(exc)) from exc
        except rexc.RedisClusterException as exc:
            raise RedisUnavailableError(operation, self.address, _describe(exc)) from exc
        except rexc.RedisError as exc:
            raise CacheBackendError(operation, self.address, _describe(exc)) from exc

    def _fail(self, operation: str, exc: BaseException) -> CacheBackendError:
        if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError
                      | rexc.RedisClusterException):
            return RedisUnavailableError(operation, self.address, _describe(exc))
        return CacheBackendError(operation, self.address, _describe(exc))

    # ----------------------------------------------------------------- hot path
    # Written as plain try/except rather than through _translate: an async context
    # manager costs a few microseconds per call, which the hit path cannot afford.

    async def get(self, key: str) -> bytes | None:
        """GET ``key``."""
        try:
            data: bytes | None = await self._client.get(key)  # type: ignore[assignment]
            return data
        except (rexc.RedisError, OSError) as exc:
            raise self._fail("GET", exc) from exc

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET, one call per hash slot (one call in total on a single server)."""
        if not keys:
            return []
        try:
            if not self._cluster:
                got: list[bytes | None] = await self._client.mget(keys)  # type: ignore[assignment]
                return got
            by_slot: dict[int, list[int]] = {}
            for i, k in enumerate(keys):
                by_slot.setdefault(key_slot(k.encode()), []).append(i)
            out: list[bytes | None] = [None] * len(keys)
            for positions in by_slot.values():
                # Sequential per slot: concurrent gathers win nothing for the usual case
                # (one tenant, one slot) and would open a connection per slot.
                values = await self._client.mget([keys[i] for i in positions])
                for i, v in zip(positions, values):
                    out[i] = v  # type: ignore[assignment]
            return out
        except (rexc.RedisError, OSError) as exc:
            raise self._fail("MGET", exc) from exc

    async def set(self, key: str, data: bytes, ttl_ms: int) -> None:
        """SET ``key`` with a TTL in milliseconds."""
        try:
            await self._client.set(key, data, px=ttl_ms)
        except (rexc.RedisError, OSError) as exc:
            raise self._fail("SET", exc) from exc

    async def delete(self, keys: Iterable[str]) -> int:
        """DEL, one call per hash slot; returns how many keys existed."""
        groups: dict[int, list[str]] = {}
        for k in keys:
            groups.setdefault(key_slot(k.encode()), []).append(k)
        removed = 0
        async with self._translate("DEL"):
            for group in groups.values():
                removed += await self._client.delete(*group)
        return removed

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script (all ``keys`` must share one slot)."""
        try:
            try:
                return await self._client.evalsha(script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                return await self._client.eval(script.source, len(keys), *keys, *args)
        except (rexc.RedisError, OSError) as exc:
            raise self._fail(f"script {script.name}", exc) from exc

    async def command(self, *args: Any) -> Any:
        """Run one command (routed by its key on a Cluster)."""
        async with self._translate(str(args[0])):
            return await self._client.execute_command(*args)

    async def ping(self) -> bool:
        """PING the server (every master of a Cluster)."""
        async with self._translate("PING"):
            return bool(await self._client.ping())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
