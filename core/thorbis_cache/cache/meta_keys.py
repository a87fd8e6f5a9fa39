"""The names of the tenant indexes and slot registries (what the sweep bounds and the
eviction check reads), and Redis Cluster's hash slots of tenant hash tags."""

from __future__ import annotations

import binascii

import attrs

__all__ = ["SLOTS", "MetaKeys", "key_slot", "slot_tag"]

#: Hash slots of a Redis Cluster (a single server has the same keyspace, unsplit).
SLOTS = 16384

# CRC16-XMODEM (Redis Cluster's key hash) is affine over strings of one length: with
# "@@@@@" as base and the low nibbles of characters 1, 2, 3 and 5 free, column i is the
# 16-bit nibble vector whose CRC differs from the base's by bit i alone. XOR-ing the
# columns of the bits to flip gives, for every slot, one tag of characters "@".."O"
# (never a brace) whose CRC16 is exactly the slot. lua/_record_tags.lua holds the same
# constants; tests check all 16384 tags against the CRC.
_BASE_CRC = 0x2751
_COLUMNS = (0xB4AE, 0x7553, 0xEAA6, 0x9368, 0x0D36, 0x4F48, 0xC4BB, 0x9579,
            0x0114, 0x0228, 0x0B5F, 0x4C95, 0xFBE7, 0xB1EA, 0x7FDB, 0x9274)


def key_slot(hash_tag: str) -> int:
    """The Cluster hash slot of a key whose hash tag is ``hash_tag`` (a tenant id)."""
    return binascii.crc_hqx(hash_tag.encode(), 0) % SLOTS


def slot_tag(slot: int) -> str:
    """The 5-character hash tag whose keys live in ``slot`` (0 <= slot < 16384).

    :raises ValueError: ``slot`` is out of range.
    """
    if not 0 <= slot < SLOTS:
        raise ValueError(f"hash slot {slot!r} is not in [0, {SLOTS})")
    want, x = slot ^ _BASE_CRC, 0
    for bit, column in enumerate(_COLUMNS):
        if want >> bit & 1:
            x ^= column
    return "".join(chr(64 + n) for n in (x >> 12 & 15, x >> 8 & 15, x >> 4 & 15, 0, x & 15))


@attrs.frozen(slots=True)
class MetaKeys:
    """The names of the tenant indexes and slot registries under one cache prefix."""

    prefix: str

    def index(self, tenant: str) -> str:
        """The tenant index of ``tenant`` (its slot)."""
        return f"{self.prefix}:~meta:{{{tenant}}}"

    def registry(self, tenant: str) -> str:
        """The registry of the slot of ``tenant`` (the same slot as its index)."""
        return self.registry_of_slot(key_slot(tenant))

    def registry_of_slot(self, slot: int) -> str:
        """The registry of the tenants whose keys live in ``slot``."""
        return f"{self.prefix}:~tenants:{{{slot_tag(slot)}}}"
