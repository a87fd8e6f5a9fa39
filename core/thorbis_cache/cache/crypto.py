"""Per-tenant encryption: a master key ring, HKDF-SHA256 data keys, AES-256-GCM.

Each tenant's data key is derived from a master key: ``HKDF-SHA256(master,
salt=SALT, info="tenant:" + tenant)``. Master keys carry ids; one is active (used to
encrypt), the others still decrypt, so a key can be rotated without flushing the cache.
Derivation costs a few microseconds, so derived ciphers are cached (bounded LRU).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections import OrderedDict
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from thorbis_cache.errors import KeyRingError

__all__ = ["NONCE_SIZE", "KeyRing"]

NONCE_SIZE = 12
MASTER_KEY_SIZE = 32
_SALT = b"thorbis-cache/tenant-data-key/v1"
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyRing:
    """Master keys by id, the active id, and a cache of derived per-tenant ciphers.

    Keys never appear in ``repr`` or in error messages.

    :param keys: key id -> 32-byte master key.
    :param active: the id used to encrypt new values.
    :param cache_size: how many (key id, tenant) ciphers to keep derived.
    :raises KeyRingError: on a bad id, a key that is not 32 bytes, or an unknown active id.
    """

    __slots__ = ("_active", "_cache", "_cache_size", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active: str, *, cache_size: int = 4096) -> None:
        if not keys:
            raise KeyRingError("a key ring needs at least one key")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
                raise KeyRingError(f"key id {key_id!r} must be 1-32 of [A-Za-z0-9_-]")
            if not isinstance(key, bytes) or len(key) != MASTER_KEY_SIZE:
                raise KeyRingError(f"master key {key_id!r} must be {MASTER_KEY_SIZE} bytes")
        if active not in keys:
            raise KeyRingError(f"active key id {active!r} is not in the ring ({sorted(keys)})")
        self._keys = dict(keys)
        self._active = active
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], AESGCM] = OrderedDict()

    def __repr__(self) -> str:
        return f"KeyRing(ids={sorted(self._keys)}, active={self._active!r})"

    @classmethod
    def generate(cls, key_id: str = "k1") -> KeyRing:
        """A ring with one fresh random key (for demos and tests)."""
        return cls({key_id: os.urandom(MASTER_KEY_SIZE)}, key_id)

    @classmethod
    def from_string(cls, spec: str) -> KeyRing:
        """Parse ``"id1:BASE64,id2:BASE64"``; the last id listed is active, unless one is
        marked with a leading ``*`` (``"*id1:...,id2:..."``).

        :raises KeyRingError: naming the entry that does not parse (never the key).
        """
        keys: dict[str, bytes] = {}
        active: str | None = None
        last: str | None = None
        for n, entry in enumerate(filter(None, (e.strip() for e in spec.split(","))), 1):
            key_id, sep, material = entry.partition(":")
            if not sep:
                raise KeyRingError(f"key ring entry {n} is not 'id:base64'")
            marked = key_id.startswith("*")
            key_id = key_id.lstrip("*")
            try:
                keys[key_id] = base64.b64decode(material, validate=True)
            except (binascii.Error, ValueError):
                raise KeyRingError(f"key ring entry {n} ({key_id!r}) is not valid base64") from None
            if marked:
                active = key_id
            last = key_id
        if last is None:
            raise KeyRingError("key ring spec is empty")
        return cls(keys, active or last)

    @classmethod
    def from_env(cls, variable: str = "THORBIS_KEYRING") -> KeyRing:
        """Read the ring from an environment variable (see :meth:`from_string`).

        :raises KeyRingError: when the variable is unset or malformed.
        """
        spec = os.environ.get(variable)
        if not spec:
            raise KeyRingError(f"environment variable {variable} is not set")
        return cls.from_string(spec)

    def to_string(self) -> str:
        """The ring as :meth:`from_string` reads it: ``"id:BASE64,..."`` in the order the
        keys were added, the active id last or marked with ``*``.

        The result *is* the secret: hand it to a secret store, never to a log.
        """
        entries = [f"{'*' if key_id == self._active else ''}{key_id}:"
                   f"{base64.b64encode(key).decode('ascii')}" for key_id, key in self._keys.items()]
        if next(reversed(self._keys)) == self._active:
            entries[-1] = entries[-1].lstrip("*")
        return ",".join(entries)

    @property
    def active_key_id(self) -> str:
        """The id new values are encrypted with."""
        return self._active

    @property
    def key_ids(self) -> frozenset[str]:
        """Every id that can decrypt."""
        return frozenset(self._keys)

    def with_active(self, key_id: str, key: bytes | None = None) -> KeyRing:
        """A new ring where ``key_id`` (added with ``key`` if given) is active; the old
        keys keep decrypting. This is how a key is rotated."""
        keys = dict(self._keys)
        if key is not None:
            keys[key_id] = key
        return KeyRing(keys, key_id, cache_size=self._cache_size)

    def without(self, key_id: str) -> KeyRing:
        """A new ring without ``key_id`` (retire a key once no entry uses it)."""
        keys = {k: v for k, v in self._keys.items() if k != key_id}
        return KeyRing(keys, self._active, cache_size=self._cache_size)

    def cipher(self, key_id: str, tenant: str) -> AESGCM | None:
        """The AES-256-GCM cipher of ``tenant`` under master ``key_id``, or None if the
        ring does not hold that id."""
        cache_key = (key_id, tenant)
        cipher = self._cache.get(cache_key)
        if cipher is not None:
            self._cache.move_to_end(cache_key)
            return cipher
        master = self._keys.get(key_id)
        if master is None:
            return None
        data_key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=_SALT,
            info=b"tenant:" + tenant.encode("utf-8"),
        ).derive(master)
        cipher = AESGCM(data_key)
        self._cache[cache_key] = cipher
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cipher
