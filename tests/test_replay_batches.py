"""Invalidations over many tenants: a worker batch spans every tenant whose rows
changed, so its failover log rows, replay markers, WAITs and audit records are written
for all of them at once, on every topology (one WAIT per master, not one per tenant),
and a tenant whose marker shows lost writes is still replayed, alone; a host's delete
over many tenants waits once per master too, and returns with the deletes on every
replica."""

from __future__ import annotations

import itertools

import asyncpg
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.invalidation.replay import FailoverReplay
from thorbis_cache.postgres import audit, replay_log
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.testing.loop_thread import run_async
from thorbis_cache.testing.servers import RedisServer

NOTE: KeySchema[str] = KeySchema("rb.note", str, params={"id": int}, ttl=300)
TENANTS = [f"t{i:02d}" for i in range(24)]


def _registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    return registry


def _waits(servers: list[RedisServer]) -> int:
    """WAIT commands the servers have executed so far."""
    total = 0
    for server in servers:
        for line in server.command("INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_wait:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def _data_servers(request: pytest.FixtureRequest, url: str) -> tuple[list[RedisServer], int]:
    """The topology's data servers, and the masters a batch over every tenant waits on."""
    if url.startswith("redis+cluster://"):
        cluster = request.getfixturevalue("thorbis_redis_cluster")
        masters = {cluster.master_for_key(f"{{{tenant}}}") for tenant in TENANTS}
        return cluster.nodes, len(masters)
    if url.startswith("redis+sentinel://"):
        return request.getfixturevalue("thorbis_redis_sentinel").servers, 1
    return [request.getfixturevalue("thorbis_redis_server")], 0  # no replica: no WAIT


def _replicas_of(request: pytest.FixtureRequest, url: str, key: str) -> list[RedisServer]:
    """The replicas of the master serving ``key``."""
    if url.startswith("redis+cluster://"):
        cluster = request.getfixturevalue("thorbis_redis_cluster")
        return [cluster.nodes[i] for i in cluster.replicas_of(cluster.master_for_key(key))]
    if url.startswith("redis+sentinel://"):
        return list(request.getfixturevalue("thorbis_redis_sentinel").replicas())
    return []


async def test_a_batch_over_many_tenants_marks_each_and_waits_once_per_master(
    request: pytest.FixtureRequest, thorbis_redis_url: str, core_conn: asyncpg.Connection
) -> None:
    servers, masters = _data_servers(request, thorbis_redis_url)
    async with Cache.from_url(thorbis_redis_url, _registry()) as cache:
        replay = FailoverReplay(cache)
        bodies = {tenant: [NOTE.key(tenant, id=1).body] for tenant in TENANTS}
        before = _waits(servers)
        async with core_conn.transaction():
            ids = await replay.applied(core_conn, {t: (bodies[t], []) for t in TENANTS})
        assert _waits(servers) - before == masters
        assert sorted(ids) == TENANTS
        assert len(set(ids.values())) == len(TENANTS)
        for tenant in TENANTS:
            marker = await cache.store.command("GET", replay.marker_key(tenant))
            assert int(marker) == ids[tenant]
        logged = await core_conn.fetch(
            "SELECT id, tenant, keys, tags FROM thorbis.invalidation_log ORDER BY id")
        assert [(r["id"], r["tenant"], r["keys"], r["tags"]) for r in logged] == [
            (ids[t], t, bodies[t], []) for t in sorted(ids, key=ids.__getitem__)]

        # One tenant's marker is lost (a failover that undid its writes) while its
        # value came back: the next batch replays that tenant, and only that one.
        lost = TENANTS[5]
        stale = NOTE.key(lost, id=1)
        await cache.set(stale, "resurrected")
        await cache.store.command("DEL", replay.marker_key(lost))
        async with core_conn.transaction():
            again = await replay.applied(core_conn, {t: ([], ["rb.tag"]) for t in TENANTS})
        assert replay.replays == 1
        assert await cache.get(stale) is None
        for tenant in TENANTS:
            marker = await cache.store.command("GET", replay.marker_key(tenant))
            assert int(marker) == again[tenant] > ids[tenant]


async def test_a_delete_over_many_tenants_waits_once_per_master_for_every_replica(
    request: pytest.FixtureRequest, thorbis_redis_url: str
) -> None:
    servers, masters = _data_servers(request, thorbis_redis_url)
    async with Cache.from_url(thorbis_redis_url, _registry()) as cache:
        keys = [NOTE.key(tenant, id=1) for tenant in TENANTS]
        for key in keys:
            await cache.set(key, "old")
        await cache.store.sync_replicas_each([cache.sync_key(t) for t in TENANTS])
        before, timeouts = _waits(servers), cache.store.replication_timeouts
        assert await cache.delete(*keys) == len(keys)
        assert _waits(servers) - before == masters
        if cache.store.replication_timeouts != timeouts:
            return  # a WAIT outlasted store.wait_timeout (a loaded machine): no promise
        # Returned: every replica of each key's master has its delete already.
        checked = 0
        for key in keys:
            for replica in _replicas_of(request, thorbis_redis_url, cache.redis_key(key)):
                with redis.Redis(port=replica.port, single_connection_client=True) as raw:
                    if thorbis_redis_url.startswith("redis+cluster://"):
                        raw.execute_command("READONLY")  # a cluster replica answers reads
                    assert raw.exists(cache.redis_key(key)) == 0
                    checked += 1
        assert checked == (0 if masters == 0 else len(keys) * (2 if masters == 1 else 1))


async def test_an_empty_batch_logs_nothing(thorbis_redis_url: str,
                                           core_conn: asyncpg.Connection) -> None:
    async with Cache.from_url(thorbis_redis_url, _registry()) as cache, core_conn.transaction():
        assert await FailoverReplay(cache).applied(core_conn, {}) == {}
    assert await core_conn.fetchval("SELECT count(*) FROM thorbis.invalidation_log") == 0


async def test_audit_records_appended_together_chain_like_single_ones(
        core_conn: asyncpg.Connection) -> None:
    async with core_conn.transaction():
        await audit.append(core_conn, "invalidation", "acme", {"keys": 1})
    async with core_conn.transaction():
        many = await audit.append_many(
            core_conn, "invalidation", [(tenant, {"keys": i}) for i, tenant in enumerate(TENANTS)])
    async with core_conn.transaction():
        await audit.append(core_conn, "mv_refresh", None, {"view": "v"})
    assert [r.id for r in many] == list(range(2, 2 + len(TENANTS)))
    for before, after in itertools.pairwise(many):
        assert after.prev_hash == before.hash
    assert await audit.verify(core_conn) == audit.VerifyResult(True, len(TENANTS) + 2)
    # A record in the middle of a batch edited: the chain breaks exactly there.
    await core_conn.execute("UPDATE thorbis.audit_log SET detail = '{\"keys\": 99}' WHERE id = 7")
    result = await audit.verify(core_conn)
    assert (result.ok, result.broken_id) == (False, 7)
    async with core_conn.transaction():
        assert await audit.append_many(core_conn, "invalidation", []) == []


def test_log_rows_keep_their_keys_and_tags_exactly(thorbis_pg_dsn: str) -> None:
    """Whatever the key bodies and tags hold (quotes, braces, backslashes, any script),
    one statement's rows give them back in order."""
    run_async(lambda: migrate(thorbis_pg_dsn))
    # Any text PostgreSQL stores: not NUL, not a lone surrogate (not UTF-8 at all).
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=12)

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
                           st.tuples(st.lists(text, max_size=5), st.lists(text, max_size=3)),
                           min_size=1, max_size=6))
    def check(batch: dict[str, tuple[list[str], list[str]]]) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(thorbis_pg_dsn)
            try:
                async with conn.transaction():
                    ids = await replay_log.append_many(
                        conn, [(t, keys, tags) for t, (keys, tags) in batch.items()])
                    assert sorted(ids) == sorted(batch)
                    assert await replay_log.last_ids(conn, [*batch, "absent"]) == ids
                    for tenant, (keys, tags) in batch.items():
                        logged = await replay_log.since(conn, tenant, ids[tenant] - 1, 60)
                        assert [(e.keys, e.tags) for e in logged] == [
                            (tuple(keys), tuple(tags))]
                    raise _RollBack
            except _RollBack:
                pass
            finally:
                await conn.close()

        run_async(run)

    check()


class _RollBack(Exception):
    """Ends an example's transaction (each example starts from an empty log)."""
