"""The checks of the plugin contract, as plain functions.

:class:`~thorbis_cache.testing.contract.PluginContract` calls these; a plugin author can
call any of them from a test of their own. Each takes a
:class:`~thorbis_cache.plugins.manager.LoadedPlugin` (or its schemas) and raises
:class:`AssertionError` listing *every* problem it found, each naming the plugin and
the declaration (schema, view, rule, warmer, permission) at fault. Property checks use
hypothesis; its falsifying example is printed with the failure. The checks that need
PostgreSQL are in :mod:`thorbis_cache.testing.contract_db`.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import ResolutionFailed
from redis.crc import key_slot

from thorbis_cache.cache.codec import CodecSettings, SchemaCodec, check_value, make_converter
from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.cache.keys import CacheKey, KeySchema, SchemaKind
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.errors import InvalidKeyError, ThorbisCacheError
from thorbis_cache.plugins.declarations import WarmContext, Warmer, is_qualified
from thorbis_cache.plugins.hookspecs import HOOK_API_VERSION, SUPPORTED_HOOK_API_VERSIONS
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.testing.strategies import param_value, params_for, tenant_ids, values_of
from thorbis_cache.warming import WarmBatch, warm

__all__ = [
    "SUPPRESSED_HEALTH_CHECKS",
    "Sample",
    "check_cache_round_trip",
    "check_codec_round_trip",
    "check_declarations",
    "check_key_isolation",
    "check_permissions",
    "check_plugin_info",
    "check_warmers",
    "report",
    "samples",
]

#: Key prefix the checks build keys under (the cache's default).
PREFIX = "tc"
#: Redis stores geo positions as 52-bit geohashes: about 3e-6 degrees of error.
GEO_TOLERANCE_DEGREES = 1e-5
#: A warmer producing more items than this for one tenant is assumed not to terminate.
MAX_WARM_ITEMS = 100_000
_MAX_LAT = 85.05112878
#: Health checks the contract's properties do not apply: values of rich types are slow to
#: generate and filtered (64-bit ints, no NaN), which is the point, not a defect.
SUPPRESSED_HEALTH_CHECKS = [
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large
]


def report(plugin: str, what: str, problems: Sequence[str]) -> None:
    """Raise one AssertionError listing ``problems`` (nothing when there are none).

    :raises AssertionError: ``plugin {plugin!r}: {what} (N problem(s)):`` and a line each.
    """
    __tracebackhide__ = True
    if problems:
        # Continuation lines (PostgreSQL's DETAIL, a statement) stay under their item.
        lines = "\n".join("  - " + p.replace("\n", "\n    ") for p in problems)
        raise AssertionError(
            f"plugin {plugin!r}: {what} ({len(problems)} problem(s)):\n{lines}"
        )


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- declarations


def check_plugin_info(plugin: LoadedPlugin) -> None:
    """The plugin targets a hook API version this thorbis-cache supports.

    :raises AssertionError: naming the version targeted and the versions supported.
    """
    __tracebackhide__ = True
    problems = list(plugin.info.problems())
    version = plugin.info.hook_api_version
    if version not in SUPPORTED_HOOK_API_VERSIONS:
        supported = ", ".join(map(str, sorted(SUPPORTED_HOOK_API_VERSIONS)))
        problems.append(f"targets hook API version {version!r}; supported: {supported} "
                        f"(current: {HOOK_API_VERSION})")
    report(plugin.name, "register_plugin_info", problems)


def check_declarations(plugin: LoadedPlugin) -> None:
    """Every declared name is under the namespace, declared once, and every reference
    (pattern, rule and warmer schemas; rule and view tags) is to this plugin's own
    schemas and tags.

    :raises AssertionError: listing every misnamed or dangling declaration.
    """
    __tracebackhide__ = True
    ns = plugin.info.namespace
    problems: list[str] = []
    schemas = {s.name: s for s in plugin.schemas}
    tags = {t for s in plugin.schemas for t in s.tags}

    def under(what: str, names: Iterable[str]) -> None:
        seen: set[str] = set()
        for name in names:
            if not isinstance(name, str) or not name.startswith(ns + ".") or name == ns + ".":
                problems.append(f"{what} {name!r} is not named '{ns}.<name>'")
            if name in seen:
                problems.append(f"{what} {name!r} is declared twice")
            seen.add(name)

    def own(what: str, names: Iterable[str]) -> None:
        for name in names:
            if name not in schemas:
                problems.append(f"{what} uses key schema {name!r}, not declared by this plugin "
                                f"(declared: {', '.join(sorted(schemas)) or 'none'})")

    under("key schema", [s.name for s in plugin.schemas])
    for schema in plugin.schemas:
        under(f"key schema {schema.name!r}: tag", schema.tags)
    under("cache pattern", [p.name for p in plugin.patterns])
    for pattern in plugin.patterns:
        own(f"cache pattern {pattern.name!r}", pattern.schemas)
    under("SQL script", [s.name for s in plugin.sql])
    under("materialized view", [v.name for v in plugin.views])
    for view in plugin.views:
        if not is_qualified(view.name) or view.schema != ns:
            problems.append(f"materialized view {view.name!r} must live in the PostgreSQL "
                            f"schema {ns!r} ('{ns}.<view>')")
        if view.refresh.concurrently and not view.unique_index:
            problems.append(f"materialized view {view.name!r} asks for concurrent refresh "
                            "but declares no unique_index")
        for tag in view.tags:
            if tag not in tags:
                problems.append(f"materialized view {view.name!r} invalidates tag {tag!r}, "
                                "which no key schema of this plugin carries (it would "
                                "invalidate nothing)")
    under("invalidation rule", [r.name for r in plugin.rules])
    for rule in plugin.rules:
        for target in rule.targets:
            if target.schema is not None:
                own(f"invalidation rule {rule.name!r}", [target.schema])
            if target.tag is not None and target.tag not in tags:
                problems.append(f"invalidation rule {rule.name!r} targets tag {target.tag!r}, "
                                f"which no key schema of this plugin carries "
                                f"(tags: {', '.join(sorted(tags)) or 'none'})")
    under("warmer", [w.name for w in plugin.warmers])
    for warmer in plugin.warmers:
        own(f"warmer {warmer.name!r}", warmer.schemas)
    report(plugin.name, "declarations", problems)


def check_permissions(plugin: LoadedPlugin) -> None:
    """Permission names are unique, and each is ``<namespace>.<part>[.<part>...]`` of
    lower-case identifier parts.

    :raises AssertionError: naming each duplicate and each misnamed permission.
    """
    __tracebackhide__ = True
    ns = plugin.info.namespace
    pattern = re.compile(rf"{re.escape(ns)}(\.[a-z][a-z0-9_]*)+")
    problems: list[str] = []
    counts: dict[str, int] = {}
    for permission in plugin.permissions:
        name = permission.name
        if not isinstance(name, str) or not pattern.fullmatch(name):
            problems.append(f"permission {name!r} is not '{ns}.<name>' of lower-case parts "
                            "([a-z][a-z0-9_]*, dot-separated)")
        counts[name] = counts.get(name, 0) + 1
    problems += [f"permission {name!r} is declared {n} times" for name, n in counts.items()
                 if n > 1]
    report(plugin.name, "permissions", problems)


# --------------------------------------------------------------------------- values


def check_codec_round_trip(
    schema: KeySchema[Any], *, keyring: KeyRing | None = None, max_examples: int = 50
) -> None:
    """Any value of the schema's type, written for any tenant and parameters, decodes
    back equal through both decoders (msgspec fast path and cattrs reference); hash
    fields round-trip one by one. Members of sorted sets and geo indexes round-trip
    through their member encoding.

    :raises AssertionError: with hypothesis's falsifying example.
    """
    __tracebackhide__ = True
    if schema.kind in (SchemaKind.ZSET, SchemaKind.GEO):
        member = schema.member_param

        @settings(max_examples=max_examples, deadline=None,
                  suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
        @given(param_value(member))
        def members(value: Any) -> None:
            back = member.decode(member.encode(schema.name, value))
            message = f"key schema {schema.name!r}: member {value!r} came back as {back!r}"
            assert back == value, message
            assert type(back) is type(value), message

        members()
        return
    codec: SchemaCodec[Any] = SchemaCodec(
        schema, make_converter(), keyring or KeyRing.generate(), CodecSettings()
    )
    fields = (attrs.fields(attrs.resolve_types(schema.value_type))
              if schema.kind is SchemaKind.HASH else ())

    @settings(max_examples=max_examples, deadline=None,
              suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
    @given(values_of(schema), tenant_ids(), params_for(schema))
    def round_trip(value: Any, tenant: str, params: dict[str, Any]) -> None:
        key = schema.key(tenant, **params)
        rk = key.redis_key(PREFIX).encode()
        data = codec.encode(value, rk, tenant)
        fast = codec.decode_value(data, rk, tenant)
        assert fast == value, f"key schema {schema.name!r}: wrote {value!r}, read {fast!r}"
        body, _, _ = codec.open_body(data, rk, tenant)
        reference = codec.from_body_reference(body)
        assert reference == value, (
            f"key schema {schema.name!r}: wrote {value!r}, cattrs read {reference!r}"
        )
        for field in fields:
            item = getattr(value, field.name)
            back = codec.converter_unpack(codec.converter_pack(item, field.type), field.type)
            assert back == item, (
                f"key schema {schema.name!r}, hash field {field.name!r}: wrote {item!r}, "
                f"read {back!r}"
            )

    try:
        round_trip()
    except ResolutionFailed as exc:
        raise AssertionError(
            f"key schema {schema.name!r}: hypothesis cannot build values of "
            f"{schema.value_type!r} ({exc}); register a strategy with "
            "hypothesis.strategies.register_type_strategy in your conftest"
        ) from exc


def check_relations_namespaced(plugins: Sequence[LoadedPlugin]) -> None:
    """Every PostgreSQL relation a plugin owns or captures changes of (its materialized
    views, its rules' tables) is in the schema of its own namespace, so plugins loaded
    together own disjoint schemas (a view may still *read* another schema's table).

    :raises AssertionError: listing each relation outside its plugin's schema.
    """
    __tracebackhide__ = True
    problems = []
    offenders = set()
    for plugin in plugins:
        own = plugin.info.namespace
        names = [(f"materialized view {v.name!r}", v.name) for v in plugin.views]
        names += [(f"rule {r.name!r} table {r.table!r}", r.table) for r in plugin.rules]
        for what, relation in names:
            if relation.split(".", 1)[0] != own:
                problems.append(f"plugin {plugin.name!r}: {what} is outside its schema {own!r}")
                offenders.add(plugin.name)
    if problems:  # named: the plugins at fault, not every one loaded with them
        report(", ".join(sorted(offenders)), "relations", problems)


def check_key_isolation(
    schemas: Sequence[KeySchema[Any]], *, prefix: str = PREFIX, max_examples: int = 100
) -> None:
    """For any two tenants and any parameters of any two schemas: each key hashes to the
    slot of ``{tenant}``, parses back to the same schema, tenant and parameters, two
    different tenants' keys never share a tenant prefix, and different keys differ.

    :raises AssertionError: with hypothesis's falsifying example.
    """
    __tracebackhide__ = True
    registry = SchemaRegistry()
    for schema in schemas:
        registry.register(schema, owner="contract")
    pick = st.sampled_from(list(schemas))

    def verify(tenant: str, schema: KeySchema[Any], params: dict[str, Any]) -> str:
        rk = schema.key(tenant, **params).redis_key(prefix)
        slot, want = key_slot(rk.encode()), key_slot(f"{{{tenant}}}".encode())
        assert slot == want, (
            f"key {rk!r} of schema {schema.name!r} hashes to slot {slot}, not to tenant "
            f"{tenant!r}'s slot {want}"
        )
        try:
            parsed = registry.parse(prefix, rk)
        except InvalidKeyError as exc:
            raise AssertionError(f"key of schema {schema.name!r} does not parse: {exc}") from None
        assert (parsed.schema.name, parsed.tenant, parsed.params) == (
            schema.name, tenant, params
        ), f"key {rk!r} parses as {parsed.schema.name!r}, {parsed.tenant!r}, {parsed.params!r}"
        return rk

    @settings(max_examples=max_examples, deadline=None,
              suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
    @given(st.data(), tenant_ids(), tenant_ids())
    def isolated(data: st.DataObject, a: str, b: str) -> None:
        s1 = data.draw(pick, label="schema of tenant A")
        p1 = data.draw(params_for(s1), label="parameters of tenant A")
        s2 = data.draw(pick, label="schema of tenant B")
        p2 = data.draw(params_for(s2), label="parameters of tenant B")
        k1, k2 = verify(a, s1, p1), verify(b, s2, p2)
        if a != b:
            for key, other in ((k1, b), (k2, a)):
                assert not key.startswith(f"{prefix}:{{{other}}}:"), (
                    f"key {key!r} starts with tenant {other!r}'s prefix"
                )
        if (a, s1.name, p1) != (b, s2.name, p2):
            assert k1 != k2, f"two different keys are both written {k1!r}"

    isolated()


@attrs.frozen
class Sample:
    """One value of one schema to write for a tenant (for sorted sets, member->score;
    for geo indexes, member->(longitude, latitude))."""

    schema: KeySchema[Any]
    tenant: str
    params: dict[str, Any]
    value: Any

    def describe(self) -> str:
        """The schema, tenant and key (not the value)."""
        key = self.schema.key(self.tenant, **self.params)
        return f"key schema {self.schema.name!r}, tenant {self.tenant!r}, key {key.body!r}"


def samples(schema: KeySchema[Any]) -> st.SearchStrategy[Sample]:
    """Samples of ``schema`` for :func:`check_cache_round_trip`."""
    value: st.SearchStrategy[Any]
    if schema.kind is SchemaKind.ZSET:
        score = st.floats(allow_nan=False, allow_infinity=False)
        value = st.dictionaries(param_value(schema.member_param), score, min_size=1, max_size=8)
    elif schema.kind is SchemaKind.GEO:
        point = st.tuples(st.floats(-180, 180), st.floats(-_MAX_LAT, _MAX_LAT))
        value = st.dictionaries(param_value(schema.member_param), point, min_size=1, max_size=8)
    else:
        value = values_of(schema)
    return st.builds(Sample, st.just(schema), tenant_ids(), params_for(schema), value)


async def check_cache_round_trip(cache: Cache, batch: Iterable[Sample]) -> None:
    """Write each sample through ``cache`` and read it back: a value with set/get and
    get_many, a hash with replace/get, a sorted set with add/range, a geo index with
    add/position.

    :raises AssertionError: listing each sample that did not come back.
    """
    __tracebackhide__ = True
    problems: list[str] = []
    owner = "?"
    for sample in batch:
        owner = sample.schema.namespace
        key: CacheKey[Any] = sample.schema.key(sample.tenant, **sample.params)
        kind, value = sample.schema.kind, sample.value
        if kind is SchemaKind.VALUE:
            await cache.set(key, value)
            got: Any = await cache.get(key)
            many = await cache.get_many([key])
            if got != value or many != [value]:
                problems.append(f"{sample.describe()}: wrote {_short(value)}, get read "
                                f"{_short(got)}, get_many read {_short(many)}")
        elif kind is SchemaKind.HASH:
            entity = cache.hash(key)
            await entity.replace(value)
            got = await entity.get()
            if got != value:
                problems.append(f"{sample.describe()}: replaced with {_short(value)}, "
                                f"read {_short(got)}")
        elif kind is SchemaKind.ZSET:
            zset = cache.zset(key)
            await zset.add(value, replace=True)
            got = dict(await zset.range_by_score())
            if got != value:
                problems.append(f"{sample.describe()}: added {_short(value)}, "
                                f"read {_short(got)}")
        else:
            geo = cache.geo(key)
            await geo.add(value, replace=True)
            for member, (lon, lat) in value.items():
                pos = await geo.position(member)
                if pos is None or not (
                    math.isclose(pos[0], lon, abs_tol=GEO_TOLERANCE_DEGREES)
                    and math.isclose(pos[1], lat, abs_tol=GEO_TOLERANCE_DEGREES)
                ):
                    problems.append(f"{sample.describe()}: member {member!r} placed at "
                                    f"{(lon, lat)}, read {pos}")
    report(owner, "cache round trip", problems)


# --------------------------------------------------------------------------- warmers


async def check_warmers(
    conn: Any, cache: Cache, plugin: LoadedPlugin, tenants: Sequence[str]
) -> None:
    """Run every warmer for every tenant, with a :class:`WarmContext` whose ``fetch``
    runs SQL on ``conn``; each must finish and yield only
    :class:`~thorbis_cache.warming.WarmBatch` es whose keys are of a schema of this
    plugin (and of the warmer's declared schemas), for the tenant being warmed. Each
    batch is then run by :func:`~thorbis_cache.warming.warm` against ``cache``: its
    loader must return entries of the schema's type for the keys it is given only.

    :raises AssertionError: naming the warmer, the tenant and each offending key.
    """
    __tracebackhide__ = True
    lock = asyncio.Lock()  # one asyncpg connection serves one query at a time

    async def fetch(query: str, *args: object) -> list[Mapping[str, Any]]:
        async with lock:
            return [dict(row) for row in await conn.fetch(query, *args)]

    problems: list[str] = []
    for warmer in plugin.warmers:
        for tenant in tenants:
            where = f"warmer {warmer.name!r} for tenant {tenant!r}"
            context = WarmContext(cache=cache, tenant=tenant, fetch=fetch)
            try:
                produced: Any = warmer.produce(context)
                if not hasattr(produced, "__aiter__"):
                    if inspect.iscoroutine(produced):
                        produced.close()  # never awaited: close it without a warning
                    problems.append(f"{where}: produce() returned {_short(produced, 80)}, "
                                    "not an async iterator (write it as `async def` with "
                                    "`yield`)")
                    continue
                count = 0
                async for item in produced:
                    count += 1
                    if count > MAX_WARM_ITEMS:
                        problems.append(f"{where}: more than {MAX_WARM_ITEMS} batches")
                        break
                    found = _warm_batch_problems(plugin, warmer, tenant, item)
                    problems += [f"{where}, batch {count}: {p}" for p in found]
                    if not found:
                        try:
                            await warm(cache, _checking_members(
                                item, f"{where}, batch {count}", problems))
                        except (ThorbisCacheError, TypeError, ValueError) as exc:
                            problems.append(f"{where}, batch {count} "
                                            f"({item.description or 'no description'}): "
                                            f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                problems.append(f"{where} raised {type(exc).__name__}: {exc}")
    report(plugin.name, "warmers", problems[:40])


#: The latitudes Redis accepts in a geo index.
_MAX_LATITUDE = 85.05112878


def member_entry_problem(schema: KeySchema[Any], entry: object) -> str | None:
    """Why ``entry`` is not a whole sorted set (``member -> finite score``) or geo index
    (``member -> (longitude, latitude)`` on the map Redis accepts) of ``schema``'s member
    type; None when it is one, or when the schema holds values or hashes."""
    if schema.kind not in (SchemaKind.ZSET, SchemaKind.GEO):
        return None
    member_type = schema.member_param.type
    shape = ("member -> score" if schema.kind is SchemaKind.ZSET
             else "member -> (longitude, latitude)")
    if not isinstance(entry, Mapping):
        return f"a {schema.kind.value} entry is a mapping {shape}, got {_short(entry)}"
    for member, item in entry.items():
        wrong = check_value(member, member_type)
        if wrong:
            return f"member {_short(member)}: {wrong} (the schema's member type)"
        if schema.kind is SchemaKind.ZSET:
            if not (isinstance(item, int | float) and not isinstance(item, bool)
                    and math.isfinite(item)):
                return f"member {_short(member)}: score {_short(item)} is not a finite number"
            continue
        if not (isinstance(item, tuple | list) and len(item) == 2
                and all(isinstance(c, int | float) and not isinstance(c, bool) for c in item)):
            return f"member {_short(member)}: {_short(item)} is not (longitude, latitude)"
        lon, lat = item
        if not (-180 <= lon <= 180 and -_MAX_LATITUDE <= lat <= _MAX_LATITUDE):
            return (f"member {_short(member)}: ({lon}, {lat}) is off the map (longitude "
                    f"-180..180, latitude -{_MAX_LATITUDE}..{_MAX_LATITUDE})")
    return None


def _checking_members(batch: WarmBatch, where: str, problems: list[str]) -> WarmBatch:
    """``batch`` whose loader's sorted-set and geo entries are checked (a mapping of
    members of the schema's member type to finite scores, or to positions on the map);
    a bad entry is reported and not written."""
    async def load(keys: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        entries = dict(await batch.load(keys))
        for key, entry in list(entries.items()):
            problem = (member_entry_problem(key.schema, entry)
                       if isinstance(key, CacheKey) else None)
            if problem is not None:
                problems.append(f"{where} ({batch.description or 'no description'}): key "
                                f"{key.body!r}: {problem}")
                del entries[key]
        return entries

    return attrs.evolve(batch, load=load)


def _warm_batch_problems(
    plugin: LoadedPlugin, warmer: Warmer, tenant: str, item: object
) -> list[str]:
    if not isinstance(item, WarmBatch):
        return [f"expected a WarmBatch (keys and a loader of their entries), got "
                f"{_short(item, 80)}"]
    load: object = item.load
    if not callable(load):
        return [f"WarmBatch.load must be callable, got {_short(load, 80)}"]
    out = []
    for entry in item.keys:
        key: object = entry
        if not isinstance(key, CacheKey):
            out.append(f"expected a CacheKey built by a key schema, got {_short(key, 80)}")
            continue
        ns, name = plugin.info.namespace, key.schema.name
        if key.schema.namespace != ns:
            out.append(f"key {key.body!r} is of schema {name!r}, outside the plugin's "
                       f"namespace {ns!r}")
        elif all(s is not key.schema for s in plugin.schemas):
            out.append(f"key {key.body!r} is of schema {name!r}, which this plugin does "
                       "not declare")
        elif warmer.schemas and name not in warmer.schemas:
            out.append(f"key {key.body!r} is of schema {name!r}, not one the warmer "
                       f"declares ({', '.join(warmer.schemas)})")
        elif key.tenant != tenant:
            out.append(f"key {key.body!r} belongs to tenant {key.tenant!r}, not to {tenant!r}")
    return out


def _type_name(schema: KeySchema[Any]) -> str:
    tp = schema.value_type
    return tp.__name__ if isinstance(tp, type) else str(tp)
