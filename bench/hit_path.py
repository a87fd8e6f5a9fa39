"""Hit-path benchmark: thorbis_cache reads against a raw redis.asyncio GET, in one process.

Run ``.venv/bin/python bench/hit_path.py`` (``make bench``), or ``--quick`` for a smoke
run. It starts its own ephemeral redis-server with the project's test launcher, stores
realistic attrs records through every subject, and measures, in the same process and
the same run:

* each subject's ``get`` paired with a raw ``redis.asyncio`` GET (hiredis parser) of the
  very bytes that subject stored (its own key): sequential latency p50/p99, with the two
  calls interleaved op by op, and 64-way concurrent throughput in alternating blocks;
* ``Cache.get_many`` of 100 keys against a raw MGET of the same 100 keys (keys/s);
* a near-cache (L1) hit of a schema with ``near_ttl`` against a raw GET of its bytes;
* cashews and aiocache reading the same record from their own stored form.

Rounds alternate the order of each pair (ABBA) and every figure is the median across
rounds; ratios are medians of the per-round paired ratios. The numbers are a report,
never an assertion: the script exits 0 whatever they are (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgpack
import redis
import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE
from rich.console import Console
from rich.table import Table

from thorbis_cache import Cache, CacheSettings, Compression, KeyRing, KeySchema, SchemaRegistry
from thorbis_cache.codec import make_converter
from thorbis_cache.near import NearCache
from thorbis_cache.testing.servers import RedisServer

Op = Callable[[], Awaitable[Any]]

TENANT = "acme"
CONCURRENCY = 64
BATCH = 100


# --------------------------------------------------------------------------- workload


@attrs.frozen(slots=True)
class LineItem:
    sku: str
    description: str
    quantity: int
    unit_price: float


@attrs.frozen(slots=True)
class WorkOrder:
    """A field-service work order, about 1 KiB of msgpack."""

    order_id: int
    customer_id: int
    customer_name: str
    email: str
    phone: str
    address: str
    city: str
    postal_code: str
    status: str
    priority: int
    scheduled_on: dt.date
    technician: str
    estimate_hours: float
    total: float
    tax_rate: float
    tags: list[str]
    lines: list[LineItem]
    notes: str


@attrs.frozen(slots=True)
class CustomerHistory:
    """A customer's recent work orders: the ~16 KiB record."""

    customer_id: int
    name: str
    since: dt.date
    lifetime_value: float
    orders: list[WorkOrder]


_WORDS = (
    "replaced", "compressor", "unit", "checked", "refrigerant", "pressure", "customer",
    "reported", "noise", "from", "the", "outdoor", "condenser", "fan", "motor", "bearing", "worn",
    "scheduled", "follow", "up", "visit", "filter", "thermostat", "wiring", "ductwork",
    "inspection", "leak", "sealed", "warranty", "parts", "ordered", "approved", "estimate",
    "invoice", "sent", "access", "code", "gate", "side", "door", "dog", "friendly", "call",
    "before", "arrival",
)


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def _order(rng: random.Random, order_id: int, notes_len: int) -> WorkOrder:
    first = rng.choice(["Maria", "James", "Aiko", "Olu", "Priya", "Lars", "Chen", "Sofia"])
    last = rng.choice(["Garcia", "Smith", "Tanaka", "Adeyemi", "Patel", "Berg", "Wu", "Rossi"])
    lines = [
        LineItem(
            sku=f"SKU-{rng.randrange(10_000, 99_999)}",
            description=_text(rng, rng.randrange(18, 40)),
            quantity=rng.randrange(1, 6),
            unit_price=round(rng.uniform(4.0, 480.0), 2),
        )
        for _ in range(3)
    ]
    return WorkOrder(
        order_id=order_id,
        customer_id=rng.randrange(1, 10**7),
        customer_name=f"{first} {last}",
        email=f"{first.lower()}.{last.lower()}@example.com",
        phone=f"+1-555-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
        address=f"{rng.randrange(1, 9999)} {rng.choice(['Oak', 'Pine', 'Elm', 'Main'])} Street",
        city=rng.choice(["Springfield", "Riverside", "Fairview", "Madison"]),
        postal_code=f"{rng.randrange(10_000, 99_999)}",
        status=rng.choice(["scheduled", "dispatched", "in_progress", "completed"]),
        priority=rng.randrange(1, 5),
        scheduled_on=dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(365)),
        technician=rng.choice(["T. Nguyen", "R. Okafor", "D. Silva", "K. Novak"]),
        estimate_hours=round(rng.uniform(0.5, 8.0), 2),
        total=round(sum(li.quantity * li.unit_price for li in lines), 2),
        tax_rate=0.0825,
        tags=rng.sample(["hvac", "warranty", "repeat", "commercial", "urgent", "vip"], 3),
        lines=lines,
        notes=_text(rng, notes_len),
    )


