"""The reliable invalidation queue and its dead letters against real Redis: every test
body runs on a single server and on a 3-master Cluster (``thorbis_redis_url``)."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.cli import app as cli_app
from thorbis_cache.invalidation.deadletters import DeadLetters
from thorbis_cache.invalidation.queue import (
    InvalidationJob,
    InvalidationQueue,
    InvalidJobError,
    QueueSettings,
)
from thorbis_cache.store.redis_store import RedisStore

LABEL: KeySchema[str] = KeySchema("q.label", str, params={"name": str}, ttl=300)
PREFIX = "tc"
FAST_RETRY = QueueSettings(max_attempts=3, backoff_base_ms=1, backoff_max_ms=1)


class CacheInvalidator:
    """A real handler: keys through ``Cache.delete`` (or ``invalidate`` for a cascade),
    tags through ``Cache.invalidate_tags``. ``broken`` makes it fail like a handler
    whose Redis call or rule failed."""

    def __init__(self, cache: Cache, *, stop_after: int = 0,
                 stop: asyncio.Event | None = None) -> None:
        self.cache = cache
        self.jobs: list[InvalidationJob] = []
        self.broken: str | None = None
        self._stop_after = stop_after
        self._stop = stop

    async def apply(self, job: InvalidationJob) -> None:
        self.jobs.append(job)
        if self._stop is not None and len(self.jobs) >= self._stop_after:
            self._stop.set()
        if self.broken:
            raise RuntimeError(self.broken)
        keys = [self.cache.parse_key(k) for k in job.keys]
        if job.cascade:
            await self.cache.invalidate(*keys, cascade=True)
        elif keys:
            await self.cache.delete(*keys)
        if job.tags:
            await self.cache.invalidate_tags(job.tenant, job.tags, cascade=job.cascade)


class Hang:
    """A handler that never finishes: its consumer is killed mid-job."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def apply(self, job: InvalidationJob) -> None:
        self.started.set()
        await asyncio.Event().wait()


@pytest.fixture
async def store(thorbis_redis_url: str) -> AsyncIterator[RedisStore]:
    async with RedisStore.from_url(thorbis_redis_url) as s:
        yield s


@pytest.fixture
async def cache(store: RedisStore) -> AsyncIterator[Cache]:
    registry = SchemaRegistry()
    registry.register(LABEL, owner="tests")
    async with Cache(store, registry) as c:
        yield c


def queue(store: RedisStore, consumer: str, settings: QueueSettings | None = None
          ) -> InvalidationQueue:
    return InvalidationQueue(store, PREFIX, consumer=consumer, settings=settings)


def job_for(cache: Cache, *names: str, tenant: str = "acme") -> InvalidationJob:
    return InvalidationJob(tenant, keys=[cache.redis_key(LABEL.key(tenant, name=n))
                                         for n in names])


async def pending(q: InvalidationQueue) -> int:
    summary = await q.store.command("XPENDING", q.keys.stream, q.group)
    return int(summary["pending"])


async def xlen(store: RedisStore, key: str) -> int:
    return int(await store.command("XLEN", key))


async def fail_until_dead(q: InvalidationQueue, handler: CacheInvalidator,
                          letters: DeadLetters) -> None:
    """Run rounds until the dead-letter stream holds an entry (bounded)."""
    for _ in range(200):
        await q.run_once(handler)
        if await letters.count():
            return
        await asyncio.sleep(0.005)  # the 1 ms backoff, so the sweep retries
    raise AssertionError("never dead-lettered")


# --------------------------------------------------------------------------- consume


async def test_enqueued_job_is_applied_once_and_acknowledged(
    store: RedisStore, cache: Cache
) -> None:
    key = LABEL.key("acme", name="x")
    await cache.set(key, "cached")
    q = queue(store, "a")
    await q.ensure_group()
    await q.ensure_group()  # BUSYGROUP is not an error
    await q.enqueue(job_for(cache, "x"))
    handler = CacheInvalidator(cache)

    assert await q.run_once(handler) == 1
    assert await q.run_once(handler) == 0
    assert [j.keys for j in handler.jobs] == [(cache.redis_key(key),)]
    assert await cache.get(key) is None
    assert await pending(q) == 0
    assert await xlen(store, q.keys.stream) == 0  # acknowledged entries are deleted
    assert q.counters.processed == 1


