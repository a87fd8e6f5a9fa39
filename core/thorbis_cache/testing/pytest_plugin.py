"""pytest fixtures with real, ephemeral Redis and PostgreSQL servers.

Registered through the ``pytest11`` entry point, so any project that installs
thorbis-cache (with the ``testing`` extra) gets these fixtures:

* ``thorbis_redis_server`` / ``thorbis_redis_cluster`` / ``thorbis_redis_sentinel`` /
  ``thorbis_postgres_server`` (session): the server objects, started on first use,
  stopped at session end. The cluster has 3 masters with one replica each; the
  Sentinel group is one master, two replicas and three sentinels.
* ``thorbis_redis_url`` (function): runs the test once per topology, ``standalone``
  (``redis://``), ``cluster`` (``redis+cluster://``) and ``sentinel``
  (``redis+sentinel://``), with every master flushed.
* ``thorbis_standalone_redis_url`` / ``thorbis_cluster_redis_url`` /
  ``thorbis_sentinel_redis_url`` (function): one topology only, flushed.
* ``thorbis_pg_dsn`` (function): a fresh database cloned from a session template,
  dropped afterwards; override ``thorbis_pg_template_sql`` to fill the template.

A test may kill, stop, freeze, fail over or break these servers: before each test,
servers that were started are checked and restarted or repaired (the cluster also gets
its masters back as built), so one test cannot poison the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import pytest

from thorbis_cache.errors import ServerBinaryNotFound
from thorbis_cache.postgres.catalog import quote_ident
from thorbis_cache.testing.binaries import find_postgres, find_redis
from thorbis_cache.testing.loop_thread import run_async
from thorbis_cache.testing.servers import (
    PostgresServer,
    RedisCluster,
    RedisSentinelGroup,
    RedisServer,
)

__all__ = [
    "ThorbisServers",
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "thorbis_cluster_redis_url",
    "thorbis_pg_dsn",
    "thorbis_pg_template_sql",
    "thorbis_postgres_server",
    "thorbis_redis_cluster",
    "thorbis_redis_sentinel",
    "thorbis_redis_server",
    "thorbis_redis_url",
    "thorbis_sentinel_redis_url",
    "thorbis_standalone_redis_url",
]

TEMPLATE_DB = "thorbis_template"
CLUSTER_MASTERS = 3
CLUSTER_REPLICAS = 1
# Shorter than the 2 s default, so that a killed master is failed over in about 2-3 s.
CLUSTER_NODE_TIMEOUT_MS = 1000


class ThorbisServers:
    """The session's servers, started lazily and checked before being handed out.

    Exposed for plugin authors who build their own fixtures on the same servers; get it
    from the private ``_thorbis_servers`` fixture.
    """

    def __init__(self) -> None:
        self._redis: RedisServer | None = None
        self._cluster: RedisCluster | None = None
        self._sentinel: RedisSentinelGroup | None = None
        self._postgres: PostgresServer | None = None
        self._templates: set[tuple[str, str]] = set()
        self._db_numbers = itertools.count(1)

    # ---- handing out healthy servers

    def redis(self) -> RedisServer:
        """The standalone server, started or brought back if needed.

        :returns: a server that answers PING.
        :raises ServerStartError: it could not be started.
        """
        if self._redis is None:
            self._redis = RedisServer().start()
        elif not self._redis.ping():
            # Killed, stopped or hung (DEBUG SLEEP, CLIENT PAUSE) by a test: its data does
            # not matter, so no graceful shutdown.
            self._redis.kill()
            self._redis.restart()
        return self._redis

    def cluster(self) -> RedisCluster:
        """The cluster of 3 masters with one replica each, started or repaired if needed.

        :returns: a cluster whose every node reports ``cluster_state:ok``, each master
            with its replica in sync, nodes in their roles as built (nodes 0-2 masters).
        :raises ServerStartError: it could not be started or repaired.
        """
        if self._cluster is None:
            self._cluster = RedisCluster(
                CLUSTER_MASTERS,
                replicas=CLUSTER_REPLICAS,
                node_timeout_ms=CLUSTER_NODE_TIMEOUT_MS,
            ).start()
        else:
            self._cluster.repair()
        return self._cluster

    def sentinel(self) -> RedisSentinelGroup:
        """The Sentinel group (1 master, 2 replicas, 3 sentinels), started or repaired.

        :returns: a group whose sentinels agree on one master with two replicas in sync.
        :raises ServerStartError: it could not be started or repaired.
        """
        if self._sentinel is None:
            self._sentinel = RedisSentinelGroup().start()
        else:
            self._sentinel.repair()
        return self._sentinel

    def postgres(self) -> PostgresServer:
        """The PostgreSQL server, started or restarted if needed.

        :returns: a running server.
        :raises ServerStartError: it could not be started.
        """
        if self._postgres is None:
            self._postgres = PostgresServer().start()
        elif not self._postgres.is_running:
            self._postgres.restart()
        return self._postgres

    def repair_started(self) -> None:
        """Check the servers already started and repair what a previous test broke.

        :raises ServerStartError: a server could not be brought back.
        """
        if self._redis is not None:
            self.redis()
        if self._cluster is not None:
            self.cluster()
        if self._sentinel is not None:
            self.sentinel()
        if self._postgres is not None:
            self.postgres()

    def stop(self) -> None:
        """Stop every server of the session (errors of one do not keep the others up)."""
        servers: list[RedisServer | RedisCluster | RedisSentinelGroup | PostgresServer | None] = [
            self._redis,
            self._cluster,
            self._sentinel,
            self._postgres,
        ]
        self._redis = self._cluster = self._sentinel = self._postgres = None
        errors: list[BaseException] = []
        for server in servers:
            if server is None:
                continue
            try:
                server.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # ---- per-test databases

    def _template_name(self, sql: Sequence[str]) -> str:
        if not sql:
            return TEMPLATE_DB
        # Different template SQL (overridden per directory) gets its own template.
        digest = hashlib.sha256("\0".join(sql).encode()).hexdigest()[:12]
        return f"{TEMPLATE_DB}_{digest}"

    def create_database(self, template_sql: Sequence[str]) -> str:
        """Create a new empty database from the template (built on first use).

        :param template_sql: statements the template is built with.
        :returns: the new database's name.
        :raises asyncpg.PostgresError: a template statement or the creation failed.
        """
        server = self.postgres()
        template = self._template_name(template_sql)
        name = f"t_{next(self._db_numbers)}"
        key = (str(server.dir), template)
        admin_dsn = server.dsn("postgres")
        build = key not in self._templates

        async def run() -> None:
            admin = await asyncpg.connect(admin_dsn, timeout=30)
            try:
                if build:
                    exists = await admin.fetchval(
                        "SELECT 1 FROM pg_database WHERE datname = $1", template
                    )
                    if not exists:
                        await _build_template(admin, server, template, template_sql)
                # FILE_COPY: for a small template, copying files beats WAL-logging each
                # block, and its checkpoints are cheap with fsync off.
                await admin.execute(
                    f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}"
                    " STRATEGY FILE_COPY"
                )
            finally:
                await admin.close()

        run_async(run)
        self._templates.add(key)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a per-test database, disconnecting whoever still uses it.

        Does nothing when the server is down (the test killed it; the data dies with the
        next repair or at session end).

        :param name: the database name.
        :raises asyncpg.PostgresError: the drop failed.
        """
        server = self._postgres
        if server is None or not server.is_running:
            return
        admin_dsn = server.dsn("postgres")

        async def run() -> None:
            admin = await asyncpg.connect(admin_dsn, timeout=30)
            try:
                # A logical slot (db init's default capture on this server) keeps its
                # database from being dropped, even WITH (FORCE): end its reader, drop it.
                await admin.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE database = $1 AND active_pid IS NOT NULL", name)
                for _ in range(50):
                    try:
                        await admin.execute(
                            "SELECT pg_drop_replication_slot(slot_name) "
                            "FROM pg_replication_slots WHERE database = $1", name)
                        break
                    except asyncpg.ObjectInUseError:  # its reader is still exiting
                        await asyncio.sleep(0.05)
                await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            finally:
                await admin.close()

        run_async(run)