def _packed_size(value: object) -> int:
    return len(msgpack.packb(make_converter().unstructure(value), use_bin_type=True))


def make_order(seed: int, size: int = 1024) -> WorkOrder:
    """A work order whose msgpack body is ``size`` bytes (the notes make up the rest)."""
    base = _packed_size(_order(random.Random(seed), seed, 0))
    # Fixed-width str headers: one byte up to 31 chars, two up to 255, three beyond.
    notes_len = size - base
    notes_len -= 2 if notes_len > 255 else 1 if notes_len > 31 else 0
    return _order(random.Random(seed), seed, max(0, notes_len))


def make_history(size: int = 16 * 1024) -> CustomerHistory:
    """A customer history of work orders, about ``size`` bytes of msgpack."""
    orders = [make_order(1000 + i, 1024) for i in range(max(1, size // 1024))]
    return CustomerHistory(7, "Fairview Dental Group", dt.date(2019, 4, 2), 48_210.5, orders)


# --------------------------------------------------------------------------- measurement


def percentile(samples: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (any order)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


async def paired_latency(
    raw: Op, subject: Op, ops: int, warmup: int, subject_first: bool
) -> tuple[list[int], list[int]]:
    """Sequential latencies (ns) of ``raw`` and ``subject``, interleaved op by op."""
    clock = time.perf_counter_ns
    for _ in range(warmup):
        await raw()
        await subject()
    raw_ns = [0] * ops
    subject_ns = [0] * ops
    gc.collect()
    for i in range(ops):
        if (i & 1) == subject_first:
            t0 = clock()
            await raw()
            t1 = clock()
            await subject()
            t2 = clock()
            raw_ns[i], subject_ns[i] = t1 - t0, t2 - t1
        else:
            t0 = clock()
            await subject()
            t1 = clock()
            await raw()
            t2 = clock()
            subject_ns[i], raw_ns[i] = t1 - t0, t2 - t1
    return raw_ns, subject_ns


async def hammer(op: Op, total: int, concurrency: int = CONCURRENCY) -> tuple[int, float]:
    """``concurrency`` tasks make about ``total`` calls of ``op``: (calls, seconds)."""
    per_task = max(1, total // concurrency)

    async def worker() -> None:
        for _ in range(per_task):
            await op()

    gc.collect()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_task * concurrency, time.perf_counter() - t0


async def paired_throughput(
    raw: Op, subject: Op, total: int, subject_first: bool, *, warm: bool, chunks: int = 4
) -> tuple[float, float]:
    """Calls per second of ``raw`` and ``subject`` at ``CONCURRENCY``-way, each making
    ``total`` calls in up to ``chunks`` blocks that alternate ABBA, so that drift hits
    both alike (fewer blocks when ``total`` is small: each task makes 2+ calls a block).

    :param warm: first make ``CONCURRENCY`` calls of each at once, so that the pools have
        opened their connections before the clock starts (needed once per client).
    """
    if warm:
        for op in (raw, subject):
            await asyncio.gather(*(op() for _ in range(CONCURRENCY)))
    calls = {raw: 0, subject: 0}
    seconds = {raw: 0.0, subject: 0.0}
    chunks = max(1, min(chunks, total // (2 * CONCURRENCY)))
    per_chunk = max(CONCURRENCY, total // chunks)
    for chunk in range(chunks):
        first_is_subject = subject_first ^ bool(chunk % 2)
        for op in (subject, raw) if first_is_subject else (raw, subject):
            n, secs = await hammer(op, per_chunk)
            calls[op] += n
            seconds[op] += secs
    return calls[raw] / seconds[raw], calls[subject] / seconds[subject]


@attrs.define
class Pair:
    """One subject and its raw anchor (a GET or MGET of the subject's own stored bytes)."""

    name: str
    group: str
    stored_bytes: int
    subject: Op
    raw: Op
    keys_per_call: int = 1
    #: fraction of the plan's op counts this pair runs (slow subjects run fewer ops).
    scale: float = 1.0
    rounds: list[dict[str, float]] = attrs.field(factory=list)

    async def measure(self, plan: Plan, subject_first: bool) -> None:
        factor = self.keys_per_call
        seq_ops = max(20, int(plan.seq_ops * self.scale))
        warmup = max(5, int(plan.warmup * self.scale))
        raw_ns, sub_ns = await paired_latency(
            self.raw, self.subject, seq_ops, warmup, subject_first
        )
        conc_ops = max(CONCURRENCY, int(plan.conc_ops * self.scale))
        raw_tput, sub_tput = await paired_throughput(
            self.raw, self.subject, conc_ops, subject_first, warm=not self.rounds
        )
        row = {
            "p50_us": percentile(sub_ns, 50) / 1000,
            "p99_us": percentile(sub_ns, 99) / 1000,
            "ops_s": sub_tput * factor,
            "raw_p50_us": percentile(raw_ns, 50) / 1000,
            "raw_p99_us": percentile(raw_ns, 99) / 1000,
            "raw_ops_s": raw_tput * factor,
        }
        row["p50_ratio"] = row["p50_us"] / row["raw_p50_us"]
        row["p99_ratio"] = row["p99_us"] / row["raw_p99_us"]
        row["ops_ratio"] = row["ops_s"] / row["raw_ops_s"]
        self.rounds.append(row)

    def median(self, field: str) -> float:
        return statistics.median(r[field] for r in self.rounds)

    def summary(self) -> dict[str, Any]:
        fields = self.rounds[0].keys() if self.rounds else ()
        return {
            "name": self.name,
            "group": self.group,
            "stored_bytes": self.stored_bytes,
            "keys_per_call": self.keys_per_call,
            **{f: self.median(f) for f in fields},
            "rounds": self.rounds,
        }


@attrs.frozen
class Plan:
    rounds: int
    seq_ops: int
    warmup: int
    conc_ops: int


# Op counts are for the 1 KiB pairs; 16 KiB pairs run SCALE_16K of them and batch pairs
# SCALE_BATCH (calls of 100 keys), so that a full run stays under two minutes on a
# 2-core machine.
FULL = Plan(rounds=3, seq_ops=2000, warmup=200, conc_ops=4_800)
QUICK = Plan(rounds=2, seq_ops=128, warmup=24, conc_ops=384)
SCALE_16K = 0.4
SCALE_BATCH = 0.05


# --------------------------------------------------------------------------- subjects

G_1K = "1 KiB record (WorkOrder)"
G_16K = "16 KiB record (CustomerHistory of 16 work orders)"
G_BATCH = f"get_many of {BATCH} x 1 KiB vs MGET, one tenant (ops/s = keys/s)"
G_L1 = "near cache (L1) hit, 1 KiB record, vs raw GET"
L1_LIMIT = 0.05  # SPEC: an L1 hit at least 20x faster than a raw GET

ENC = "encrypted+compressed"
ENC_AUTO = "encrypted"
VARIANTS = (
    ("plain", Compression.NEVER, False),
    ("compressed", Compression.ALWAYS, False),
    # The default policy: AUTO does not compress below the 2 KiB threshold.
    (ENC_AUTO, Compression.AUTO, True),
    (ENC, Compression.ALWAYS, True),
)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark set-up check failed: {what}")


def _schema(name: str, tp: Any, compression: Compression, sensitive: bool) -> KeySchema[Any]:
    return KeySchema(
        f"bench.{name}", tp, params={"id": int}, ttl=3600, sensitive=sensitive,
        compression=compression,
    )


async def build_pairs(
    url: str, port: int, raw: aioredis.Redis, closers: list[Callable[[], Awaitable[Any]]]
) -> list[Pair]:
    """Store the records through every subject and pair each with its raw anchor."""
    order = make_order(1, 1024)
    history = make_history(16 * 1024)
    # (group, variant, schema, value, scale)
    plan: list[tuple[str, str, KeySchema[Any], Any, float]] = []
    for label, compression, sensitive in VARIANTS:
        slug = label.replace("+", "_")
        plan.append((G_1K, label, _schema(f"order_{slug}", WorkOrder, compression, sensitive),
                     order, 1.0))
    for label, compression, sensitive in (*VARIANTS, ("auto", Compression.AUTO, False)):
        slug = label.replace("+", "_")
        schema = _schema(f"history_{slug}", CustomerHistory, compression, sensitive)
        plan.append((G_16K, label, schema, history, SCALE_16K))
    registry = SchemaRegistry()
    for _, _, schema, _, _ in plan:
        registry.register(schema, owner="bench")
    cache = Cache.from_url(url, registry, keyring=KeyRing.generate(),
                           settings=CacheSettings(prefix="bench"))
    closers.append(cache.aclose)

    def raw_get(rk: str) -> Op:
        return lambda: raw.get(rk)

    pairs: list[Pair] = []
    for group, variant, schema, value, scale in plan:
        key = schema.key(TENANT, id=1)
        await cache.set(key, value)
        rk = cache.redis_key(key)
        stored = await raw.get(rk)
        _expect(stored is not None and await cache.get(key) == value, f"{variant} round trip")
        pairs.append(Pair(f"Cache.get {variant}", group, len(stored),
                          lambda key=key: cache.get(key), raw_get(rk), scale=scale))

    # Peers: the same record object, in their own stored form, on the same Redis.
    from aiocache import RedisCache
    from aiocache.serializers import PickleSerializer
    from cashews import Cache as CashewsCache

    cashews = CashewsCache()
    # The same pool size as ours (cashews defaults to a blocking pool of 10 connections).
    cashews.setup(url, max_connections=128)
    closers.append(cashews.close)
    aio = RedisCache(serializer=PickleSerializer(), endpoint="127.0.0.1", port=port,
                     namespace="bench_aiocache")
    closers.append(aio.close)
    for group, value, scale in ((G_1K, order, 1.0), (G_16K, history, SCALE_16K)):
        tag = "1k" if group == G_1K else "16k"
        ck = f"bench:cashews:{tag}"
        await cashews.set(ck, value, expire=3600)
        _expect(await cashews.get(ck) == value, "cashews round trip")
        stored = await raw.get(ck)
        pairs.append(Pair("cashews get (pickle)", group, len(stored),
                          lambda ck=ck: cashews.get(ck), raw_get(ck), scale=scale))
        ak = f"order:{tag}"
        await aio.set(ak, value, ttl=3600)
        _expect(await aio.get(ak) == value, "aiocache round trip")
        ark = f"bench_aiocache:{ak}"
        stored = await raw.get(ark)
        pairs.append(Pair("aiocache get (pickle)", group, len(stored),
                          lambda ak=ak: aio.get(ak), raw_get(ark), scale=scale))

    # Batches: 100 keys of one tenant (one slot), one MGET.
    for group, variant, schema, _, _ in plan:
        if group != G_1K or variant not in ("plain", ENC):
            continue
        keys = [schema.key(TENANT, id=i) for i in range(BATCH)]
        for i, key in enumerate(keys):
            await cache.set(key, make_order(10_000 + i, 1024))
        rks = [cache.redis_key(k) for k in keys]
        stored_many = await raw.mget(rks)
        _expect(all(v is not None for v in await cache.get_many(keys)), f"{variant} batch")
        pairs.append(Pair(
            f"get_many {variant}", G_BATCH,
            sum(len(b) for b in stored_many) // BATCH,
            lambda keys=keys: cache.get_many(keys), lambda rks=rks: raw.mget(rks),
            keys_per_call=BATCH, scale=SCALE_BATCH,
        ))
    # Near cache: its own cache object (an L1 belongs to one cache), subscribed first so
    # that the first read fills L1; near_ttl at its maximum (a refill per minute).
    near_schema = KeySchema("bench.order_near", WorkOrder, params={"id": int}, ttl=3600,
                            compression=Compression.NEVER, near_ttl=60)
    near_registry = SchemaRegistry()
    near_registry.register(near_schema, owner="bench")
    near_cache = Cache.from_url(url, near_registry, near=NearCache(),
                                settings=CacheSettings(prefix="bench"))
    closers.append(near_cache.aclose)
    _expect(await near_cache.near_ready(10), "near cache subscribed")
    near_key = near_schema.key(TENANT, id=1)
    await near_cache.set(near_key, order)
    near_rk = near_cache.redis_key(near_key)
    stored = await raw.get(near_rk)
    _expect(await near_cache.get(near_key) == order, "near round trip")
    _expect(near_cache.near is not None and near_rk in near_cache.near, "L1 filled")
    pairs.append(Pair("Cache.get L1 hit (plain)", G_L1, len(stored),
                      lambda: near_cache.get(near_key), raw_get(near_rk)))
    order_of = {G_1K: 0, G_16K: 1, G_BATCH: 2, G_L1: 3}
    return sorted(pairs, key=lambda p: order_of[p.group])


# --------------------------------------------------------------------------- report


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            timeout=10, check=False, cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine_info(redis_version: str) -> dict[str, Any]:
    return {
        "commit": _git_commit(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "redis_py": redis.__version__,
        "hiredis": HIREDIS_AVAILABLE,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "loop": "asyncio (stock)",
        "load_avg_1m_at_start": os.getloadavg()[0],
    }


def _limits(pair: Pair) -> tuple[float | None, float | None]:
    """The SPEC's latency and throughput ratio limits for a row, if it has one."""
    if pair.group == G_1K and pair.name in (f"Cache.get {ENC}", f"Cache.get {ENC_AUTO}"):
        return 1.3, 0.75
    if pair.group == G_1K and pair.name == "Cache.get plain":
        return 1.15, 0.75
    if pair.group == G_BATCH and "plain" in pair.name:
        return None, 0.7
    if pair.group == G_L1:
        return L1_LIMIT, None
    return None, None


def _ratio(value: float, limit: float | None, higher_is_better: bool) -> str:
    text = f"{value:.2f}"
    if limit is None:
        return text
    ok = value >= limit if higher_is_better else value <= limit
    return f"[green]{text}[/]" if ok else f"[red]{text}[/]"


def render_table(console: Console, pairs: Sequence[Pair], plan: Plan) -> None:
    table = Table(
        title=(
            f"Hit path vs a raw redis.asyncio GET/MGET of the same stored bytes "
            f"(median of {plan.rounds} rounds; µs per call, sequential; "
            f"ops/s with {CONCURRENCY} tasks; ratio = subject / raw)"
        ),
        title_justify="left",
    )
    table.add_column("subject")
    for header in ("stored B", "p50 µs", "p99 µs", f"ops/s@{CONCURRENCY}",
                   "p50 ratio", "p99 ratio", "ops/s ratio",
                   "raw p50", "raw p99", "raw ops/s"):
        table.add_column(header, justify="right")
    group = None
    for pair in pairs:
        if pair.group != group:
            if group is not None:
                table.add_section()
            group = pair.group
            table.add_row(f"[bold]{group}[/]")
        lat_limit, tput_limit = _limits(pair)
        s = pair.summary()
        table.add_row(
            "  " + pair.name,
            f"{pair.stored_bytes:,}",
            f"{s['p50_us']:.0f}",
            f"{s['p99_us']:.0f}",
            f"{s['ops_s']:,.0f}",
            _ratio(s["p50_ratio"], lat_limit, False),
            _ratio(s["p99_ratio"], lat_limit, False),
            _ratio(s["ops_ratio"], tput_limit, True),
            f"{s['raw_p50_us']:.0f}",
            f"{s['raw_p99_us']:.0f}",
            f"{s['raw_ops_s']:,.0f}",
        )
    console.print(table)


def check_targets(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """The SPEC's hit-path targets, each with the measured figure and PASS/MISS."""
    by = {(p.group, p.name): p for p in pairs}
    enc = by[(G_1K, f"Cache.get {ENC_AUTO}")]
    enc_zstd = by[(G_1K, f"Cache.get {ENC}")]
    plain = by[(G_1K, "Cache.get plain")]
    many = by[(G_BATCH, "get_many plain")]
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float, limit: float, ok: bool, unit: str) -> None:
        out.append({"target": name, "measured": measured, "limit": limit, "unit": unit,
                    "pass": ok})

    for subject, limit in ((enc, 1.3), (enc_zstd, 1.3), (plain, 1.15)):
        variant = subject.name.removeprefix("Cache.get ")
        for q in ("p50", "p99"):
            r = subject.median(f"{q}_ratio")
            add(f"{variant} 1 KiB hit {q} <= {limit}x raw GET", r, limit, r <= limit, "x")
    for subject in (enc, enc_zstd, plain):
        variant = subject.name.removeprefix("Cache.get ")
        r = subject.median("ops_ratio")
        add(f"{variant} 1 KiB {CONCURRENCY}-way ops/s >= 0.75x raw", r, 0.75, r >= 0.75, "x")
    for peer_name in ("cashews get (pickle)", "aiocache get (pickle)"):
        peer = by[(G_1K, peer_name)]
        short = peer_name.split()[0]
        a, b = enc.median("p50_us"), peer.median("p50_us")
        add(f"{ENC_AUTO} 1 KiB p50 below {short}'s ({b:.0f} µs)", a, b, a < b, "µs")
        a, b = enc.median("p99_us"), peer.median("p99_us")
        add(f"{ENC_AUTO} 1 KiB p99 below {short}'s ({b:.0f} µs)", a, b, a < b, "µs")
        a, b = enc.median("ops_s"), peer.median("ops_s")
        add(f"{ENC_AUTO} 1 KiB ops/s@{CONCURRENCY} above {short}'s ({b:,.0f}/s)", a, b, a > b, "/s")
    r = many.median("ops_ratio")
    add(f"get_many x{BATCH} (plain 1 KiB) >= 0.7x raw MGET keys/s", r, 0.7, r >= 0.7, "x")
    l1 = by[(G_L1, "Cache.get L1 hit (plain)")]
    for q in ("p50", "p99"):
        r = l1.median(f"{q}_ratio")
        add(f"L1 hit {q} <= {L1_LIMIT}x raw GET (>= 20x faster)", r, L1_LIMIT, r <= L1_LIMIT, "x")
    return out


def render_targets(console: Console, targets: Sequence[dict[str, Any]]) -> None:
    console.print("\n[bold]SPEC targets[/] (a report, not an assertion)")
    for t in targets:
        mark = "[green]PASS[/]" if t["pass"] else "[red]MISS[/]"
        if t["unit"] == "x":
            figure = f"{t['measured']:.2f}x"
        elif t["unit"] == "/s":
            figure = f"{t['measured']:,.0f}/s"
        else:
            figure = f"{t['measured']:.0f} µs"
        console.print(f"  {mark}  {t['target']}: {figure}")


# --------------------------------------------------------------------------- main


async def run(plan: Plan, url: str, port: int, console: Console) -> dict[str, Any]:
    # The anchor gets the client configuration RedisStore uses (no per-call socket
    # timeout, the same pool size), so the ratios measure our code, not settings.
    raw = aioredis.Redis.from_url(url, decode_responses=False, max_connections=128,
                                  socket_timeout=None, socket_keepalive=True)
    closers: list[Callable[[], Awaitable[Any]]] = [raw.aclose]
    try:
        info = await raw.info("server")
        machine = machine_info(str(info["redis_version"]))
        console.print(
            f"python {machine['python']} | redis-server {machine['redis_server']} | "
            f"redis-py {machine['redis_py']} (hiredis {'on' if machine['hiredis'] else 'OFF'}) "
            f"| {machine['cpu_count']} CPUs | load {machine['load_avg_1m_at_start']:.2f} | "
            f"{machine['platform']} | stock asyncio loop | commit {machine['commit']}"
        )
        pairs = await build_pairs(url, port, raw, closers)
        started = time.perf_counter()
        for rnd in range(plan.rounds):
            # ABBA: pairs forward then backward, and the order within each pair flips.
            for pair in pairs if rnd % 2 == 0 else pairs[::-1]:
                await pair.measure(plan, subject_first=bool(rnd % 2))
            console.print(
                f"[dim]round {rnd + 1}/{plan.rounds} done "
                f"({time.perf_counter() - started:.0f} s)[/]"
            )
        render_table(console, pairs, plan)
        targets = check_targets(pairs)
        render_targets(console, targets)
        return {
            "machine": machine,
            "plan": attrs.asdict(plan),
            "concurrency": CONCURRENCY,
            "results": [p.summary() for p in pairs],
            "targets": targets,
        }
    finally:
        for close in reversed(closers):
            await close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (under ~20 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = attrs.evolve(plan, rounds=args.rounds)
    console = Console(width=max(Console().width, 150))
    with RedisServer() as server:
        report = asyncio.run(run(plan, server.url, server.port, console))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
