"""The test kit itself: binaries lookup, server launchers, fixtures and their clean-up.

Everything here runs real redis-server and postgres processes on loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
import redis.cluster
from redis.crc import key_slot

from thorbis_cache.errors import ServerBinaryNotFound, ServerStartError
from thorbis_cache.testing import binaries
from thorbis_cache.testing.binaries import (
    MIN_POSTGRES_VERSION,
    MIN_REDIS_VERSION,
    ensure_redis,
    find_postgres,
    find_redis,
)
from thorbis_cache.testing.clients import master_clients
from thorbis_cache.testing.servers import (
    PostgresServer,
    RedisCluster,
    RedisServer,
    free_cluster_port,
    free_port,
    redis_server,
)

# --------------------------------------------------------------------------- helpers


def _state(pid: int) -> str | None:
    """The process state letter from /proc, or None when the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _processes_in(dirs: list[str]) -> list[int]:
    """Live processes whose working directory is inside one of ``dirs``.

    redis-server rewrites its command line, but it chdirs to ``--dir``; postgres runs in
    PGDATA. So the cwd identifies our servers.
    """
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        if any(cwd == d or cwd.startswith(d.rstrip("/") + "/") for d in dirs):
            found.append(int(entry.name))
    return found


def _wait_for(predicate: Any, attempts: int = 300, interval: float = 0.05) -> bool:
    """Poll ``predicate`` a bounded number of times (no assertion on how long it took)."""
    for _ in range(attempts):
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def _cluster_client(url: str) -> redis.cluster.RedisCluster:
    assert url.startswith("redis+cluster://")
    return redis.cluster.RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"))


def _redis_client(url: str) -> redis.Redis | redis.cluster.RedisCluster:
    if url.startswith("redis+cluster://"):
        return _cluster_client(url)
    return redis.Redis.from_url(url)


def _total_keys(client: redis.Redis | redis.cluster.RedisCluster) -> int:
    if isinstance(client, redis.cluster.RedisCluster):
        # DBSIZE goes to one node unless told otherwise; sum over every master.
        return int(client.dbsize(target_nodes=redis.cluster.RedisCluster.PRIMARIES))
    return int(client.dbsize())


# --------------------------------------------------------------------------- binaries


def test_binaries_are_found() -> None:
    redis_bin = find_redis()
    assert redis_bin.version >= MIN_REDIS_VERSION
    assert redis_bin.server.is_file()
    pg_bin = find_postgres()
    assert pg_bin.version >= MIN_POSTGRES_VERSION
    assert pg_bin.postgres.is_file()
    assert pg_bin.initdb.is_file()
    assert pg_bin.pg_ctl.is_file()


def test_explicit_redis_path_must_be_usable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THORBIS_REDIS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(ServerBinaryNotFound) as info:
        find_redis()
    message = str(info.value)
    assert "THORBIS_REDIS_SERVER" in message
    assert "sudo apt-get install -y redis-server" in message
    # An explicit but broken setting is reported, never "fixed" by installing.
    with pytest.raises(ServerBinaryNotFound):
        ensure_redis(install=True)


def test_explicit_redis_path_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_redis()
    monkeypatch.setenv("THORBIS_REDIS_SERVER", str(real.server))
    assert find_redis() == real


def test_explicit_pg_bindir_must_be_usable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THORBIS_PG_BINDIR", str(tmp_path))
    with pytest.raises(ServerBinaryNotFound, match="THORBIS_PG_BINDIR"):
        find_postgres()


def test_too_old_redis_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.2.1 sha=0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("THORBIS_REDIS_SERVER", str(fake))
    with pytest.raises(ServerBinaryNotFound, match=r"version 6\.2\.1"):
        find_redis()


