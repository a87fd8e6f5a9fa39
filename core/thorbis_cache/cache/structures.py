"""Typed helpers over Redis hashes, sorted sets and geo indexes.

Keys still come from key schemas (kind HASH, ZSET or GEO), so these structures get the
tenant hash tag, escaping and TTLs like any value. Every write refreshes the TTL in the
same atomic step (a Lua script), so no structure is ever left without expiry, and
revokes the structure's fill lease, so a read-through that loaded older data is not
written over it.

Reads through the cache -- ``EntityHash.get_or_load``, ``SortedSet.get_or_load`` /
``range_by_score(loader=...)`` / ``top(n, loader=...)``, ``GeoIndex.get_or_load`` /
``within(..., loader=...)`` -- fill the whole structure from a loader under a fill
lease, with the guarantees of ``Cache.get_or_load`` (see :mod:`.read_through`). Without
a loader, reads answer from what is cached (empty or None when nothing is).
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from thorbis_cache.cache.codec import SchemaCodec, check_value
from thorbis_cache.cache.envelope import CorruptEntry
from thorbis_cache.cache.geo import GEO_LAT_LIMIT, geo_distance, geohash_position
from thorbis_cache.cache.keys import CacheKey, Param
from thorbis_cache.cache.read_through import EMPTY, StructureFills, StructureRead, StructureWrite
from thorbis_cache.cache.structure_args import (
    check_bound,
    check_coordinate,
    check_count,
    score_range,
)
from thorbis_cache.errors import (
    InvalidParameterError,
    ValueTooLargeError,
    ValueTypeError,
    VersionConflictError,
    WrongRedisTypeError,
    short_repr,
)
from thorbis_cache.store.scripts import Script

if TYPE_CHECKING:
    from thorbis_cache.cache.protocol import CacheCore, Loader

__all__ = ["EntityHash", "GeoIndex", "SortedSet", "Versioned"]

T = TypeVar("T")
R = TypeVar("R")  # what a read answers

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

    __slots__ = ("_cache", "_codec", "_fields", "_fills", "_key", "_replace", "_rk", "_update")

    def __init__(
        self,
        cache: CacheCore,
        fills: StructureFills,
        key: CacheKey[T],
        codec: SchemaCodec[T],
        replace_script: Script,
        update_script: Script,
    ) -> None:
        self._cache = cache
        self._fills = fills
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
        """The entity and its version, or None (not cached, or cached as absent)."""
        raw = await _read(self._cache, "HGETALL", self._rk)
        if not raw:
            return None
        try:
            return self._decode_entity(raw)
        except CorruptEntry as exc:
            await self._drop(exc)
            return None

    def _decode_entity(self, raw: Any) -> Versioned[T]:
        """The entity of an HGETALL reply.

        :raises CorruptEntry: a field is missing, extra-typed or does not open.
        """
        items = {k.decode(): v for k, v in _pairs(raw)}
        try:
            version = int(items.pop(VERSION_FIELD))
            kwargs = {}
            for name, field in self._fields.items():
                kwargs[field.alias or name] = self._decode_field(name, items[name])
            value: T = self._key.schema.value_type(**kwargs)
        except CorruptEntry:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptEntry("hash_shape", repr(exc)) from None
        return Versioned(value, version)

    async def get_or_load(self, loader: Loader[T], *, ttl: float | None = None) -> T:
        """The cached entity; when it is not cached, ``loader()``'s entity, cached whole
        under a fill lease: a load that raced with an invalidation of the key or its
        tags (or with a write of this hash) is returned but not written.

        The loader raises :class:`~thorbis_cache.errors.MissingRow` when the row does
        not exist; with the schema's ``negative_ttl`` the absence is cached too.

        :raises MissingRow: the row does not exist (now, or as cached).
        :raises ValueTypeError: the loader returned something else than the entity type.
        """
        spec: StructureRead[T, T] = StructureRead(
            "hash", ("HGETALL",), lambda raw: self._decode_entity(raw).value, _same
        )
        return await self._fills.read(self._key, spec, self._fill_write(), loader, ttl)

    def _fill_write(self) -> StructureWrite[T]:
        return StructureWrite(self._codec.check, self._fill_content)

    def _fill_content(self, value: T) -> list[Any]:
        """The ``struct_fill`` arguments of a whole entity (a first version)."""
        args: list[Any] = ["HSET", 2, VERSION_FIELD, 1]
        for name in self._fields:
            args += [name, self._encode_field(name, getattr(value, name))]
        return args

    async def get_fields(self, *names: str) -> dict[str, Any]:
        """Some fields of the entity (absent when not cached)."""
        for name in names:
            self._check_name(name)
        raw = await _read(self._cache, "HMGET", self._rk, *names)
        if raw is None:  # cached as absent
            return {}
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
        raw = await _read(self._cache, "HGET", self._rk, VERSION_FIELD)
        return None if raw is None else int(raw)

    async def replace(self, value: T, *, ttl: float | None = None) -> int:
        """Store the whole entity (a writer holding the truth); returns its new version.
        A read-through fill in flight is refused afterwards."""
        self._codec.check(value)
        args: list[Any] = [VERSION_FIELD, self._cache.ttl_ms(self._key.schema, ttl)]
        async with self._replacing():
            for name in self._fields:
                args += [name, self._encode_field(name, getattr(value, name))]
        keys = [self._rk, self._cache.lease_key(self._key), *self._cache.tag_keys(self._key)]
        self._cache.revoke_flights([self._rk])
        return int(await self._cache.store.run(self._replace, keys, args))

    async def update(
        self,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
    ) -> int | None:
        """Change some fields; with ``expected_version``, only if the entity is still at
        that version. Returns the new version, or None when the entity is not cached
        (a cached absence is dropped). A read-through fill in flight is refused
        afterwards, whatever the outcome.

        :raises VersionConflictError: the version differs (or the entity is gone while
            a version was expected).
        :raises ValueTypeError: a value does not match its field type.
        :raises ValueTooLargeError: a value serializes to more than ``max_value_size``
            (the entity is deleted).
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
            async with self._replacing():
                args += [name, self._encode_field(name, value)]
        keys = [self._rk, self._cache.lease_key(self._key), *self._cache.tag_keys(self._key)]
        self._cache.revoke_flights([self._rk])
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

    @contextlib.asynccontextmanager
    async def _replacing(self) -> AsyncIterator[None]:
        """Around the encoding of a write: a value too large to cache leaves no entity
        behind (the caller meant to change it), then raises."""
        try:
            yield
        except ValueTooLargeError:
            await self._cache.delete(self._key)
            raise

    def _check_name(self, name: str) -> None:
        if name not in self._fields:
            owner = self._key.schema.value_type.__name__
            raise InvalidParameterError(self._key.schema.name, name, f"not a field of {owner}")

    async def _drop(self, exc: CorruptEntry) -> None:
        await self._fills.drop(self._key, self._rk, exc)


