"""Codec and envelope: exact round trips, and every damaged entry is refused."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import os
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thorbis_cache import CodecSettings, Compression, KeyRing, KeySchema
from thorbis_cache.cache.codec import SchemaCodec, check_value, make_converter
from thorbis_cache.cache.envelope import FLAG_COMPRESSED, FLAG_ENCRYPTED, MAGIC, CorruptEntry
from thorbis_cache.errors import KeyRingError, ValueTypeError
from thorbis_cache.testing.strategies import tenant_ids, values_of


class Tier(enum.Enum):
    BASIC = "basic"
    VIP = "vip"


@attrs.frozen
class Address:
    street: str
    zip: str | None


@attrs.frozen
class Record:
    id: int
    name: str
    balance: float
    owed: decimal.Decimal
    since: dt.date
    seen: dt.datetime
    ref: uuid.UUID
    tier: Tier
    tags: list[str]
    scores: dict[str, int]
    address: Address | None
    blob: bytes


def schema(**kw: Any) -> KeySchema[Any]:
    kw.setdefault("value_type", Record)
    return KeySchema("hs.record", params={"id": int}, **kw)


RING = KeyRing.generate("k1")
CONV = make_converter()


def codec(s: KeySchema[Any], ring: KeyRing | None = RING, **kw: Any) -> SchemaCodec[Any]:
    return SchemaCodec(s, CONV, ring, CodecSettings(**kw))


KEY = b"tc:{acme}:hs.record:1"

CONFIGS = {
    "plain": schema(compression=Compression.NEVER),
    "compressed": schema(compression=Compression.ALWAYS),
    "encrypted": schema(sensitive=True, compression=Compression.NEVER),
    "encrypted+compressed": schema(sensitive=True, compression=Compression.ALWAYS),
    "xfetch": schema(sensitive=True, early_recompute=1.0),
}
config_st = st.sampled_from(sorted(CONFIGS))
records = values_of(CONFIGS["plain"])


@settings(max_examples=150)
@given(config_st, records, tenant_ids())
def test_round_trip_of_arbitrary_values(config: str, value: Record, tenant: str) -> None:
    c = codec(CONFIGS[config])
    timing = (1_700_000_000_000, 12) if config == "xfetch" else None
    data = c.encode(value, KEY, tenant, timing)
    decoded = c.decode(data, KEY, tenant)
    assert decoded.value == value
    assert type(decoded.value.since) is dt.date
    assert decoded.value.seen.tzinfo == value.seen.tzinfo
    if timing:
        assert (decoded.expires_at_ms, decoded.delta_ms) == timing


CONTAINERS = [
    KeySchema("hs.things", tp, sensitive=True)
    for tp in (list[dict[str, int | None]], tuple[int, str], set[uuid.UUID], dict[int, float],
               str, bytes, int, dt.datetime)
]


@given(st.sampled_from(CONTAINERS).flatmap(lambda s: st.tuples(st.just(s), values_of(s))))
def test_round_trip_of_containers_and_primitives(case: tuple[KeySchema[Any], Any]) -> None:
    s, value = case
    c = codec(s)
    assert c.decode(c.encode(value, KEY, "acme"), KEY, "acme").value == value


@settings(max_examples=60)
@given(config_st, records, st.data())
def test_any_single_bit_flip_is_a_miss(config: str, value: Record, data: st.DataObject) -> None:
    c = codec(CONFIGS[config])
    good = c.encode(value, KEY, "acme", (1, 1) if config == "xfetch" else None)
    bit = data.draw(st.integers(0, len(good) * 8 - 1))
    bad = bytearray(good)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptEntry):
        c.decode(bytes(bad), KEY, "acme")


@settings(max_examples=60)
@given(config_st, records, tenant_ids(), tenant_ids())
def test_value_copied_to_another_tenants_key_is_a_miss(
    config: str, value: Record, a: str, b: str
) -> None:
    c = codec(CONFIGS[config])
    key_a = f"tc:{{{a}}}:hs.record:1".encode()
    key_b = f"tc:{{{b}}}:hs.record:1".encode()
    data = c.encode(value, key_a, a)
    if a == b:
        assert c.decode(data, key_b, b).value == value
    else:
        with pytest.raises(CorruptEntry):
            c.decode(data, key_b, b)


@given(records)
def test_value_copied_to_another_key_of_the_same_tenant_is_a_miss(value: Record) -> None:
    for config in CONFIGS.values():
        c = codec(config)
        data = c.encode(value, KEY, "acme")
        with pytest.raises(CorruptEntry):
            c.decode(data, b"tc:{acme}:hs.record:2", "acme")


@given(records, st.data())
def test_truncation_is_a_miss(value: Record, data: st.DataObject) -> None:
    c = codec(CONFIGS["encrypted+compressed"])
    good = c.encode(value, KEY, "acme")
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(CorruptEntry):
        c.decode(good[:cut], KEY, "acme")


def sample() -> Record:
    return Record(
        1, "Ann", 1.5, decimal.Decimal("10.25"), dt.date(2020, 1, 2),
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), uuid.uuid4(), Tier.VIP,
        ["a"], {"x": 1}, Address("Main St", None), b"\x00\xff",
    )


def test_reasons_are_specific() -> None:
    c = codec(CONFIGS["encrypted"])
    data = c.encode(sample(), KEY, "acme")

    def reason(blob: bytes, codec_: SchemaCodec[Any] = c) -> str:
        with pytest.raises(CorruptEntry) as info:
            codec_.decode(blob, KEY, "acme")
        return info.value.reason

    assert reason(b"") == "truncated"
    assert reason(b"XX" + data[2:]) == "bad_magic"
    assert reason(data[:2] + b"\x09" + data[3:]) == "unknown_format"
    assert reason(data[:3] + bytes([data[3] | 0x80]) + data[4:]) == "unknown_flags"
    newer = codec(schema(sensitive=True, compression=Compression.NEVER, version=2))
    assert reason(data, newer) == "schema_version"
    other_ring = codec(CONFIGS["encrypted"], KeyRing.generate("k2"))
    assert reason(data, other_ring) == "unknown_key_id"
    same_id_other_key = codec(CONFIGS["encrypted"], KeyRing.generate("k1"))
    assert reason(data, same_id_other_key) == "auth_failed"
    # A plain entry planted under a sensitive schema is refused, even with a valid CRC.
    plain = codec(schema(compression=Compression.NEVER)).encode(sample(), KEY, "acme")
    assert reason(plain) == "not_encrypted"
    assert data.startswith(MAGIC)
    assert data[3] & FLAG_ENCRYPTED


def test_well_framed_garbage_is_a_miss() -> None:
    c = codec(schema(compression=Compression.NEVER))
    framed = c.seal_body(b"\xc1", KEY, "acme")  # 0xc1 is never valid msgpack
    with pytest.raises(CorruptEntry, match="msgpack"):
        c.decode(framed, KEY, "acme")
    wrong_shape = c.seal_body(b"\x93\x01\x02\x03", KEY, "acme")  # [1, 2, 3]
    with pytest.raises(CorruptEntry, match="structure"):
        c.decode(wrong_shape, KEY, "acme")


def test_decompression_bomb_is_refused() -> None:
    big = schema(value_type=str, compression=Compression.ALWAYS)
    writer = codec(big)
    data = writer.encode("x" * 100_000, KEY, "acme")
    assert data[3] & FLAG_COMPRESSED
    reader = codec(big, max_value_size=10_000)
    with pytest.raises(CorruptEntry, match="zstd"):
        reader.decode(data, KEY, "acme")


def test_auto_compression_uses_the_threshold() -> None:
    s = schema(value_type=str)
    c = codec(s, compress_threshold=100)
    assert not c.encode("short", KEY, "acme")[3] & FLAG_COMPRESSED
    assert c.encode("y" * 1000, KEY, "acme")[3] & FLAG_COMPRESSED
    # Incompressible data above the threshold is stored as is.
    raw = codec(schema(value_type=bytes), compress_threshold=100)
    assert not raw.encode(os.urandom(400), KEY, "acme")[3] & FLAG_COMPRESSED


def test_key_rotation_without_a_flush() -> None:
    old = KeyRing.generate("k1")
    c_old = codec(CONFIGS["encrypted"], old)
    stored = c_old.encode(sample(), KEY, "acme")
    rotated = old.with_active("k2", b"\x01" * 32)
    c_new = codec(CONFIGS["encrypted"], rotated)
    assert c_new.decode(stored, KEY, "acme").value == sample_eq(stored, c_old)
    fresh = c_new.encode(sample(), KEY, "acme")
    assert b"k2" in fresh[:16]
    retired = rotated.without("k1")
    with pytest.raises(CorruptEntry, match="unknown_key_id"):
        codec(CONFIGS["encrypted"], retired).decode(stored, KEY, "acme")


def sample_eq(stored: bytes, c: SchemaCodec[Any]) -> Any:
    return c.decode(stored, KEY, "acme").value


def test_tenant_data_keys_differ_and_are_cached() -> None:
    ring = KeyRing.generate()
    a1 = ring.cipher("k1", "acme")
    assert ring.cipher("k1", "acme") is a1
    assert ring.cipher("k1", "globex") is not a1
    assert ring.cipher("nope", "acme") is None


def test_keyring_errors_never_show_key_material() -> None:
    with pytest.raises(KeyRingError, match="32 bytes"):
        KeyRing({"k1": b"short"}, "k1")
    with pytest.raises(KeyRingError, match="active"):
        KeyRing({"k1": b"\x00" * 32}, "k2")
    with pytest.raises(KeyRingError, match="base64"):
        KeyRing.from_string("k1:not*base64")
    ring = KeyRing.from_string("*k1:" + "A" * 43 + "=,k2:" + "B" * 43 + "=")
    assert ring.active_key_id == "k1"
    assert "AAAA" not in repr(ring)


def test_set_refuses_values_of_the_wrong_type() -> None:
    c = codec(CONFIGS["plain"])
    with pytest.raises(ValueTypeError, match=r"hs\.record"):
        c.check("not a record")
    bad = attrs.evolve(sample(), tags=[1, 2])
    with pytest.raises(ValueTypeError, match=r"Record.tags: \[0\]: expected str"):
        c.check(bad)
    assert check_value(True, int) is not None
    assert check_value(1, float) is None
    assert check_value(dt.datetime.now(), dt.date) is not None
    assert check_value({"a": 1}, dict[str, int]) is None
    assert check_value({"a": "1"}, dict[str, int]) is not None
    assert check_value((1, "a"), tuple[int, str]) is None
    assert check_value((1,), tuple[int, str]) is not None


@settings(max_examples=100)
@given(st.sampled_from([CONFIGS["plain"], *CONTAINERS]).flatmap(
    lambda s: st.tuples(st.just(s), values_of(s))
))
def test_fast_decoder_agrees_with_the_cattrs_reference(case: tuple[KeySchema[Any], Any]) -> None:
    s, value = case
    c = codec(s)
    body = c.to_body(value)
    assert c.from_body(body) == c.from_body_reference(body) == value


def test_fast_decoder_is_used_where_it_is_exact() -> None:
    assert codec(CONFIGS["plain"]).uses_fast_decoder

    @attrs.frozen
    class Converted:
        name: str = attrs.field(converter=str.strip)

    # msgspec would not re-apply attrs converters: such classes stay on cattrs.
    c = codec(KeySchema("hs.converted", Converted))
    assert not c.uses_fast_decoder
    assert c.decode(c.encode(Converted(" a "), KEY, "acme"), KEY, "acme").value == Converted("a")


def test_a_value_the_fast_decoder_refuses_still_decodes_through_cattrs() -> None:
    # A UTC offset with seconds is valid for Python but not RFC 3339: msgspec refuses the
    # ISO string, the reference path reads it, and the entry is not mistaken for corrupt.
    odd = dt.timezone(dt.timedelta(hours=1, seconds=30))
    s = KeySchema("hs.when", dt.datetime)
    c = codec(s)
    value = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=odd)
    assert c.decode(c.encode(value, KEY, "acme"), KEY, "acme").value == value


@settings(max_examples=80)
@given(config_st, st.lists(st.tuples(records, st.integers(-1, 400), st.booleans()),
                           min_size=1, max_size=6))
def test_a_batch_decodes_and_refuses_exactly_as_single_reads(
        config: str, items: list[tuple[Record, int, bool]]) -> None:
    """``decode_values`` (get_many's inline path) against ``decode_value`` entry by entry:
    the same values, and the same entries refused, for clean, damaged, truncated,
    timed and absent entries."""
    c = codec(CONFIGS[config])
    datas: list[bytes | None] = []
    keys: list[str] = []
    for n, (value, damage, timed) in enumerate(items):
        key = f"tc:{{acme}}:hs.record:{n}"
        data = c.encode(value, key.encode(), "acme", (1, 2) if timed else None)
        if damage >= len(data) * 8:
            datas.append(None)  # absent
        elif damage >= 0 and damage % 3 == 0:
            datas.append(data[: damage // 8])  # truncated
        elif damage >= 0:
            bad = bytearray(data)
            bad[damage // 8 % len(bad)] ^= 1 << (damage % 8)
            datas.append(bytes(bad))
        else:
            datas.append(data)
        keys.append(key)
    values, corrupt = c.decode_values(datas, keys, ["acme"] * len(keys))
    refused = dict(corrupt)

    def single(data: bytes, key: str) -> Any:
        try:
            return c.decode_value(data, key.encode(), "acme")
        except CorruptEntry as exc:
            return exc

    for i, (data, key) in enumerate(zip(datas, keys, strict=True)):
        if data is None:
            assert values[i] is None
            assert i not in refused
            continue
        expected = single(data, key)
        if isinstance(expected, CorruptEntry):
            assert values[i] is None
            assert refused[i].reason == expected.reason
        else:
            assert i not in refused
            assert values[i] == expected


@settings(max_examples=150)
@given(config_st, records, st.integers(-1, 2000), st.booleans(),
       st.sampled_from(["acme", "globex"]))
def test_a_single_read_opens_and_refuses_exactly_as_the_reference(
        config: str, value: Record, damage: int, timed: bool, tenant: str) -> None:
    """``decode_value`` (the hit path, which opens the usual entry inline) against
    :meth:`decode` (every entry through ``open_envelope``): the same value or the same
    refusal, for clean, bit-flipped and truncated entries, timed or not, read by the
    tenant that wrote them or by another."""
    c = codec(CONFIGS[config])
    data = c.encode(value, KEY, "acme", (1, 2) if timed else None)
    if 0 <= damage < len(data) * 8:
        if damage % 3 == 0:
            data = data[: damage // 8]
        else:
            bad = bytearray(data)
            bad[damage // 8] ^= 1 << (damage % 8)
            data = bytes(bad)

    def outcome(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except CorruptEntry as exc:
            return ("refused", exc.reason)

    assert outcome(lambda: c.decode_value(data, KEY, tenant)) == outcome(
        lambda: c.decode(data, KEY, tenant).value)
