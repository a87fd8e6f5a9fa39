"""The multiplexed transport (:mod:`thorbis_cache.transport`) against a real server:
replies in order whatever the callers do, pipelined writes, lost connections, scripts.
The property over every topology with chaos is tests/test_wrong_reply.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest
import redis
import redis.exceptions as rexc
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script
from thorbis_cache.testing.servers import RedisCluster, RedisServer
from thorbis_cache.transport import MultiplexedConnection, pack_command


async def _open(server: RedisServer) -> MultiplexedConnection:
    return await MultiplexedConnection.open("127.0.0.1", server.port)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=20),
                          st.integers(-2**63, 2**63 - 1),
                          st.floats(allow_nan=False, allow_infinity=False)),
                min_size=1, max_size=6))
def test_commands_are_packed_as_redis_py_packs_them(args: list[object]) -> None:
    packed = b"".join(Connection().pack_command("SET", *args))
    assert pack_command("SET", *args) == packed


def test_bools_and_unknown_types_are_refused_like_redis_py() -> None:
    with pytest.raises(rexc.DataError):
        pack_command("SET", "k", True)
    with pytest.raises(rexc.DataError):
        pack_command("SET", "k", object())


async def test_cancelled_callers_never_shift_the_replies(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    conn = await _open(thorbis_redis_server)
    try:
        for i in range(50):
            await conn.request(pack_command("SET", f"k{i}", f"v{i}"))
        # Every other caller gives up after its request was written: the replies still
        # reach the right callers, and the dropped ones are consumed in their turn.
        futures = [conn.request(pack_command("GET", f"k{i}")) for i in range(50)]
        for i in range(0, 50, 2):
            futures[i].cancel()
        got = await asyncio.gather(*futures[1::2])
        assert got == [f"v{i}".encode() for i in range(1, 50, 2)]
        assert await conn.request(pack_command("GET", "k7")) == b"v7"
        assert conn.pending == 0
    finally:
        conn.close()


async def test_requests_of_one_loop_turn_leave_in_one_write(
        thorbis_redis_server: RedisServer) -> None:
    conn = await _open(thorbis_redis_server)
    before = redis.Redis(port=thorbis_redis_server.port)
    try:
        reads = int(before.info("stats")["total_reads_processed"])
        replies = await asyncio.gather(*(conn.request(pack_command("PING"))
                                         for _ in range(200)))
        assert replies == [b"PONG"] * 200
        # 200 commands, far fewer reads by the server (one write of ours can still
        # arrive in a few segments; redis-py sends one write per command).
        during = int(before.info("stats")["total_reads_processed"]) - reads
        assert during < 20, during
    finally:
        conn.close()
        before.close()


async def test_error_replies_are_redis_py_exceptions_for_their_caller_only(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    conn = await _open(thorbis_redis_server)
    try:
        await conn.request(pack_command("HSET", "h", "f", "v"))
        wrong = conn.request(pack_command("GET", "h"))
        fine = conn.request(pack_command("HGET", "h", "f"))
        noscript = conn.request(pack_command("EVALSHA", "0" * 40, 0))
        with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
            await wrong
        assert await fine == b"v"
        with pytest.raises(rexc.NoScriptError):
            await noscript
    finally:
        conn.close()


async def test_a_killed_connection_fails_its_callers_and_the_store_reconnects(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    admin = redis.Redis(port=thorbis_redis_server.port)
    conn = await _open(thorbis_redis_server)
    try:
        admin.execute_command("CLIENT", "PAUSE", 300)
        stuck = conn.request(pack_command("GET", "x"))
        await asyncio.sleep(0.05)
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(rexc.ConnectionError):
            await stuck
        assert not conn.usable
        with pytest.raises(rexc.ConnectionError):
            conn.request(pack_command("GET", "x"))
    finally:
        conn.close()
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()

    store = RedisStore.from_url(thorbis_redis_server.url)
    try:
        await store.set("tc:{t}:k", b"before", 60_000)
        assert store.handovers == {"redirect": 0, "connection": 0}
        thorbis_redis_server.restart()
        # The dead connection is noticed (EOF) and replaced on the next call; a call
        # that met it was carried by redis-py instead, and counted.
        assert await store.get("tc:{t}:k") in (b"before", None)
        await store.set("tc:{t}:k", b"after", 60_000)
        assert await store.get("tc:{t}:k") == b"after"
        assert store.handovers["redirect"] == 0
    finally:
        await store.aclose()


async def test_a_call_whose_connection_is_killed_is_handed_to_redis_py_and_counted(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    admin = redis.Redis(port=thorbis_redis_server.port)
    store = RedisStore.from_url(thorbis_redis_server.url)
    try:
        await store.set("tc:{t}:k", b"kept", 60_000)
        assert store.handovers == {"redirect": 0, "connection": 0}
        admin.execute_command("CLIENT", "PAUSE", 300)
        call = asyncio.create_task(store.get("tc:{t}:k"))
        await asyncio.sleep(0.05)  # written, its reply owed
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert await call == b"kept"  # carried by redis-py once the pause ends
        assert store.handovers == {"redirect": 0, "connection": 1}
        assert await store.get("tc:{t}:k") == b"kept"  # a new multiplexed connection
        assert store.handovers == {"redirect": 0, "connection": 1}
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await store.aclose()


async def test_a_stalled_server_times_calls_out_and_later_replies_are_dropped(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    admin = redis.Redis(port=thorbis_redis_server.port)
    store = RedisStore.from_url(thorbis_redis_server.url, timeout=0.1)
    try:
        await store.set("tc:{t}:a", b"A", 60_000)
        await store.set("tc:{t}:b", b"B", 60_000)
        admin.execute_command("CLIENT", "PAUSE", 400, "ALL")
        results = await asyncio.gather(*(store.get("tc:{t}:a") for _ in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results
        await asyncio.sleep(0.5)  # the server answers the abandoned GETs now
        assert await store.get("tc:{t}:b") == b"B"
        assert await store.mget(["tc:{t}:b", "tc:{t}:a"]) == [b"B", b"A"]
    finally:
        with contextlib.suppress(Exception):
            admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await store.aclose()


async def test_scripts_fall_back_to_eval_after_a_script_flush(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    admin = redis.Redis(port=thorbis_redis_server.port)
    store = RedisStore.from_url(thorbis_redis_server.url)
    script = Script("echo", "return {KEYS[1], ARGV[1]}")
    try:
        assert await store.run(script, ["tc:{t}:s"], ["x"]) == [b"tc:{t}:s", b"x"]
        admin.script_flush()
        assert await store.run(script, ["tc:{t}:s"], ["y"]) == [b"tc:{t}:s", b"y"]
    finally:
        admin.close()
        await store.aclose()


async def test_the_driver_path_gives_the_same_answers(thorbis_redis_url: str) -> None:
    """Every topology, both transports: the same bytes for the same calls."""
    fast = RedisStore.from_url(thorbis_redis_url)
    plain = RedisStore.from_url(thorbis_redis_url, multiplexed=False)
    try:
        keys = [f"tc:{{t{i % 3}}}:k{i}" for i in range(30)]
        for i, key in enumerate(keys):
            await (fast if i % 2 else plain).set(key, f"v{i}".encode(), 60_000)
        assert await fast.mget(keys) == await plain.mget(keys)
        for key in keys:
            assert await fast.get(key) == await plain.get(key)
        assert await fast.get("tc:{t}:absent") is None
        # DEL: keys of three slots (three calls on a Cluster), some absent, some twice.
        doomed = [*keys[:10], "tc:{t0}:absent", keys[0]]
        assert await fast.delete(doomed) == 10
        assert await plain.delete(keys[10:20]) == 10
        assert await fast.mget(keys) == await plain.mget(keys) == [None] * 20 + [
            f"v{i}".encode() for i in range(20, 30)]
        assert await fast.delete([]) == 0
    finally:
        await fast.aclose()
        await plain.aclose()


def _calls(node: RedisServer, command: str) -> int:
    stats = node.command("INFO", "commandstats").decode()
    for line in stats.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.parametrize("command", ["mget", "unlink"])
async def test_a_call_over_many_slots_sends_every_slots_command_at_once(
        thorbis_cluster_redis_url: str, thorbis_redis_cluster: RedisCluster,
        command: str) -> None:
    """With one master paused, the other masters still receive their slots' commands:
    nothing waits for the first slot's reply before the next slot's command is sent."""
    cluster = thorbis_redis_cluster
    # One key per master, the paused master's first (so a sequential store would stop there).
    by_master: dict[int, str] = {}
    for i in itertools.count():
        key = f"tc:{{t{i}}}:k"
        by_master.setdefault(cluster.master_for_key(key), key)
        if len(by_master) == 3:
            break
    paused, *others = by_master
    keys = [by_master[paused], *(by_master[m] for m in others)]
    store = RedisStore.from_url(thorbis_cluster_redis_url)
    try:
        for key in keys:
            await store.set(key, key.encode(), 60_000)
        before = {m: _calls(cluster.nodes[m], command) for m in others}
        cluster.nodes[paused].command("CLIENT", "PAUSE", 500, "ALL")
        call = asyncio.create_task(store.mget(keys) if command == "mget" else
                                   store.delete(keys))
        await asyncio.sleep(0.2)
        assert not call.done()  # the paused master's reply is still owed
        assert all(_calls(cluster.nodes[m], command) == before[m] + 1 for m in others)
        expected = [key.encode() for key in keys] if command == "mget" else 3
        assert await call == expected
        assert store.handovers == {"redirect": 0, "connection": 0}
    finally:
        cluster.nodes[paused].command("CLIENT", "UNPAUSE")
        await store.aclose()