async def test_enqueue_refuses_a_key_of_another_tenant(store: RedisStore, cache: Cache) -> None:
    q = queue(store, "a")
    foreign = cache.redis_key(LABEL.key("globex", name="x"))
    with pytest.raises(InvalidJobError, match="globex"):
        await q.enqueue(InvalidationJob("acme", keys=[foreign]))
    with pytest.raises(InvalidJobError, match="neither keys nor tags"):
        InvalidationJob("acme")
    assert await store.command("EXISTS", q.keys.stream) == 0


async def test_entries_of_a_dead_consumer_are_claimed_and_processed_once(
    store: RedisStore, cache: Cache
) -> None:
    a = queue(store, "a")
    for name in ("1", "2", "3"):
        await a.enqueue(job_for(cache, name))
    hang = Hang()
    died = asyncio.create_task(a.consume(hang, count=2))
    await hang.started.wait()
    died.cancel()  # killed mid-job: two entries pending on "a", never acknowledged
    with pytest.raises(asyncio.CancelledError):
        await died
    assert await pending(a) == 2

    handler = CacheInvalidator(cache)
    patient = queue(store, "c")  # default claim_idle_ms: a live consumer's entries are safe
    assert await patient.sweep(handler) == 0

    b = queue(store, "b", QueueSettings(claim_idle_ms=1))
    await asyncio.sleep(0.01)  # let the abandoned entries idle past claim_idle_ms
    assert await b.run_once(handler) == 3
    assert sorted(j.keys[0][-1] for j in handler.jobs) == ["1", "2", "3"]
    assert b.counters.claimed == 2
    assert await pending(b) == 0
    assert await xlen(store, b.keys.stream) == 0
    assert await b.run_once(handler) == 0
    assert len(handler.jobs) == 3


async def test_a_job_that_keeps_killing_its_consumer_is_dead_lettered(
    store: RedisStore, cache: Cache
) -> None:
    a = queue(store, "a", QueueSettings(max_attempts=1))
    await a.enqueue(job_for(cache, "poison"))
    hang = Hang()
    died = asyncio.create_task(a.consume(hang))
    await hang.started.wait()
    died.cancel()
    with pytest.raises(asyncio.CancelledError):
        await died

    b = queue(store, "b", QueueSettings(max_attempts=1, claim_idle_ms=1))
    await asyncio.sleep(0.01)
    handler = CacheInvalidator(cache)
    assert await b.run_once(handler) == 1
    assert handler.jobs == []  # its one attempt was the one that died
    [letter] = await DeadLetters(store, PREFIX).list()
    assert letter.reason.startswith("ConsumerLost: delivered 2 times")
    assert letter.attempts == 1
    assert letter.tenant == "acme"
    assert await pending(b) == 0


