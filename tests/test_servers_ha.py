"""The replicated test servers: a real Sentinel group and a Cluster with replicas.

Real redis-server processes, real faults (SIGKILL, SIGSTOP), checked with plain redis-py
rather than with the cache, so that these tests say what the servers do, not what the
store makes of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.servers import RedisCluster, RedisSentinelGroup, RedisServer

_T = TypeVar("_T")
SERVICE = "thorbis"

# --------------------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _replication(server: RedisServer) -> dict[str, Any]:
    return dict(redis.Redis(port=server.port).info("replication"))


def _direct(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5)


def _sentinel(group: RedisSentinelGroup, *ports: int) -> redis.asyncio.sentinel.Sentinel:
    addresses = [("127.0.0.1", port) for port in ports or group.sentinel_ports]
    return redis.asyncio.sentinel.Sentinel(addresses, socket_timeout=2.0)


async def _eventually(call: Callable[[], Awaitable[_T]], within: float = 10.0) -> _T:
    """``call()`` until it stops raising connection errors (a client finding the new
    master after a failover); bounded, so a client that never recovers fails the test."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- sentinel group


async def test_sentinel_group_agrees_and_replicates(
    thorbis_redis_sentinel: RedisSentinelGroup, thorbis_sentinel_redis_url: str
) -> None:
    group = thorbis_redis_sentinel
    ports = group.sentinel_ports
    nodes = ",".join(f"127.0.0.1:{port}" for port in ports)
    assert thorbis_sentinel_redis_url == f"redis+sentinel://{nodes}/{SERVICE}/0"
    assert len(set(ports)) == 3
    assert len(group.servers) == 3
    assert group.is_ok()
    master = group.master()
    replicas = group.replicas()
    assert master in group.servers
    assert replicas == [server for server in group.servers if server is not master]
    for port in ports:  # each sentinel on its own names the same master
        alone = _sentinel(group, port)
        assert await alone.discover_master(SERVICE) == ("127.0.0.1", master.port)
        await alone.aclose()

    sentinel = _sentinel(group)
    found = await sentinel.discover_slaves(SERVICE)
    assert sorted(found) == sorted(("127.0.0.1", replica.port) for replica in replicas)
    client = sentinel.master_for(SERVICE)
    assert await client.dbsize() == 0  # the fixture flushed it
    await client.set("k", "v")
    assert await client.wait(2, 2000) == 2
    for replica in replicas:
        assert _direct(replica).get("k") == b"v"
        assert _replication(replica)["master_port"] == master.port
    await client.aclose()
    await sentinel.aclose()


@pytest.mark.slow
async def test_sentinel_failover_then_the_old_master_rejoins_as_replica(
    thorbis_redis_sentinel: RedisSentinelGroup, thorbis_sentinel_redis_url: str
) -> None:
    group = thorbis_redis_sentinel
    sentinel = _sentinel(group)
    client = sentinel.master_for(SERVICE)
    await client.set("k", "before")
    assert await client.wait(2, 2000) == 2

    old = group.kill_master()
    assert not old.is_running
    new = group.wait_failover(old)
    assert new is not old
    assert group.master() is new
    assert await sentinel.discover_master(SERVICE) == ("127.0.0.1", new.port)
    # The same client finds the new master through the sentinels by itself.
    assert await _eventually(lambda: client.get("k")) == b"before"
    assert await client.set("k", "after")

    group.restart(old)
    info = _replication(old)
    assert (info["role"], info["master_port"], info["master_link_status"]) == (
        "slave",
        new.port,
        "up",
    )
    assert await client.wait(2, 2000) == 2
    assert _direct(old).get("k") == b"after"
    assert group.replicas() == [server for server in group.servers if server is not new]
    await client.aclose()
    await sentinel.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("cut", [True, False], ids=["cut-link", "bare-sigstop"])
async def test_sentinel_write_acknowledged_by_no_replica_across_a_failover(
    thorbis_redis_sentinel: RedisSentinelGroup, thorbis_sentinel_redis_url: str, cut: bool
) -> None:
    """Both replicas frozen, a write the master alone acknowledges, the master killed.

    With the replication link cut (freeze's default) the promoted replica never got the
    write: it is lost. A bare SIGSTOP does not stop the write: the kernel buffered it for
    the frozen replica, which applies it when thawed.
    """
    group = thorbis_redis_sentinel
    old = group.master()
    writer = _direct(old)
    writer.set("k", "before")
    assert writer.wait(2, 2000) == 2
    replicas = group.replicas()
    for replica in replicas:
        group.freeze(replica, cut_replication=cut)
    writer.set("k", "during")
    assert writer.wait(2, 200) == 0  # frozen replicas acknowledge nothing
    group.kill_master()
    for replica in replicas:
        group.thaw(replica)
    new = group.wait_failover(old)
    assert new in replicas
    assert _direct(new).get("k") == (b"before" if cut else b"during")


