"""``thorbis-cache demo``: the cache's main job, end to end, on real servers it starts itself.

The demo starts an ephemeral Redis and PostgreSQL, loads a deterministic multi-tenant
``customers`` table, and runs a Zipf-distributed read workload through
:meth:`Cache.get_or_load <thorbis_cache.cache.Cache.get_or_load>` with an encrypted
(``sensitive``) key schema. Then it demonstrates, against the same servers, the promises
the seed's cache-aside code did not keep:

* values are stored encrypted and bound to their key (a hex dump shows no personal data);
* a tampered entry, or one copied to another tenant's key, is a counted miss, never an
  error and never returned, and the true value is reloaded from PostgreSQL;
* a slow load that raced with an update + invalidation does not write its stale value.

Every number it prints is measured in this run; every claim is a check that can fail
(:attr:`DemoResult.ok`). The demo plays the host application, so it talks to
PostgreSQL through ``asyncpg`` itself; the cache never sees the database.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import decimal
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib import resources
from typing import Annotated, Any

import asyncpg
import attrs
import msgpack
import typer
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from thorbis_cache.cache import Cache
from thorbis_cache.codec import make_converter
from thorbis_cache.crypto import KeyRing
from thorbis_cache.envelope import FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_TIMING
from thorbis_cache.errors import ConfigurationError, ThorbisCacheError
from thorbis_cache.keys import KeySchema, SchemaRegistry
from thorbis_cache.testing.servers import PostgresServer, RedisServer

__all__ = [
    "CUSTOMER",
    "Check",
    "Customer",
    "DemoFailure",
    "DemoOptions",
    "DemoResult",
    "EncryptionResult",
    "LatencySummary",
    "RaceResult",
    "TamperResult",
    "WorkloadResult",
    "ZipfSampler",
    "command",
    "generate_customers",
    "popularity",
    "read_plan",
    "run_demo",
]

DATABASE = "thorbis_demo"
TENANT_NAMES = (
    "acme", "globex", "initech", "umbrella", "hooli",
    "stark", "wayne", "wonka", "tyrell", "cyberdyne",
)  # fmt: skip
# Stalled loaders and checks must never hang the demo, whatever goes wrong.
_SCENE_TIMEOUT = 10.0
# Enough GETs for a stable p99 of the warm and raw passes, few enough to cost ~2 s here.
_ANCHOR_READS = 5000
_FLAG_NAMES = (
    (FLAG_ENCRYPTED, "encrypted"),
    (FLAG_COMPRESSED, "compressed"),
    (FLAG_TIMING, "timing"),
)
_WORKLOAD_COUNTERS = ("hits", "misses", "loads", "coalesced", "lease_waits", "fills_rejected")


class DemoFailure(ThorbisCacheError, RuntimeError):
    """The demo could not run a scene, or one of its checks failed."""


# --------------------------------------------------------------------------- model


@attrs.frozen(slots=True)
class Customer:
    """A customer as cached: the columns of ``sql/demo/customer_get.sql``, in order."""

    id: int
    name: str
    email: str
    phone: str
    street: str
    city: str
    postal_code: str
    customer_type: str
    account_status: str
    payment_status: str
    lifetime_value: decimal.Decimal
    service_count: int
    last_service_date: dt.date | None


# cattrs and the codec's type check need real types, not the strings PEP 563 leaves.
attrs.resolve_types(Customer)

CUSTOMER = KeySchema[Customer](
    "demo.customer",
    Customer,
    params={"customer_id": int},
    ttl=300,
    sensitive=True,
    description="one customer of a tenant, encrypted with the tenant's data key",
)


def _sql(name: str) -> str:
    """The text of ``sql/demo/<name>.sql`` (read through the package, so wheels work)."""
    return (resources.files("thorbis_cache.sql") / "demo" / f"{name}.sql").read_text("utf-8")


# --------------------------------------------------------------------------- options


def _at_least(low: float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not value >= low:
            raise ConfigurationError(
                f"demo option --{attribute.name} must be at least {low:g}, got {value!r}"
            )

    return check


@attrs.frozen(slots=True)
class DemoOptions:
    """What the demo runs.

    :ivar tenants: number of tenants (at least 2: one scene copies an entry between two).
    :ivar customers: customers per tenant (at least 3: the scenes use distinct customers).
    :ivar reads: ``get_or_load`` calls of the workload.
    :ivar zipf: Zipf exponent ``s`` of customer popularity (0 is uniform).
    :ivar seed: seed of the data set and the workload (same seed, same run).
    :ivar concurrency: concurrent workers issuing reads.
    """

    tenants: int = attrs.field(default=3, validator=_at_least(2))
    customers: int = attrs.field(default=1000, validator=_at_least(3))
    reads: int = attrs.field(default=20000, validator=_at_least(1))
    zipf: float = attrs.field(default=1.1, validator=_at_least(0))
    seed: int = 7
    concurrency: int = attrs.field(default=32, validator=_at_least(1))

    def tenant_names(self) -> list[str]:
        """Tenant ids: well-known fictional companies first, then ``tenant-NNN``."""
        named = list(TENANT_NAMES[: self.tenants])
        return named + [f"tenant-{i + 1:03d}" for i in range(len(named), self.tenants)]


# --------------------------------------------------------------------------- results


@attrs.frozen(slots=True)
class Check:
    """One claim of the demo and whether this run bore it out."""

    name: str
    passed: bool
    detail: str = ""


@attrs.frozen(slots=True)
class LatencySummary:
    """Latency percentiles (nearest rank) of one class of calls, in nanoseconds."""

    count: int
    p50_ns: int | None
    p99_ns: int | None

    @classmethod
    def of(cls, samples: Sequence[int]) -> LatencySummary:
        """Summarize ``samples`` (ns); percentiles are None when there are none."""
        if not samples:
            return cls(0, None, None)
        ordered = sorted(samples)

        def rank(p: float) -> int:
            return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

        return cls(len(ordered), rank(50), rank(99))


@attrs.frozen(slots=True)
class WorkloadResult:
    """The Zipf read workload, measured.

    :ivar hits: calls answered from Redis with no load involved.
    :ivar misses: calls whose own loader ran (one PostgreSQL query each).
    :ivar coalesced: calls that found no value but waited for a concurrent load of the
        same key instead of querying (single-flight / lease).
    :ivar warm_get_latency: measured right after the workload, on the same client and
        concurrency, over the workload's first keys (all cached by then): ``cache.get``
        alone, i.e. GET + decrypt + decode with no misses queueing beside it.
    :ivar raw_get_latency: the anchor for it: a plain GET of the same stored bytes (no
        decryption, no decoding), i.e. what Redis itself costs on this machine.
    :ivar metrics: the cache's own counters for the schema after the workload.
    """

    reads: int
    hits: int
    misses: int
    coalesced: int
    db_queries: int
    distinct_keys: int
    elapsed_s: float
    hit_latency: LatencySummary
    miss_latency: LatencySummary
    coalesced_latency: LatencySummary
    warm_get_latency: LatencySummary
    raw_get_latency: LatencySummary
    metrics: dict[str, float]

    @property
    def hit_ratio(self) -> float:
        """Share of reads answered from the cache without waiting for a load."""
        return self.hits / self.reads

    @property
    def queries_saved(self) -> int:
        """Reads that did not query PostgreSQL."""
        return self.reads - self.db_queries


@attrs.frozen(slots=True)
class EncryptionResult:
    """One encrypted entry as stored in Redis."""

    redis_key: str
    raw: bytes
    key_id: str
    customer: Customer
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class TamperResult:
    """A flipped byte, and a ciphertext moved to another tenant's key."""

    redis_key: str
    flipped_offset: int
    corrupt_reason: str
    corrupt_delta: float
    cross_tenant_key: str
    cross_tenant_corrupt_delta: float
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class RaceResult:
    """A slow fill racing with an update and its invalidation."""

    redis_key: str
    stale_email: str
    updated_email: str
    slow_caller_email: str
    fills_rejected_delta: float
    fresh_email: str
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class DemoResult:
    """Everything the demo measured and checked."""

    options: DemoOptions
    redis_address: str
    postgres_address: str
    rows: int
    setup_s: float
    workload: WorkloadResult
    encryption: EncryptionResult
    tamper: TamperResult
    race: RaceResult

    @property
    def checks(self) -> tuple[Check, ...]:
        """Every check of every scene."""
        return self.encryption.checks + self.tamper.checks + self.race.checks

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)


