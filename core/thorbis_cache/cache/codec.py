"""Typed values to envelope bytes and back: cattrs -> msgpack -> zstd -> envelope.

One :class:`SchemaCodec` per key schema holds the precomputed cattrs hooks, so the
hit path is: open envelope, maybe decompress, ``msgpack.unpackb``, structure.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import types
import typing
import uuid
import zlib
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import attrs
import cattrs
import msgpack
import msgspec
import zstandard
from cattrs.preconf.msgpack import make_converter as _make_msgpack_converter

from thorbis_cache.cache.crypto import NONCE_SIZE, KeyRing
from thorbis_cache.cache.envelope import (
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    CorruptEntry,
    entry_heads,
    open_envelope,
    seal_envelope,
)
from thorbis_cache.cache.keys import Compression, KeySchema
from thorbis_cache.cache.value_types import SUPPORTED_TYPES, unsupported_type
from thorbis_cache.errors import ValueTooLargeError, ValueTypeError

__all__ = [
    "SUPPORTED_TYPES",
    "CodecSettings",
    "Decoded",
    "SchemaCodec",
    "check_value",
    "make_converter",
    "unsupported_type",
]

T = TypeVar("T")

_MSGPACK_INT_MIN = -(2**63)
_MSGPACK_INT_MAX = 2**64 - 1


@attrs.frozen(slots=True)
class CodecSettings:
    """Codec-wide settings.

    :ivar compress_threshold: serialized size (bytes) from which AUTO schemas compress.
        zstd gains little on records of about 1 KiB, so the default is 2 KiB.
    :ivar compression_level: zstd level (3 is zstd's default speed/ratio point).
    :ivar max_value_size: largest serialized value accepted: a read refuses a compressed
        entry that would decompress to more (a bound against decompression bombs in a
        tampered entry), so a write refuses a value that serializes to more
        (:class:`~thorbis_cache.errors.ValueTooLargeError`).
    """

    compress_threshold: int = 2048
    compression_level: int = 3
    max_value_size: int = 64 * 1024 * 1024


def make_converter() -> cattrs.Converter:
    """A private cattrs converter for the msgpack codec.

    Datetimes and dates travel as ISO strings (exact: keeps naive vs aware and
    microseconds), UUIDs as 16 bytes, Decimals as strings.
    """
    # detailed_validation off: structuring is a hot path, and a value that does not
    # structure is simply a corrupt entry, no per-field error report needed.
    conv = _make_msgpack_converter(detailed_validation=False)
    conv.register_unstructure_hook(dt.datetime, lambda v: v.isoformat())
    conv.register_structure_hook(dt.datetime, lambda v, _: dt.datetime.fromisoformat(v))
    conv.register_unstructure_hook(dt.date, lambda v: v.isoformat())
    conv.register_structure_hook(dt.date, lambda v, _: dt.date.fromisoformat(v))
    conv.register_unstructure_hook(uuid.UUID, lambda v: v.bytes)
    conv.register_structure_hook(uuid.UUID, lambda v, _: uuid.UUID(bytes=v))
    conv.register_unstructure_hook(decimal.Decimal, str)
    conv.register_structure_hook(decimal.Decimal, lambda v, _: decimal.Decimal(v))
    return conv


# --------------------------------------------------------------------------- type checks


def check_value(value: object, tp: Any) -> str | None:
    """Describe why ``value`` is not a ``tp`` (None when it is).

    Recurses into containers and attrs fields, so a wrong value is refused at ``set``
    instead of being written and failing every later read.
    """
    if tp is Any or tp is object:
        return None
    if tp is None or tp is type(None):
        return None if value is None else f"expected None, got {type(value).__name__}"
    origin = typing.get_origin(tp)
    if origin is None:
        if not isinstance(tp, type):
            return None  # a type form we do not check (TypeVar, NewType...)
        if tp is float:
            ok = isinstance(value, float | int) and not isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is dt.date:
            ok = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        else:
            ok = isinstance(value, tp)
        if not ok:
            return f"expected {tp.__name__}, got {type(value).__name__}"
        if tp is int and not _MSGPACK_INT_MIN <= value <= _MSGPACK_INT_MAX:  # type: ignore[operator]
            return f"int {value} does not fit in 64 bits (msgpack)"
        if attrs.has(tp) and not isinstance(tp, enum.EnumMeta):
            for field in attrs.fields(attrs.resolve_types(tp)):
                problem = check_value(getattr(value, field.name), field.type)
                if problem:
                    return f"{tp.__name__}.{field.name}: {problem}"
        return None
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        problems = [check_value(value, a) for a in args]
        if any(p is None for p in problems):
            return None
        return f"matches none of {tp}: " + "; ".join(p for p in problems if p)
    if origin is typing.Literal:
        return None if value in args else f"expected one of {args!r}, got {value!r}"
    if origin in (list, set, frozenset, tuple, dict) or (
        isinstance(origin, type) and origin.__module__ == "collections.abc"
    ):
        container = {"Sequence": list, "MutableSequence": list, "Set": set,
                     "Mapping": dict, "MutableMapping": dict}.get(origin.__name__, origin)
        if not isinstance(value, container):
            return f"expected {origin.__name__}, got {type(value).__name__}"
        if container is dict:
            kt, vt = args or (Any, Any)
            for k, v in value.items():
                problem = check_value(k, kt) or check_value(v, vt)
                if problem:
                    return f"[{k!r}]: {problem}"
            return None
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return f"expected a tuple of {len(args)}, got {len(value)}"
            for i, (item, at) in enumerate(zip(value, args)):
                problem = check_value(item, at)
                if problem:
                    return f"[{i}]: {problem}"
            return None
        item_type = args[0] if args else Any
        for i, item in enumerate(value):
            problem = check_value(item, item_type)
            if problem:
                return f"[{i}]: {problem}"
        return None
    return None


# --------------------------------------------------------------------------- codec


@attrs.frozen(slots=True)
class Decoded(Generic[T]):
    """A decoded value with the early-recompute timing stored beside it (0 if none)."""

    value: T
    expires_at_ms: int = 0
    delta_ms: int = 0


class SchemaCodec(Generic[T]):
    """Encodes and decodes the values of one key schema.

    :param schema: the schema.
    :param converter: the (private) cattrs converter.
    :param keyring: required when the schema is sensitive.
    :param settings: thresholds and limits.
    """

    __slots__ = (
        "_compress",
        "_compressor",
        "_converter",
        "_decompressor",
        "_encrypt",
        "_fast",
        "_heads",
        "_keyring",
        "_plain_flags",
        "_settings",
        "_structure",
        "_threshold",
        "_unstructure",
        "_version",
        "schema",
    )

    def __init__(
        self,
        schema: KeySchema[T],
        converter: cattrs.Converter,
        keyring: KeyRing | None,
        settings: CodecSettings,
    ) -> None:
        self.schema = schema
        self._keyring = keyring
        self._converter = converter
        self._settings = settings
        self._version = schema.version
        self._encrypt = schema.sensitive
        self._compress = schema.compression
        self._threshold = settings.compress_threshold
        tp = schema.value_type
        self._unstructure = converter.get_unstructure_hook(tp)
        self._structure = converter.get_structure_hook(tp)
        self._fast = fast_decoder(tp)
        # The flags of an entry that needs no work beyond opening: the hit fast path.
        self._plain_flags = FLAG_ENCRYPTED if schema.sensitive else 0
        self._heads = entry_heads(schema.version, schema.sensitive)
        self._compressor = zstandard.ZstdCompressor(level=settings.compression_level)
        self._decompressor = zstandard.ZstdDecompressor()

    def check(self, value: object) -> None:
        """Refuse a value that is not of the schema's value type.

        :raises ValueTypeError: naming the schema, the expected and the given type.
        """
        problem = check_value(value, self.schema.value_type)
        if problem:
            raise ValueTypeError(
                self.schema.name, _type_name(self.schema.value_type), type(value).__name__, problem
            )

    def to_body(self, value: T) -> bytes:
        """Serialize a value to msgpack (no framing)."""
        return msgpack.packb(self._unstructure(value), use_bin_type=True)  # type: ignore[no-any-return]

    @property
    def uses_fast_decoder(self) -> bool:
        """True when reads decode with msgspec straight into the value type."""
        return self._fast is not None

    def from_body(self, body: bytes) -> T:
        """Deserialize msgpack produced by :meth:`to_body`.

        The fast path decodes in C straight into the typed value (msgspec); anything it
        refuses gets a second opinion from the cattrs reference path before the entry is
        declared corrupt, so the two can never disagree on a value we wrote.

        :raises CorruptEntry: when the bytes are not msgpack of the schema's type.
        """
        if self._fast is not None:
            try:
                return self._fast.decode(body)  # type: ignore[no-any-return]
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                pass  # as in decode_value
        return self.from_body_reference(body)

    def from_body_reference(self, body: bytes) -> T:
        """The cattrs path of :meth:`from_body` (msgpack, then the structure hook).

        :raises CorruptEntry: when the bytes are not msgpack of the schema's type.
        """
        try:
            raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise CorruptEntry("msgpack", type(exc).__name__) from None
        try:
            return self._structure(raw, self.schema.value_type)  # type: ignore[no-any-return]
        except Exception as exc:  # cattrs' errors and whatever a class's __init__ raises
            raise CorruptEntry("structure", type(exc).__name__) from None

    def converter_pack(self, value: object, tp: Any) -> bytes:
        """Serialize a value of type ``tp`` (a field of the schema's class) to msgpack."""
        return msgpack.packb(  # type: ignore[no-any-return]
            self._converter.unstructure(value, unstructure_as=tp), use_bin_type=True
        )

    def converter_unpack(self, body: bytes, tp: Any) -> Any:
        """Inverse of :meth:`converter_pack`.

        :raises CorruptEntry: when the bytes are not msgpack of ``tp``.
        """
        try:
            raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
            return self._converter.structure(raw, tp)
        except Exception as exc:  # msgpack's and cattrs' errors, and constructors'
            raise CorruptEntry("structure", type(exc).__name__) from None

    def encode(
        self, value: T, redis_key: bytes, tenant: str, timing: tuple[int, int] | None = None
    ) -> bytes:
        """Serialize, compress per policy, and seal ``value`` for ``redis_key``."""
        return self.seal_body(self.to_body(value), redis_key, tenant, timing)

    def seal_body(
        self, body: bytes, redis_key: bytes, tenant: str, timing: tuple[int, int] | None = None
    ) -> bytes:
        """Compress per policy and seal an already serialized body.

        :raises ValueTooLargeError: the body is larger than ``max_value_size``, which
            every read of it would refuse.
        """
        if len(body) > self._settings.max_value_size:
            raise ValueTooLargeError(self.schema.name, len(body),
                                     self._settings.max_value_size)
        compressed = False
        if self._compress is Compression.ALWAYS or (
            self._compress is Compression.AUTO and len(body) >= self._threshold
        ):
            packed = self._compressor.compress(body)
            if self._compress is Compression.ALWAYS or len(packed) < len(body):
                body, compressed = packed, True
        return seal_envelope(
            body,
            redis_key=redis_key,
            schema_version=self._version,
            compressed=compressed,
            tenant=tenant,
            keyring=self._keyring,
            encrypt=self._encrypt,
            timing=timing,
        )

    def open_body(self, data: bytes, redis_key: bytes, tenant: str) -> tuple[bytes, int, int]:
        """Open and decompress; returns ``(body, expires_at_ms, delta_ms)``.

        :raises CorruptEntry: for any entry that does not open.
        """
        flags, body, expires_at_ms, delta_ms = open_envelope(
            data, redis_key, tenant, self._keyring, self._version
        )
        return self._unwrap(flags, body), expires_at_ms, delta_ms

    def _unwrap(self, flags: int, body: bytes) -> bytes:
        if self._encrypt and not flags & FLAG_ENCRYPTED:
            # A sensitive schema never stores clear text; a plain entry here was planted.
            raise CorruptEntry("not_encrypted")
        if flags & FLAG_COMPRESSED:
            limit = self._settings.max_value_size
            try:
                # max_output_size only applies to frames without a declared size, so the
                # declared size is checked first: a forged header cannot make us allocate.
                declared = zstandard.frame_content_size(body)
                if declared > limit:
                    raise CorruptEntry("zstd", f"declared size {declared} exceeds {limit}")
                body = self._decompressor.decompress(body, max_output_size=limit)
            except zstandard.ZstdError as exc:
                raise CorruptEntry("zstd", str(exc)[:80]) from None
        return body

    def decode_value(self, data: bytes, redis_key: bytes, tenant: str) -> T:
        """:meth:`decode` without the timing: the hit path of ``get``.

        Written flat (no helper calls in the common case) because every microsecond
        here is paid on every cache hit. An uncompressed entry sealed as the schema says
        is opened inline, as :meth:`decode_values` opens it (the header prefix; CRC, or
        AES-GCM under the tenant's key: 0.2-0.3 µs less than :func:`open_envelope` per
        hit); anything else, or anything the inline check does not accept, takes
        :func:`open_envelope`, which names the reason (property-tested against
        :meth:`decode`).

        :raises CorruptEntry: for any entry that does not open or does not decode.
        """
        fast = self._fast
        head, at = self._heads[0]
        if fast is not None and data.startswith(head):
            body = b""
            if not self._encrypt:
                body = data[at + 4:]
                if int.from_bytes(data[at:at + 4]) != zlib.crc32(
                        body, zlib.crc32(data[:at], zlib.crc32(redis_key))):
                    body = b""
            elif self._keyring is not None:
                try:
                    end = at + 1 + data[at] + NONCE_SIZE
                    cipher = self._keyring.cipher(
                        data[at + 1:end - NONCE_SIZE].decode("ascii"), tenant)
                    if cipher is not None:
                        body = cipher.decrypt(data[end - NONCE_SIZE:end], data[end:],
                                              redis_key + b"\x00" + data[:end])
                except Exception:  # noqa: S110 -- any failure: open_envelope names it
                    pass
            if body:
                try:
                    return fast.decode(body)  # type: ignore[no-any-return]
                except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                    pass  # the reference path below decides
        return self._decode_opened(data, redis_key, tenant)

    def _decode_opened(self, data: bytes, redis_key: bytes, tenant: str) -> T:
        """:meth:`decode_value` for an entry the inline paths did not take: opened by
        :func:`open_envelope` (which names what is wrong), unwrapped and decoded."""
        flags, body, _, _ = open_envelope(data, redis_key, tenant, self._keyring, self._version)
        if flags != self._plain_flags:  # compressed, or not sealed as the schema says
            body = self._unwrap(flags, body)
        fast = self._fast
        if fast is not None:
            try:
                return fast.decode(body)  # type: ignore[no-any-return]
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                # RecursionError: a body nested deeper than the interpreter's limit
                # (only a forged one); the reference path refuses it as corrupt.
                pass
        return self.from_body_reference(body)

    def decode_values(self, datas: Sequence[bytes | None], redis_keys: Sequence[str],
                      tenants: Sequence[str]) -> tuple[list[T | None],
                                                       list[tuple[int, CorruptEntry]]]:
        """:meth:`decode_value` for a batch read (``get_many``): the values (None where
        Redis had no entry or the entry did not open) and the entries that did not open,
        by position.

        An uncompressed entry sealed as the schema says is checked and decoded inline
        (header prefix; CRC, or AES-GCM with the batch's ciphers; msgspec), which saves
        two calls and a cipher lookup per value; anything else, or anything the inline
        check does not accept, takes :func:`open_envelope` as in :meth:`decode_value`, so
        both paths accept and refuse exactly the same bytes (property-tested).
        """
        values: list[T | None] = []
        append = values.append
        corrupt: list[tuple[int, CorruptEntry]] = []
        fast = self._fast
        (head, at), (timed_head, timed_at) = self._heads
        keyring = self._keyring if self._encrypt and fast is not None else None
        clear = not self._encrypt and fast is not None
        ciphers: dict[tuple[bytes, str], Any] = {}
        crc32 = zlib.crc32
        for i, data in enumerate(datas):
            if data is None:
                append(None)
                continue
            rk = redis_keys[i]
            # The inline path: written out flat, since it runs for every value.
            pos = at if data.startswith(head) else timed_at if data.startswith(
                timed_head) else -1
            if pos >= 0 and clear:
                body = data[pos + 4:]
                if int.from_bytes(data[pos:pos + 4]) == crc32(
                        body, crc32(data[:pos], crc32(rk.encode()))):
                    try:
                        append(fast.decode(body))  # type: ignore[union-attr]
                        continue
                    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                        pass  # the reference path below decides
            elif pos >= 0 and keyring is not None and len(data) > pos:
                try:
                    end = pos + 1 + data[pos] + NONCE_SIZE
                    kid = data[pos + 1:end - NONCE_SIZE]
                    cipher = ciphers.get((kid, tenants[i]))
                    if cipher is None:
                        cipher = ciphers[kid, tenants[i]] = keyring.cipher(
                            kid.decode("ascii"), tenants[i])
                    if cipher is not None:
                        append(fast.decode(  # type: ignore[union-attr]
                            cipher.decrypt(data[end - NONCE_SIZE:end], data[end:],
                                           rk.encode() + b"\x00" + data[:end])))
                        continue
                except Exception:  # noqa: S110 -- any failure: the reference path names it
                    pass
            try:
                append(self._decode_opened(data, rk.encode(), tenants[i]))
            except CorruptEntry as exc:
                append(None)
                corrupt.append((i, exc))
        return values, corrupt

    def decode(self, data: bytes, redis_key: bytes, tenant: str) -> Decoded[T]:
        """Open, decompress and deserialize an entry read from ``redis_key``.

        :raises CorruptEntry: for any entry that does not open or does not decode.
        """
        body, expires_at_ms, delta_ms = self.open_body(data, redis_key, tenant)
        return Decoded(self.from_body(body), expires_at_ms, delta_ms)


def fast_decoder(tp: Any) -> msgspec.msgpack.Decoder[Any] | None:
    """A msgspec decoder for ``tp``, or None when cattrs must do it.

    Decoding is the hit path: msgspec builds the typed value in C from the bytes the
    cattrs converter wrote, about 4x faster than ``msgpack.unpackb`` plus a cattrs hook
    (see ``bench/README.md``). Types msgspec cannot express, and attrs classes with
    field converters (which msgspec would not re-apply), stay on cattrs.
    """
    if _has_attrs_converters(tp, set()):
        return None
    try:
        return msgspec.msgpack.Decoder(tp, strict=True)
    except (TypeError, ValueError):
        return None


def _has_attrs_converters(tp: Any, seen: set[int]) -> bool:
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    if isinstance(tp, type) and attrs.has(tp):
        for field in attrs.fields(attrs.resolve_types(tp)):
            if field.converter is not None or _has_attrs_converters(field.type, seen):
                return True
        return False
    return any(_has_attrs_converters(arg, seen) for arg in typing.get_args(tp))


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp)
