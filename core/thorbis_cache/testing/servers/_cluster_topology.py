"""A cluster's topology: joining the nodes, and reading who serves which slots and who
replicates whom from ``CLUSTER NODES``.

Node ids are what ``CLUSTER NODES`` links replicas to masters with; the launcher knows
its nodes by port, so views are reduced to ports here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from thorbis_cache.testing.servers._ha import _is_master, _poll, _replicates
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers.redis_server import RedisServer

_Slots = tuple[tuple[int, int], ...]


@attrs.frozen
class _NodeEntry:
    """One line of ``CLUSTER NODES``."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: _Slots

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        """Failed, suspected (``fail?``), or not known well enough yet."""
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


@attrs.frozen
class _Role:
    """A node's place in a cluster, by port: a master with its slots, or a replica."""

    port: int
    master_port: int | None = None
    slots: _Slots = ()


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _parse_nodes(reply: object) -> list[_NodeEntry]:
    """The entries of a ``CLUSTER NODES`` reply."""
    entries: list[_NodeEntry] = []
    for line in _text(reply).splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0]
        slots: list[tuple[int, int]] = []
        for token in fields[8:]:
            if token.startswith("["):  # a slot being migrated or imported
                continue
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        entries.append(
            _NodeEntry(
                id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return entries


def _layout(entries: Sequence[_NodeEntry]) -> frozenset[_Role] | None:
    """The roles in one node's view; None while a node is failing or a master unknown."""
    if any(entry.failing for entry in entries):
        return None
    port_of = {entry.id: entry.port for entry in entries}
    roles: set[_Role] = set()
    for entry in entries:
        if entry.is_master:
            roles.add(_Role(entry.port, slots=entry.slots))
        elif entry.master_id in port_of:
            roles.add(_Role(entry.port, master_port=port_of[entry.master_id]))
        else:
            return None
    return frozenset(roles)


def _built_layout(
    master_ports: Sequence[int], ranges: Sequence[tuple[int, int]], replica_ports: Sequence[int]
) -> frozenset[_Role]:
    """The roles as built: master ``m`` serves ``ranges[m]``, replicas are numbered
    master by master (``len(replica_ports) // len(master_ports)`` each)."""
    per_master = len(replica_ports) // len(master_ports)
    roles = {_Role(port, slots=(span,)) for port, span in zip(master_ports, ranges, strict=True)}
    roles |= {
        _Role(port, master_port=master_ports[index // per_master])
        for index, port in enumerate(replica_ports)
    }
    return frozenset(roles)


def _join(
    nodes: Sequence[RedisServer],
    ranges: Sequence[tuple[int, int]],
    replicas: int,
    *,
    timeout: float,
) -> list[str]:
    """Make a cluster of fresh nodes: the first ``len(ranges)`` are masters serving
    ``ranges``, then ``replicas`` replicas per master, master by master.

    :returns: the node ids, in ``nodes`` order.
    :raises TimeoutError: a replica did not learn of its master in time.
    """
    masters = len(ranges)
    for index, node in enumerate(nodes):
        # Distinct config epochs up front (as redis-cli does) skip the slow
        # epoch-collision resolution.
        node.command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
    for node, (first, last) in zip(nodes, ranges, strict=False):
        node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
    for node in nodes[1:masters]:
        nodes[0].command("CLUSTER", "MEET", HOST, node.port)
    ids = [_text(node.command("CLUSTER", "MYID")) for node in nodes]
    attach = [(index, (index - masters) // replicas) for index in range(masters, len(nodes))]
    for replica, master in attach:
        # Met by its own master, a replica knows that master after one handshake rather
        # than after gossip from the seed.
        nodes[master].command("CLUSTER", "MEET", HOST, nodes[replica].port)
    for replica, master in attach:
        node = nodes[replica]

        def knows_master(node: RedisServer = node, master_id: str = ids[master]) -> bool:
            entries = _parse_nodes(node.command("CLUSTER", "NODES"))
            return any(e.id == master_id and "handshake" not in e.flags for e in entries)

        if not _poll(knows_master, timeout):
            raise TimeoutError(f"node {replica} never learned of its master node {master}")
        node.command("CLUSTER", "REPLICATE", ids[master])
    return ids


def _read_view(nodes: Sequence[RedisServer], candidates: Iterable[int]) -> list[_NodeEntry] | None:
    """``CLUSTER NODES`` of the first of ``candidates`` (node indices) that answers."""
    for index in candidates:
        try:
            return _parse_nodes(nodes[index].command("CLUSTER", "NODES"))
        except (OSError, RuntimeError):
            continue
    return None


def _agreed_layout(nodes: Sequence[RedisServer]) -> frozenset[_Role] | None:
    """The roles, if every node answers, sees the same ones, and sees none failing."""
    layouts: set[frozenset[_Role] | None] = set()
    for index in range(len(nodes)):
        entries = _read_view(nodes, [index])
        layouts.add(None if entries is None else _layout(entries))
    return layouts.pop() if len(layouts) == 1 else None


def _agreed_owner(nodes: Sequence[RedisServer], live: Sequence[int], slot: int) -> int | None:
    """The index of the node that every node in ``live`` sees serving ``slot``, if any."""
    owners: set[int | None] = set()
    for index in live:
        entries = _read_view(nodes, [index]) or []
        port = next((e.port for e in entries if e.is_master and e.serves(slot)), None)
        owners.add(next((i for i, node in enumerate(nodes) if node.port == port), None))
    return owners.pop() if len(owners) == 1 else None


def _replication_ok(nodes: Sequence[RedisServer], masters: int, replicas: int) -> bool:
    """Whether every node agrees on ``masters`` masters with slots, each followed by
    ``replicas`` replicas, and the servers confirm it (roles, replication links up)."""
    # All views must agree: a manual failover, or a vote for a replica, is refused by a
    # node whose view still lags behind.
    layout = _agreed_layout(nodes)
    by_port = {node.port: node for node in nodes}
    if layout is None or any(role.port not in by_port for role in layout):
        return False
    serving = [role for role in layout if role.master_port is None]
    # A master without slots is a failed-over master that has not become a replica yet.
    if len(serving) != masters or not all(role.slots for role in serving):
        return False
    for master in serving:
        followers = [role.port for role in layout if role.master_port == master.port]
        if len(followers) != replicas or not _is_master(by_port[master.port]):
            return False
        if not all(_replicates(by_port[port], master.port) for port in followers):
            return False
    return True