# --------------------------------------------------------------------------- data set


class ZipfSampler:
    """Draws ranks ``0..n-1`` with probability proportional to ``1 / (rank + 1) ** s``.

    Inverse-transform sampling: one uniform draw, then a binary search over the
    cumulative weights, so a draw is O(log n) and reproducible from the caller's RNG.

    :param n: number of ranks.
    :param s: the exponent (``s = 0`` is uniform; web caches see about 0.6-1.2).
    """

    __slots__ = ("_cumulative", "_total")

    def __init__(self, n: int, s: float) -> None:
        if n < 1:
            raise ValueError(f"a Zipf sampler needs n >= 1, got {n}")
        self._cumulative = list(itertools.accumulate(1.0 / k**s for k in range(1, n + 1)))
        self._total = self._cumulative[-1]

    def draw(self, rng: random.Random) -> int:
        """One rank, 0 being the most popular."""
        # random() < 1, so the target is below the total and the index below n.
        return bisect.bisect_left(self._cumulative, rng.random() * self._total)


_FIRST = (
    "Ava", "Liam", "Olivia", "Noah", "Emma", "Mateo", "Sofia", "Lucas", "Amara", "Ethan",
    "Priya", "Diego", "Chloe", "Hiro", "Zara", "Omar", "Grace", "Jonas", "Leila", "Marcus",
)  # fmt: skip
_LAST = (
    "Garcia", "Nguyen", "Okafor", "Schmidt", "Patel", "Rossi", "Kowalski", "Haddad",
    "Johansson", "Tanaka", "Moreau", "Silva", "Brennan", "Castillo", "Lindqvist", "Mensah",
)  # fmt: skip
_STREETS = ("Oak", "Maple", "Cedar", "Lakeview", "Hillcrest", "Sunset", "Willow", "Park")
_SUFFIXES = ("St", "Ave", "Rd", "Ln", "Blvd", "Ct")
_CITIES = ("Springfield", "Riverton", "Fairview", "Greenville", "Madison", "Franklin")
_MAIL_DOMAINS = ("example.com", "example.net", "example.org")  # RFC 2606: never real mail
_SERVICE_EPOCH = dt.date(2024, 1, 1)


