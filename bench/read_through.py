"""Read-through of structures: what the fill lease costs on a hit and on a miss.

Run ``.venv/bin/python bench/read_through.py`` (``--quick`` for a smoke run). It starts
its own ephemeral redis-server and measures, in the same process and the same run, each
pair interleaved op by op (order alternated per round, ABBA), medians across rounds:

* hits, against a raw ``redis.asyncio`` command of the same reply: an entity hash
  (8 fields, encrypted) ``HGETALL`` vs ``hash.get()`` vs ``hash.get_or_load(loader)``; a
  sorted set of 200 members, top 10 ``ZRANGE`` vs ``zset.top(10)`` vs
  ``zset.top(10, loader=)``; a geo index of 200 members ``GEOSEARCH`` 2 km vs
  ``geo.within`` vs ``geo.within(loader=)``;
* misses, with an instant loader: the naive fill it replaces (read, load, ``replace`` /
  ``add(replace=True)``: stale-prone) vs the lease-protected read-through (``struct_read``
  + ``struct_fill``), each starting from a deleted key;
* tagged writes: ``cache.set`` of a value under two tags (each write records the key and
  prunes up to 3 sampled dead members per tag) vs the same value under no tag, and a raw
  SET of the same bytes.

Figures are reported, never asserted: the script exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from thorbis_cache import Cache, KeyRing, KeySchema, SchemaKind, SchemaRegistry
from thorbis_cache.testing.servers import RedisServer

Op = Callable[[], Awaitable[Any]]


@attrs.frozen
class Customer:
    id: int
    first_name: str
    last_name: str
    email: str
    phone: str
    city: str
    status: str
    lifetime_value: float


CUSTOMER = KeySchema("bench.customer", Customer, params={"id": int}, kind=SchemaKind.HASH,
                     sensitive=True, ttl=3600)
HISTORY = KeySchema("bench.history", int, params={"id": int}, kind=SchemaKind.ZSET, ttl=3600)
SITES = KeySchema("bench.sites", int, params={"day": int}, kind=SchemaKind.GEO, ttl=3600)
LABEL = KeySchema("bench.label", str, params={"id": int}, ttl=3600)
TAGGED = KeySchema("bench.tagged", str, params={"id": int}, ttl=3600,
                   tags=("bench.lists", "bench.reports"))

ROW = Customer(42, "Ada", "Lovelace", "ada@example.com", "555-0100", "London", "vip", 1234.5)
MEMBERS = {i: float(1_700_000_000 + i * 3600) for i in range(200)}
POINTS = {i: (-97.74 + (i % 20) * 0.002, 30.26 + (i // 20) * 0.002) for i in range(200)}


async def _row() -> Customer:
    return ROW


async def _members() -> dict[int, float]:
    return MEMBERS


async def _points() -> dict[int, tuple[float, float]]:
    return POINTS


async def paired(ops: dict[str, Op], rounds: int, per_round: int) -> dict[str, float]:
    """Median latency (µs) of each op, interleaved op by op, order alternated per round."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        timings: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(per_round):
            for name in order:
                t0 = time.perf_counter_ns()
                await ops[name]()
                timings[name].append((time.perf_counter_ns() - t0) / 1000)
        for name in ops:
            samples[name].append(statistics.median(timings[name]))
    return {name: statistics.median(values) for name, values in samples.items()}


async def main(quick: bool) -> None:
    rounds, per_round = (3, 200) if quick else (9, 2000)
    server = RedisServer().start()
    try:
        registry = SchemaRegistry()
        for schema in (CUSTOMER, HISTORY, SITES, LABEL, TAGGED):
            registry.register(schema, owner="bench")
        raw = aioredis.Redis.from_url(server.url)
        async with Cache.from_url(server.url, registry, keyring=KeyRing.generate()) as cache:
            results = await _run(cache, raw, rounds, per_round)
        await raw.aclose()
    finally:
        server.stop()
    table = Table(title=f"read-through, {rounds} rounds x {per_round} ops, median µs")
    for column in ("structure", "anchor", "µs", "subject", "µs", "ratio"):
        table.add_column(column, justify="right" if column in ("µs", "ratio") else "left")
    for structure, anchor, subject, figures in results:
        table.add_row(structure, anchor, f"{figures[anchor]:.1f}", subject,
                      f"{figures[subject]:.1f}", f"{figures[subject] / figures[anchor]:.2f}")
    Console().print(table)