class _MemberStructure(abc.ABC, Generic[T]):
    """What sorted sets and geo indexes share: typed members encoded like key
    parameters, writes that refresh the TTL and revoke the fill lease atomically
    (``lua/write_expire.lua``, ``lua/struct_remove.lua``), and read-through."""

    __slots__ = ("_cache", "_fills", "_key", "_member", "_remove", "_rk", "_write")

    #: the write command of a fill and its arguments per member
    _FILL: tuple[str, int] = ("ZADD", 2)

    def __init__(
        self, cache: CacheCore, fills: StructureFills, key: CacheKey[Any], write_script: Script,
        remove_script: Script,
    ) -> None:
        self._cache = cache
        self._fills = fills
        self._key = key
        self._rk = cache.redis_key(key)
        self._member: Param = key.schema.member_param
        self._write = write_script
        self._remove = remove_script

    @abc.abstractmethod
    def _member_args(self, member: T, element: Any) -> list[Any]:
        """The write command's arguments for one member (and its score or position)."""

    def _check_loaded(self, loaded: Mapping[T, Any]) -> None:
        if not isinstance(loaded, Mapping):
            raise ValueTypeError(self._key.schema.name, "a mapping of members",
                                 type(loaded).__name__)

    def _fill_write(self) -> StructureWrite[Mapping[T, Any]]:
        return StructureWrite(self._check_loaded, self._fill_content, empty={})

    def _fill_content(self, loaded: Mapping[T, Any]) -> list[Any]:
        """The ``struct_fill`` arguments of a whole member set (``EMPTY`` for none)."""
        if not loaded:
            return ["MARKER", EMPTY]
        args: list[Any] = [*self._FILL]
        for member, element in loaded.items():
            args += self._member_args(member, element)
        return args

    async def _read_through(
        self,
        command: tuple[Any, ...],
        from_reply: Callable[[Any], R],
        from_loaded: Callable[[Mapping[T, Any]], R],
        loader: Loader[Mapping[T, Any]],
        ttl: float | None,
    ) -> R:
        spec = StructureRead("zset", command, from_reply, from_loaded)
        return await self._fills.read(self._key, spec, self._fill_write(), loader, ttl)

    def _enc(self, member: T) -> str:
        return self._member.encode(self._key.schema.name, member)

    def _dec(self, raw: bytes) -> T:
        """A member as Redis holds it, decoded.

        :raises CorruptEntry: it is not the encoding of a member of the schema's type
            (written by a release whose member type was another, or by another client):
            the structure is unreadable, as a value of another type is.
        """
        try:
            return self._member.decode(raw.decode())  # type: ignore[return-value]
        except ValueError as exc:  # UnicodeDecodeError and InvalidParameterError too
            raise CorruptEntry("member", f"{short_repr(raw)} is not a "
                                         f"{self._member.type.__name__}: {exc}") from None

    async def _read_cached(self, from_reply: Callable[[Any], R], *command: Any) -> R:
        """A read without a loader: the structure's answer, or the answer of nothing
        cached when nothing is, or when what is cached does not decode (then dropped,
        counted and logged, as a read-through drops it)."""
        raw = await _read(self._cache, command[0], self._rk, *command[1:])
        try:
            return from_reply(raw or [])
        except CorruptEntry as exc:
            await self._fills.drop(self._key, self._rk, exc)
            return from_reply([])

    async def _write_expire(
        self, command: str, args: list[Any], replace: bool, ttl: float | None
    ) -> Any:
        ttl_ms = self._cache.ttl_ms(self._key.schema, ttl)
        keys = [self._rk, self._cache.lease_key(self._key), *self._cache.tag_keys(self._key)]
        self._cache.revoke_flights([self._rk])
        return await self._cache.store.run(
            self._write, keys, [ttl_ms, "1" if replace else "0", command, self._FILL[1], *args],
        )

    async def remove(self, *members: T) -> int:
        """Remove members (a writer holding the truth: a fill in flight is refused);
        returns how many were there."""
        if not members:
            return 0
        keys = [self._rk, self._cache.lease_key(self._key)]
        self._cache.revoke_flights([self._rk])
        return int(await self._cache.store.run(self._remove, keys, list(map(self._enc, members))))