def _customer(rng: random.Random, customer_id: int) -> Customer:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    services = rng.randrange(0, 40)
    value = decimal.Decimal(min(rng.lognormvariate(7.0, 1.0), 999_999.0))
    return Customer(
        id=customer_id,
        name=f"{first} {last}",
        email=f"{first}.{last}{customer_id}@{rng.choice(_MAIL_DOMAINS)}".lower(),
        phone=f"+1-555-{rng.randrange(100, 1000)}-{rng.randrange(10000):04d}",
        street=f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)} {rng.choice(_SUFFIXES)}",
        city=rng.choice(_CITIES),
        postal_code=f"{rng.randrange(10000, 99999)}",
        customer_type=rng.choices(("residential", "commercial"), (8, 2))[0],
        account_status=rng.choices(("active", "inactive", "suspended"), (85, 10, 5))[0],
        payment_status=rng.choices(("current", "overdue", "collections"), (80, 15, 5))[0],
        lifetime_value=value.quantize(decimal.Decimal("0.01")),
        service_count=services,
        last_service_date=(
            _SERVICE_EPOCH + dt.timedelta(days=rng.randrange(600)) if services else None
        ),
    )


def generate_customers(options: DemoOptions) -> dict[str, list[Customer]]:
    """The deterministic data set: ``options.customers`` customers (ids 1..N) per tenant."""
    # Separate streams per purpose: changing --reads must not change the data.
    rng = random.Random(f"{options.seed}:data")
    return {
        tenant: [_customer(rng, i) for i in range(1, options.customers + 1)]
        for tenant in options.tenant_names()
    }


def popularity(options: DemoOptions) -> dict[str, list[int]]:
    """Per tenant, customer ids from most to least popular (a seeded shuffle, so the
    hottest customers are not simply the lowest ids)."""
    rng = random.Random(f"{options.seed}:popularity")
    out: dict[str, list[int]] = {}
    for tenant in options.tenant_names():
        ids = list(range(1, options.customers + 1))
        rng.shuffle(ids)
        out[tenant] = ids
    return out


def read_plan(options: DemoOptions, hot: dict[str, list[int]]) -> list[tuple[str, int]]:
    """The workload: ``options.reads`` (tenant, customer id) pairs; the tenant uniform,
    the customer a Zipf(s) draw over that tenant's popularity order."""
    rng = random.Random(f"{options.seed}:reads")
    sampler = ZipfSampler(options.customers, options.zipf)
    tenants = options.tenant_names()
    plan: list[tuple[str, int]] = []
    for _ in range(options.reads):
        tenant = rng.choice(tenants)
        plan.append((tenant, hot[tenant][sampler.draw(rng)]))
    return plan


