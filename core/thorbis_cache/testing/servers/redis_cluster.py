"""An ephemeral Redis Cluster of standalone-started nodes on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import RedisBinaries, find_redis
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers._process import _Child, _make_temp_dir, _tail
from thorbis_cache.testing.servers._resp import _info_fields
from thorbis_cache.testing.servers.redis_server import RedisServer

CLUSTER_SLOTS = 16384


class RedisCluster:
    """A Redis Cluster of ``masters`` nodes (no replicas) on 127.0.0.1.

    Built without redis-cli: the 16384 slots are split evenly with
    ``CLUSTER ADDSLOTSRANGE``, node 0 meets the others, and start-up waits until every node
    reports ``cluster_state:ok`` with all slots served.

    :param masters: number of master nodes (at least 1).
    :param extra_args: more ``redis-server`` arguments for every node.
    :param node_timeout_ms: ``cluster-node-timeout``.
    :param binaries: the redis-server to run; located with :func:`find_redis` by default.
    :param startup_timeout: seconds to wait for the cluster to become ok.
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        extra_args: Sequence[str] = (),
        node_timeout_ms: int = 2000,
        binaries: RedisBinaries | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if masters < 1:
            raise ValueError(f"a cluster needs at least one master, got {masters}")
        self.masters = masters
        self.extra_args = tuple(extra_args)
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self._binaries = binaries
        self._nodes: list[RedisServer] = []
        self._last_ports: tuple[int | None, ...] = ()
        self._dir: Path | None = None
        self._dir_box = _Child()
        self._finalizer = weakref.finalize(self, self._dir_box.reap)
        self._finalizer.atexit = False

    # ---- public state

    @property
    def nodes(self) -> list[RedisServer]:
        """The node servers, in slot order (node 0 serves the lowest slots)."""
        return list(self._nodes)

    @property
    def ports(self) -> list[int]:
        """The nodes' data ports."""
        return [node.port for node in self._nodes]

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return HOST

    @property
    def port(self) -> int:
        """Port of node 0 (the seed node in :attr:`url`).

        :raises ServerStartError: the cluster has never been started.
        """
        if not self._nodes:
            raise ServerStartError("redis cluster has not been started; it has no port yet")
        return self._nodes[0].port

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:PORT`` with node 0's port as the seed."""
        return f"redis+cluster://{HOST}:{self.port}"

    @property
    def dir(self) -> Path:
        """Parent directory of the nodes' directories (``node-0``, ``node-1``, ...).

        :raises ServerStartError: the cluster has never been started.
        """
        if self._dir is None:
            raise ServerStartError("redis cluster has not been started; it has no directory")
        return self._dir

    @property
    def is_running(self) -> bool:
        """Whether every node process is alive (the cluster may still be converging)."""
        return bool(self._nodes) and all(node.is_running for node in self._nodes)

    def __repr__(self) -> str:
        ports = ",".join(str(node._port) for node in self._nodes)
        return f"<RedisCluster {HOST}:[{ports}] dir={self._dir}>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- lifecycle

    def _slot_ranges(self) -> list[tuple[int, int]]:
        size, extra = divmod(CLUSTER_SLOTS, self.masters)
        ranges: list[tuple[int, int]] = []
        first = 0
        for index in range(self.masters):
            count = size + (1 if index < extra else 0)
            ranges.append((first, first + count - 1))
            first += count
        return ranges

    def _make_nodes(self, ports: Sequence[int | None]) -> list[RedisServer]:
        directory = self.dir
        if self._binaries is None:
            self._binaries = find_redis()
        return [
            RedisServer(
                port=port,
                dir=directory / f"node-{index}",
                extra_args=self.extra_args,
                cluster_node=True,
                cluster_node_timeout_ms=self.node_timeout_ms,
                binaries=self._binaries,
            )
            for index, port in enumerate(ports)
        ]

    def start(self) -> Self:
        """Start the nodes, assign the slots, join them, wait for ``cluster_state:ok``.

        No-op when already running.

        :returns: the cluster itself.
        :raises ServerBinaryNotFound: no usable redis-server.
        :raises ServerStartError: a node did not start or the cluster did not become ok.
        """
        if self._nodes:
            # Started before: bring back what is down rather than start a second set.
            self.repair()
            return self
        self._dir = _make_temp_dir("thorbis-rcluster-")
        self._dir_box.owned_dir = self._dir
        _LIVE_CLUSTERS.add(self)
        # A stopped cluster started again comes back on its old ports.
        ports: list[int | None] = list(self._last_ports) or [None] * self.masters
        self._bring_up(ports)
        return self

    def _bring_up(self, ports: Sequence[int | None]) -> None:
        """Start fresh nodes on ``ports``, assign slots, join them, wait for ``cluster_state:ok``.

        On any failure the whole cluster is stopped (nothing is left running or on disk).
        """
        self._nodes = self._make_nodes(ports)
        try:
            for node in self._nodes:
                node.start()
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        for index, (node, (first, last)) in enumerate(
            zip(self._nodes, self._slot_ranges(), strict=True)
        ):
            # Distinct config epochs up front (as redis-cli does) skip the slow
            # epoch-collision resolution.
            node.command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self._nodes[0]
        for node in self._nodes[1:]:
            seed.command("CLUSTER", "MEET", HOST, node.port)

    def cluster_info(self, index: int) -> dict[str, str]:
        """``CLUSTER INFO`` of node ``index`` as a dict (empty when unreachable).

        :param index: the node's position in :attr:`nodes`.
        :returns: the fields, e.g. ``{"cluster_state": "ok", ...}``.
        """
        try:
            return _info_fields(self._nodes[index].command("CLUSTER", "INFO", timeout=2.0))
        except (OSError, RuntimeError):
            return {}

    def is_ok(self) -> bool:
        """Whether every node is up, reports ``cluster_state:ok``, knows every node, and
        sees all 16384 slots served.

        :returns: True when a cluster client can use the cluster from any node.
        """
        if not self.is_running:
            return False
        expected = {
            "cluster_state": "ok",
            "cluster_slots_assigned": str(CLUSTER_SLOTS),
            "cluster_slots_ok": str(CLUSTER_SLOTS),
            "cluster_known_nodes": str(len(self._nodes)),
        }
        for index in range(len(self._nodes)):
            info = self.cluster_info(index)
            if any(info.get(key) != value for key, value in expected.items()):
                return False
        return True

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until :meth:`is_ok`.

        :param timeout: seconds; :attr:`startup_timeout` by default.
        :raises ServerStartError: not ok in time; the message has every node's state and
            log tail.
        """
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        while not self.is_ok():
            if time.monotonic() > deadline:
                raise ServerStartError(self._describe("did not reach cluster_state:ok"))
            time.sleep(0.05)

    def _describe(self, what: str) -> str:
        lines = [f"redis cluster in {self._dir} {what}:"]
        for index, node in enumerate(self._nodes):
            info = self.cluster_info(index)
            keys = ("cluster_state", "cluster_slots_ok", "cluster_known_nodes")
            state = {key: info.get(key) for key in keys}
            lines.append(
                f"node {index} {HOST}:{node._port} running={node.is_running} {state}\n"
                + (_tail(node.log_path, lines=15) if node._dir is not None else "")
            )
        return "\n".join(lines)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash); the others notice after the node timeout.

        :param index: the node's position in :attr:`nodes`.
        """
        self._nodes[index].kill()

    def restart(self, index: int) -> None:
        """Restart node ``index`` on its port with its ``nodes.conf``; wait for the cluster.

        :param index: the node's position in :attr:`nodes`.
        :raises ServerStartError: the node did not start or the cluster did not become ok.
        """
        self._nodes[index].restart()
        self.wait_ok()

    def repair(self) -> None:
        """Bring the cluster back to a healthy state after a test broke it.

        Restarts dead nodes and waits; if the cluster is still not ok (slots moved, nodes
        reset or forgotten), rebuilds it from empty nodes on the same ports.

        :raises ServerStartError: it could not be repaired.
        """
        if not self._nodes:
            self.start()
            return
        if self.is_ok():
            return
        try:
            for node in self._nodes:
                if not node.is_running:
                    node.restart()
            # A restarted master is trusted again after about two node timeouts.
            self.wait_ok(timeout=max(10.0, self.node_timeout_ms * 5 / 1000))
        except ServerStartError:
            self.rebuild()

    def rebuild(self) -> None:
        """Recreate the cluster from scratch on the same ports (all data is lost).

        :raises ServerStartError: it could not be recreated.
        """
        ports: list[int | None] = [node._port for node in self._nodes] or [None] * self.masters
        for node in self._nodes:
            node.stop()
        directory = self.dir
        for index in range(len(ports)):
            shutil.rmtree(directory / f"node-{index}", ignore_errors=True)
        self._bring_up(ports)

    def flushall(self) -> None:
        """FLUSHALL on every master.

        :raises OSError: a node could not be reached.
        :raises RuntimeError: a node refused.
        """
        for node in self._nodes:
            node.flushall()

    def stop(self) -> None:
        """Stop every node and remove the cluster's directory. Idempotent."""
        if self._nodes:
            self._last_ports = tuple(node._port for node in self._nodes)
        for node in self._nodes:
            node.stop()
        self._nodes = []
        self._dir_box.reap()
        self._dir = None
        _LIVE_CLUSTERS.discard(self)


# Clusters own a directory besides their nodes; stop them too at exit.
_LIVE_CLUSTERS: weakref.WeakSet[RedisCluster] = weakref.WeakSet()


def _stop_clusters() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster.stop()


# Registered after stop_all_servers, so it runs first (atexit is LIFO): nodes are then
# stopped through their cluster.
atexit.register(_stop_clusters)