async def _build_template(
    admin: Any, server: PostgresServer, template: str, template_sql: Sequence[str]
) -> None:
    # Built under a scratch name and renamed when complete, so a failing statement never
    # leaves a half-built template behind for the next test.
    scratch = f"{template}__building"
    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {quote_ident(scratch)} TEMPLATE template0")
    conn = await asyncpg.connect(server.dsn(scratch), timeout=30)
    try:
        for index, statement in enumerate(template_sql):
            try:
                await conn.execute(statement)
            except Exception as exc:
                raise RuntimeError(
                    f"thorbis_pg_template_sql statement {index} failed on {server.dsn(scratch)}:"
                    f" {exc}\n{statement}"
                ) from exc
    finally:
        await conn.close()
    await admin.execute(
        f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(template)}"
    )
    # No connections to the template: one would make every CREATE DATABASE ... TEMPLATE fail.
    await admin.execute(
        f"ALTER DATABASE {quote_ident(template)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    )


# --------------------------------------------------------------------------- hooks


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Show which redis-server and PostgreSQL the fixtures will run.

    :param config: the pytest config.
    :returns: header lines.
    """
    lines: list[str] = []
    try:
        redis_bin = find_redis()
        lines.append(f"thorbis redis-server: {redis_bin.version_string} ({redis_bin.server})")
    except ServerBinaryNotFound as exc:
        lines.append(f"thorbis redis-server: not found: {exc}")
    try:
        pg_bin = find_postgres()
        lines.append(f"thorbis postgres: {pg_bin.version_string} ({pg_bin.bindir})")
    except ServerBinaryNotFound as exc:
        lines.append(f"thorbis postgres: not found: {exc}")
    return lines


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--thorbis-contract=NAME`` (repeatable).

    :param parser: pytest's option parser.
    """
    group = parser.getgroup("thorbis-cache")
    group.addoption(
        "--thorbis-contract", action="append", default=[], metavar="NAME",
        dest="thorbis_contract",
        help="run the thorbis-cache plugin contract against the installed plugin NAME "
        "(entry-point name in group thorbis_cache.plugins); repeatable. With no test "
        "paths given, only the contract runs.",
    )


def pytest_configure(config: pytest.Config) -> None:
    """With ``--thorbis-contract``, add the contract module to what is collected.

    :param config: the pytest config.
    """
    if not config.getoption("thorbis_contract", default=None):
        return
    spec = importlib.util.find_spec("thorbis_cache.testing.contract_run")
    assert spec is not None
    assert spec.origin is not None
    if config.args_source is pytest.Config.ArgsSource.ARGS:
        config.args.append(spec.origin)
    else:  # no paths on the command line: run the contract, not the whole test suite
        config.args[:] = [spec.origin]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _thorbis_servers() -> Iterator[ThorbisServers]:
    """The session's server pool; stops everything at session end, failures or not."""
    pool = ThorbisServers()
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(autouse=True)
def _thorbis_repair_servers(_thorbis_servers: ThorbisServers) -> None:
    """Before each test, bring back servers an earlier test killed, stopped or broke."""
    _thorbis_servers.repair_started()


@pytest.fixture(scope="session")
def thorbis_redis_server(_thorbis_servers: ThorbisServers) -> RedisServer:
    """The session's standalone :class:`RedisServer` (started on first use).

    Tests may ``kill()``/``restart()``/``stop()`` it; the next test gets it running again
    on the same port.
    """
    return _thorbis_servers.redis()


@pytest.fixture(scope="session")
def thorbis_redis_cluster(_thorbis_servers: ThorbisServers) -> RedisCluster:
    """The session's :class:`RedisCluster` (started on first use): 3 masters (nodes 0-2,
    in slot order), each with one replica (nodes 3-5), ``cluster-node-timeout`` 1 s.

    Tests may ``kill(i)``/``restart(i)``/``freeze(i)`` nodes or fail masters over
    (``kill_master_for_key``, ``wait_failover``); the next test gets it repaired, with
    nodes 0-2 masters again.
    """
    return _thorbis_servers.cluster()


@pytest.fixture(scope="session")
def thorbis_redis_sentinel(_thorbis_servers: ThorbisServers) -> RedisSentinelGroup:
    """The session's :class:`RedisSentinelGroup` (started on first use): one master, two
    replicas, three sentinels (quorum 2) monitoring service ``thorbis``; a killed master
    is replaced in about 2-3 s.

    Tests may kill, freeze, restart or fail over its processes; the next test gets it
    repaired. Which data server is master changes on failover: ask ``master()``.
    """
    return _thorbis_servers.sentinel()


@pytest.fixture(scope="session")
def thorbis_postgres_server(_thorbis_servers: ThorbisServers) -> PostgresServer:
    """The session's :class:`PostgresServer` (started on first use).

    Tests may ``kill()``/``restart()`` it; the next test gets it running again.
    """
    return _thorbis_servers.postgres()


@pytest.fixture(params=["standalone", "cluster", "sentinel"],
                ids=["standalone", "cluster", "sentinel"])
def thorbis_redis_url(request: pytest.FixtureRequest, _thorbis_servers: ThorbisServers) -> str:
    """A Redis URL with no keys, once per topology.

    ``redis://127.0.0.1:PORT/0`` for the standalone server,
    ``redis+cluster://127.0.0.1:PORT`` for the cluster (3 masters with a replica each,
    every master flushed) and ``redis+sentinel://127.0.0.1:P1,.../thorbis/0`` for the
    Sentinel group (one master, two replicas, three sentinels; flushed).
    """
    if request.param == "cluster":
        cluster = _thorbis_servers.cluster()
        cluster.flushall()
        return cluster.url
    if request.param == "sentinel":
        group = _thorbis_servers.sentinel()
        group.flushall()
        return group.url
    server = _thorbis_servers.redis()
    server.flushall()
    return server.url


@pytest.fixture
def thorbis_standalone_redis_url(_thorbis_servers: ThorbisServers) -> str:
    """``redis://127.0.0.1:PORT/0`` of the standalone server, flushed."""
    server = _thorbis_servers.redis()
    server.flushall()
    return server.url


@pytest.fixture
def thorbis_cluster_redis_url(_thorbis_servers: ThorbisServers) -> str:
    """``redis+cluster://127.0.0.1:PORT`` of the cluster, every master flushed (and the
    flush applied on the replicas)."""
    cluster = _thorbis_servers.cluster()
    cluster.flushall()
    return cluster.url


@pytest.fixture
def thorbis_sentinel_redis_url(_thorbis_servers: ThorbisServers) -> str:
    """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/thorbis/0`` of the
    Sentinel group (the sentinels' addresses and the service name), the master flushed
    and the flush applied on the replicas."""
    group = _thorbis_servers.sentinel()
    group.flushall()
    return group.url


@pytest.fixture(scope="session")
def thorbis_pg_template_sql() -> list[str]:
    """SQL statements applied once to the template every ``thorbis_pg_dsn`` database is
    cloned from. Empty by default; override this session fixture in a conftest to add
    a schema.
    """
    return []


@pytest.fixture
def thorbis_pg_dsn(
    _thorbis_servers: ThorbisServers, thorbis_pg_template_sql: list[str]
) -> Iterator[str]:
    """DSN of a new database for this test only, cloned from the template; dropped after
    the test (open connections are terminated).
    """
    name = _thorbis_servers.create_database(thorbis_pg_template_sql)
    server = _thorbis_servers.postgres()
    try:
        yield server.dsn(name)
    finally:
        _thorbis_servers.drop_database(name)