# --------------------------------------------------------------------------- database


class _Database:
    """The demo application's data access: one pool, queries counted."""

    _COLUMNS = tuple(f.name for f in attrs.fields(Customer))

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.queries = 0
        self._get = _sql("customer_get")
        self._update = _sql("customer_update")

    async def load(self, data: dict[str, list[Customer]]) -> int:
        """Create the table and COPY the data set in; returns the number of rows."""
        async with self.pool.acquire() as conn:
            await conn.execute(_sql("customers"))
            rows = [
                (tenant, *attrs.astuple(c, recurse=False))
                for tenant, customers in data.items()
                for c in customers
            ]
            await conn.copy_records_to_table(
                "customers", records=rows, columns=("tenant_id", *self._COLUMNS)
            )
            await conn.execute("ANALYZE customers")
        return len(rows)

    async def customer(self, tenant: str, customer_id: int) -> Customer:
        """One customer, read from PostgreSQL (counted).

        :raises DemoFailure: no such row (the demo only reads ids it inserted).
        """
        self.queries += 1
        row = await self.pool.fetchrow(self._get, tenant, customer_id)
        if row is None:
            raise DemoFailure(f"customer {customer_id} of tenant {tenant!r} is not in the table")
        return Customer(**dict(row.items()))

    async def update(self, tenant: str, customer_id: int, email: str, status: str) -> None:
        """Change a customer's email and account status (one committed statement)."""
        await self.pool.execute(self._update, tenant, customer_id, email, status)


async def _close_pool(pool: Any) -> None:
    # A connection stuck in a cancelled query would make close() wait forever.
    try:
        await asyncio.wait_for(pool.close(), 5.0)
    except TimeoutError:
        pool.terminate()


# --------------------------------------------------------------------------- scenes


def _counter(cache: Cache, name: str, **labels: str) -> float:
    return cache.metrics.value(name, schema=CUSTOMER.name, **labels)


async def _concurrently(
    count: int,
    concurrency: int,
    call: Callable[[int], Awaitable[None]],
    progress: Callable[[int], None] | None = None,
) -> float:
    """Run ``call(0) .. call(count - 1)`` on ``concurrency`` workers; returns seconds."""
    position = 0

    async def worker() -> None:
        nonlocal position
        # One event loop thread: taking the next index needs no lock.
        while position < count:
            index = position
            position += 1
            await call(index)
            if progress is not None and position % 250 == 0:
                progress(position)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(min(concurrency, count)):
            group.create_task(worker(), name=f"demo-reader-{i}")
    if progress is not None:
        progress(count)
    return time.perf_counter() - t0


async def _warm_vs_raw(
    cache: Cache, plan: Sequence[tuple[str, int]], concurrency: int
) -> tuple[LatencySummary, LatencySummary]:
    """``cache.get`` against a raw GET of the same keys; see :class:`WorkloadResult`."""
    keys = [CUSTOMER.key(t, customer_id=c) for t, c in plan[:_ANCHOR_READS]]
    names = [cache.redis_key(k) for k in keys]
    warm: list[int] = []
    raw: list[int] = []

    async def typed(index: int) -> None:
        t0 = time.perf_counter_ns()
        await cache.get(keys[index])
        warm.append(time.perf_counter_ns() - t0)

    async def plain(index: int) -> None:
        t0 = time.perf_counter_ns()
        await cache.store.get(names[index])
        raw.append(time.perf_counter_ns() - t0)

    # Alternate halves so that a drift of the machine's speed hits both alike.
    half = len(keys) // 2
    for call in (typed, plain, plain, typed):
        await _concurrently(half, concurrency, call)
    return LatencySummary.of(warm), LatencySummary.of(raw)


