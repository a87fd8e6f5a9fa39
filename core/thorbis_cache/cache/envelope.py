"""The binary envelope every cached value is stored in (layout in ``docs/envelope.md``).

::

    magic "TC" | format u8 | flags u8 | schema_version u16
    [flags & TIMING]     expires_at_ms u64 | delta_ms u32
    [flags & ENCRYPTED]  key_id_len u8 | key_id | nonce (12)   payload = AES-256-GCM(body)
    [else]               crc32 u32                              payload = body

The envelope is bound to the Redis key it is stored under: encrypted entries use
``key || 0x00 || header`` as AES-GCM associated data (authenticated); plain entries
carry a CRC-32 over ``key || header || payload`` (detects corruption and any single
bit flip, not a forger). Either way an entry copied to another key does not open.
"""

from __future__ import annotations

import os
import struct
import zlib

from thorbis_cache.cache.crypto import NONCE_SIZE, KeyRing

__all__ = [
    "FLAG_COMPRESSED",
    "FLAG_ENCRYPTED",
    "FLAG_TIMING",
    "FORMAT_VERSION",
    "MAGIC",
    "CorruptEntry",
    "Opened",
    "entry_heads",
    "open_envelope",
    "seal_envelope",
]

MAGIC = b"TC"
FORMAT_VERSION = 1
FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
FLAG_TIMING = 0x04
_KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_TIMING

_HEAD = struct.Struct(">2sBBH")
_TIMING = struct.Struct(">QI")
_CRC = struct.Struct(">I")
_TAG_SIZE = 16


class CorruptEntry(Exception):
    """An entry could not be opened; ``reason`` is a short machine-friendly word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


#: What :func:`open_envelope` returns: ``(flags, body, expires_at_ms, delta_ms)``. A plain
#: tuple, not a class: it is built on every cache hit.
Opened = tuple[int, bytes, int, int]


def seal_envelope(
    body: bytes,
    *,
    redis_key: bytes,
    schema_version: int,
    compressed: bool,
    tenant: str,
    keyring: KeyRing | None,
    encrypt: bool,
    timing: tuple[int, int] | None = None,
) -> bytes:
    """Frame ``body`` (already serialized, maybe compressed) for ``redis_key``.

    :param timing: ``(expires_at_ms, delta_ms)`` for early recomputation, or None.
    :param encrypt: seal with the tenant's data key of the ring's active key id.
    """
    flags = (FLAG_COMPRESSED if compressed else 0) | (FLAG_TIMING if timing else 0)
    if encrypt:
        if keyring is None:  # guarded at cache construction; kept as a safety net
            raise ValueError("encryption requested without a key ring")
        flags |= FLAG_ENCRYPTED
    header = _HEAD.pack(MAGIC, FORMAT_VERSION, flags, schema_version)
    if timing:
        header += _TIMING.pack(*timing)
    if encrypt:
        assert keyring is not None
        key_id = keyring.active_key_id
        cipher = keyring.cipher(key_id, tenant)
        assert cipher is not None  # the active id is always in the ring
        kid = key_id.encode("ascii")
        nonce = os.urandom(NONCE_SIZE)
        header += bytes((len(kid),)) + kid + nonce
        return header + cipher.encrypt(nonce, body, redis_key + b"\x00" + header)
    crc = zlib.crc32(body, zlib.crc32(header, zlib.crc32(redis_key)))
    return header + _CRC.pack(crc) + body


def open_envelope(
    data: bytes, redis_key: bytes, tenant: str, keyring: KeyRing | None, schema_version: int, /
) -> Opened:
    """Check and open an envelope read from ``redis_key``.

    :raises CorruptEntry: on anything unexpected: bad magic, unknown format, flags or
        schema version, truncation, CRC mismatch, unknown key id, failed authentication.
    """
    try:
        magic, fmt, flags, version = _HEAD.unpack_from(data)
    except struct.error:
        raise CorruptEntry("truncated", f"{len(data)} bytes") from None
    # One comparison for the common case; the specific reason is worked out on failure.
    if (magic != MAGIC or fmt != FORMAT_VERSION or flags & ~_KNOWN_FLAGS
            or version != schema_version):
        _raise_header_problem(magic, fmt, flags, version, schema_version)
    pos = _HEAD.size
    expires_at_ms = delta_ms = 0
    if flags & FLAG_TIMING:
        if len(data) < pos + _TIMING.size:
            raise CorruptEntry("truncated", "timing")
        expires_at_ms, delta_ms = _TIMING.unpack_from(data, pos)
        pos += _TIMING.size
    if flags & FLAG_ENCRYPTED:
        if len(data) < pos + 1:
            raise CorruptEntry("truncated", "key id")
        kid_len = data[pos]
        end = pos + 1 + kid_len + NONCE_SIZE
        if len(data) < end + _TAG_SIZE:
            raise CorruptEntry("truncated", "nonce or tag")
        try:
            key_id = data[pos + 1 : pos + 1 + kid_len].decode("ascii")
        except UnicodeDecodeError:
            raise CorruptEntry("bad_key_id") from None
        if keyring is None:
            raise CorruptEntry("no_keyring", f"entry encrypted with key id {key_id!r}")
        cipher = keyring.cipher(key_id, tenant)
        if cipher is None:
            raise CorruptEntry("unknown_key_id", key_id)
        header = data[:end]
        try:
            nonce = data[end - NONCE_SIZE : end]
            body = cipher.decrypt(nonce, data[end:], redis_key + b"\x00" + header)
        except Exception:  # cryptography raises InvalidTag; any failure means "does not open"
            raise CorruptEntry("auth_failed", f"key id {key_id!r}") from None
        return flags, body, expires_at_ms, delta_ms
    if len(data) < pos + _CRC.size:
        raise CorruptEntry("truncated", "crc")
    (stored,) = _CRC.unpack_from(data, pos)
    body = data[pos + _CRC.size :]
    crc = zlib.crc32(body, zlib.crc32(data[:pos], zlib.crc32(redis_key)))
    if crc != stored:
        raise CorruptEntry("checksum")
    return flags, body, expires_at_ms, delta_ms


def entry_heads(schema_version: int, encrypted: bool) -> tuple[tuple[bytes, int], ...]:
    """The header prefixes of an uncompressed entry of ``schema_version``, clear or
    encrypted (without and with timing), each with where the rest starts (the CRC, or
    the key id's length): what a batch read checks inline before falling back to
    :func:`open_envelope` for anything else."""
    sealed = FLAG_ENCRYPTED if encrypted else 0
    return tuple((_HEAD.pack(MAGIC, FORMAT_VERSION, sealed | flags, schema_version),
                  _HEAD.size + (_TIMING.size if flags & FLAG_TIMING else 0))
                 for flags in (0, FLAG_TIMING))


def _raise_header_problem(
    magic: bytes, fmt: int, flags: int, version: int, schema_version: int
) -> None:
    if magic != MAGIC:
        raise CorruptEntry("bad_magic")
    if fmt != FORMAT_VERSION:
        raise CorruptEntry("unknown_format", f"format {fmt}")
    if flags & ~_KNOWN_FLAGS:
        raise CorruptEntry("unknown_flags", f"flags {flags:#x}")
    raise CorruptEntry("schema_version", f"entry has v{version}, schema is v{schema_version}")
