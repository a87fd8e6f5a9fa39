"""The stale-fill race of every schema kind, end to end, with real servers and the worker.

The race the soak found: a reader loads a row, an UPDATE commits, the outbox worker's
invalidation finds no key to delete, and the reader then writes the old row -- stale for
a whole TTL. Each test here runs it deterministically, 500 rounds per schema kind (value,
hash, sorted set, geo index) on a single Redis and on a Cluster:

1. one reader per key starts a read-through whose loader reads the rows from PostgreSQL
   and then holds them (a slow loader);
2. an UPDATE of those rows commits; the capture trigger writes the outbox;
3. the real :class:`~thorbis_cache.invalidation.worker.OutboxWorker` applies the plugin's rule (it
   deletes each key and its fill lease) -- the test waits until the outbox is empty;
4. the loaders return the rows they read before the commit: the late write.

Then every key must be absent or equal to PostgreSQL. A control arm runs the same
schedule with the naive pattern (read, then ``set``/``replace``/``add``), which is how
hosts filled structures before: it must leave stale entries, which shows the check can
fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import attrs
import pytest

from thorbis_cache import (
    CacheApp,
    InvalidationRule,
    KeyRing,
    KeySchema,
    PluginInfo,
    RuleTarget,
    SqlScript,
    hookimpl,
)
from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres import apply_and_check
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers

ROUNDS = 500
#: Rounds run together, each on its own key: one UPDATE and one worker pass per wave.
WAVE = 50
TENANT = "acme"


@attrs.frozen
class Item:
    id: int
    grp: int
    name: str


ITEM = KeySchema("race.item", Item, params={"item_id": int}, ttl=3600, sensitive=True)
ITEM_HASH = KeySchema("race.item_hash", Item, params={"item_id": int}, ttl=3600,
                      kind=SchemaKind.HASH, sensitive=True)
SCORES = KeySchema("race.scores", int, params={"grp": int}, ttl=3600, kind=SchemaKind.ZSET)
SITES = KeySchema("race.sites", int, params={"grp": int}, ttl=3600, kind=SchemaKind.GEO)

SQL = """
CREATE SCHEMA IF NOT EXISTS race;
CREATE TABLE IF NOT EXISTS race.items (
    tenant_id text NOT NULL, id bigint NOT NULL, grp integer NOT NULL, name text NOT NULL,
    score double precision NOT NULL, lon double precision NOT NULL,
    lat double precision NOT NULL, PRIMARY KEY (tenant_id, id)
);
"""


class RacePlugin:
    """Four schemas of every kind over one table, each dropped by one rule."""

    @hookimpl
    def register_plugin_info(self) -> PluginInfo:
        return PluginInfo(namespace="race", hook_api_version=1)

    @hookimpl
    def register_key_schemas(self) -> Sequence[KeySchema[Any]]:
        return [ITEM, ITEM_HASH, SCORES, SITES]

    @hookimpl
    def register_sql(self) -> Sequence[SqlScript]:
        return [SqlScript("race.tables", SQL)]

    @hookimpl
    def register_invalidation_rules(self) -> Sequence[InvalidationRule]:
        return [InvalidationRule(
            "race.items", table="race.items", operations=["INSERT", "UPDATE", "DELETE"],
            targets=[RuleTarget(schema=ITEM.name, params={"item_id": "id"}),
                     RuleTarget(schema=ITEM_HASH.name, params={"item_id": "id"}),
                     RuleTarget(schema=SCORES.name, params={"grp": "grp"}),
                     RuleTarget(schema=SITES.name, params={"grp": "grp"})],
        )]


@attrs.frozen
class Env:
    app: CacheApp
    conn: asyncpg.Connection
    pool: asyncpg.Pool
    worker: OutboxWorker

    @property
    def cache(self) -> Cache:
        return self.app.cache

    async def drained(self) -> None:
        deadline = time.monotonic() + 20
        while await self.conn.fetchval("SELECT count(*) FROM thorbis.outbox"):
            if time.monotonic() > deadline:
                pytest.fail("timed out after 20 s waiting for the worker to drain the outbox")
            await asyncio.sleep(0.005)


@pytest.fixture
async def env(thorbis_pg_dsn: str, thorbis_redis_url: str) -> AsyncIterator[Env]:
    app = CacheApp(thorbis_redis_url, keyring=KeyRing.generate())
    app.plugins.add(RacePlugin(), "race")
    await app.start(["race"])
    await migrate(thorbis_pg_dsn)
    await apply_and_check(thorbis_pg_dsn, list(app.plugins.plugins.values()))
    conn = await asyncpg.connect(thorbis_pg_dsn)
    await install_triggers(conn, app.plugins.all_rules())
    await conn.execute(
        "INSERT INTO race.items SELECT 'acme', i, (i - 1) / 3 + 1, 'v0', i, "
        "(i % 170) - 85 + 0.25, (i % 80) - 40 + 0.25 FROM generate_series(1, $1::int) i",
        3 * WAVE)
    await conn.execute("DELETE FROM thorbis.outbox")
    pool = await asyncpg.create_pool(thorbis_pg_dsn, min_size=4, max_size=WAVE + 2)
    worker = OutboxWorker.from_app(app, thorbis_pg_dsn, poll_interval=0.01, audit=False)
    task = asyncio.create_task(worker.run(), name="race-worker")
    try:
        yield Env(app, conn, pool, worker)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker.aclose()
        await pool.close()
        await conn.close()
        await app.aclose()


# --------------------------------------------------------------------------- per kind


@attrs.frozen
class Kind:
    """How to key, load, read through, write naively and read back one schema kind."""

    schema: KeySchema[Any]
    ids: range  # the key parameter of each of a wave's keys
    load: Callable[[asyncpg.Pool, int], Awaitable[Any]]
    through: Callable[[Cache, CacheKey[Any], Callable[[], Awaitable[Any]]], Awaitable[Any]]
    naive_write: Callable[[Cache, CacheKey[Any], Any], Awaitable[Any]]
    cached: Callable[[Cache, CacheKey[Any]], Awaitable[Any]]

    def key(self, ident: int) -> CacheKey[Any]:
        name = "item_id" if self.schema in (ITEM, ITEM_HASH) else "grp"
        return self.schema.key(TENANT, **{name: ident})


async def _item(pool: asyncpg.Pool, item_id: int) -> Item:
    row = await pool.fetchrow("SELECT id, grp, name FROM race.items WHERE tenant_id = $1 "
                              "AND id = $2", TENANT, item_id)
    return Item(**row)


async def _scores(pool: asyncpg.Pool, grp: int) -> dict[int, float]:
    rows = await pool.fetch("SELECT id, score FROM race.items WHERE tenant_id = $1 "
                            "AND grp = $2", TENANT, grp)
    return {r["id"]: r["score"] for r in rows}


async def _sites(pool: asyncpg.Pool, grp: int) -> dict[int, tuple[float, float]]:
    rows = await pool.fetch("SELECT id, lon, lat FROM race.items WHERE tenant_id = $1 "
                            "AND grp = $2", TENANT, grp)
    return {r["id"]: (round(r["lon"], 4), round(r["lat"], 4)) for r in rows}


async def _geo_cached(
    cache: Cache, key: CacheKey[Any]
) -> dict[int, tuple[float, float]] | None:
    geo = cache.geo(key)
    out = {}
    for member in range(1, 3 * WAVE + 1):
        pos = await geo.position(member)
        if pos is not None:
            out[member] = (round(pos[0], 4), round(pos[1], 4))
    return out or None


KINDS = {
    "value": Kind(
        ITEM, range(1, WAVE + 1), _item,
        lambda c, k, load: c.get_or_load(k, load),
        lambda c, k, v: c.set(k, v),
        lambda c, k: c.get(k)),
    "hash": Kind(
        ITEM_HASH, range(1, WAVE + 1), _item,
        lambda c, k, load: c.hash(k).get_or_load(load),
        lambda c, k, v: c.hash(k).replace(v),
        lambda c, k: c.hash(k).get()),
    "zset": Kind(
        SCORES, range(1, WAVE + 1), _scores,
        lambda c, k, load: c.zset(k).get_or_load(load),
        lambda c, k, v: c.zset(k).add(v, replace=True),
        lambda c, k: _none_if_empty(c.zset(k).range_by_score())),
    "geo": Kind(
        SITES, range(1, WAVE + 1), _sites,
        lambda c, k, load: c.geo(k).get_or_load(load),
        lambda c, k, v: c.geo(k).add(v, replace=True),
        _geo_cached),
}


async def _none_if_empty(found: Awaitable[list[tuple[int, float]]]) -> dict[int, float] | None:
    return dict(await found) or None


def _normal(value: Any) -> Any:
    if isinstance(value, list):
        return dict(value)
    if isinstance(value, dict) and value and isinstance(next(iter(value.values())), tuple):
        return {m: (round(p[0], 4), round(p[1], 4)) for m, p in value.items()}
    return value


async def _wave(env: Env, kind: Kind, number: int, *, naive: bool) -> int:
    """One wave of rounds, one per key; returns how many keys hold stale content."""
    cache = env.cache
    for ident in kind.ids:  # each round starts from nothing cached
        await cache.delete(kind.key(ident))
    read: list[asyncio.Event] = [asyncio.Event() for _ in kind.ids]
    release = asyncio.Event()

    async def slow_load(i: int, ident: int) -> Any:
        rows = await kind.load(env.pool, ident)  # the rows before the UPDATE...
        read[i].set()
        await release.wait()  # ...returned after the worker's invalidation
        return rows

    async def reader(i: int, ident: int) -> None:
        key = kind.key(ident)
        if naive:  # what hosts did: read the database, then write the structure
            await kind.naive_write(cache, key, await slow_load(i, ident))
        else:
            await kind.through(cache, key, lambda: slow_load(i, ident))

    readers = [asyncio.create_task(reader(i, ident)) for i, ident in enumerate(kind.ids)]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in read)), 20)
        await env.conn.execute(
            "UPDATE race.items SET name = $1, score = score + 1, lon = lon + 0.01 "
            "WHERE tenant_id = $2", f"v{number}", TENANT)
        await env.drained()
    finally:
        release.set()
    await asyncio.gather(*readers)
    stale = 0
    for ident in kind.ids:
        cached = _normal(await kind.cached(cache, kind.key(ident)))
        if cached is not None and cached != _normal(await kind.load(env.pool, ident)):
            stale += 1
    return stale


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_load_older_than_the_workers_invalidation_is_never_written(
    env: Env, kind: str
) -> None:
    spec = KINDS[kind]
    stale = 0
    for number in range(1, ROUNDS // WAVE + 1):
        stale += await _wave(env, spec, number, naive=False)
    rejected = env.cache.metrics.for_schema(spec.schema.name).fills_rejected
    control = await _wave(env, spec, ROUNDS // WAVE + 1, naive=True)
    print(f"\n{kind}: {stale}/{ROUNDS} stale with read-through ({rejected} fills "
          f"rejected); naive read-then-write: {control}/{WAVE} stale")
    assert stale == 0
    assert rejected == ROUNDS  # every round's late write was refused
    assert control == WAVE, "the naive pattern must be caught stale: the check can fail"