async def _run_workload(
    cache: Cache,
    db: _Database,
    plan: Sequence[tuple[str, int]],
    concurrency: int,
    progress: Callable[[int], None] | None,
) -> WorkloadResult:
    hits: list[int] = []
    misses: list[int] = []
    coalesced: list[int] = []
    # Per key: loads running now, and loads ever started. A call whose own loader did
    # not run but which overlapped a load of its key waited for that load, so its
    # latency is a miss's, not a hit's; it is reported apart.
    running: dict[str, int] = {}
    started: dict[str, int] = {}

    async def read(index: int) -> None:
        tenant, customer_id = plan[index]
        key = CUSTOMER.key(tenant, customer_id=customer_id)
        body = key.body
        loaded = False

        async def loader() -> Customer:
            nonlocal loaded
            loaded = True
            running[body] = running.get(body, 0) + 1
            started[body] = started.get(body, 0) + 1
            try:
                return await db.customer(tenant, customer_id)
            finally:
                running[body] -= 1

        busy, epoch = running.get(body, 0), started.get(body, 0)
        t0 = time.perf_counter_ns()
        await cache.get_or_load(key, loader)
        elapsed = time.perf_counter_ns() - t0
        if loaded:
            misses.append(elapsed)
        elif busy or started.get(body, 0) != epoch:
            coalesced.append(elapsed)
        else:
            hits.append(elapsed)

    elapsed = await _concurrently(len(plan), concurrency, read, progress)
    # Counters first: the warm pass below adds hits of its own.
    metrics = {n: _counter(cache, n) for n in _WORKLOAD_COUNTERS}
    warm, raw = await _warm_vs_raw(cache, plan, concurrency)
    return WorkloadResult(
        reads=len(plan),
        hits=len(hits),
        misses=len(misses),
        coalesced=len(coalesced),
        db_queries=db.queries,
        distinct_keys=len(set(plan)),
        elapsed_s=elapsed,
        hit_latency=LatencySummary.of(hits),
        miss_latency=LatencySummary.of(misses),
        coalesced_latency=LatencySummary.of(coalesced),
        warm_get_latency=warm,
        raw_get_latency=raw,
        metrics=metrics,
    )


def _key_id(raw: bytes) -> str:
    """The master key id recorded in an encrypted envelope (layout: envelope.py)."""
    pos = 6 + (12 if raw[3] & FLAG_TIMING else 0)
    return raw[pos + 1 : pos + 1 + raw[pos]].decode("ascii", "replace")


async def _encryption_scene(
    cache: Cache, db: _Database, tenant: str, customer_id: int
) -> EncryptionResult:
    key = CUSTOMER.key(tenant, customer_id=customer_id)
    customer = await cache.get_or_load(key, lambda: db.customer(tenant, customer_id))
    rk = cache.redis_key(key)
    raw = await cache.store.get(rk)
    if raw is None:
        raise DemoFailure(f"{rk} was just filled but is not in Redis")
    # The control: the same value serialized without encryption does show the data,
    # so "not found in the stored bytes" below is a check that could fail.
    plain = msgpack.packb(make_converter().unstructure(customer), use_bin_type=True)
    secrets = {"name": customer.name, "email": customer.email, "phone": customer.phone}
    checks = [
        Check("entry is flagged encrypted", bool(raw[3] & FLAG_ENCRYPTED), f"flags {raw[3]:#04x}"),
        Check(
            "unencrypted msgpack would reveal name and email (control)",
            customer.name.encode() in plain and customer.email.encode() in plain,
        ),
    ]
    for field, text in secrets.items():
        checks.append(
            Check(f"customer {field} not in the stored bytes", text.encode() not in raw, text)
        )
    return EncryptionResult(rk, raw, _key_id(raw), customer, tuple(checks))


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@contextlib.contextmanager
def _captured_warnings(records: list[str]) -> Iterator[None]:
    """Collect the cache's log lines (it logs every dropped entry) to show them in the
    report instead of letting them interleave with it."""
    logger = logging.getLogger("thorbis_cache")
    handler = _ListHandler(records)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