@pytest.mark.slow
async def test_sentinel_promotes_the_replica_that_has_the_write(
    thorbis_redis_sentinel: RedisSentinelGroup, thorbis_sentinel_redis_url: str
) -> None:
    """One replica frozen (link cut) misses a write; after the master dies the sentinels
    promote the other one, whose replication offset is ahead, and nothing is lost."""
    group = thorbis_redis_sentinel
    old = group.master()
    frozen, other = group.replicas()
    writer = _direct(old)
    writer.set("k", "before")
    assert writer.wait(2, 2000) == 2
    group.freeze(frozen)
    writer.set("k", "during")
    assert writer.wait(2, 200) == 1  # only the running replica acknowledges
    group.kill_master()
    group.thaw(frozen)
    new = group.wait_failover(old)
    assert new is other
    assert _direct(new).get("k") == b"during"
    # The frozen replica now follows the new master and has caught up.
    assert _replication(frozen)["master_port"] == new.port
    assert _direct(frozen).get("k") == b"during"


def test_sentinel_group_left_broken_by_a_test(thorbis_redis_sentinel: RedisSentinelGroup) -> None:
    group = thorbis_redis_sentinel
    group.freeze(group.sentinels[0])
    group.replicas()[0].kill()
    group.kill_master()
    assert not group.is_ok()


async def test_sentinel_group_is_repaired_for_the_next_test(
    thorbis_redis_sentinel: RedisSentinelGroup, thorbis_sentinel_redis_url: str
) -> None:
    group = thorbis_redis_sentinel
    assert group.is_ok()
    assert thorbis_sentinel_redis_url == group.url
    sentinel = _sentinel(group)
    client = sentinel.master_for(SERVICE)
    assert await client.dbsize() == 0
    assert await client.set("after-repair", "1")
    assert await client.wait(2, 2000) == 2
    await client.aclose()
    await sentinel.aclose()


def test_sentinel_group_stops_cleanly_even_when_frozen() -> None:
    with RedisSentinelGroup() as group:
        members = group.servers + group.sentinels
        pids = [member.pid for member in members]
        directory = group.dir
        assert all(pid is not None and _alive(pid) for pid in pids)
        assert {path.name for path in directory.iterdir()} == {
            "data-0", "data-1", "data-2", "sentinel-0", "sentinel-1", "sentinel-2",
        }  # fmt: skip
        assert (directory / "sentinel-0" / "sentinel.conf").is_file()
        group.freeze(group.master())
        group.freeze(group.sentinels[1])
        stopping = time.monotonic()
    # A frozen process would ignore SIGTERM until the 15 s SIGKILL fallback.
    assert time.monotonic() - stopping < 10
    assert not directory.exists()
    assert not [pid for pid in pids if pid is not None and _alive(pid)]
    group.stop()  # idempotent


def test_sentinel_group_start_failure_names_the_cause(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THORBIS_TMPDIR", str(tmp_path))
    group = RedisSentinelGroup(extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerStartError, match="no-such-directive"):
        group.start()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ServerStartError, match="not been started"):
        _ = group.url
    with pytest.raises(ValueError, match="service name"):
        RedisSentinelGroup(service="two words")


# --------------------------------------------------------------------------- replicated cluster


def _cluster_client(cluster: RedisCluster) -> redis.asyncio.cluster.RedisCluster:
    # Every node as a seed: node 0 may be the one a test kills.
    seeds = [ClusterNode("127.0.0.1", port) for port in cluster.ports]
    return redis.asyncio.cluster.RedisCluster(startup_nodes=seeds, socket_timeout=2.0)


def test_replicated_cluster_layout(thorbis_redis_cluster: RedisCluster) -> None:
    cluster = thorbis_redis_cluster
    assert (cluster.masters, cluster.replicas, len(cluster.nodes)) == (3, 1, 6)
    assert cluster.is_ok()
    for master in range(3):
        replica = 3 + master
        assert cluster.replicas_of(master) == [replica]
        assert cluster.replicas_of(cluster.nodes[replica]) == []
        info = _replication(cluster.nodes[replica])
        assert info["role"] == "slave"
        assert info["master_port"] == cluster.nodes[master].port
        assert info["master_link_status"] == "up"
        first, last = cluster._slot_ranges()[master]
        assert cluster.master_of_slot(first) == cluster.master_of_slot(last) == master
    for key in ("a", "b", "{user:1}:profile", "{user:1}:orders"):
        assert cluster.master_for_key(key) == cluster.master_of_slot(key_slot(key.encode()))
    assert cluster.master_for_key(b"a") == cluster.master_for_key("a")
    with pytest.raises(ValueError, match="slot"):
        cluster.master_of_slot(16384)