def test_install_path_guards_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without a policy-rc.d, one denying service starts exists only during apt-get install."""
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(binaries, "_POLICY_RC_D", policy)
    monkeypatch.setattr(binaries, "_apt_updated", False)
    monkeypatch.setattr(binaries, "_can_install", lambda: True)
    monkeypatch.delenv("THORBIS_REDIS_SERVER", raising=False)
    calls: list[tuple[list[str], bool]] = []
    found = binaries.RedisBinaries(server=Path("/x/redis-server"), version=(7, 2, 0))
    lookups = iter([ServerBinaryNotFound("missing"), found])

    def fake_find() -> binaries.RedisBinaries:
        result = next(lookups)
        if isinstance(result, Exception):
            raise result
        return result

    def fake_apt(args: list[str]) -> None:
        during = policy.exists() and "exit 101" in policy.read_text()
        calls.append((args, during))

    monkeypatch.setattr(binaries, "find_redis", fake_find)
    monkeypatch.setattr(binaries, "_apt", fake_apt)
    assert ensure_redis(install=True) == found
    assert calls == [
        (["update"], False),
        (["install", "-y", "--no-install-recommends", "redis-server"], True),
    ]
    assert not policy.exists()

    # An administrator's policy-rc.d is left exactly as it was.
    policy.write_text("#!/bin/sh\nexit 0\n")
    with binaries._services_not_started():
        pass
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_missing_without_install_gives_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> binaries.RedisBinaries:
        raise ServerBinaryNotFound("redis-server not found; sudo apt-get install -y redis-server")

    monkeypatch.setattr(binaries, "find_redis", missing)
    monkeypatch.delenv("THORBIS_REDIS_SERVER", raising=False)
    with pytest.raises(ServerBinaryNotFound, match="apt-get install"):
        ensure_redis(install=False)


def test_binaries_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "thorbis_cache.testing.binaries", "ensure", "--no-install"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    redis_bin = find_redis()
    assert f"redis-server {redis_bin.version_string}: {redis_bin.server}" in done.stdout
    assert str(find_postgres().bindir) in done.stdout


# --------------------------------------------------------------------------- ports


def test_free_ports_are_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    data = free_cluster_port()
    assert data < 55000
    for candidate in (data, data + 10000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", candidate))


# --------------------------------------------------------------------------- standalone redis


def test_standalone_start_ping_stop() -> None:
    server = RedisServer()
    with pytest.raises(ServerStartError, match="not been started"):
        _ = server.port
    server.start()
    pid = server.pid
    directory = server.dir
    assert pid is not None
    assert _alive(pid)
    assert directory.name.startswith("thorbis-")
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert redis.Redis.from_url(server.url).ping()
    server.stop()
    assert not directory.exists()
    assert not _alive(pid)
    assert not server.is_running
    server.stop()  # idempotent


def test_kill_then_restart_same_port_loses_data() -> None:
    with RedisServer() as server:
        port, directory = server.port, server.dir
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.kill()
        assert not server.is_running
        assert directory.exists()
        server.restart()
        assert (server.port, server.dir) == (port, directory)
        # The same client reconnects to the same address.
        assert client.get("k") is None
        client.close()


def test_appendonly_keeps_data_across_kill() -> None:
    with RedisServer(appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.kill()
        server.restart()
        assert client.get("k") == b"v"
        client.close()


def test_port_clash_is_retried_on_another_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        picks = iter([taken])
        real = redis_server.free_port
        monkeypatch.setattr(redis_server, "free_port", lambda: next(picks, None) or real())
        with RedisServer() as server:
            assert server.port != taken
            assert server.ping()


def test_fixed_port_clash_reports_port_and_log() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server = RedisServer(port=taken)
        with pytest.raises(ServerStartError) as info:
            server.start()
        directory = server.dir
        server.stop()
    message = str(info.value)
    assert f"127.0.0.1:{taken}" in message
    assert str(directory) in message
    assert "Address already in use" in message
    assert not directory.exists()


def test_start_failure_carries_log_tail() -> None:
    server = RedisServer(extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerStartError) as info:
        server.start()
    directory = server.dir
    server.stop()
    message = str(info.value)
    assert str(find_redis().server) in message
    assert "no-such-directive" in message  # from redis' own complaint in the log
    assert not directory.exists()


def test_failed_start_in_with_leaves_no_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THORBIS_TMPDIR", str(tmp_path))
    with (
        pytest.raises(ServerStartError, match="no-such-directive"),
        RedisServer(extra_args=["--no-such-directive", "1"]),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands postgres to another user")
def test_postgres_temp_dir_unreachable_for_postgres_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("THORBIS_TMPDIR", str(private))
    server = PostgresServer()
    with pytest.raises(ServerStartError, match="THORBIS_TMPDIR"):
        server.start()
    server.stop()
    assert list(private.iterdir()) == []


def test_start_from_short_lived_thread_survives_the_thread() -> None:
    """PR_SET_PDEATHSIG follows the forking *thread*; the spawner thread absorbs that."""
    server = RedisServer()
    holder: list[int] = []

    def start() -> None:
        server.start()
        holder.append(threading.get_native_id())

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    try:
        # Once the OS thread is gone, a parent-death signal would have been sent.
        assert _wait_for(lambda: not Path(f"/proc/self/task/{holder[0]}").exists())
        assert server.ping()
    finally:
        server.stop()


# --------------------------------------------------------------------------- cluster


def _keys_per_node(cluster: RedisCluster) -> dict[int, list[str]]:
    ranges = cluster._slot_ranges()
    keys: dict[int, list[str]] = {index: [] for index in range(len(ranges))}
    counter = 0
    while any(len(found) < 3 for found in keys.values()):
        key = f"key:{counter}"
        counter += 1
        slot = key_slot(key.encode())
        for index, (first, last) in enumerate(ranges):
            if first <= slot <= last and len(keys[index]) < 3:
                keys[index].append(key)
    return keys


def test_cluster_kill_and_restart_node(thorbis_redis_cluster: RedisCluster) -> None:
    cluster = thorbis_redis_cluster
    assert cluster.url == f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}"
    assert (cluster.masters, cluster.replicas, len(cluster.nodes)) == (3, 1, 6)
    assert cluster.is_ok()
    cluster.flushall()
    keys = _keys_per_node(cluster)
    client = _cluster_client(cluster.url)
    for node_keys in keys.values():
        for key in node_keys:
            client.set(key, key)
    client.close()
    for index in range(cluster.masters):
        # Each master really holds its share: the slots are spread over all masters.
        assert cluster.nodes[index].command("DBSIZE") == len(keys[index])

    # Restarted before the node timeout: no failover, the master comes back empty and
    # its replica resyncs from it.
    cluster.kill(1)
    assert not cluster.nodes[1].is_running
    cluster.restart(1)
    assert cluster.is_ok()
    assert cluster.master_of_slot(cluster._slot_ranges()[1][0]) == 1

    client = _cluster_client(cluster.url)
    for index in (0, 2):
        for key in keys[index]:
            assert client.get(key) == key.encode()
    for key in keys[1]:
        assert client.get(key) is None  # no persistence on the killed node
    client.close()


def test_cluster_left_broken_by_a_test(thorbis_redis_cluster: RedisCluster) -> None:
    thorbis_redis_cluster.kill(2)
    thorbis_redis_cluster.kill(4)  # a master, and the replica of another one
    assert not thorbis_redis_cluster.is_running


def test_cluster_is_repaired_for_the_next_test(thorbis_cluster_redis_url: str) -> None:
    client = _cluster_client(thorbis_cluster_redis_url)
    assert client.set("after-repair", "1")
    assert _total_keys(client) == 1
    client.close()


# --------------------------------------------------------------------------- redis url fixture


def _keys_on_masters(url: str) -> int:
    total = 0
    for client in master_clients(url):
        total += int(client.dbsize())
        client.close()
    return total


def test_redis_url_dirtied(thorbis_redis_url: str) -> None:
    client = (_redis_client(thorbis_redis_url) if "+sentinel" not in thorbis_redis_url
              else master_clients(thorbis_redis_url)[0])
    for index in range(50):
        client.set(f"dirty:{index}", "x")
    client.close()
    assert _keys_on_masters(thorbis_redis_url) == 50


def test_redis_url_starts_empty(thorbis_redis_url: str) -> None:
    assert _keys_on_masters(thorbis_redis_url) == 0


def test_redis_url_topologies(request: pytest.FixtureRequest, thorbis_redis_url: str) -> None:
    topology = request.node.callspec.params["thorbis_redis_url"]
    scheme = {"cluster": "redis+cluster://", "sentinel": "redis+sentinel://"}.get(
        topology, "redis://")
    assert thorbis_redis_url.startswith(scheme)


def test_standalone_left_dead_by_a_test(thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.kill()


def test_standalone_is_back_for_the_next_test(
    thorbis_redis_server: RedisServer, thorbis_standalone_redis_url: str
) -> None:
    assert thorbis_redis_server.is_running
    assert thorbis_standalone_redis_url == thorbis_redis_server.url
    assert redis.Redis.from_url(thorbis_standalone_redis_url).dbsize() == 0


# --------------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def thorbis_pg_template_sql() -> list[str]:
    """Overrides the plugin's default for this module: the template gets a marker table."""
    return ["CREATE TABLE template_marker (id int PRIMARY KEY)"]