def test_backoff_doubles_per_delivery_and_is_capped() -> None:
    s = QueueSettings(backoff_base_ms=100, backoff_max_ms=1000, claim_idle_ms=5000)
    assert [s.backoff_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert QueueSettings(backoff_max_ms=10**9, claim_idle_ms=700).backoff_ms(99) == 700


async def test_failed_job_waits_for_a_backoff_that_grows_with_its_deliveries(
    store: RedisStore, cache: Cache
) -> None:
    q = queue(store, "a", QueueSettings(backoff_base_ms=1000, backoff_max_ms=600_000,
                                        claim_idle_ms=600_000, max_attempts=10))
    entry = await q.enqueue(job_for(cache, "x"))
    handler = CacheInvalidator(cache)
    handler.broken = "database unreachable"
    assert await q.run_once(handler) == 1
    assert await q.run_once(handler) == 0  # 1 s backoff: not due yet
    assert len(handler.jobs) == 1
    assert await pending(q) == 1
    failures = await store.command("HGETALL", q.keys.failures)
    assert failures == {entry.encode(): b"RuntimeError: database unreachable"}

    async def age(idle_ms: int, deliveries: int) -> None:
        # Pretend time passed: XCLAIM sets the idle time and the delivery count.
        await store.command("XCLAIM", q.keys.stream, q.group, "a", 0, entry,
                            "IDLE", idle_ms, "RETRYCOUNT", deliveries)

    await age(5000, 4)  # 4 deliveries: due after 8 s
    assert await q.run_once(handler) == 0
    await age(8000, 4)
    assert await q.run_once(handler) == 1
    assert len(handler.jobs) == 2
    assert q.counters.retried == 1


async def test_failing_job_is_retried_then_dead_lettered_then_replayed(
    store: RedisStore, cache: Cache
) -> None:
    q = queue(store, "a", FAST_RETRY)
    letters = DeadLetters(store, PREFIX)
    key = LABEL.key("acme", name="x")
    await q.enqueue(job_for(cache, "x"))
    handler = CacheInvalidator(cache)
    handler.broken = "database unreachable"

    await fail_until_dead(q, handler, letters)
    assert len(handler.jobs) == 3  # max_attempts
    assert q.counters.retried == 2
    [letter] = await letters.list()
    assert letter.reason == "RuntimeError: database unreachable"
    assert letter.attempts == 3
    assert letter.tenant == "acme"
    assert letter.consumer == "a"
    assert letter.job is not None
    assert letter.job.keys == (cache.redis_key(key),)
    assert await letters.get(letter.id) == letter
    assert await pending(q) == 0
    assert await xlen(store, q.keys.stream) == 0
    assert await store.command("EXISTS", q.keys.failures) == 0
    for _ in range(3):
        assert await q.run_once(handler) == 0  # nothing left to retry
    assert len(handler.jobs) == 3

    handler.broken = None
    await cache.set(key, "cached")
    report = await letters.replay([letter.id, "1-1"])
    assert list(report.replayed) == [letter.id]
    assert report.missing == ("1-1",)
    assert await letters.count() == 0
    assert await q.run_once(handler) == 1
    assert handler.jobs[-1].replays == 1
    assert handler.jobs[-1].first_enqueued_at == letter.job.first_enqueued_at
    assert await cache.get(key) is None
    assert await pending(q) == 0
    assert (await letters.replay([letter.id])).missing == (letter.id,)  # replayed once only


async def test_malformed_entries_are_dead_lettered_at_once(
    store: RedisStore, cache: Cache
) -> None:
    q = queue(store, "a")
    await q.ensure_group()
    other = cache.redis_key(LABEL.key("globex", name="x"))
    foreign = json.dumps({"tenant": "acme", "keys": [other]})
    await store.command("XADD", q.keys.stream, "*", "v", "1", "job", b"\xff{not json")
    await store.command("XADD", q.keys.stream, "*", "v", "99", "job", b"{}")
    await store.command("XADD", q.keys.stream, "*", "v", "1", "job", foreign)
    await store.command("XADD", q.keys.stream, "*", "v", "1", "job", '{"tenant": "a:b"}')
    handler = CacheInvalidator(cache)

    assert await q.run_once(handler) == 4
    assert handler.jobs == []
    letters = await DeadLetters(store, PREFIX).list()
    assert len(letters) == 4
    assert all(x.reason.startswith("malformed") for x in letters)
    assert all(x.attempts == 1 and x.job is None for x in letters)
    assert "globex" in letters[2].reason
    assert letters[0].payload == {b"v": b"1", b"job": b"\xff{not json"}
    assert q.counters.malformed == 4
    assert await pending(q) == 0
    report = await DeadLetters(store, PREFIX).replay_all()
    assert len(report.malformed) == 4
    assert not report.replayed


async def test_stream_length_is_bounded_and_trimmed_pending_entries_are_counted(
    store: RedisStore, cache: Cache
) -> None:
    settings = QueueSettings(maxlen=100, claim_idle_ms=1)
    q = queue(store, "a", settings)
    await q.ensure_group()
    for i in range(10):
        await q.enqueue(job_for(cache, str(i)))
    hang = Hang()
    died = asyncio.create_task(q.consume(hang, count=10))
    await hang.started.wait()
    died.cancel()
    with pytest.raises(asyncio.CancelledError):
        await died
    for i in range(1000):
        await q.enqueue(job_for(cache, str(i)))
    length = await xlen(store, q.keys.stream)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default).
    assert 100 <= length <= 300

    await asyncio.sleep(0.01)
    handler = CacheInvalidator(cache)
    await q.sweep(handler)
    assert q.counters.lost == 10  # the pending ones trimmed before processing
    assert handler.jobs == []
    assert await pending(q) == 0