@pytest.mark.slow
async def test_cluster_failover_keeps_keys_and_the_old_master_rejoins(
    thorbis_redis_cluster: RedisCluster, thorbis_cluster_redis_url: str
) -> None:
    cluster = thorbis_redis_cluster
    key = "ha:failover"
    owner = cluster.master_for_key(key)
    [replica] = cluster.replicas_of(owner)
    writer = _direct(cluster.nodes[owner])
    writer.set(key, "before")
    assert writer.wait(1, 2000) == 1
    client = _cluster_client(cluster)
    assert await client.get(key) == b"before"

    killed = cluster.kill_master_for_key(key)
    assert killed == owner
    assert not cluster.nodes[owner].is_running
    promoted = cluster.wait_failover(killed)
    assert promoted == replica
    assert cluster.master_for_key(key) == promoted
    assert _replication(cluster.nodes[promoted])["role"] == "master"
    # The same client finds the promoted replica by itself, and can write there.
    assert await _eventually(lambda: client.get(key)) == b"before"
    assert await client.set(key, "after")

    cluster.restart(killed)  # comes back as the replica of the node that took over
    assert cluster.replicas_of(promoted) == [killed]
    info = _replication(cluster.nodes[killed])
    assert (info["role"], info["master_port"]) == ("slave", cluster.nodes[promoted].port)
    assert await client.get(key) == b"after"
    await client.aclose()


@pytest.mark.slow
def test_cluster_frozen_master_is_failed_over_and_rejoins_when_thawed(
    thorbis_redis_cluster: RedisCluster, thorbis_cluster_redis_url: str
) -> None:
    cluster = thorbis_redis_cluster
    owner = cluster.master_for_key("ha:frozen")
    [replica] = cluster.replicas_of(owner)
    cluster.freeze(owner)
    assert not cluster.is_ok()
    assert cluster.wait_failover(owner) == replica
    cluster.thaw(owner)
    cluster.wait_ok(timeout=10)
    assert cluster.replicas_of(replica) == [owner]
    assert _replication(cluster.nodes[owner])["role"] == "slave"


@pytest.mark.slow
@pytest.mark.parametrize("cut", [True, False], ids=["cut-link", "bare-sigstop"])
def test_cluster_write_acknowledged_by_no_replica_across_a_failover(
    thorbis_redis_cluster: RedisCluster, thorbis_cluster_redis_url: str, cut: bool
) -> None:
    """As for Sentinel: with the link cut the promoted replica lacks the write; with a
    bare SIGSTOP the kernel had buffered it for the frozen replica."""
    cluster = thorbis_redis_cluster
    key = "ha:lost"
    owner = cluster.master_for_key(key)
    [replica] = cluster.replicas_of(owner)
    writer = _direct(cluster.nodes[owner])
    writer.set(key, "before")
    assert writer.wait(1, 2000) == 1
    cluster.freeze(replica, cut_replication=cut)
    writer.set(key, "during")
    assert writer.wait(1, 200) == 0
    cluster.kill(owner)
    cluster.thaw(replica)
    assert cluster.wait_failover(owner) == replica
    assert _direct(cluster.nodes[replica]).get(key) == (b"before" if cut else b"during")


@pytest.mark.slow
def test_cluster_left_failed_over_by_a_test(thorbis_redis_cluster: RedisCluster) -> None:
    cluster = thorbis_redis_cluster
    killed = cluster.kill_master_for_key("ha:left")
    cluster.wait_failover(killed)
    cluster.freeze(5 if killed != 2 else 4)
    assert not cluster.is_ok()


def test_cluster_roles_are_restored_for_the_next_test(
    thorbis_redis_cluster: RedisCluster, thorbis_cluster_redis_url: str
) -> None:
    cluster = thorbis_redis_cluster
    assert cluster.is_ok()
    for master in range(3):
        assert _replication(cluster.nodes[master])["role"] == "master"
        assert cluster.replicas_of(master) == [3 + master]
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.port)
    assert client.dbsize(target_nodes=redis.cluster.RedisCluster.PRIMARIES) == 0
    client.close()


def test_cluster_without_replicas_keeps_its_shape_and_stops_when_frozen() -> None:
    with RedisCluster(2, node_timeout_ms=1000) as cluster:
        assert len(cluster.nodes) == 2
        assert all(_replication(node)["role"] == "master" for node in cluster.nodes)
        assert cluster.replicas_of(0) == []
        assert "--cluster-replica-validity-factor" not in cluster.nodes[0].extra_args
        cluster.flushall()
        cluster.freeze(1)
        pid = cluster.nodes[1].pid
        assert pid is not None
        stopping = time.monotonic()
    # A frozen node would ignore SIGTERM until the 15 s SIGKILL fallback.
    assert time.monotonic() - stopping < 10
    assert not _alive(pid)
    with pytest.raises(ValueError, match="negative"):
        RedisCluster(3, replicas=-1)