class SortedSet(_MemberStructure[T]):
    """A sorted set of typed members (ids) with float scores."""

    __slots__ = ()

    def _member_args(self, member: T, element: Any) -> list[Any]:
        return [float(element), self._enc(member)]

    async def add(self, scores: Mapping[T, float], *, replace: bool = False,
                  ttl: float | None = None) -> int:
        """Add or re-score members of a cached set, or, with ``replace``, write the whole
        set (the others dropped, atomically). A read-through fill in flight is refused
        afterwards.

        Without ``replace``, nothing is written when the set is not cached: a set
        holding only these members would read as the whole set; the next read-through
        loads it whole, these members included. ``replace`` with no member caches the
        set as empty.

        :returns: how many members were new (0 when the set is not cached).
        """
        if not scores:
            if replace:  # the whole set is empty: say so, as a read-through would
                await self._write_expire("MARKER", [EMPTY], True, ttl)
            return 0
        args: list[Any] = []
        for member, score in scores.items():
            args += [float(score), self._enc(member)]
        return max(0, int(await self._write_expire("ZADD", args, replace, ttl)))

    async def score(self, member: T) -> float | None:
        """The score of ``member``, or None."""
        raw = await _read(self._cache, "ZSCORE", self._rk, self._enc(member))
        return None if raw is None else float(raw)

    async def card(self) -> int:
        """Number of members."""
        return int(await _read(self._cache, "ZCARD", self._rk) or 0)

    async def get_or_load(
        self, loader: Loader[Mapping[T, float]], *, ttl: float | None = None
    ) -> list[tuple[T, float]]:
        """Every member with its score, ascending: from the cache, or, when the set is
        not cached, from ``loader()`` (the whole set, member -> score), cached whole
        under a fill lease (see :meth:`EntityHash.get_or_load`). An empty set is cached
        too.

        :raises MissingRow: the loader found no row (and, with ``negative_ttl``, the
            absence is cached).
        """
        return await self.range_by_score(loader=loader, ttl=ttl)

    async def range_by_score(
        self,
        low: float | str = "-inf",
        high: float | str = "+inf",
        *,
        desc: bool = False,
        offset: int = 0,
        count: int | None = None,
        loader: Loader[Mapping[T, float]] | None = None,
        ttl: float | None = None,
    ) -> list[tuple[T, float]]:
        """Members with ``low <= score <= high`` (bounds may be ``"(x"`` for exclusive),
        ascending (or descending), with their scores.

        :param loader: read through: when the set is not cached, load the whole set
            (member -> score), cache it under a fill lease, and answer from it.
        """
        name = self._key.schema.name
        if low != "-inf":  # the defaults need no check: a read's cost stays as it was
            check_bound(name, "low", low)
        if high != "+inf":
            check_bound(name, "high", high)
        if offset:
            check_count(name, "offset", offset, least=0)
        if count is not None:
            check_count(name, "count", count, least=None)
        args: list[Any] = [high, low, "BYSCORE", "REV"] if desc else [low, high, "BYSCORE"]
        if count is not None:
            args += ["LIMIT", offset, count]
        args.append("WITHSCORES")

        def from_reply(raw: Any) -> list[tuple[T, float]]:
            return [(self._dec(m), float(s)) for m, s in _pairs(raw)]

        if loader is None:
            return await self._read_cached(from_reply, "ZRANGE", *args)

        def from_loaded(loaded: Mapping[T, float]) -> list[tuple[T, float]]:
            return score_range(loaded, self._enc, low, high, desc, offset, count)

        return await self._read_through(("ZRANGE", *args), from_reply, from_loaded, loader, ttl)

    async def top(
        self, n: int, *, loader: Loader[Mapping[T, float]] | None = None,
        ttl: float | None = None,
    ) -> list[tuple[T, float]]:
        """The ``n`` members of highest score, highest first (``loader``: read through,
        see :meth:`range_by_score`).

        :raises InvalidParameterError: ``n`` is not an int of at least 0.
        """
        check_count(self._key.schema.name, "n", n, least=0)
        return await self.range_by_score(desc=True, count=n, loader=loader, ttl=ttl)


