"""Resharding a test Redis Cluster: one hash slot moved to another master, the way
``redis-cli --cluster reshard`` moves it (``CLUSTER SETSLOT ... IMPORTING/MIGRATING``,
the keys in batches, each with ``MIGRATE``, then ``CLUSTER SETSLOT ... NODE`` on every master).

While a slot moves, its keys sit on two nodes: a command for a key already moved gets
``ASK``, and one naming several keys split between the nodes gets ``TRYAGAIN`` until the
last batch has moved. ``pause`` between batches keeps the slot in that state for a
while, as a big tenant's slot is on a busy cluster.
"""

from __future__ import annotations

import time

from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers.redis_cluster import RedisCluster

__all__ = ["migrate_slot"]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def migrate_slot(cluster: RedisCluster, slot: int, to: int, *, batch: int = 100,
                 pause: float = 0.0) -> int:
    """Move ``slot`` to master ``to`` (an index in :attr:`RedisCluster.nodes`).

    :param batch: keys moved between two pauses.
    :param pause: seconds between two batches.
    :returns: the keys moved.
    :raises ValueError: ``to`` is not a master, or already serves the slot.
    :raises RuntimeError: a node refused a step.
    """
    source = cluster.nodes[cluster.master_of_slot(slot)]
    target = cluster.nodes[to]
    if source is target:
        raise ValueError(f"node {to} already serves slot {slot}")
    if to in {r for m in range(cluster.masters) for r in cluster.replicas_of(m)}:
        raise ValueError(f"node {to} is a replica: a slot moves to a master")
    source_id = _text(source.command("CLUSTER", "MYID"))
    target_id = _text(target.command("CLUSTER", "MYID"))
    target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    while True:
        keys = [_text(k) for k in source.command("CLUSTER", "GETKEYSINSLOT", slot, batch)]
        if not keys:
            break
        for key in keys:  # one key per MIGRATE: its single-key form
            source.command("MIGRATE", HOST, target.port, key, 0, 5000)
        moved += len(keys)
        if pause:
            time.sleep(pause)
    # Every master learns the new owner: the target first, then the source, then the
    # others (Redis's documented order: a source updated before the target would send
    # clients to a target still importing, which sends them back).
    for node in (target, source, *(n for i, n in enumerate(cluster.nodes)
                                    if i < cluster.masters and n not in (source, target))):
        node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved
