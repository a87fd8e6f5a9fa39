"""Helpers shared by the replicated set-ups (Sentinel group, Cluster with replicas).

Freezing a server (SIGSTOP) leaves it alive and connected but silent, as a stalled VM or
a long GC pause would; a frozen server must be thawed before it is stopped, or its
SIGTERM waits unanswered until the SIGKILL fallback.

A frozen replica still *receives* what its master sends: the kernel acknowledges and
buffers it, and the replica applies it when thawed, even if the master died meanwhile.
To make a replica miss writes, its master must also drop the replication link
(:func:`_cut_replication`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers._resp import _info_fields
from thorbis_cache.testing.servers.redis_server import RedisServer

# For data servers that replicate. By default a master waits 5 s for more replicas to
# join a diskless full sync (tests want the first sync, and every resync after a
# failover, now), and on SIGTERM waits up to 10 s for lagging replicas (the data of
# these servers is thrown away on stop anyway).
_REPLICATION_ARGS = ("--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0")
_POLL = 0.05


def _signal(server: RedisServer, sig: signal.Signals) -> None:
    pid = server.pid
    if pid is None:
        return
    # The server leads its own process group; a fork child (a full sync in progress)
    # must stop and resume with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _freeze(server: RedisServer) -> None:
    """SIGSTOP ``server``'s process group (no-op when it is not running)."""
    _signal(server, signal.SIGSTOP)


def _thaw(server: RedisServer) -> None:
    """SIGCONT ``server``'s process group (harmless when it is not stopped)."""
    _signal(server, signal.SIGCONT)


def _replication(server: RedisServer, timeout: float = 1.0) -> dict[str, str]:
    """``INFO replication`` of ``server`` as a dict; empty when it does not answer."""
    if not server.is_running:
        return {}
    try:
        return _info_fields(server.command("INFO", "replication", timeout=timeout))
    except (OSError, RuntimeError):
        return {}


def _is_master(server: RedisServer) -> bool:
    return _replication(server).get("role") == "master"


def _replicates(server: RedisServer, master_port: int) -> bool:
    """Whether ``server`` is a replica of 127.0.0.1:``master_port`` with its link up."""
    info = _replication(server)
    return (
        info.get("role") == "slave"
        and info.get("master_port") == str(master_port)
        and info.get("master_link_status") == "up"
    )


def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    """Call ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def _local_port_to(pid: int, remote_port: int) -> int | None:
    """The local port of process ``pid``'s TCP connection to ``remote_port`` (Linux)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                return int(local.rsplit(":", 1)[1], 16)
    return None


def _master_of(replica: RedisServer, candidates: Sequence[RedisServer]) -> RedisServer | None:
    """The server among ``candidates`` that ``replica`` replicates from, if any."""
    info = _replication(replica)
    if info.get("role") != "slave":
        return None
    return next((m for m in candidates if info.get("master_port") == str(m._port)), None)


def _cut_replication(replica: RedisServer, master: RedisServer) -> None:
    """Make ``master`` drop its replication link to ``replica`` (if there is one).

    What the master writes from then on reaches the replica only once it reconnects;
    meant for a frozen replica, which cannot reconnect before it is thawed.
    """
    pid = replica.pid
    port = None if pid is None else _local_port_to(pid, master.port)
    if port is not None:
        # The replica's connection is a client of the master, known there by its address.
        with contextlib.suppress(OSError, RuntimeError):
            master.command("CLIENT", "KILL", "ADDR", f"{HOST}:{port}")
