"""An ephemeral Sentinel-managed Redis group on 127.0.0.1: 1 master, 2 replicas, 3 sentinels."""

from __future__ import annotations

import atexit
import collections
import contextlib
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from thorbis_cache import deploy_examples
from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import RedisBinaries, find_redis
from thorbis_cache.testing.servers._base import _StartedInContext
from thorbis_cache.testing.servers._ha import (
    _REPLICATION_ARGS,
    _cut_replication,
    _freeze,
    _is_master,
    _master_of,
    _poll,
    _replicates,
    _replication,
    _thaw,
)
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers._process import _Child, _make_temp_dir, _tail
from thorbis_cache.testing.servers._sentinel_process import _pairs, _Sentinel
from thorbis_cache.testing.servers.redis_server import RedisServer

DEFAULT_SERVICE = "thorbis"
_REPLICAS = 2
_SENTINELS = 3
_QUORUM = 2


class RedisSentinelGroup(_StartedInContext):
    """One master, two replicas and three sentinels (quorum 2) on 127.0.0.1.

    The data servers are :class:`RedisServer` processes (replicas started with
    ``--replicaof``); each sentinel runs ``redis-server <conf> --sentinel`` with its own
    config file. Failover settings are for tests: the master is judged down after
    ``down_after_ms`` and sentinel's internal periods are shortened, so a killed master
    is replaced in about 2 s. Roles change on failover: ask :meth:`master` and
    :meth:`replicas`, not the order of :attr:`servers`.

    :param service: the name the sentinels monitor the master under.
    :param down_after_ms: ``down-after-milliseconds``: silence before a master is down.
    :param failover_timeout_ms: ``failover-timeout``; a failed election is retried after
        twice this.
    :param extra_args: more ``redis-server`` arguments for the data servers.
    :param binaries: the redis-server to run; located with :func:`find_redis` by default.
    :param startup_timeout: seconds to wait for the group to become healthy.
    """

    def __init__(
        self,
        *,
        service: str = DEFAULT_SERVICE,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        extra_args: Sequence[str] = (),
        binaries: RedisBinaries | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if not service or any(char.isspace() for char in service) or "/" in service:
            raise ValueError(f"service name must be one word without '/', got {service!r}")
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._binaries = binaries
        self._servers: list[RedisServer] = []
        self._sentinels: list[_Sentinel] = []
        self._frozen: set[RedisServer] = set()
        self._last_ports: tuple[tuple[int | None, ...], tuple[int | None, ...]] | None = None
        self._dir: Path | None = None
        self._dir_box = _Child()
        self._finalizer = weakref.finalize(self, self._dir_box.reap)
        self._finalizer.atexit = False

    # ---- public state

    @property
    def servers(self) -> list[RedisServer]:
        """The three data servers, in start order (the first was the initial master)."""
        return list(self._servers)

    @property
    def sentinels(self) -> list[RedisServer]:
        """The three sentinel processes."""
        return list(self._sentinels)

    @property
    def sentinel_ports(self) -> list[int]:
        """The sentinels' ports."""
        return [sentinel.port for sentinel in self._sentinels]

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return HOST

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/SERVICE/0``.

        :raises ServerStartError: the group has never been started.
        """
        if not self._sentinels:
            raise ServerStartError("sentinel group has not been started; it has no URL yet")
        nodes = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{nodes}/{self.service}/0"

    @property
    def dir(self) -> Path:
        """Parent of the processes' directories (``data-0``.., ``sentinel-0``..).

        :raises ServerStartError: the group has never been started.
        """
        if self._dir is None:
            raise ServerStartError("sentinel group has not been started; it has no directory")
        return self._dir

    @property
    def is_running(self) -> bool:
        """Whether every process is alive (frozen ones count; the group may be converging)."""
        members = self._members()
        return bool(members) and all(member.is_running for member in members)

    def __repr__(self) -> str:
        data = ",".join(str(server._port) for server in self._servers)
        sentinels = ",".join(str(sentinel._port) for sentinel in self._sentinels)
        return f"<RedisSentinelGroup data=[{data}] sentinels=[{sentinels}] dir={self._dir}>"


    # ---- roles

    def master(self) -> RedisServer:
        """The data server the sentinels currently name as master (most votes wins).

        Right after a failover the sentinels may disagree for a moment; use
        :meth:`wait_failover` to wait for them to settle.

        :returns: one of :attr:`servers` (it may be dead: sentinels have not noticed yet).
        :raises ServerStartError: no sentinel answered, or they name an unknown address.
        """
        named = [port for port in self._named_masters() if port is not None]
        if not named:
            raise ServerStartError(self._describe("has no sentinel that names a master"))
        port, _ = collections.Counter(named).most_common(1)[0]
        server = self._server_on(port)
        if server is None:
            raise ServerStartError(self._describe(f"names {HOST}:{port}, not one of its servers"))
        return server

    def replicas(self) -> list[RedisServer]:
        """The data servers other than :meth:`master`, in :attr:`servers` order.

        :returns: two servers (dead or frozen ones included).
        :raises ServerStartError: no sentinel names a master.
        """
        master = self.master()
        return [server for server in self._servers if server is not master]

    def _named_masters(self) -> list[int | None]:
        """Per sentinel, the master port it names (None: dead, frozen or no answer)."""
        ports: list[int | None] = []
        for sentinel in self._sentinels:
            if sentinel in self._frozen or not sentinel.is_running:
                ports.append(None)
                continue
            try:
                reply = sentinel.command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service, timeout=1.0
                )
                ports.append(int(reply[1]))
            except (OSError, RuntimeError, TypeError, IndexError, ValueError):
                ports.append(None)
        return ports

    def _server_on(self, port: int) -> RedisServer | None:
        return next((server for server in self._servers if server._port == port), None)

    def _members(self) -> list[RedisServer]:
        return [*self._servers, *self._sentinels]

    # ---- lifecycle

    def start(self) -> Self:
        """Start the data servers and the sentinels; wait until the group is healthy.

        No-op when already running (a started group is repaired instead).

        :returns: the group itself.
        :raises ServerBinaryNotFound: no usable redis-server.
        :raises ServerStartError: a process did not start or the group did not become
            healthy; the message carries every process's state and log tail.
        """
        if self._servers:
            self.repair()
            return self
        self._dir = _make_temp_dir("thorbis-rsentinel-")
        self._dir_box.owned_dir = self._dir
        _LIVE_GROUPS.add(self)
        # A stopped group started again comes back on its old ports.
        data_ports, sentinel_ports = self._last_ports or (
            (None,) * (1 + _REPLICAS),
            (None,) * _SENTINELS,
        )
        self._bring_up(data_ports, sentinel_ports)
        return self

    def _data_args(self, master_port: int | None) -> tuple[str, ...]:
        role = () if master_port is None else ("--replicaof", HOST, str(master_port))
        return (*_REPLICATION_ARGS, *self.extra_args, *role)

    def _sentinel_config(self, master: RedisServer, replicas: Sequence[RedisServer]) -> str:
        name = self.service
        # deploy/redis/sentinel.conf first (its per-master lines name the example's
        # master), so the settings below override it.
        example = deploy_examples.path(deploy_examples.SENTINEL_CONF)
        lines = [
            *([f"include {example}"] if name == deploy_examples.SENTINEL_SERVICE else []),
            f"sentinel monitor {name} {HOST} {master.port} {_QUORUM}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
            # Known from the start rather than learned from the master's first INFO.
            *(f"sentinel known-replica {name} {HOST} {replica.port}" for replica in replicas),
        ]
        return "\n".join(lines) + "\n"

    def _bring_up(
        self, data_ports: Sequence[int | None], sentinel_ports: Sequence[int | None]
    ) -> None:
        """Start fresh processes on the given ports (None: any free one) and wait.

        On any failure the whole group is stopped (nothing is left running or on disk).
        """
        directory = self.dir
        if self._binaries is None:
            self._binaries = find_redis()
        binaries = self._binaries
        try:
            self._servers = []
            for index, port in enumerate(data_ports):
                master_port = self._servers[0].port if self._servers else None
                server = RedisServer(
                    port=port,
                    dir=directory / f"data-{index}",
                    extra_args=self._data_args(master_port),
                    binaries=binaries,
                    startup_timeout=self.startup_timeout,
                )
                self._servers.append(server)
                server.start()
            # Sentinels start while the replicas still sync: both overlap.
            config = self._sentinel_config(self._servers[0], self._servers[1:])
            self._sentinels = []
            for index, port in enumerate(sentinel_ports):
                sentinel = _Sentinel(
                    config=config,
                    port=port,
                    dir=directory / f"sentinel-{index}",
                    binaries=binaries,
                    startup_timeout=self.startup_timeout,
                )
                self._sentinels.append(sentinel)
                sentinel.start()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process and remove the group's directory. Idempotent."""
        self._thaw_all()
        if self._servers or self._sentinels:
            self._last_ports = (
                tuple(server._port for server in self._servers),
                tuple(sentinel._port for sentinel in self._sentinels),
            )
        # Sentinels first, so that they do not start a failover while the data stops.
        for member in [*self._sentinels, *self._servers]:
            member.stop()
        self._servers = []
        self._sentinels = []
        self._dir_box.reap()
        self._dir = None
        _LIVE_GROUPS.discard(self)

    # ---- health

    def is_ok(self) -> bool:
        """Whether the group is fully healthy and can survive losing its master.

        Every process is up and not frozen; every sentinel names the same master, with
        no failover in progress, knows the two other sentinels and sees both replicas
        up; the master reports ``role:master`` and both replicas replicate from it with
        their link up.

        :returns: True when healthy.
        """
        if self._frozen or not self.is_running:
            return False
        named = self._named_masters()
        master = self._server_on(named[0]) if named[0] is not None else None
        if master is None or any(port != master.port for port in named):
            return False
        replica_ports = {server.port for server in self._servers if server is not master}
        for sentinel in self._sentinels:
            try:
                state = _pairs(sentinel.command("SENTINEL", "MASTER", self.service))
                replies = sentinel.command("SENTINEL", "REPLICAS", self.service)
            except (OSError, RuntimeError):
                return False
            if state.get("flags") != "master" or state.get("num-other-sentinels") != str(
                _SENTINELS - 1
            ):
                return False
            healthy = {
                int(entry["port"])
                for entry in map(_pairs, replies or [])
                if entry.get("flags") == "slave"
            }
            if not replica_ports <= healthy:
                return False
        if not _is_master(master):
            return False
        return all(
            _replicates(server, master.port) for server in self._servers if server is not master
        )

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until :meth:`is_ok`.

        :param timeout: seconds; :attr:`startup_timeout` by default.
        :raises ServerStartError: not healthy in time; the message has every process's
            state and log tail.
        """
        limit = self.startup_timeout if timeout is None else timeout
        if not _poll(self.is_ok, limit):
            raise ServerStartError(self._describe(f"did not become healthy within {limit:g}s"))

    def _describe(self, what: str) -> str:
        lines = [f"redis sentinel group {self.service!r} in {self._dir} {what}:"]
        for index, server in enumerate(self._servers):
            info = {} if server in self._frozen else _replication(server)
            state = {key: info.get(key) for key in ("role", "master_port", "master_link_status")}
            lines.append(
                f"data {index} {HOST}:{server._port} running={server.is_running} "
                f"frozen={server in self._frozen} {state}"
            )
        named = self._named_masters() if self._sentinels else []
        for index, (sentinel, port) in enumerate(zip(self._sentinels, named, strict=True)):
            lines.append(
                f"sentinel {index} {HOST}:{sentinel._port} running={sentinel.is_running} "
                f"frozen={sentinel in self._frozen} names master port {port}"
            )
        for member in self._members():
            if member._dir is not None:
                lines.append(_tail(member.log_path, lines=15))
        return "\n".join(lines)

    # ---- faults

    def kill_master(self) -> RedisServer:
        """SIGKILL the data server the sentinels name as master, as in a crash.

        :returns: the killed server (for :meth:`wait_failover` and :meth:`restart`).
        :raises ServerStartError: no sentinel names a master.
        """
        master = self.master()
        master.kill()
        return master

    def wait_failover(self, old: RedisServer | int, timeout: float = 20.0) -> RedisServer:
        """Wait until the sentinels have replaced master ``old`` and the data follows.

        Done when a majority of sentinels name another data server, that server reports
        ``role:master``, and every other live, unfrozen data server replicates from it
        with its link up.

        :param old: the former master (its server or port).
        :param timeout: seconds to wait (a split vote is retried after twice
            ``failover_timeout_ms``).
        :returns: the new master.
        :raises ServerStartError: no failover completed in time.
        """
        old_port = old if isinstance(old, int) else old.port
        found: list[RedisServer] = []

        def done() -> bool:
            votes = collections.Counter(p for p in self._named_masters() if p is not None)
            winners = [port for port, count in votes.items() if count >= _QUORUM]
            new = self._server_on(winners[0]) if winners else None
            if new is None or new.port == old_port or new in self._frozen or not _is_master(new):
                return False
            followers = [
                server
                for server in self._servers
                if server is not new
                and server.port != old_port
                and server.is_running
                and server not in self._frozen
            ]
            if not all(_replicates(server, new.port) for server in followers):
                return False
            found.append(new)
            return True

        if not _poll(done, timeout):
            raise ServerStartError(
                self._describe(f"did not fail over from {HOST}:{old_port} within {timeout:g}s")
            )
        return found[0]

    def freeze(self, server: RedisServer, *, cut_replication: bool = True) -> None:
        """SIGSTOP a member (data server or sentinel): alive, connected, silent.

        A frozen replica would still receive what its master sends (the kernel buffers
        it) and apply it when thawed, even after the master died. So by default its
        master also drops the replication link: writes from now on reach the replica
        only if it reconnects after :meth:`thaw`, while that master is alive.

        :param server: one of :attr:`servers` or :attr:`sentinels`.
        :param cut_replication: when ``server`` is a replica, make its master drop the
            link; False for a bare SIGSTOP.
        :raises ValueError: it is not a member of this group.
        """
        self._check_member(server)
        # Asked before the SIGSTOP (a frozen server answers nothing), cut after it (a
        # running replica would reconnect at once).
        master = None
        if cut_replication and server not in self._frozen:
            master = _master_of(server, self._servers)
        _freeze(server)
        self._frozen.add(server)
        if master is not None:
            _cut_replication(server, master)

    def thaw(self, server: RedisServer) -> None:
        """SIGCONT a member frozen by :meth:`freeze`.

        :param server: one of :attr:`servers` or :attr:`sentinels`.
        :raises ValueError: it is not a member of this group.
        """
        self._check_member(server)
        _thaw(server)
        self._frozen.discard(server)

    def _thaw_all(self) -> None:
        for member in list(self._frozen):
            _thaw(member)
        self._frozen.clear()

    def _check_member(self, server: RedisServer) -> None:
        if not any(server is member for member in self._members()):
            raise ValueError(f"{server!r} is not a member of {self!r}")

    def restart(self, server: RedisServer, timeout: float = 15.0) -> RedisServer:
        """Restart a killed, frozen or running member on its port; wait until it serves.

        A data server that is not the master the sentinels name comes back as a replica
        of that master (as sentinel would reconfigure it, without the several seconds
        sentinel waits before converting a returning master) and is waited for until it
        reports ``role:slave`` with its link up. The named master itself (killed before
        the sentinels noticed) comes back as an empty master; its replicas resync from
        it and lose their data, as with a real restart without persistence.

        :param server: one of :attr:`servers` or :attr:`sentinels`.
        :param timeout: seconds to wait for a replica's link.
        :returns: the server.
        :raises ValueError: it is not a member of this group.
        :raises ServerStartError: it did not come back in time.
        """
        self._check_member(server)
        if server in self._frozen:
            self.thaw(server)
        if isinstance(server, _Sentinel):
            return server.restart()
        master = self.master()
        self._start_data(server, master)
        if server is not master and not _poll(lambda: _replicates(server, master.port), timeout):
            raise ServerStartError(
                self._describe(
                    f"restarted {HOST}:{server.port} did not replicate from {master.port} "
                    f"within {timeout:g}s"
                )
            )
        return server

    def _start_data(self, server: RedisServer, master: RedisServer) -> None:
        server.extra_args = self._data_args(None if server is master else master.port)
        server.restart()

    def repair(self) -> None:
        """Bring the group back to :meth:`is_ok` after a test broke it.

        Thaws frozen processes, restarts dead sentinels, restarts dead data servers
        around the master the sentinels name and waits; if the group is still not
        healthy, rebuilds it from scratch on the same ports (all data is lost).

        :raises ServerStartError: it could not be repaired.
        """
        if not self._servers:
            self.start()
            return
        if self.is_ok():
            return
        try:
            self._thaw_all()
            for sentinel in self._sentinels:
                if not sentinel.is_running:
                    sentinel.restart()
            dead = [server for server in self._servers if not server.is_running]
            if dead:
                master = self.master()
                # The named master first, so the others have something to sync from.
                for server in sorted(dead, key=lambda s: s is not master):
                    self._start_data(server, master)
            self.wait_ok(timeout=max(10.0, 4 * self.down_after_ms / 1000))
        except ServerStartError:
            self.rebuild()

    def rebuild(self) -> None:
        """Recreate the group from scratch on the same ports (all data is lost).

        :raises ServerStartError: it could not be recreated.
        """
        data_ports = tuple(server._port for server in self._servers)
        sentinel_ports = tuple(sentinel._port for sentinel in self._sentinels)
        self._thaw_all()
        for member in [*self._sentinels, *self._servers]:
            member.stop()
        directory = self.dir
        for child in directory.iterdir():
            shutil.rmtree(child, ignore_errors=True)
        self._bring_up(
            data_ports or (None,) * (1 + _REPLICAS), sentinel_ports or (None,) * _SENTINELS
        )

    def flushall(self) -> None:
        """FLUSHALL on the master, then wait (up to 1 s) until its replicas applied it.

        :raises OSError: the master could not be reached.
        :raises RuntimeError: it refused.
        :raises ServerStartError: no sentinel names a master.
        """
        master = self.master()
        master.flushall()
        connected = int(_replication(master).get("connected_slaves", "0"))
        if connected:
            master.command("WAIT", connected, 1000)


# Groups own a directory besides their processes; stop them too at exit.
_LIVE_GROUPS: weakref.WeakSet[RedisSentinelGroup] = weakref.WeakSet()


def _stop_groups() -> None:
    for group in list(_LIVE_GROUPS):
        with contextlib.suppress(Exception):
            group.stop()


# Registered after stop_all_servers, so it runs first (atexit is LIFO): frozen processes
# are thawed and sentinels stopped before the data servers.
atexit.register(_stop_groups)
