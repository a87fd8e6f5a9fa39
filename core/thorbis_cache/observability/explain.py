"""``explain``: everything the cache knows about one key, read without changing it.

The first thing an operator reaches for when a value looks wrong
(``thorbis-cache explain --tenant acme hs.customer customer_id=42``): where the key
lives (hash slot, and the Cluster node serving it), who declares its schema, how long it
has left, how big it is, how its envelope is sealed (flags, format and schema version,
the key id that encrypted it), whether it opens (the schema's codec decodes it: a
tampered or corrupt entry reports the reason the cache would drop it for), its tags and
how many keys each tag set holds, the keys that depend on it, its XFetch state, whether a
fill lease is in flight, and whether this process's near cache holds it.

Every call goes through the cache's store, by key name (so it is routed to the key's
node on a Cluster); nothing is scanned, nothing is written, and an unreadable entry is
*not* dropped (a read through the cache would drop it). The value itself is decoded to
check it but returned only when asked (``show_value=True``).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.codec import SchemaCodec, make_converter
from thorbis_cache.cache.envelope import (
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    FLAG_TIMING,
    MAGIC,
    CorruptEntry,
)
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.cache.leases import ABSENT, EMPTY
from thorbis_cache.cache.meta_keys import key_slot
from thorbis_cache.cache.near import MISS
from thorbis_cache.errors import CacheBackendError, RedisUnavailableError

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.plugins.declarations import InvalidationRule

__all__ = [
    "EnvelopeInfo",
    "Explanation",
    "LeaseState",
    "TagState",
    "XFetchState",
    "explain",
    "parse_envelope_header",
]

#: Members of a sorted set or geo index decoded to check that the structure opens, and
#: dependents listed by name: enough to diagnose, bounded whatever the structure's size.
MEMBER_SAMPLE = 1000
DEPENDENT_SAMPLE = 20

_HEAD = struct.Struct(">2sBBH")  # magic, format, flags, schema version (docs/envelope.md)
_TIMING = struct.Struct(">QI")  # expires_at_ms, delta_ms
_VERSION_FIELD = b"~v"  # the version field of an entity hash (structures.VERSION_FIELD)


@attrs.frozen(slots=True)
class EnvelopeInfo:
    """The header of an envelope, parsed without opening it.

    :ivar format: the envelope format version.
    :ivar schema_version: the schema version written into the entry.
    :ivar flags: the raw flags byte.
    :ivar compressed: the body is zstd-compressed.
    :ivar encrypted: the body is sealed with AES-256-GCM.
    :ivar timing: the header carries XFetch timing.
    :ivar key_id: the key ring's key id that encrypted it (None when clear).
    :ivar expires_at_ms: XFetch: epoch ms at which the entry was written to expire.
    :ivar delta_ms: XFetch: how long its load took, in ms.
    """

    format: int
    schema_version: int
    flags: int
    compressed: bool
    encrypted: bool
    timing: bool
    key_id: str | None = None
    expires_at_ms: int | None = None
    delta_ms: int | None = None


def parse_envelope_header(data: bytes) -> EnvelopeInfo | None:
    """The header of the envelope ``data``, or None when it does not start like one
    (no ``TC`` magic, or truncated). Nothing is checked or decrypted: whether the entry
    opens is the codec's call."""
    if len(data) < _HEAD.size:
        return None
    magic, fmt, flags, version = _HEAD.unpack_from(data)
    if magic != MAGIC:
        return None
    pos = _HEAD.size
    expires_at_ms = delta_ms = None
    if flags & FLAG_TIMING:
        if len(data) < pos + _TIMING.size:
            return None
        expires_at_ms, delta_ms = _TIMING.unpack_from(data, pos)
        pos += _TIMING.size
    key_id = None
    if flags & FLAG_ENCRYPTED:
        if len(data) < pos + 1 or len(data) < pos + 1 + data[pos]:
            return None
        key_id = data[pos + 1:pos + 1 + data[pos]].decode("ascii", "replace")
    return EnvelopeInfo(fmt, version, flags, bool(flags & FLAG_COMPRESSED),
                        bool(flags & FLAG_ENCRYPTED), bool(flags & FLAG_TIMING), key_id,
                        expires_at_ms, delta_ms)


