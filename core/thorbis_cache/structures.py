"""Thin typed helpers over Redis hashes, sorted sets and geo indexes.

Keys still come from key schemas (kind HASH, ZSET or GEO), so these structures get the
tenant hash tag, escaping and TTLs like any value. Every write refreshes the TTL in the
same atomic step (a Lua script), so no structure is ever left without expiry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from thorbis_cache.codec import SchemaCodec, check_value
from thorbis_cache.envelope import CorruptEntry
from thorbis_cache.errors import InvalidParameterError, ValueTypeError, VersionConflictError
from thorbis_cache.keys import CacheKey, Param
from thorbis_cache.redis_store import Script

if TYPE_CHECKING:
    from thorbis_cache.cache import Cache

__all__ = ["EntityHash", "GeoIndex", "SortedSet", "Versioned"]

T = TypeVar("T")

#: The hash field holding the entity version; '~' is never an attrs field name.
VERSION_FIELD = "~v"


@attrs.frozen(slots=True)
class Versioned(Generic[T]):
    """A value with the version it was read at (for update-if-version)."""

    value: T
    version: int


class EntityHash(Generic[T]):
    """An attrs entity stored as a Redis hash: one encoded field per attribute plus a
    version that grows on every write.

    Field values are sealed like whole values (CRC or AES-GCM), bound to the key and
    the field name, so a field copied to another field or key does not open.
    """

    __slots__ = ("_cache", "_codec", "_fields", "_key", "_replace", "_rk", "_update")

    def __init__(
        self,
        cache: Cache,
        key: CacheKey[T],
        codec: SchemaCodec[T],
        replace_script: Script,
        update_script: Script,
    ) -> None:
        self._cache = cache
        self._key = key
        self._codec = codec
        self._rk = cache.redis_key(key)
        self._replace = replace_script
        self._update = update_script
        cls = key.schema.value_type
        self._fields = {f.name: f for f in attrs.fields(attrs.resolve_types(cls))}

    def _bind(self, field: str) -> bytes:
        return f"{self._rk}#{field}".encode()

    def _encode_field(self, name: str, value: object) -> bytes:
        field = self._fields[name]
        body = self._codec.converter_pack(value, field.type)
        return self._codec.seal_body(body, self._bind(name), self._key.tenant)

    def _decode_field(self, name: str, data: bytes) -> object:
        body, _, _ = self._codec.open_body(data, self._bind(name), self._key.tenant)
        return self._codec.converter_unpack(body, self._fields[name].type)

    async def get(self) -> T | None:
        """The entity, or None when not cached (or unreadable: then dropped)."""
        got = await self.get_versioned()
        return None if got is None else got.value

    async def get_versioned(self) -> Versioned[T] | None:
        """The entity and its version, or None."""
        raw = await self._cache.store.command("HGETALL", self._rk)
        if not raw:
            return None
        items = {k.decode(): v for k, v in _pairs(raw)}
        try:
            version = int(items.pop(VERSION_FIELD))
            kwargs = {}
            for name, field in self._fields.items():
                kwargs[field.alias or name] = self._decode_field(name, items[name])
            value: T = self._key.schema.value_type(**kwargs)
        except (KeyError, ValueError, CorruptEntry, TypeError) as exc:
            reason = exc if isinstance(exc, CorruptEntry) else CorruptEntry("hash_shape", repr(exc))
            await self._drop(reason)
            return None
        return Versioned(value, version)

    async def get_fields(self, *names: str) -> dict[str, Any]:
        """Some fields of the entity (absent when not cached)."""
        for name in names:
            self._check_name(name)
        raw = await self._cache.store.command("HMGET", self._rk, *names)
        out: dict[str, Any] = {}
        for name, data in zip(names, raw):
            if data is None:
                continue
            try:
                out[name] = self._decode_field(name, data)
            except CorruptEntry as exc:
                await self._drop(exc)
                return {}
        return out

    async def version(self) -> int | None:
        """The current version, or None when not cached."""
        raw = await self._cache.store.command("HGET", self._rk, VERSION_FIELD)
        return None if raw is None else int(raw)

    async def replace(self, value: T, *, ttl: float | None = None) -> int:
        """Store the whole entity; returns its new version."""
        self._codec.check(value)
        args: list[Any] = [VERSION_FIELD, self._cache.ttl_ms(self._key.schema, ttl)]
        for name in self._fields:
            args += [name, self._encode_field(name, getattr(value, name))]
        keys = [self._rk, *self._cache.tag_keys(self._key)]
        return int(await self._cache.store.run(self._replace, keys, args))

    async def update(
        self,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
    ) -> int | None:
        """Change some fields; with ``expected_version``, only if the entity is still at
        that version. Returns the new version, or None when the entity is not cached.

        :raises VersionConflictError: the version differs (or the entity is gone while
            a version was expected).
        :raises ValueTypeError: a value does not match its field type.
        """
        args: list[Any] = [
            VERSION_FIELD,
            "" if expected_version is None else str(expected_version),
            "" if ttl is None else self._cache.ttl_ms(self._key.schema, ttl),
        ]
        for name, value in changes.items():
            self._check_name(name)
            problem = check_value(value, self._fields[name].type)
            if problem:
                raise ValueTypeError(
                    self._key.schema.name, f"field {name}", type(value).__name__, problem
                )
            args += [name, self._encode_field(name, value)]
        keys = [self._rk, *self._cache.tag_keys(self._key)]
        reply = await self._cache.store.run(self._update, keys, args)
        status = int(reply[0])
        if status == 1:
            return int(reply[1])
        if status == 0:
            raise VersionConflictError(
                self._key.schema.name, self._rk, expected_version or 0, int(reply[1])
            )
        if expected_version is not None:
            raise VersionConflictError(self._key.schema.name, self._rk, expected_version, None)
        return None

    def _check_name(self, name: str) -> None:
        if name not in self._fields:
            owner = self._key.schema.value_type.__name__
            raise InvalidParameterError(self._key.schema.name, name, f"not a field of {owner}")

    async def _drop(self, exc: CorruptEntry) -> None:
        self._cache.metrics.corrupt(self._key.schema.name, exc.reason)
        await self._cache.store.delete([self._rk])


class _MemberStructure(Generic[T]):
    """What sorted sets and geo indexes share: typed members encoded like key
    parameters, and writes that refresh the TTL atomically (``lua/write_expire.lua``)."""

    __slots__ = ("_cache", "_key", "_member", "_rk", "_write")

    def __init__(self, cache: Cache, key: CacheKey[Any], write_script: Script) -> None:
        self._cache = cache
        self._key = key
        self._rk = cache.redis_key(key)
        self._member: Param = key.schema.member_param
        self._write = write_script

    def _enc(self, member: T) -> str:
        return self._member.encode(self._key.schema.name, member)

    def _dec(self, raw: bytes) -> T:
        return self._member.decode(raw.decode())  # type: ignore[return-value]

    async def _write_expire(
        self, command: str, args: list[Any], replace: bool, ttl: float | None
    ) -> Any:
        ttl_ms = self._cache.ttl_ms(self._key.schema, ttl)
        return await self._cache.store.run(
            self._write, [self._rk, *self._cache.tag_keys(self._key)],
            [ttl_ms, "1" if replace else "0", command, *args],
        )

    async def remove(self, *members: T) -> int:
        """Remove members; returns how many were there."""
        if not members:
            return 0
        return int(await self._cache.store.command("ZREM", self._rk, *map(self._enc, members)))


class SortedSet(_MemberStructure[T]):
    """A sorted set of typed members (ids) with float scores."""

    __slots__ = ()

    async def add(self, scores: Mapping[T, float], *, replace: bool = False,
                  ttl: float | None = None) -> int:
        """Add or re-score members (``replace`` drops the others first, atomically);
        returns how many were new."""
        if not scores:
            if replace:
                await self._cache.store.delete([self._rk])
            return 0
        args: list[Any] = []
        for member, score in scores.items():
            args += [float(score), self._enc(member)]
        return int(await self._write_expire("ZADD", args, replace, ttl))

    async def score(self, member: T) -> float | None:
        """The score of ``member``, or None."""
        raw = await self._cache.store.command("ZSCORE", self._rk, self._enc(member))
        return None if raw is None else float(raw)

    async def card(self) -> int:
        """Number of members."""
        return int(await self._cache.store.command("ZCARD", self._rk))

    async def range_by_score(
        self,
        low: float | str = "-inf",
        high: float | str = "+inf",
        *,
        desc: bool = False,
        offset: int = 0,
        count: int | None = None,
    ) -> list[tuple[T, float]]:
        """Members with ``low <= score <= high`` (bounds may be ``"(x"`` for exclusive),
        ascending (or descending), with their scores."""
        args: list[Any] = ["ZRANGE", self._rk]
        args += [high, low, "BYSCORE", "REV"] if desc else [low, high, "BYSCORE"]
        if count is not None:
            args += ["LIMIT", offset, count]
        raw = await self._cache.store.command(*args, "WITHSCORES")
        return [(self._dec(m), float(s)) for m, s in _pairs(raw)]

    async def top(self, n: int) -> list[tuple[T, float]]:
        """The ``n`` members of highest score, highest first."""
        return await self.range_by_score(desc=True, count=n)


class GeoIndex(_MemberStructure[T]):
    """A geo index of typed members (ids) at longitude/latitude positions."""

    __slots__ = ()

    async def add(self, points: Mapping[T, tuple[float, float]], *, replace: bool = False,
                  ttl: float | None = None) -> int:
        """Place members at ``(longitude, latitude)``; returns how many were new.

        :raises InvalidParameterError: a coordinate outside what Redis can index.
        """
        args: list[Any] = []
        for member, (lon, lat) in points.items():
            if not (-180 <= lon <= 180 and -85.05112878 <= lat <= 85.05112878):
                raise InvalidParameterError(
                    self._key.schema.name, "position", f"({lon}, {lat}) is out of range"
                )
            args += [lon, lat, self._enc(member)]
        if not args:
            if replace:
                await self._cache.store.delete([self._rk])
            return 0
        return int(await self._write_expire("GEOADD", args, replace, ttl))

    async def position(self, member: T) -> tuple[float, float] | None:
        """``(longitude, latitude)`` of ``member`` (geohash precision), or None."""
        raw = await self._cache.store.command("GEOPOS", self._rk, self._enc(member))
        if not raw or raw[0] is None:
            return None
        lon, lat = raw[0]
        return float(lon), float(lat)

    async def within(
        self, lon: float, lat: float, radius_m: float, *, count: int | None = None
    ) -> list[tuple[T, float]]:
        """Members within ``radius_m`` metres of a point, nearest first, with distances."""
        args: list[Any] = ["GEOSEARCH", self._rk, "FROMLONLAT", lon, lat,
                           "BYRADIUS", radius_m, "m", "ASC"]
        if count is not None:
            args += ["COUNT", count]
        raw = await self._cache.store.command(*args, "WITHDIST")
        return [(self._dec(m), float(d)) for m, d in raw]


def _pairs(raw: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(raw, dict):
        return raw.items()
    if raw and isinstance(raw[0], list | tuple):
        return [(a, b) for a, b in raw]
    return zip(raw[::2], raw[1::2])
