"""Contract checks of read-through fills and of what invalidates view mirrors.

* :func:`check_stale_fill` -- for any schema kind: a read-through whose loader read a
  row before an invalidation of the key (or of its tags) does not write it after; the
  next read loads the new row. With ``negative_ttl``, an absent row is cached and the
  same invalidation drops the absence.
* :func:`check_mirror_rules` -- no invalidation rule targets a schema that mirrors a
  materialized view (by schema or through one of its tags): such entries are made
  stale by the view's refresh, and a base-table rule only makes readers reload the
  unrefreshed view.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import strategies as st

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.keys import CacheKey, KeySchema, SchemaKind
from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.testing.contract_checks import (
    GEO_TOLERANCE_DEGREES,
    Sample,
    _short,
    report,
    samples,
)

__all__ = ["check_mirror_rules", "check_stale_fill", "read_through", "stale_fill_cases"]


def stale_fill_cases(schema: KeySchema[Any]) -> st.SearchStrategy[tuple[Sample, Any]]:
    """A sample of ``schema`` (the old row) and another value for the same key (the
    row after the change)."""
    def other(sample: Sample) -> st.SearchStrategy[tuple[Sample, Any]]:
        values = samples(schema).map(lambda s: s.value)
        return st.tuples(st.just(sample), values.filter(
            lambda v: not same_content(schema, v, sample.value)))

    return samples(schema).flatmap(other)


def read_through(
    cache: Cache, key: CacheKey[Any], loader: Callable[[], Awaitable[Any]]
) -> Awaitable[Any]:
    """The read-through of ``key``'s kind: the value, the entity, the member set as a
    dict, or the geo index as a dict of positions."""
    kind = key.schema.kind
    if kind is SchemaKind.VALUE:
        return cache.get_or_load(key, loader)
    if kind is SchemaKind.HASH:
        return cache.hash(key).get_or_load(loader)
    if kind is SchemaKind.ZSET:
        async def zset() -> dict[Any, float]:
            return dict(await cache.zset(key).get_or_load(loader))
        return zset()
    return cache.geo(key).get_or_load(loader)


def same_content(schema: KeySchema[Any], a: Any, b: Any) -> bool:
    """Whether two entries of ``schema`` hold the same content (geo positions compared
    at Redis's geohash precision)."""
    if schema.kind is not SchemaKind.GEO:
        return bool(a == b)
    if set(a) != set(b):
        return False
    return all(
        math.isclose(a[m][0], b[m][0], abs_tol=GEO_TOLERANCE_DEGREES)
        and math.isclose(a[m][1], b[m][1], abs_tol=GEO_TOLERANCE_DEGREES)
        for m in a
    )


async def check_stale_fill(cache: Cache, old: Sample, new_value: Any, *, by_tag: bool) -> None:
    """Race one read-through of ``old``'s key against an invalidation: the loader reads
    the old row, the row changes and the key (``by_tag``: its first tag) is invalidated,
    then the loader returns. The old row must not be cached: the next read-through
    loads ``new_value``. Then, with ``negative_ttl``, a missing row is cached as absent
    until the same invalidation.

    :raises AssertionError: naming the schema, tenant and key.
    """
    __tracebackhide__ = True
    schema = old.schema
    key: CacheKey[Any] = schema.key(old.tenant, **old.params)
    problems: list[str] = []
    tags = list(schema.tags)

    async def invalidate() -> None:
        if by_tag and tags:
            await cache.invalidate_tags(key.tenant, tags[:1])
        else:
            await cache.delete(key)

    await cache.delete(key)
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_old() -> Any:
        value = old.value  # read before the change...
        loaded.set()
        await release.wait()  # ...returned after its invalidation
        return value

    reader = asyncio.ensure_future(read_through(cache, key, slow_old))
    try:
        called = asyncio.ensure_future(loaded.wait())
        done, _ = await asyncio.wait([reader, called], timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        called.cancel()
        if not loaded.is_set():
            report(schema.namespace, "read-through fills", [
                f"{old.describe()}: the read-through of a deleted key never called its loader "
                f"(it returned {_short(reader.result()) if reader in done else 'nothing'})"])
        await invalidate()
    finally:
        release.set()
    first = await reader
    if not same_content(schema, first, old.value):
        problems.append(f"{old.describe()}: the racing reader got {_short(first)}, not "
                        "what its own loader read")
    calls = 0

    async def load_new() -> Any:
        nonlocal calls
        calls += 1
        return new_value

    after = await read_through(cache, key, load_new)
    if not same_content(schema, after, new_value) or calls != 1:
        how = f"tag {tags[0]!r}" if by_tag and tags else "delete"
        problems.append(f"{old.describe()}: after an invalidation ({how}) during a fill, the "
                        f"next read returned {_short(after)} with {calls} load(s): the stale "
                        "fill was written")
    if schema.negative_ttl is not None:
        problems += await _check_absence(cache, old, key, invalidate)
    report(schema.namespace, "read-through fills", problems)


async def _check_absence(
    cache: Cache, sample: Sample, key: CacheKey[Any], invalidate: Callable[[], Awaitable[None]]
) -> list[str]:
    await cache.delete(key)
    calls = 0

    async def missing() -> Any:
        nonlocal calls
        calls += 1
        raise MissingRow(key.schema.name, key.tenant, key.body)

    for _ in range(2):
        try:
            await read_through(cache, key, missing)
        except MissingRow:
            pass
        else:
            return [f"{sample.describe()}: a read-through whose loader raised MissingRow "
                    "did not raise it"]
    problems = []
    if calls != 1:
        problems.append(f"{sample.describe()}: negative_ttl is set but an absent row was "
                        f"loaded {calls} times in two reads")
    await invalidate()

    async def present() -> Any:
        return sample.value

    got = await read_through(cache, key, present)
    if not same_content(key.schema, got, sample.value):
        problems.append(f"{sample.describe()}: the cached absence survived an invalidation "
                        f"(read {_short(got)})")
    return problems


def check_mirror_rules(plugin: LoadedPlugin) -> None:
    """No rule of ``plugin`` targets a schema that mirrors a materialized view, by name
    or through a tag the schema carries.

    :raises AssertionError: naming each rule, its table, the target and the view.
    """
    __tracebackhide__ = True
    mirrors = [s for s in plugin.schemas if s.mirrors is not None]
    problems = []
    for rule in plugin.rules:
        for target in rule.targets:
            for schema in mirrors:
                if target.schema == schema.name:
                    via = f"targets key schema {schema.name!r}"
                elif target.tag is not None and target.tag in schema.tags:
                    via = f"targets tag {target.tag!r}, carried by key schema {schema.name!r}"
                else:
                    continue
                problems.append(
                    f"rule {rule.name!r} (table {rule.table}) {via}, which mirrors the view "
                    f"{schema.mirrors!r}: a change of {rule.table} does not change the view "
                    "until it is refreshed, so its entries would only reload the same rows; "
                    "the view's refresh tags invalidate them"
                )
    report(plugin.name, "rules targeting view mirrors", problems)