@attrs.frozen(slots=True)
class TagState:
    """One tag of the key's schema.

    :ivar tag: the tag name.
    :ivar redis_key: its tag set (the keys written under the tag, for the key's tenant).
    :ivar members: how many keys the set holds (``SCARD``; dead members are pruned
        lazily, so it may count keys that expired).
    :ivar holds_key: whether the set records this key (``SISMEMBER``): a key written
        under a tag it is missing from would escape that tag's invalidation.
    """

    tag: str
    redis_key: str
    members: int
    holds_key: bool


@attrs.frozen(slots=True)
class LeaseState:
    """The key's fill lease.

    :ivar redis_key: the lease key.
    :ivar held: a fill is in flight somewhere (the lease exists).
    :ivar ttl_ms: ms before the lease expires on its own (None when not held).
    """

    redis_key: str
    held: bool
    ttl_ms: int | None


@attrs.frozen(slots=True)
class XFetchState:
    """Early recomputation (XFetch) of the entry.

    :ivar beta: the schema's ``early_recompute`` (None: XFetch is off for it).
    :ivar expires_at_ms: epoch ms the entry was written to expire at (from its envelope).
    :ivar delta_ms: how long the load that produced it took.
    :ivar seconds_left: seconds until ``expires_at_ms``, from now.
    :ivar recompute_probability: the chance that a read now recomputes early,
        ``exp(-seconds_left / (delta * beta))`` (1 once expired).
    """

    beta: float | None
    expires_at_ms: int | None
    delta_ms: int | None
    seconds_left: float | None
    recompute_probability: float | None