async def _tamper_scene(
    cache: Cache, db: _Database, tenant: str, other: str, customer_id: int, logs: list[str]
) -> TamperResult:
    key = CUSTOMER.key(tenant, customer_id=customer_id)
    rk = cache.redis_key(key)
    truth = await db.customer(tenant, customer_id)
    await cache.get_or_load(key, lambda: db.customer(tenant, customer_id))
    raw = await cache.store.get(rk)
    if raw is None:
        raise DemoFailure(f"{rk} was just filled but is not in Redis")
    reason = "auth_failed"
    ttl_ms = cache.ttl_ms(CUSTOMER)
    checks: list[Check] = []

    # 1. Flip one byte of the ciphertext, in place.
    offset = len(raw) // 2
    tampered = raw[:offset] + bytes((raw[offset] ^ 0xFF,)) + raw[offset + 1 :]
    await cache.store.set(rk, tampered, ttl_ms)
    before = _counter(cache, "corrupt_entries", reason=reason)
    with _captured_warnings(logs):
        got = await cache.get(key)
    corrupt_delta = _counter(cache, "corrupt_entries", reason=reason) - before
    checks.append(
        Check(
            "tampered entry reads as a miss (None, no exception)",
            got is None,
            f"flipped byte {offset} of {len(raw)}",
        )
    )
    checks.append(Check("tampered entry was deleted", await cache.store.get(rk) is None))
    checks.append(
        Check(
            f"corrupt_entries{{reason={reason}}} went up by 1",
            corrupt_delta == 1,
            f"+{corrupt_delta:g}",
        )
    )
    queries = db.queries
    reloaded = await cache.get_or_load(key, lambda: db.customer(tenant, customer_id))
    checks.append(
        Check(
            "get_or_load reloaded the true row from PostgreSQL",
            reloaded == truth and db.queries == queries + 1,
            f"{db.queries - queries} query",
        )
    )

    # 2. Copy tenant A's (valid) ciphertext under tenant B's key for the same id.
    fresh = await cache.store.get(rk)
    if fresh is None:
        raise DemoFailure(f"{rk} was just reloaded but is not in Redis")
    other_key = CUSTOMER.key(other, customer_id=customer_id)
    other_rk = cache.redis_key(other_key)
    other_truth = await db.customer(other, customer_id)
    await cache.store.set(other_rk, fresh, ttl_ms)
    before = _counter(cache, "corrupt_entries", reason=reason)
    with _captured_warnings(logs):
        moved = await cache.get(other_key)
    cross_delta = _counter(cache, "corrupt_entries", reason=reason) - before
    checks.append(
        Check(
            f"{tenant}'s ciphertext under {other}'s key is a miss",
            moved is None and cross_delta == 1,
            f"corrupt_entries +{cross_delta:g}",
        )
    )
    checks.append(
        Check(f"{other}'s key holds nothing afterwards", await cache.store.get(other_rk) is None)
    )
    other_loaded = await cache.get_or_load(other_key, lambda: db.customer(other, customer_id))
    checks.append(Check(f"{other} then gets its own customer", other_loaded == other_truth))
    return TamperResult(rk, offset, reason, corrupt_delta, other_rk, cross_delta, tuple(checks))


async def _race_scene(cache: Cache, db: _Database, tenant: str, customer_id: int) -> RaceResult:
    key = CUSTOMER.key(tenant, customer_id=customer_id)
    rk = cache.redis_key(key)
    await cache.delete(key)  # start from a miss
    stale = await db.customer(tenant, customer_id)
    row_read = asyncio.Event()
    invalidated = asyncio.Event()

    async def slow_loader() -> Customer:
        value = await db.customer(tenant, customer_id)
        row_read.set()
        # Stall until the writer has committed and invalidated: the window in which a
        # plain get -> load -> set would write this (now stale) value after the delete.
        await asyncio.wait_for(invalidated.wait(), _SCENE_TIMEOUT)
        return value

    rejected_before = _counter(cache, "fills_rejected")
    slow = asyncio.create_task(cache.get_or_load(key, slow_loader), name="demo-slow-fill")
    try:
        await asyncio.wait_for(row_read.wait(), _SCENE_TIMEOUT)
        updated_email = "moved." + stale.email
        status = "suspended" if stale.account_status == "active" else "active"
        await db.update(tenant, customer_id, updated_email, status)
        await cache.delete(key)  # the application's invalidation after its commit
        invalidated.set()
        slow_value = await slow
    finally:
        slow.cancel()
    rejected = _counter(cache, "fills_rejected") - rejected_before
    after = await cache.store.get(rk)
    fresh = await cache.get_or_load(key, lambda: db.customer(tenant, customer_id))
    checks = (
        Check(
            "slow caller got the row it had read",
            slow_value.email == stale.email,
            slow_value.email,
        ),
        Check(
            "UPDATE committed + cache.delete while it loaded; its fill was not written",
            after is None,
        ),
        Check("fills_rejected went up by 1", rejected == 1, f"+{rejected:g}"),
        Check(
            "next get_or_load returns the updated row",
            fresh.email == updated_email and fresh.account_status == status,
            f"{fresh.email}, {fresh.account_status}",
        ),
    )
    return RaceResult(
        rk, stale.email, updated_email, slow_value.email, rejected, fresh.email, checks
    )


# --------------------------------------------------------------------------- the demo