async def test_two_consumers_share_the_work_without_double_processing(
    store: RedisStore, cache: Cache
) -> None:
    settings = QueueSettings(count=10, block_ms=50, sweep_interval=0.05)
    first, second = queue(store, "a", settings), queue(store, "b", settings)
    await first.ensure_group()
    names = [str(i) for i in range(200)]
    for name in names:
        await first.enqueue(job_for(cache, name))
    stop = asyncio.Event()
    handler = CacheInvalidator(cache, stop_after=len(names), stop=stop)
    # Each run() acknowledges its batch before it looks at ``stop`` again.
    await asyncio.wait_for(asyncio.gather(first.run(handler, stop), second.run(handler, stop)),
                           timeout=60)
    seen = collections.Counter(j.keys[0] for j in handler.jobs)
    assert sorted(seen) == sorted(cache.redis_key(LABEL.key("acme", name=n)) for n in names)
    assert set(seen.values()) == {1}
    assert first.counters.processed > 0
    assert second.counters.processed > 0
    assert await pending(first) == 0


# --------------------------------------------------------------------------- CLI


async def cli(*args: str, url: str) -> Result:
    # The command runs its own event loop (asyncio.run): give it a thread of its own.
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli_app,
                                   ["deadletters", *args, "--redis-url", url, "--prefix", PREFIX])


async def test_cli_lists_shows_replays_and_purges_dead_letters(
    store: RedisStore, cache: Cache, thorbis_redis_url: str
) -> None:
    q = queue(store, "a", QueueSettings(max_attempts=1))
    letters = DeadLetters(store, PREFIX)
    handler = CacheInvalidator(cache)
    handler.broken = "rule exploded"
    await q.enqueue(job_for(cache, "x"))
    await q.enqueue(job_for(cache, "y", tenant="globex"))
    await q.run_once(handler)
    assert await letters.count() == 2

    listed = await cli("list", "--json", url=thorbis_redis_url)
    assert listed.exit_code == 0, listed.output
    rows: list[dict[str, Any]] = json.loads(listed.output)["dead_letters"]
    assert [(r["tenant"], r["reason"], r["attempts"]) for r in rows] == [
        ("acme", "RuntimeError: rule exploded", 1), ("globex", "RuntimeError: rule exploded", 1)]
    table = await cli("list", url=thorbis_redis_url)
    assert table.exit_code == 0
    assert "rule exploded" in table.output
    assert rows[0]["id"] in table.output
    shown = await cli("show", rows[0]["id"], url=thorbis_redis_url)
    assert shown.exit_code == 0
    assert json.loads(shown.output)["job"]["tenant"] == "acme"
    assert (await cli("show", "1-1", url=thorbis_redis_url)).exit_code == 1
    assert (await cli("replay", url=thorbis_redis_url)).exit_code == 1  # ids or --all

    replayed = await cli("replay", rows[0]["id"], url=thorbis_redis_url)
    assert replayed.exit_code == 0, replayed.output
    assert "1 dead letter(s) replayed" in replayed.output
    handler.broken = None
    assert await q.run_once(handler) == 1
    assert handler.jobs[-1].tenant == "acme"
    assert handler.jobs[-1].replays == 1
    assert [x.tenant for x in await letters.list()] == ["globex"]

    again = await cli("replay", rows[0]["id"], url=thorbis_redis_url)
    assert again.exit_code == 1
    assert "no dead letter" in again.output
    everything = await cli("replay", "--all", url=thorbis_redis_url)
    assert everything.exit_code == 0
    assert "1 dead letter(s) replayed" in everything.output
    assert await q.run_once(handler) == 1

    handler.broken = "still broken"
    await q.enqueue(job_for(cache, "z"))
    await q.run_once(handler)
    assert (await cli("purge", url=thorbis_redis_url)).exit_code == 1  # no --yes: aborted
    assert await letters.count() == 1
    purged = await cli("purge", "--yes", url=thorbis_redis_url)
    assert purged.exit_code == 0
    assert "1 dead letter(s) deleted" in purged.output
    assert await letters.count() == 0
