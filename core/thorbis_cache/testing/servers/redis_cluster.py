"""An ephemeral Redis Cluster of standalone-started nodes on 127.0.0.1, with or without
replicas."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import RedisBinaries, find_redis
from thorbis_cache.testing.servers._base import _StartedInContext
from thorbis_cache.testing.servers._cluster_topology import (
    _agreed_layout,
    _agreed_owner,
    _built_layout,
    _join,
    _NodeEntry,
    _read_view,
    _replication_ok,
)
from thorbis_cache.testing.servers._ha import (
    _REPLICATION_ARGS,
    _cut_replication,
    _freeze,
    _is_master,
    _master_of,
    _poll,
    _replication,
    _thaw,
)
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers._process import _Child, _make_temp_dir, _tail
from thorbis_cache.testing.servers._resp import _info_fields
from thorbis_cache.testing.servers.redis_server import RedisServer

CLUSTER_SLOTS = 16384

# For clusters with replicas. A replica whose link to its master has been down longer
# than (factor * node timeout) refuses to fail over; 0 lets a replica that was frozen or
# restarted a moment ago still take over, as tests expect.
_REPLICA_ARGS = ("--cluster-replica-validity-factor", "0", *_REPLICATION_ARGS)


class RedisCluster(_StartedInContext):
    """A Redis Cluster of ``masters`` nodes, each with ``replicas`` replicas, on 127.0.0.1.

    Built without redis-cli: the 16384 slots are split evenly with
    ``CLUSTER ADDSLOTSRANGE``, node 0 meets the other masters, each master meets its
    replicas, each replica is attached with ``CLUSTER REPLICATE``, and start-up waits until
    every node reports ``cluster_state:ok`` with all slots served (and every replica's link
    is up).

    Nodes are numbered as built: ``0 .. masters-1`` are the masters in slot order, then
    replica ``r`` of master ``m`` is node ``masters + m * replicas + r``. A failover swaps
    roles; :meth:`master_of_slot` and friends ask the cluster who serves what now, and
    :meth:`repair` restores the layout as built.

    :param masters: number of master nodes (at least 1).
    :param replicas: replicas per master. With replicas, a node stays failed over to
        after ``node_timeout_ms`` plus about a second of election.
    :param extra_args: more ``redis-server`` arguments for every node.
    :param node_timeout_ms: ``cluster-node-timeout``.
    :param binaries: the redis-server to run; located with :func:`find_redis` by default.
    :param startup_timeout: seconds to wait for the cluster to become ok.
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        extra_args: Sequence[str] = (),
        node_timeout_ms: int = 2000,
        binaries: RedisBinaries | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if masters < 1:
            raise ValueError(f"a cluster needs at least one master, got {masters}")
        if replicas < 0:
            raise ValueError(f"replicas per master cannot be negative, got {replicas}")
        self.masters = masters
        self.replicas = replicas
        self.extra_args = tuple(extra_args)
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self._binaries = binaries
        self._nodes: list[RedisServer] = []
        self._frozen: set[int] = set()
        # Slots a killed master served, so that wait_failover knows whose they became.
        self._lost_slots: dict[int, tuple[tuple[int, int], ...]] = {}
        self._last_ports: tuple[int | None, ...] = ()
        self._dir: Path | None = None
        self._dir_box = _Child()
        self._finalizer = weakref.finalize(self, self._dir_box.reap)
        self._finalizer.atexit = False

    # ---- public state

    @property
    def nodes(self) -> list[RedisServer]:
        """The node servers as built: masters in slot order (node 0 serves the lowest
        slots), then their replicas (see the class docstring)."""
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

    def _node_count(self) -> int:
        return self.masters * (1 + self.replicas)

    def _make_nodes(self, ports: Sequence[int | None]) -> list[RedisServer]:
        directory = self.dir
        if self._binaries is None:
            self._binaries = find_redis()
        # Ours first, so that extra_args can override them.
        extra_args = (*(_REPLICA_ARGS if self.replicas else ()), *self.extra_args)
        return [
            RedisServer(
                port=port,
                dir=directory / f"node-{index}",
                extra_args=extra_args,
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
        ports: list[int | None] = list(self._last_ports) or [None] * self._node_count()
        self._bring_up(ports)
        return self

    def _bring_up(self, ports: Sequence[int | None]) -> None:
        """Start fresh nodes on ``ports``, assign slots, join them, wait for ``cluster_state:ok``.

        On any failure the whole cluster is stopped (nothing is left running or on disk).
        """
        self._nodes = self._make_nodes(ports)
        self._frozen.clear()
        self._lost_slots.clear()
        try:
            for node in self._nodes:
                node.start()
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        try:
            _join(self._nodes, self._slot_ranges(), self.replicas, timeout=self.startup_timeout)
        except TimeoutError as exc:
            raise ServerStartError(self._describe(str(exc))) from exc

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
        sees all 16384 slots served; with replicas, also whether every master has its
        ``replicas`` replicas, each with its replication link up.

        :returns: True when a cluster client can use the cluster from any node (and the
            cluster can survive losing any one master).
        """
        if self._frozen or not self.is_running:
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
        return not self.replicas or _replication_ok(self._nodes, self.masters, self.replicas)

    def _as_built(self) -> bool:
        """Whether every node agrees that every node has the role it was built with."""
        ports = self.ports
        built = _built_layout(ports[: self.masters], self._slot_ranges(), ports[self.masters :])
        return _agreed_layout(self._nodes) == built

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
            if index in self._frozen:
                lines.append(f"node {index} {HOST}:{node._port} frozen")
                continue
            info = self.cluster_info(index)
            keys = ("cluster_state", "cluster_slots_ok", "cluster_known_nodes")
            state = {key: info.get(key) for key in keys}
            if self.replicas:
                replication = _replication(node)
                state |= {key: replication.get(key) for key in ("role", "master_link_status")}
            lines.append(
                f"node {index} {HOST}:{node._port} running={node.is_running} {state}\n"
                + (_tail(node.log_path, lines=15) if node._dir is not None else "")
            )
        return "\n".join(lines)

    # ---- who serves what (roles change after a failover)

    def _index(self, node: int | RedisServer) -> int:
        if isinstance(node, int):
            if not 0 <= node < len(self._nodes):
                raise IndexError(f"node index {node} out of range 0..{len(self._nodes) - 1}")
            return node
        for index, candidate in enumerate(self._nodes):
            if candidate is node:
                return index
        raise ValueError(f"{node!r} is not a node of {self!r}")

    def _indices_by_port(self) -> dict[int | None, int]:
        return {node._port: index for index, node in enumerate(self._nodes)}

    def _index_of(self, port: int) -> int:
        index = self._indices_by_port().get(port)
        if index is None:
            raise ServerStartError(self._describe(f"lists {HOST}:{port}, not one of its nodes"))
        return index

    def _live(self) -> list[int]:
        """Indices of the nodes that are running and not frozen."""
        return [
            index
            for index, node in enumerate(self._nodes)
            if node.is_running and index not in self._frozen
        ]

    def _live_view(self) -> list[_NodeEntry]:
        entries = _read_view(self._nodes, self._live())
        if entries is None:
            raise ServerStartError(self._describe("has no live node that answers"))
        return entries

    def master_of_slot(self, slot: int) -> int:
        """The node that serves ``slot`` now, as a live node sees the cluster.

        :param slot: 0..16383.
        :returns: the node's index in :attr:`nodes`.
        :raises ValueError: the slot is out of range.
        :raises ServerStartError: no live node answers, or none sees the slot served.
        """
        if not 0 <= slot < CLUSTER_SLOTS:
            raise ValueError(f"slot must be in 0..{CLUSTER_SLOTS - 1}, got {slot}")
        for entry in self._live_view():
            if entry.is_master and entry.serves(slot):
                return self._index_of(entry.port)
        raise ServerStartError(self._describe(f"serves no slot {slot}"))

    def master_for_key(self, key: str | bytes) -> int:
        """The node that serves ``key``'s slot now (hash tags honoured).

        :param key: the key.
        :returns: the node's index in :attr:`nodes`.
        :raises ServerStartError: no live node answers.
        """
        raw = key.decode() if isinstance(key, bytes) else key
        live = self._live()
        if not live:
            raise ServerStartError(self._describe("has no live node to ask for a key slot"))
        slot = int(self._nodes[live[0]].command("CLUSTER", "KEYSLOT", raw))
        return self.master_of_slot(slot)

    def replicas_of(self, master: int | RedisServer) -> list[int]:
        """The nodes that replicate ``master`` now, as a live node sees the cluster.

        :param master: the master's index in :attr:`nodes` (or the server).
        :returns: indices, in :attr:`nodes` order.
        :raises ServerStartError: no live node answers.
        """
        port = self._nodes[self._index(master)].port
        entries = self._live_view()
        master_id = next((entry.id for entry in entries if entry.port == port), None)
        return sorted(
            self._index_of(entry.port) for entry in entries if entry.master_id == master_id
        )

    # ---- faults

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash); the others notice after the node timeout.

        :param index: the node's position in :attr:`nodes`.
        """
        self._remember_slots(index)
        self._nodes[index].kill()

    def _remember_slots(self, index: int) -> None:
        """Note the slots node ``index`` serves before it goes down (for wait_failover)."""
        if not self.replicas:
            return
        port = self._nodes[index]._port
        entries = _read_view(self._nodes, self._live()) or []
        slots = next((e.slots for e in entries if e.port == port and e.is_master), ())
        if slots:
            self._lost_slots[index] = slots

    def kill_master_for_key(self, key: str | bytes) -> int:
        """SIGKILL the node serving ``key`` now.

        :param key: the key.
        :returns: the killed node's index (for :meth:`wait_failover` and :meth:`restart`).
        :raises ServerStartError: no live node answers.
        """
        index = self.master_for_key(key)
        self.kill(index)
        return index

    def wait_failover(self, killed: int | RedisServer, timeout: float = 20.0) -> int:
        """Wait until a replica has taken over the slots of dead or frozen master ``killed``.

        Done when every live node sees another node serve those slots, that node reports
        ``role:master``, and every live node reports ``cluster_state:ok``.

        :param killed: the former master's index in :attr:`nodes` (or the server).
        :param timeout: seconds to wait.
        :returns: the index of the node that took over.
        :raises ValueError: ``killed`` served no slots when it was killed or frozen.
        :raises ServerStartError: no failover completed in time.
        """
        index = self._index(killed)
        slots = self._lost_slots.get(index)
        if not slots:
            raise ValueError(
                f"node {index} served no slots when it was killed or frozen: nothing to fail over"
            )
        slot = slots[0][0]
        found: list[int] = []

        def done() -> bool:
            live = self._live()
            if not all(self.cluster_info(i).get("cluster_state") == "ok" for i in live):
                return False
            owner = _agreed_owner(self._nodes, live, slot)
            if owner is None or owner == index or owner not in live:
                return False
            if not _is_master(self._nodes[owner]):
                return False
            found.append(owner)
            return True

        if not _poll(done, timeout):
            raise ServerStartError(
                self._describe(f"did not fail over from node {index} within {timeout:g}s")
            )
        return found[0]

    def freeze(self, node: int | RedisServer, *, cut_replication: bool = True) -> None:
        """SIGSTOP a node: alive, connected, silent; a frozen master is failed over
        after the node timeout.

        A frozen replica would still receive what its master sends (the kernel buffers
        it) and apply it when thawed. So by default its master also drops the
        replication link: writes from now on reach the replica only if it reconnects
        after :meth:`thaw`, while that master is alive.

        :param node: the node's index in :attr:`nodes` (or the server).
        :param cut_replication: when the node is a replica, make its master drop the
            link; False for a bare SIGSTOP.
        """
        index = self._index(node)
        server = self._nodes[index]
        # Asked before the SIGSTOP (a frozen node answers nothing), cut after it (a
        # running replica would reconnect at once).
        master = None
        if cut_replication and index not in self._frozen:
            master = _master_of(server, self._nodes)
        self._remember_slots(index)
        _freeze(server)
        self._frozen.add(index)
        if master is not None:
            _cut_replication(server, master)

    def thaw(self, node: int | RedisServer) -> None:
        """SIGCONT a node frozen by :meth:`freeze` (a failed-over master rejoins as a
        replica).

        :param node: the node's index in :attr:`nodes` (or the server).
        """
        index = self._index(node)
        _thaw(self._nodes[index])
        self._frozen.discard(index)

    def _thaw_all(self) -> None:
        for index in list(self._frozen):
            _thaw(self._nodes[index])
        self._frozen.clear()

    def restart(self, index: int) -> None:
        """Restart node ``index`` on its port with its ``nodes.conf``; wait for the cluster.

        A former master whose slots were taken over comes back as a replica of the node
        that took them.

        :param index: the node's position in :attr:`nodes`.
        :raises ServerStartError: the node did not start or the cluster did not become ok.
        """
        if index in self._frozen:
            self.thaw(index)
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
        if self.is_ok() and (not self.replicas or self._as_built()):
            return
        try:
            self._thaw_all()
            for node in self._nodes:
                if not node.is_running:
                    node.restart()
            # A restarted master is trusted again after about two node timeouts.
            self.wait_ok(timeout=max(10.0, self.node_timeout_ms * 5 / 1000))
            if self.replicas:
                self._restore_roles()
        except ServerStartError:
            self.rebuild()

    def _restore_roles(self) -> None:
        """Give the masters as built their slots back with manual failovers."""
        limit = max(10.0, self.node_timeout_ms * 5 / 1000)

        def restored() -> bool:
            return self._as_built() and self.is_ok()

        for force in (False, True):
            if restored():
                return
            for index in range(self.masters):
                if not _is_master(self._nodes[index]):
                    # Coordinated: the current master pauses writes until this replica
                    # has caught up, then it takes over without losing data. FORCE (no
                    # handshake with the master) only if that timed out.
                    args = ("FORCE",) if force else ()
                    with contextlib.suppress(OSError, RuntimeError):
                        self._nodes[index].command("CLUSTER", "FAILOVER", *args)
            if _poll(restored, limit / 2):
                return
        raise ServerStartError(self._describe("did not get its roles back as built"))

    def rebuild(self) -> None:
        """Recreate the cluster from scratch on the same ports (all data is lost).

        :raises ServerStartError: it could not be recreated.
        """
        ports = [node._port for node in self._nodes] or [None] * self._node_count()
        self._thaw_all()
        for node in self._nodes:
            node.stop()
        directory = self.dir
        for index in range(len(ports)):
            shutil.rmtree(directory / f"node-{index}", ignore_errors=True)
        self._bring_up(ports)

    def flushall(self) -> None:
        """FLUSHALL on every master; with replicas, also wait (up to 1 s per master) until
        its replicas applied it.

        :raises OSError: a node could not be reached.
        :raises RuntimeError: a node refused.
        """
        for node in self._nodes:
            if not self.replicas:
                node.flushall()
                continue
            info = _info_fields(node.command("INFO", "replication"))
            if info.get("role") != "master":
                continue
            node.flushall()
            connected = int(info.get("connected_slaves", "0"))
            if connected:
                node.command("WAIT", connected, 1000)

    def stop(self) -> None:
        """Stop every node and remove the cluster's directory. Idempotent."""
        # A frozen node would leave its SIGTERM unanswered until the SIGKILL fallback.
        self._thaw_all()
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