async def run_demo(
    options: DemoOptions | None = None, *, console: Console | None = None
) -> DemoResult:
    """Run the demo end to end and return what it measured and checked.

    The servers are started here and stopped on every exit, including errors and
    cancellation (Ctrl-C).

    :param options: sizes and seed; defaults as for ``thorbis-cache demo``.
    :param console: where the report is printed as the demo goes; None prints nothing.
    :returns: the measurements and checks (see :attr:`DemoResult.ok`).
    :raises ServerBinaryNotFound: redis-server or PostgreSQL is not installed.
    :raises ServerStartError: a server did not start.
    :raises DemoFailure: a scene could not run.
    """
    options = options or DemoOptions()
    out = console or Console(quiet=True)
    tenants = options.tenant_names()
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        redis_server = RedisServer()
        stack.callback(redis_server.stop)  # registered before start: a failed start cleans up
        postgres = PostgresServer()
        stack.callback(postgres.stop)
        with out.status("starting Redis and PostgreSQL..."):
            redis_server.start()
            postgres.start()
        redis_address = f"{redis_server.host}:{redis_server.port}"
        postgres_address = f"{postgres.host}:{postgres.port}"

        admin = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
        pool = await asyncpg.create_pool(postgres.dsn(DATABASE), min_size=2, max_size=16)
        stack.push_async_callback(_close_pool, pool)
        db = _Database(pool)
        rows = await db.load(generate_customers(options))

        registry = SchemaRegistry()
        registry.register(CUSTOMER, owner="demo")
        cache = Cache.from_url(redis_server.url, registry, keyring=KeyRing.generate())
        stack.push_async_callback(cache.aclose)
        await cache.store.ping()
        setup_s = time.perf_counter() - t0
        out.print(_servers_panel(options, redis_server, postgres, rows, setup_s))

        hot = popularity(options)
        plan = read_plan(options, hot)
        with Progress(
            TextColumn("reads"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out,
            transient=True,
        ) as bar:
            task = bar.add_task("reads", total=len(plan))
            workload = await _run_workload(
                cache,
                db,
                plan,
                options.concurrency,
                lambda done: bar.update(task, completed=done),
            )
        out.print(_workload_panel(workload, options))

        first, second = tenants[0], tenants[1]
        encryption = await _encryption_scene(cache, db, first, hot[first][0])
        out.print(_encryption_panel(encryption))
        logs: list[str] = []
        tamper = await _tamper_scene(cache, db, first, second, hot[first][0], logs)
        out.print(_checks_panel("Tamper-proof entries", tamper.checks, logs))
        race = await _race_scene(cache, db, first, hot[first][-1])
        out.print(_checks_panel("Stale fill after an invalidation is rejected", race.checks, []))
    result = DemoResult(
        options, redis_address, postgres_address, rows, setup_s,
        workload, encryption, tamper, race,
    )  # fmt: skip
    passed = sum(c.passed for c in result.checks)
    style = "green" if result.ok else "bold red"
    out.print(
        f"[{style}]{passed}/{len(result.checks)} checks passed[/]; servers stopped; "
        f"total {time.perf_counter() - t0:.1f} s"
    )
    return result


# --------------------------------------------------------------------------- rendering


def _duration(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs"
    return f"{ns / 1_000_000:.2f} ms"


def _servers_panel(
    options: DemoOptions, redis: RedisServer, postgres: PostgresServer, rows: int, setup_s: float
) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_row("Redis", f"{redis.binaries.version_string} at {redis.host}:{redis.port}")
    grid.add_row(
        "PostgreSQL",
        f"{postgres.binaries.version_string} at {postgres.host}:{postgres.port}, "
        f"database {DATABASE}",
    )
    grid.add_row(
        "Data",
        f"{rows} customers: {options.customers} for each of {', '.join(options.tenant_names())}",
    )
    grid.add_row("Ready in", f"{setup_s:.1f} s (ephemeral servers, stopped on exit)")
    return Panel(grid, title="thorbis-cache demo", title_align="left", expand=False)


def _workload_panel(w: WorkloadResult, options: DemoOptions) -> Panel:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("get_or_load calls")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    for label, count, lat in (
        ("hits", w.hits, w.hit_latency),
        ("misses (loader ran)", w.misses, w.miss_latency),
        ("coalesced (waited)", w.coalesced, w.coalesced_latency),
    ):
        share = f"{count / w.reads:.1%}"
        table.add_row(label, str(count), share, _duration(lat.p50_ns), _duration(lat.p99_ns))
    table.add_section()
    for label, lat in (
        ("then warm cache.get", w.warm_get_latency),
        ("anchor: raw GET", w.raw_get_latency),
    ):
        table.add_row(
            f"[dim]{label}[/]", f"[dim]{lat.count}[/]", "",
            f"[dim]{_duration(lat.p50_ns)}[/]", f"[dim]{_duration(lat.p99_ns)}[/]",
        )  # fmt: skip
    m = w.metrics
    summary = (
        f"hit ratio [bold]{w.hit_ratio:.1%}[/] · {w.reads / w.elapsed_s:,.0f} reads/s "
        f"in {w.elapsed_s:.1f} s\n"
        f"PostgreSQL: {w.db_queries} queries for {w.reads} reads "
        f"({w.distinct_keys} distinct keys) = [bold]{w.queries_saved}[/] saved\n"
        f"cache.metrics: hits {m['hits']:.0f} · misses {m['misses']:.0f} · "
        f"loads {m['loads']:.0f} · coalesced {m['coalesced']:.0f}"
    )
    title = (
        f"{w.reads} reads · Zipf s={options.zipf:g} · {options.tenants} tenants x "
        f"{options.customers} customers · {options.concurrency} readers"
    )
    return Panel(Group(table, summary), title=title, title_align="left", expand=False)


def _hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for start in range(0, len(data), width):
        chunk = data[start : start + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)


def _mark(check: Check) -> str:
    mark = "[green]✓[/]" if check.passed else "[bold red]✗[/]"
    detail = f" [dim]({escape(check.detail)})[/]" if check.detail else ""
    return f"{mark} {escape(check.name)}{detail}"


def _encryption_panel(e: EncryptionResult) -> Panel:
    flags = e.raw[3]
    names = [name for flag, name in _FLAG_NAMES if flags & flag]
    header = (
        f"[bold]{escape(e.redis_key)}[/]  {len(e.raw)} bytes, first 64:\n"
        f"[dim]magic TC, format {e.raw[2]}, flags {'+'.join(names) or 'none'}, "
        f"key id {escape(e.key_id)}, 12-byte nonce, then AES-256-GCM ciphertext + tag "
        f"(AAD = the Redis key)[/]"
    )
    body = Group(header, _hexdump(e.raw[:64]), *(_mark(c) for c in e.checks))
    return Panel(body, title="An encrypted entry as stored", title_align="left", expand=False)


def _checks_panel(title: str, checks: Sequence[Check], logs: Sequence[str]) -> Panel:
    lines = [_mark(c) for c in checks]
    lines += [f"[dim]logged: {escape(line)}[/]" for line in logs]
    return Panel("\n".join(lines), title=title, title_align="left", expand=False)


# --------------------------------------------------------------------------- command


def command(
    tenants: Annotated[int, typer.Option(help="Number of tenants (at least 2).")] = 3,
    customers: Annotated[int, typer.Option(help="Customers per tenant.")] = 1000,
    reads: Annotated[int, typer.Option(help="get_or_load calls in the workload.")] = 20000,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of customer popularity.")] = 1.1,
    seed: Annotated[int, typer.Option(help="Seed of the data set and the workload.")] = 7,
    concurrency: Annotated[int, typer.Option(help="Concurrent readers.")] = 32,
) -> None:
    """Run the cache end to end on ephemeral Redis and PostgreSQL servers.

    Loads a multi-tenant customers table, runs a Zipf read workload through an
    encrypted cache, then shows tamper detection and stale-fill prevention.
    \f
    (click shows the help text up to the form feed above; the rest is for readers.)

    :param tenants: see :class:`DemoOptions` for this and the other options.
    :param customers: customers per tenant.
    :param reads: ``get_or_load`` calls of the workload.
    :param zipf: Zipf exponent of customer popularity.
    :param seed: seed of the data set and the workload.
    :param concurrency: concurrent readers.
    :raises ConfigurationError: an option is out of range.
    :raises DemoFailure: a check failed (the report shows which).
    """
    options = DemoOptions(tenants, customers, reads, zipf, seed, concurrency)
    result = asyncio.run(run_demo(options, console=Console(highlight=False)))
    if not result.ok:
        failed = [c.name for c in result.checks if not c.passed]
        raise DemoFailure(f"{len(failed)} demo check(s) failed: {'; '.join(failed)}")