async def _run(cache: Cache, raw: aioredis.Redis, rounds: int, per_round: int
               ) -> list[tuple[str, str, str, dict[str, float]]]:
    entity = cache.hash(CUSTOMER.key("acme", id=42))
    zset = cache.zset(HISTORY.key("acme", id=42))
    geo = cache.geo(SITES.key("acme", day=1))
    await entity.get_or_load(_row)
    await zset.get_or_load(_members)
    await geo.get_or_load(_points)
    hk, zk, gk = (cache.redis_key(h._key) for h in (entity, zset, geo))
    out = []
    hits = await paired({
        "HGETALL": lambda: raw.hgetall(hk),
        "hash.get": entity.get,
        "hash.get_or_load": lambda: entity.get_or_load(_row),
    }, rounds, per_round)
    out += [("hash", "HGETALL", "hash.get", hits),
            ("hash", "HGETALL", "hash.get_or_load", hits)]
    tops = await paired({
        "ZRANGE": lambda: raw.execute_command("ZRANGE", zk, "+inf", "-inf", "BYSCORE", "REV",
                                              "LIMIT", 0, 10, "WITHSCORES"),
        "zset.top": lambda: zset.top(10),
        "zset.top(loader=)": lambda: zset.top(10, loader=_members),
    }, rounds, per_round)
    out += [("zset", "ZRANGE", "zset.top", tops), ("zset", "ZRANGE", "zset.top(loader=)", tops)]
    near = await paired({
        "GEOSEARCH": lambda: raw.execute_command("GEOSEARCH", gk, "FROMLONLAT", -97.74, 30.26,
                                                 "BYRADIUS", 2000, "m", "ASC", "WITHDIST"),
        "geo.within": lambda: geo.within(-97.74, 30.26, 2000),
        "geo.within(loader=)": lambda: geo.within(-97.74, 30.26, 2000, loader=_points),
    }, rounds, per_round)
    out += [("geo", "GEOSEARCH", "geo.within", near),
            ("geo", "GEOSEARCH", "geo.within(loader=)", near)]

    async def naive_hash() -> None:
        await cache.delete(entity._key)
        if await entity.get() is None:
            await entity.replace(await _row())

    async def through_hash() -> None:
        await cache.delete(entity._key)
        await entity.get_or_load(_row)

    async def naive_zset() -> None:
        await cache.delete(zset._key)
        if not await zset.top(10):
            await zset.add(await _members(), replace=True)

    async def through_zset() -> None:
        await cache.delete(zset._key)
        await zset.top(10, loader=_members)

    fills = await paired({"naive hash fill": naive_hash, "read-through hash fill": through_hash,
                          "naive zset fill": naive_zset, "read-through zset fill": through_zset},
                         rounds, per_round // 4)
    out += [("hash miss", "naive hash fill", "read-through hash fill", fills),
            ("zset miss", "naive zset fill", "read-through zset fill", fills)]

    # A tag set of 1,000 live members, as a busy tag holds: the writes sample it.
    for i in range(1000):
        await cache.set(TAGGED.key("acme", id=10_000 + i), "x")
    counter = iter(range(10**9))

    async def tagged() -> None:
        await cache.set(TAGGED.key("acme", id=next(counter) % 1000), "label value")

    async def untagged() -> None:
        await cache.set(LABEL.key("acme", id=next(counter) % 1000), "label value")

    raw_key = cache.redis_key(LABEL.key("acme", id=0))
    writes = await paired({
        "raw SET": lambda: raw.set(raw_key, b"label value bytes", px=3_600_000),
        "set, no tag": untagged,
        "set, 2 tags": tagged,
    }, rounds, per_round)
    out += [("write", "raw SET", "set, no tag", writes),
            ("write", "raw SET", "set, 2 tags", writes)]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    asyncio.run(main(parser.parse_args().quick))
