"""Free TCP ports on 127.0.0.1 for the test servers.

Ports are drawn at random (from a per-process :class:`random.SystemRandom`) below the
kernel's ephemeral range when it leaves room, and are checked by binding them. The caller
must still cope with losing a race for the port.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
# Redis Cluster's bus listens on the data port + 10000.
_CLUSTER_BUS_OFFSET = 10000
_MAX_CLUSTER_PORT = 55000
_LOWEST_PORT = 10000
# Not the global random: tests (and pytest-randomly) seed that one identically in every
# process, which would make parallel workers race for the same ports.
_RANDOM = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    # No SO_REUSEADDR: a port with lingering TIME_WAIT sockets is skipped, not risked.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _random_port(low: int, high: int, accept: Callable[[int], bool]) -> int | None:
    for _ in range(200):
        port = _RANDOM.randrange(low, high)
        if accept(port):
            return port
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    Ports are drawn below the kernel's ephemeral range when it leaves room: the kernel
    never hands those out to outgoing connections, so a server restarted on the same port
    cannot find it taken by a client socket (or by a client connected to itself).

    :returns: the port number (the caller must still cope with losing a race for it).
    :raises OSError: no free port was found.
    """
    high = _ephemeral_low()
    if high - _LOWEST_PORT >= 1000:
        port = _random_port(_LOWEST_PORT, high, _bindable)
        if port is not None:
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A port ``p`` on 127.0.0.1 such that ``p`` and ``p + 10000`` (the cluster bus) are free.

    :returns: the data port, always below 55000.
    :raises OSError: no such pair was found.
    """

    def both_free(port: int) -> bool:
        return _bindable(port) and _bindable(port + _CLUSTER_BUS_OFFSET)

    # Keep both the data and the bus port below the ephemeral range when it allows.
    high = min(_MAX_CLUSTER_PORT, _ephemeral_low() - _CLUSTER_BUS_OFFSET)
    if high - _LOWEST_PORT >= 1000:
        port = _random_port(_LOWEST_PORT, high, both_free)
        if port is not None:
            return port
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port < _MAX_CLUSTER_PORT and both_free(port):
            return port
    raise OSError(f"no free port pair p, p+{_CLUSTER_BUS_OFFSET} found on {HOST}")