@attrs.frozen(slots=True)
class Explanation:
    """What :func:`explain` found about one key.

    :ivar schema: the key schema's name; :ivar kind: its Redis structure.
    :ivar owner: who registered the schema (the plugin's name, ``<app>`` for the host).
    :ivar tenant: the key's tenant; :ivar params: its parameters, as key segments show them.
    :ivar redis_key: the full Redis key.
    :ivar slot: its hash slot (the tenant's: every key of a tenant shares it).
    :ivar node: the Cluster master serving the slot (``host:port``), None elsewhere.
    :ivar server: the server address the cache talks to.
    :ivar exists: whether Redis holds the key.
    :ivar redis_type: ``string``, ``hash``, ``zset``... (None when absent).
    :ivar ttl_ms: ms left (``PTTL``; None when absent or without expiry).
    :ivar size_bytes: ``STRLEN`` of a string, ``MEMORY USAGE`` of a structure.
    :ivar length: fields of a hash (``HLEN``), members of a sorted set or geo index
        (``ZCARD``); None for a string.
    :ivar marker: ``absent`` (a cached absence: the loader found no row) or ``empty``
        (a structure whose loader returned no member), else None.
    :ivar envelope: the envelope header (of the value; of one field of a hash).
    :ivar opens: whether the entry decodes with the schema's codec (None: not checked,
        because it is absent, a marker, or no key ring was given for an encrypted entry).
    :ivar corrupt_reason: why it does not open (the codec's reason, as counted by the
        cache's corrupt-entry metric); :ivar corrupt_detail: the detail.
    :ivar tags: each tag of the schema, its set's size and whether it records the key.
    :ivar dependents: keys recorded as depending on this one (``Cache.depend``), which a
        cascading invalidation of it also deletes; :ivar dependents_sample: some of them.
    :ivar mirrors: the materialized view the schema mirrors (its refresh drops the key).
    :ivar rules: the invalidation rules that reach the key (by schema or one of its tags).
    :ivar xfetch: the entry's early-recompute state.
    :ivar lease: the fill lease.
    :ivar near: whether this process's near cache holds a live value for the key (None:
        the cache has no near cache, or the schema does not use it).
    :ivar value: the decoded value, only when asked for (``show_value``), else None.
    """

    schema: str
    kind: str
    owner: str
    tenant: str
    params: Mapping[str, str]
    redis_key: str
    slot: int
    node: str | None
    server: str
    exists: bool
    redis_type: str | None
    ttl_ms: int | None
    size_bytes: int | None
    length: int | None
    marker: str | None
    envelope: EnvelopeInfo | None
    opens: bool | None
    corrupt_reason: str | None
    corrupt_detail: str | None
    tags: tuple[TagState, ...]
    dependents: int
    dependents_sample: tuple[str, ...]
    mirrors: str | None
    rules: tuple[str, ...]
    xfetch: XFetchState
    lease: LeaseState
    near: bool | None
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (the value, when present, as the codec unstructures
        it: dates as ISO strings, UUIDs as bytes shown in hex)."""
        out = attrs.asdict(self, recurse=True)
        out["params"] = dict(self.params)
        out["value"] = _jsonable(self.value)
        return out


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ms(value: object) -> int | None:
    """A PTTL reply as ms left; None for no key (-2) or no expiry (-1)."""
    ms = int(value)  # type: ignore[call-overload]
    return ms if ms >= 0 else None


async def explain(cache: Cache, key: CacheKey[Any], *, rules: Iterable[InvalidationRule] = (),
                  verify: bool = True, show_value: bool = False) -> Explanation:
    """Everything the cache knows about ``key``, read-only (see the module docstring).

    :param cache: the cache whose Redis, prefix, key ring and near cache are inspected.
    :param key: the key (its schema must be registered with ``cache``).
    :param rules: invalidation rules to match against the key's schema and tags (the
        loaded plugins' ``all_rules()``); none by default.
    :param verify: decode the entry to check that it opens; False leaves ``opens`` None
        (a caller without the real key ring, for which every encrypted entry would fail).
    :param show_value: return the decoded value in :attr:`Explanation.value`.
    :returns: the explanation; ``exists`` False when Redis does not hold the key.
    :raises UnknownSchemaError: the key's schema is not registered with ``cache``.
    :raises CacheBackendError: Redis answered with an error or cannot be reached.
    """
    schema = key.schema
    registry = cache.registry
    if not registry.is_registered(schema):
        registry.get(schema.name)  # raises UnknownSchemaError naming the registered ones
    store = cache.store
    rk = cache.redis_key(key)
    ctx = _Found()
    ctx.redis_type = _text(await store.command("TYPE", rk))
    if ctx.redis_type != "none":
        ctx.ttl_ms = _ms(await store.command("PTTL", rk))
        await _read_entry(cache, key, rk, ctx, verify=verify, show_value=show_value)
    exists = ctx.redis_type != "none"

    tags = []
    for tag_key, tag in zip(cache.tag_keys(key), schema.tags):
        members = int(await store.command("SCARD", tag_key))
        holds = bool(await store.command("SISMEMBER", tag_key, rk)) if members else False
        tags.append(TagState(tag, tag_key, members, holds))
    deps_key = cache.tags.deps_key(key.body)
    dependents = int(await store.command("SCARD", deps_key))
    sample: tuple[str, ...] = ()
    if dependents:
        # SRANDMEMBER with a positive count: distinct members, at most that many.
        sample = tuple(sorted(_text(m) for m in await store.command(
            "SRANDMEMBER", deps_key, DEPENDENT_SAMPLE)))
    # Every key of a tenant carries the tenant as its hash tag: the slot is the tag's.
    slot = key_slot(key.tenant)
    lease_key = cache.lease_key(key)
    lease_ttl = await store.command("PTTL", lease_key)
    lease = LeaseState(lease_key, int(lease_ttl) != -2, _ms(lease_ttl))
    near = None
    if cache.near is not None and _near_ttl(cache, key) is not None:
        near = cache.near.lookup(rk) is not MISS  # a live entry (an expired one: no)

    return Explanation(
        schema=schema.name, kind=schema.kind.value, owner=registry.owner(schema.name),
        tenant=key.tenant,
        params={p.name: p.encode(schema.name, v) for p, v in zip(schema.params, key.values)},
        redis_key=rk, slot=slot, node=await _node(cache, slot),
        server=store.address, exists=exists, redis_type=ctx.redis_type if exists else None,
        ttl_ms=ctx.ttl_ms, size_bytes=ctx.size, length=ctx.length, marker=ctx.marker,
        envelope=ctx.envelope, opens=ctx.opens, corrupt_reason=ctx.reason,
        corrupt_detail=ctx.detail, tags=tuple(tags), dependents=dependents,
        dependents_sample=sample, mirrors=schema.mirrors,
        rules=_rules_reaching(key, rules), xfetch=_xfetch(key, ctx.envelope),
        lease=lease, near=near, value=ctx.value,
    )


def _near_ttl(cache: Cache, key: CacheKey[Any]) -> float | None:
    override = cache.settings.schema_overrides.get(key.schema.name)
    if override is not None and override.near_ttl is not None:
        return override.near_ttl
    return key.schema.near_ttl


class _Found:
    """What :func:`_read_entry` learns, filled in as it goes."""

    redis_type: str = "none"
    ttl_ms: int | None = None
    size: int | None = None
    length: int | None = None
    marker: str | None = None
    envelope: EnvelopeInfo | None = None
    opens: bool | None = None
    reason: str | None = None
    detail: str | None = None
    value: Any = None

    def corrupt(self, exc: CorruptEntry) -> None:
        self.opens, self.reason, self.detail = False, exc.reason, exc.detail or None


async def _read_entry(cache: Cache, key: CacheKey[Any], rk: str, found: _Found, *,
                      verify: bool, show_value: bool) -> None:
    """Size, envelope and decoding of the entry at ``rk`` (it exists)."""
    store = cache.store
    schema = key.schema
    converter = make_converter()
    codec: SchemaCodec[Any] = SchemaCodec(schema, converter, cache.keyring,
                                          cache.settings.codec)
    if found.redis_type == "string":
        data: bytes | None = await store.command("GET", rk)
        if data is None:  # expired between TYPE and GET
            found.redis_type = "none"
            return
        found.size = len(data)
        if data in (ABSENT, EMPTY):
            found.marker = "absent" if data == ABSENT else "empty"
            return
        found.envelope = parse_envelope_header(data)
        if schema.kind is not SchemaKind.VALUE:
            found.opens, found.reason = False, "wrong_type"
            found.detail = f"a string where a {schema.kind.value} schema keeps a structure"
            return
        if verify:
            try:
                decoded = codec.decode(data, rk.encode(), key.tenant)
            except CorruptEntry as exc:
                found.corrupt(exc)
            else:
                found.opens = True
                if show_value:
                    found.value = converter.unstructure(decoded.value)
        return
    found.size = await _memory_usage(cache, rk)
    if schema.kind is SchemaKind.HASH and found.redis_type == "hash":
        raw = await store.command("HGETALL", rk)
        items = dict(zip(raw[::2], raw[1::2])) if isinstance(raw, list) else dict(raw)
        found.length = len(items)
        fields = {f.name: f for f in attrs.fields(attrs.resolve_types(schema.value_type))}
        first = next((items[n.encode()] for n in fields if n.encode() in items), None)
        if first is not None:
            found.envelope = parse_envelope_header(first)
        if verify:
            entity = _check_hash(codec, key, rk, items, fields, found)
            if entity is not None and show_value:
                found.value = converter.unstructure(entity)
        return
    if schema.kind in (SchemaKind.ZSET, SchemaKind.GEO) and found.redis_type == "zset":
        found.length = int(await store.command("ZCARD", rk))
        members = await store.command("ZRANGE", rk, 0, MEMBER_SAMPLE - 1)
        param = schema.member_param
        decoded_members = []
        for raw_member in members:
            try:
                decoded_members.append(param.decode(_text(raw_member)))
            except (ValueError, TypeError) as exc:  # InvalidParameterError is both
                found.opens, found.reason = False, "member"
                found.detail = f"member {_text(raw_member)[:80]!r}: {exc}"
                return
        found.opens = True
        if show_value:
            found.value = [getattr(m, "value", m) for m in decoded_members]
        return
    found.opens, found.reason = False, "wrong_type"
    found.detail = f"a {found.redis_type} where a {schema.kind.value} schema keeps its entries"


def _check_hash(codec: SchemaCodec[Any], key: CacheKey[Any], rk: str,
                items: dict[bytes, bytes], fields: dict[str, attrs.Attribute[Any]],
                found: _Found) -> Any:
    """Open every field of an entity hash as :class:`~thorbis_cache.cache.structures.EntityHash`
    does (each field sealed for ``<key>#<field>``); returns the entity, or None when
    it does not open (the reason recorded in ``found``)."""
    if _VERSION_FIELD not in items:
        found.corrupt(CorruptEntry("hash_shape", "no version field"))
        return None
    values: dict[str, Any] = {}
    for name, field in fields.items():
        data = items.get(name.encode())
        if data is None:
            found.corrupt(CorruptEntry("hash_shape", f"field {name!r} is missing"))
            return None
        try:
            body, _, _ = codec.open_body(data, f"{rk}#{name}".encode(), key.tenant)
            values[field.alias or name] = codec.converter_unpack(body, field.type)
        except CorruptEntry as exc:
            found.corrupt(CorruptEntry(exc.reason, f"field {name!r}"
                                       + (f": {exc.detail}" if exc.detail else "")))
            return None
    try:
        entity = key.schema.value_type(**values)
    except (TypeError, ValueError) as exc:
        found.corrupt(CorruptEntry("hash_shape", repr(exc)))
        return None
    found.opens = True
    return entity


async def _memory_usage(cache: Cache, rk: str) -> int | None:
    """``MEMORY USAGE`` of ``rk`` (None when the server refuses it, e.g. an ACL)."""
    try:
        usage = await cache.store.command("MEMORY", "USAGE", rk)
    except RedisUnavailableError:
        raise
    except CacheBackendError:  # refused (an ACL without MEMORY): the size stays unknown
        return None
    return None if usage is None else int(usage)


async def _node(cache: Cache, slot: int) -> str | None:
    """The master serving ``slot`` on a Cluster (``CLUSTER SLOTS``), else None."""
    store = cache.store
    if not store.is_cluster:
        return None
    for (first, last), nodes in (await store.cluster_slots()).items():
        if first <= slot <= last:
            host, port = nodes["primary"][:2]
            return f"{_text(host)}:{int(port)}"
    return None


def _rules_reaching(key: CacheKey[Any], rules: Iterable[InvalidationRule]) -> tuple[str, ...]:
    """``rule (table OPS): schema|tag`` for each rule whose target reaches ``key``."""
    schema = key.schema
    out = []
    for rule in rules:
        reached = [f"tag {t.tag}" if t.tag else f"key of {t.schema}" for t in rule.targets
                   if t.schema == schema.name or (t.tag is not None and t.tag in schema.tags)]
        if reached:
            ops = "/".join(sorted(o.value for o in rule.operations))
            out.append(f"{rule.name} ({rule.table} {ops}): {', '.join(reached)}")
    return tuple(sorted(out))


def _xfetch(key: CacheKey[Any], envelope: EnvelopeInfo | None) -> XFetchState:
    beta = key.schema.early_recompute
    if envelope is None or envelope.expires_at_ms is None:
        return XFetchState(beta, None, None, None, None)
    left = envelope.expires_at_ms / 1000.0 - time.time()
    delta = envelope.delta_ms or 0
    probability: float | None = None
    if beta is not None:
        if left <= 0:
            probability = 1.0
        elif delta <= 0:
            probability = 0.0
        else:
            probability = math.exp(-left / (delta / 1000.0 * beta))
    return XFetchState(beta, envelope.expires_at_ms, envelope.delta_ms, round(left, 3),
                       probability)