async def test_postgres_query_kill_restart(thorbis_postgres_server: PostgresServer) -> None:
    server = thorbis_postgres_server
    assert server.dsn() == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    conn = await asyncpg.connect(server.dsn())
    assert await conn.fetchval("SELECT 40 + 2") == 42
    await conn.close()

    port, directory = server.port, server.dir
    server.kill()
    assert not server.is_running
    server.restart()
    assert (server.port, server.dir) == (port, directory)
    conn = await asyncpg.connect(server.dsn())
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


# Databases handed out so far; later tests check that they were dropped.
_PG_DATABASES: list[str] = []


async def test_pg_dsn_first_writes(thorbis_pg_dsn: str) -> None:
    _PG_DATABASES.append(thorbis_pg_dsn.rsplit("/", 1)[1])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    await conn.execute("CREATE TABLE leftover (id int)")
    await conn.execute("INSERT INTO template_marker VALUES (1)")
    await conn.close()


async def test_pg_dsn_second_is_isolated(
    thorbis_pg_dsn: str, thorbis_postgres_server: PostgresServer
) -> None:
    admin = await asyncpg.connect(thorbis_postgres_server.dsn())
    existing = {row["datname"] for row in await admin.fetch("SELECT datname FROM pg_database")}
    await admin.close()
    assert thorbis_pg_dsn.rsplit("/", 1)[1] in existing
    assert not existing & set(_PG_DATABASES)  # earlier tests' databases were dropped
    conn = await asyncpg.connect(thorbis_pg_dsn)
    tables = {
        row["tablename"]
        for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables == {"template_marker"}
    assert await conn.fetchval("SELECT count(*) FROM template_marker") == 0
    await conn.close()


def test_postgres_left_dead_by_a_test(thorbis_postgres_server: PostgresServer) -> None:
    thorbis_postgres_server.kill()


async def test_pg_dsn_after_a_dead_server(thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    assert await conn.fetchval("SELECT current_database()") == thorbis_pg_dsn.rsplit("/", 1)[1]
    await conn.close()


# --------------------------------------------------------------------------- clean-up


@pytest.fixture
def probe_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "probe.json"
    yield path
    if path.exists():
        # Whatever happened, do not leave anything behind from the inner run.
        info = json.loads(path.read_text())
        for pid in info["pids"]:
            if _alive(pid):
                os.kill(pid, 9)
        for directory in info["dirs"]:
            shutil.rmtree(directory, ignore_errors=True)


def test_servers_are_cleaned_up_after_failing_tests(
    pytester: pytest.Pytester, probe_file: Path
) -> None:
    pytester.makepyfile(
        test_inner=textwrap.dedent(
            f"""
            import json, pathlib

            def test_fails(thorbis_redis_server, thorbis_postgres_server, thorbis_pg_dsn,
                           thorbis_redis_cluster, thorbis_redis_sentinel):
                nodes = thorbis_redis_cluster.nodes
                group = thorbis_redis_sentinel
                group.freeze(group.replicas()[0])  # a stopped process is cleaned up too
                info = {{
                    "pids": [thorbis_redis_server.pid, thorbis_postgres_server.pid]
                            + [node.pid for node in nodes]
                            + [member.pid for member in group.servers + group.sentinels],
                    "dirs": [str(thorbis_redis_server.dir), str(thorbis_postgres_server.dir),
                             str(thorbis_redis_cluster.dir), str(group.dir)],
                }}
                pathlib.Path({str(probe_file)!r}).write_text(json.dumps(info))
                assert False, "this test fails on purpose"
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(failed=1)
    info = json.loads(probe_file.read_text())
    pids: list[int] = info["pids"]
    dirs: list[str] = info["dirs"]
    assert len(pids) == 2 + 6 + 6
    assert all(pids)
    assert all(Path(d).name.startswith("thorbis-") for d in dirs)
    assert _wait_for(lambda: not any(_alive(pid) for pid in pids))
    assert _wait_for(lambda: not _processes_in(dirs))
    assert not [d for d in dirs if Path(d).exists()]


def test_hard_death_kills_the_server(tmp_path: Path) -> None:
    """A Python process that dies without clean-up still takes its redis-server along."""
    script = textwrap.dedent(
        """
        import json, os, sys
        from thorbis_cache.testing.servers import RedisServer
        server = RedisServer().start()
        print(json.dumps({"pid": server.pid, "dir": str(server.dir)}), flush=True)
        os._exit(1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 1, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    pid, directory = info["pid"], info["dir"]
    try:
        assert _wait_for(lambda: not _alive(pid))
        assert not _processes_in([directory])
    finally:
        if _alive(pid):
            os.kill(pid, 9)
        # No atexit ran in the dead process, so the directory is ours to remove.
        shutil.rmtree(directory, ignore_errors=True)