class GeoIndex(_MemberStructure[T]):
    """A geo index of typed members (ids) at longitude/latitude positions."""

    __slots__ = ()

    _FILL = ("GEOADD", 3)

    def _member_args(self, member: T, element: Any) -> list[Any]:
        lon, lat = element
        # A member's place is checked as a query's point is (structure_args).
        check_coordinate(self._key.schema.name, "longitude", lon, 180.0)
        check_coordinate(self._key.schema.name, "latitude", lat, GEO_LAT_LIMIT)
        return [lon, lat, self._enc(member)]

    async def add(self, points: Mapping[T, tuple[float, float]], *, replace: bool = False,
                  ttl: float | None = None) -> int:
        """Place members of a cached index at ``(longitude, latitude)``, or, with
        ``replace``, write the whole index; as :meth:`SortedSet.add`, nothing is written
        without ``replace`` when the index is not cached. Returns how many were new.

        :raises InvalidParameterError: a coordinate outside what Redis can index.
        """
        args: list[Any] = []
        for member, point in points.items():
            args += self._member_args(member, point)
        if not args:
            if replace:  # the whole index is empty: say so, as a read-through would
                await self._write_expire("MARKER", [EMPTY], True, ttl)
            return 0
        return max(0, int(await self._write_expire("GEOADD", args, replace, ttl)))

    async def position(self, member: T) -> tuple[float, float] | None:
        """``(longitude, latitude)`` of ``member`` (geohash precision), or None."""
        raw = await _read(self._cache, "GEOPOS", self._rk, self._enc(member))
        if not raw or raw[0] is None:
            return None
        lon, lat = raw[0]
        return float(lon), float(lat)

    async def within(
        self,
        lon: float,
        lat: float,
        radius_m: float,
        *,
        count: int | None = None,
        loader: Loader[Mapping[T, tuple[float, float]]] | None = None,
        ttl: float | None = None,
    ) -> list[tuple[T, float]]:
        """Members within ``radius_m`` metres of a point, nearest first, with distances.

        :param loader: read through: when the index is not cached, load every member's
            ``(longitude, latitude)``, cache the index under a fill lease, and answer
            from the loaded positions (Redis's own answers use its 52-bit geohash
            positions, less than a metre away).
        """
        name = self._key.schema.name
        check_coordinate(name, "longitude", lon, 180.0)
        check_coordinate(name, "latitude", lat, GEO_LAT_LIMIT)
        if isinstance(radius_m, bool) or not isinstance(radius_m, int | float) \
                or not 0 <= radius_m < math.inf:
            raise InvalidParameterError(name, "radius_m",
                                        f"{radius_m!r} is not a distance in metres")
        if count is not None:
            check_count(name, "count", count, least=1)
        args: list[Any] = ["FROMLONLAT", lon, lat, "BYRADIUS", radius_m, "m", "ASC"]
        if count is not None:
            args += ["COUNT", count]
        args.append("WITHDIST")

        def from_reply(raw: Any) -> list[tuple[T, float]]:
            return [(self._dec(m), float(d)) for m, d in raw]

        if loader is None:
            return await self._read_cached(from_reply, "GEOSEARCH", *args)

        def from_loaded(loaded: Mapping[T, tuple[float, float]]) -> list[tuple[T, float]]:
            found = sorted(
                ((m, d) for m, (mlon, mlat) in loaded.items()
                 if (d := geo_distance(lon, lat, mlon, mlat)) <= radius_m),
                key=lambda md: md[1],
            )
            return found if count is None else found[:count]

        return await self._read_through(("GEOSEARCH", *args), from_reply, from_loaded,
                                        loader, ttl)

    async def get_or_load(
        self, loader: Loader[Mapping[T, tuple[float, float]]], *, ttl: float | None = None
    ) -> dict[T, tuple[float, float]]:
        """Every member at its ``(longitude, latitude)``: from the cache (geohash
        precision), or, when the index is not cached, from ``loader()`` (the whole
        index), cached whole under a fill lease (see :meth:`EntityHash.get_or_load`).

        :raises MissingRow: the loader found no row (cached with ``negative_ttl``).
        """
        def from_reply(raw: Any) -> dict[T, tuple[float, float]]:
            return {self._dec(m): geohash_position(int(float(s))) for m, s in _pairs(raw)}

        return await self._read_through(("ZRANGE", 0, -1, "WITHSCORES"), from_reply, dict,
                                        loader, ttl)


async def _read(cache: CacheCore, *args: Any) -> Any:
    """One read command on a structure; None when a string stands at the key (a
    read-through's marker of an empty set or an absent row, or foreign data)."""
    try:
        return await cache.store.command(*args, route=args[1])
    except WrongRedisTypeError:
        return None








def _same(value: T) -> T:
    return value






def _pairs(raw: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(raw, dict):
        return raw.items()
    if raw and isinstance(raw[0], list | tuple):
        return [(a, b) for a, b in raw]
    return zip(raw[::2], raw[1::2])
