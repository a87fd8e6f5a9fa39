"""Ephemeral Redis (standalone and cluster) and PostgreSQL servers for tests.

Every server listens on 127.0.0.1 on a free port, keeps its files in a fresh temp
directory (``thorbis-*``) and is a direct child of this process. Nothing here uses or
touches a service on the default ports 6379/5432.

Cleanup does not depend on the caller being tidy:

* each child runs in its own process group (``start_new_session``), so ``stop``/``kill``
  reach every process it forked;
* each child gets ``PR_SET_PDEATHSIG=SIGKILL``, so it dies with this process even after
  ``kill -9``;
* an ``atexit`` handler stops every live server, and a server object that is garbage
  collected while running is killed and its directory removed;
* ``stop()`` removes the temp directory and is idempotent.

Temp directories go to ``$THORBIS_TMPDIR`` when set, else to ``/dev/shm`` when it is a
roomy tmpfs (PostgreSQL's initdb and CREATE DATABASE are several times faster in memory),
else to :func:`tempfile.gettempdir`.

This module only starts and stops servers; it holds no cache logic and does not need
pytest (see :mod:`thorbis_cache.testing.pytest_plugin` for fixtures).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import attrs

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import (
    PostgresBinaries,
    RedisBinaries,
    find_postgres,
    find_redis,
)

__all__ = [
    "CLUSTER_SLOTS",
    "HOST",
    "PostgresServer",
    "RedisCluster",
    "RedisServer",
    "free_cluster_port",
    "free_port",
    "stop_all_servers",
]

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
# Redis Cluster's bus listens on the data port + 10000.
_CLUSTER_BUS_OFFSET = 10000
_MAX_CLUSTER_PORT = 55000
_LOWEST_PORT = 10000
_PORT_ATTEMPTS = 8
_STOP_TIMEOUT = 15.0
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 40
_SHM = Path("/dev/shm")  # noqa: S108 -- only a parent for mkdtemp, which is safe there
_SHM_MIN_FREE = 1 << 30
# Not the global random: tests (and pytest-randomly) seed that one identically in every
# process, which would make parallel workers race for the same ports.
_RANDOM = random.SystemRandom()


def _temp_parent() -> str | None:
    """Where temp directories go; None means :func:`tempfile.gettempdir`."""
    explicit = os.environ.get("THORBIS_TMPDIR")
    if explicit:
        return explicit
    try:
        stats = os.statvfs(_SHM)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize >= _SHM_MIN_FREE and os.access(_SHM, os.W_OK | os.X_OK):
        return str(_SHM)
    return None


def _make_temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_temp_parent()))


# --------------------------------------------------------------------------- ports


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


# --------------------------------------------------------------------------- spawning


@attrs.frozen
class _Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()


def _make_preexec(creds: _Credentials | None) -> Callable[[], None]:
    """The function run in the child between fork and exec."""
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        if creds is not None:
            # Supplementary groups were resolved in the parent: initgroups() reads
            # /etc/group through NSS, which is not safe after fork in a threaded process.
            os.setgid(creds.gid)
            os.setgroups(list(creds.groups))
            os.setuid(creds.uid)
        if prctl is not None:
            # After setuid: changing credentials clears the parent-death signal.
            if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
            # The parent may have died before prctl took effect; then nobody would kill us.
            if os.getppid() != parent:
                os._exit(1)

    return preexec


class _Spawner:
    """Starts children from a thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process.
    A server started from a short-lived thread (``asyncio.to_thread``, a pool worker)
    would be killed when that thread exits, so such calls are handed to one daemon thread;
    the main thread forks directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            func, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func())
            except BaseException as exc:
                future.set_exception(exc)

    def popen(self, func: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        if threading.current_thread() is threading.main_thread():
            return func()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="thorbis-server-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._queue.put((func, future))
        return future.result()


_SPAWNER = _Spawner()


def _spawn(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path,
    creds: _Credentials | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output appended to ``log``."""
    with log.open("ab") as out:

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=_make_preexec(creds),
                close_fds=True,
            )

        return _SPAWNER.popen(launch)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child is a session leader, so its pid is also its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig`` to the leader, wait, then SIGKILL the whole group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process in the child's group and reap the leader."""
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(_STOP_TIMEOUT)


def _tail(*paths: Path, lines: int = _LOG_TAIL_LINES) -> str:
    parts: list[str] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        if tail.strip():
            parts.append(f"--- {path} ---\n{tail}")
    return "\n".join(parts) if parts else "(no log output)"


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Child:
    """What must be released when a server object disappears without ``stop()``.

    Held by the server and by its ``weakref.finalize``; it must not reference the server.
    """

    __slots__ = ("owned_dir", "proc")

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.owned_dir: Path | None = None

    def reap(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)
            self.owned_dir = None


# Servers that may be running; atexit stops them. Weak so that the registry never keeps
# a dropped server alive (its finalizer kills it instead).
_LIVE: weakref.WeakSet[_ServerBase] = weakref.WeakSet()


def stop_all_servers() -> None:
    """Stop every server started by this process that is still alive (runs at exit).

    Errors are swallowed so that one broken server does not keep others running.
    """
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all_servers)


class _PortInUse(ServerStartError):
    """The server could not bind its port; a new port is tried when the port was ours."""


class _ServerBase:
    """Process handling shared by the Redis and PostgreSQL launchers."""

    _kind = "server"

    def __init__(self, *, port: int | None, startup_timeout: float) -> None:
        self._port = port
        self._port_fixed = port is not None
        self._startup_timeout = startup_timeout
        self._child = _Child()
        self._finalizer = weakref.finalize(self, self._child.reap)
        # At exit stop_all_servers() shuts servers down gracefully; the finalizer is only
        # for objects collected while running.
        self._finalizer.atexit = False

    # ---- public state

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return HOST

    @property
    def port(self) -> int:
        """The TCP port; fixed from the first successful start on (restarts reuse it).

        :raises ServerStartError: the server has never been started and has no port yet.
        """
        if self._port is None:
            raise ServerStartError(f"{self._kind} has not been started; it has no port yet")
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        proc = self._child.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive (it may still be starting up)."""
        proc = self._child.proc
        return proc is not None and proc.poll() is None

    # ---- context manager

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            # __exit__ does not run when __enter__ fails; do not leave the directory.
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- to be provided by subclasses

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # ---- shared helpers

    def _start_with_port_retry(
        self, launch: Callable[[int], None], pick: Callable[[], int]
    ) -> None:
        attempts = 1 if self._port_fixed else _PORT_ATTEMPTS
        last: _PortInUse | None = None
        for _ in range(attempts):
            port = self._port if self._port_fixed and self._port is not None else pick()
            try:
                launch(port)
            except _PortInUse as exc:
                self._discard_process()
                last = exc
                continue
            except BaseException:
                self._discard_process()
                raise
            self._port = port
            self._port_fixed = True
            return
        raise ServerStartError(f"gave up after {attempts} ports; last attempt: {last}") from last

    def _discard_process(self) -> None:
        proc = self._child.proc
        if proc is not None:
            _kill_group(proc)
            self._child.proc = None

    def _new_dir(self, prefix: str) -> Path:
        path = _make_temp_dir(prefix)
        self._child.owned_dir = path
        # Registered from the moment it owns something, so that even a failed start is
        # cleaned up at exit.
        _LIVE.add(self)
        return path

    def _remove_owned_dir(self) -> None:
        owned = self._child.owned_dir
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
            self._child.owned_dir = None


# --------------------------------------------------------------------------- redis


class _RespError(Exception):
    """An error reply from Redis."""


def _read_reply(stream: IO[bytes]) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by redis")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return _RespError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed by redis")
        return data[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected reply from redis: {line[:80]!r}")


def _redis_command(port: int, *args: str | int, timeout: float = 5.0) -> Any:
    """Send one command to 127.0.0.1:``port`` and return its reply.

    A tiny RESP2 client, so that start-up and teardown depend on no client library.

    :raises _RespError: Redis answered with an error.
    :raises OSError: Redis could not be reached.
    """
    parts = [str(arg).encode() for arg in args]
    payload = b"*%d\r\n" % len(parts) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in parts
    )
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            reply = _read_reply(stream)
    if isinstance(reply, _RespError):
        raise reply
    return reply


def _info_fields(text: Any) -> dict[str, str]:
    if isinstance(text, bytes):
        text = text.decode()
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


class RedisServer(_ServerBase):
    """One ``redis-server`` on 127.0.0.1, data in a temp directory.

    :param port: listen on this port; by default a free one is picked (and another tried
        if it is taken meanwhile). Either way, restarts reuse the port.
    :param appendonly: turn on the AOF so data survives ``kill()`` + ``restart()``.
    :param extra_args: more ``--name value`` arguments for ``redis-server``.
    :param dir: working directory (created when missing, kept on ``stop()``); by default
        a fresh ``thorbis-redis-*`` temp directory, removed on ``stop()``.
    :param cluster_node: run as a Redis Cluster node (``cluster-enabled yes``); the port is
        then picked so that the bus port ``port + 10000`` is free too.
    :param cluster_node_timeout_ms: ``cluster-node-timeout`` of a cluster node.
    :param binaries: the redis-server to run; located with :func:`find_redis` by default.
    :param startup_timeout: seconds to wait for the server to answer.
    """

    _kind = "redis-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        dir: Path | None = None,
        cluster_node: bool = False,
        cluster_node_timeout_ms: int = 2000,
        binaries: RedisBinaries | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)
        self.cluster_node = cluster_node
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self._binaries = binaries
        self._given_dir = dir
        self._dir: Path | None = dir

    # ---- public state

    @property
    def binaries(self) -> RedisBinaries:
        """The redis-server binary in use (located on first use)."""
        if self._binaries is None:
            self._binaries = find_redis()
        return self._binaries

    @property
    def dir(self) -> Path:
        """The server's working directory (data, AOF, log, ``nodes.conf``).

        :raises ServerStartError: the server has never been started.
        """
        if self._dir is None:
            raise ServerStartError("redis-server has not been started; it has no directory")
        return self._dir

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.dir / "redis.log"

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<RedisServer {HOST}:{self._port} {state} dir={self._dir}>"

    # ---- lifecycle

    def start(self) -> Self:
        """Start the server (no-op when running) and wait until it answers.

        :returns: the server itself.
        :raises ServerBinaryNotFound: no usable redis-server.
        :raises ServerStartError: it exited or did not answer in time; the message names
            the binary, port and directory and carries the log tail.
        """
        if self.is_running:
            return self
        binaries = self.binaries
        if self._dir is None:
            self._dir = self._new_dir("thorbis-redis-")
        self._dir.mkdir(parents=True, exist_ok=True)
        _LIVE.add(self)
        pick = free_cluster_port if self.cluster_node else free_port
        self._start_with_port_retry(lambda port: self._launch(binaries, port), pick)
        return self

    def _argv(self, binaries: RedisBinaries, port: int) -> list[str]:
        directory = self.dir
        argv = [
            str(binaries.server),
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(directory / "redis.log"),
            # Fault-injection tests use DEBUG SLEEP and friends; loopback-only anyway.
            "--enable-debug-command", "local",
        ]  # fmt: skip
        if self.cluster_node:
            argv += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
            ]  # fmt: skip
        argv += self.extra_args
        return argv

    def _launch(self, binaries: RedisBinaries, port: int) -> None:
        directory = self.dir
        out_log = directory / "redis.out"
        log = directory / "redis.log"
        # Only output of this launch tells whether *this* attempt lost its port.
        log_offsets = (_size(log), _size(out_log))
        proc = _spawn(self._argv(binaries, port), log=out_log, cwd=directory)
        self._child.proc = proc
        deadline = time.monotonic() + self._startup_timeout

        def failure(what: str) -> str:
            return (
                f"redis-server {binaries.server} on {HOST}:{port} (dir {directory}) {what}; "
                f"log tail:\n{_tail(log, out_log)}"
            )

        while True:
            code = proc.poll()
            if code is not None:
                fresh = _read_from(log, log_offsets[0]) + _read_from(out_log, log_offsets[1])
                if "Address already in use" in fresh:
                    raise _PortInUse(failure("could not bind its port"))
                raise ServerStartError(failure(f"exited with status {code} during start-up"))
            try:
                info = _info_fields(_redis_command(port, "INFO", "server", timeout=1.0))
            except (OSError, _RespError):
                info = {}
            # Checking the pid guards against another server that happens to own the port.
            if info.get("process_id") == str(proc.pid):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    failure(f"did not answer within {self._startup_timeout:g}s")
                )
            time.sleep(_POLL_INTERVAL)

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL) and remove its temp directory.

        Idempotent; safe on a server that was never started or was killed.
        """
        proc = self._child.proc
        if proc is not None:
            _terminate(proc, signal.SIGTERM, _STOP_TIMEOUT)
            self._child.proc = None
        self._remove_owned_dir()
        if self._given_dir is None:
            self._dir = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the server's process group, as in a crash; files stay for ``restart()``."""
        proc = self._child.proc
        if proc is not None:
            _kill_group(proc)
            self._child.proc = None

    def restart(self) -> Self:
        """Stop the process if running (keeping files), then start on the same port and dir.

        :returns: the server itself.
        :raises ServerStartError: it did not come back (the port may have been taken).
        """
        proc = self._child.proc
        if proc is not None:
            _terminate(proc, signal.SIGTERM, _STOP_TIMEOUT)
            self._child.proc = None
        return self.start()

    # ---- helpers used by fixtures

    def command(self, *args: str | int, timeout: float = 5.0) -> Any:
        """Send one raw command and return the decoded RESP2 reply (for set-up code).

        :param args: the command and its arguments.
        :param timeout: socket timeout in seconds.
        :returns: the reply (str, bytes, int, list or None).
        :raises OSError: the server could not be reached.
        :raises RuntimeError: Redis answered with an error.
        """
        try:
            return _redis_command(self.port, *args, timeout=timeout)
        except _RespError as exc:
            command = " ".join(str(arg) for arg in args[:2])
            raise RuntimeError(f"redis {HOST}:{self.port} {command}: {exc}") from exc

    def ping(self) -> bool:
        """Whether the server answers PING right now.

        :returns: True on PONG.
        """
        if not self.is_running:
            return False
        try:
            return bool(self.command("PING", timeout=2.0) == "PONG")
        except (OSError, RuntimeError):
            return False

    def flushall(self) -> None:
        """Delete every key in every database (synchronously).

        :raises OSError: the server could not be reached.
        :raises RuntimeError: Redis refused.
        """
        self.command("FLUSHALL", "SYNC")


# --------------------------------------------------------------------------- redis cluster


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
        self._nodes = self._make_nodes(ports)
        try:
            for node in self._nodes:
                node.start()
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

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
        self._nodes = self._make_nodes(ports)
        try:
            for node in self._nodes:
                node.start()
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

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


# --------------------------------------------------------------------------- postgres


def _postgres_credentials() -> _Credentials | None:
    """The user to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerStartError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it "
            "as; create one (`useradd --system --user-group postgres`) or run as non-root"
        ) from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return _Credentials(uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, name=entry.pw_name)


def _check_reachable(directory: Path, creds: _Credentials) -> None:
    """Fail clearly when the postgres user cannot reach our temp dir (e.g. TMPDIR=/root/x)."""
    for parent in directory.parents:
        try:
            stats = parent.stat()
        except OSError:
            continue
        if stats.st_uid == creds.uid:
            searchable = bool(stats.st_mode & 0o100)
        elif stats.st_gid in creds.groups or stats.st_gid == creds.gid:
            searchable = bool(stats.st_mode & 0o010)
        else:
            searchable = bool(stats.st_mode & 0o001)
        if not searchable:
            raise ServerStartError(
                f"postgres runs as user {creds.name!r}, which cannot reach {directory}: "
                f"{parent} is not searchable for it; set THORBIS_TMPDIR to a directory it "
                "can reach (e.g. /tmp)"
            )


_IPC_RMID = 0


def _remove_stale_shm(pidfile: Path) -> None:
    """Remove the SysV segment a SIGKILLed postmaster left behind (it outlives the process)."""
    try:
        lines = pidfile.read_text().splitlines()
        shmid = int(lines[6].split()[1])
    except (OSError, IndexError, ValueError):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(_IPC_RMID), None)


class PostgresServer(_ServerBase):
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, durability off).

    As root, ``initdb`` and ``postgres`` run as the ``postgres`` user (PostgreSQL refuses
    root); the server is still a direct child of this process.

    :param port: listen on this port; by default a free one is picked. Restarts reuse it.
    :param max_connections: ``max_connections`` of the server.
    :param settings: more ``-c name=value`` server settings.
    :param binaries: the PostgreSQL to run; located with :func:`find_postgres` by default.
    :param startup_timeout: seconds to wait for the server to accept connections.
    """

    _kind = "postgres"

    def __init__(
        self,
        *,
        port: int | None = None,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        binaries: PostgresBinaries | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self._binaries = binaries
        self._dir: Path | None = None

    # ---- public state

    @property
    def binaries(self) -> PostgresBinaries:
        """The PostgreSQL binaries in use (located on first use)."""
        if self._binaries is None:
            self._binaries = find_postgres()
        return self._binaries

    @property
    def dir(self) -> Path:
        """The temp directory: ``data/`` (PGDATA), ``postgres.log`` and the unix socket.

        :raises ServerStartError: the server has never been started.
        """
        if self._dir is None:
            raise ServerStartError("postgres has not been started; it has no directory")
        return self._dir

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file (its stderr)."""
        return self.dir / "postgres.log"

    @property
    def user(self) -> str:
        """The database superuser (always ``postgres``)."""
        return "postgres"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq/asyncpg DSN for database ``dbname`` as the superuser.

        :param dbname: database name.
        :returns: ``postgresql://postgres@127.0.0.1:PORT/dbname``.
        """
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<PostgresServer {HOST}:{self._port} {state} dir={self._dir}>"

    # ---- lifecycle

    def start(self) -> Self:
        """Create the cluster on first start (initdb), start it, wait for connections.

        No-op when running.

        :returns: the server itself.
        :raises ServerBinaryNotFound: no usable PostgreSQL.
        :raises ServerStartError: initdb or the server failed or timed out; the message
            names the binary, port and directory and carries the log tail.
        """
        if self.is_running:
            return self
        binaries = self.binaries
        creds = _postgres_credentials()
        if self._dir is None:
            root = self._new_dir("thorbis-pg-")
            if creds is not None:
                os.chown(root, creds.uid, creds.gid)
            self._dir = root
            if creds is not None:
                _check_reachable(root, creds)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(binaries, creds)
        self._start_with_port_retry(lambda port: self._launch(binaries, creds, port), free_port)
        return self

    def _env(self) -> dict[str, str]:
        # PG* variables of the caller (PGDATA, PGPORT, ...) must not leak into our server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["HOME"] = str(self.dir)
        return env

    def _initdb(self, binaries: PostgresBinaries, creds: _Credentials | None) -> None:
        log = self.dir / "initdb.log"
        argv = [
            str(binaries.initdb),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        proc = _spawn(argv, log=log, cwd=self.dir, creds=creds, env=self._env())
        self._child.proc = proc
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(proc)
            self._child.proc = None
        if code != 0:
            raise ServerStartError(
                f"initdb {binaries.initdb} into {self.data_dir} "
                f"{'timed out' if code is None else f'exited with status {code}'}"
                f"{f' (as user {creds.name})' if creds else ''}; log tail:\n{_tail(log)}"
            )

    def _argv(self, binaries: PostgresBinaries, port: int) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": str(self.max_connections),
            # Dynamic shared memory in PGDATA rather than /dev/shm: a killed server
            # leaves nothing behind outside its temp directory.
            "dynamic_shared_memory_type": "mmap",
            **self.settings,
        }
        argv = [str(binaries.postgres), "-D", str(self.data_dir), "-p", str(port)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _launch(self, binaries: PostgresBinaries, creds: _Credentials | None, port: int) -> None:
        log = self.log_path
        offset = _size(log)
        pidfile = self.data_dir / "postmaster.pid"
        argv = self._argv(binaries, port)
        proc = _spawn(argv, log=log, cwd=self.dir, creds=creds, env=self._env())
        self._child.proc = proc
        deadline = time.monotonic() + self._startup_timeout

        def failure(what: str) -> str:
            return (
                f"postgres {binaries.postgres} on {HOST}:{port} (dir {self.dir}) {what}; "
                f"log tail:\n{_tail(log)}"
            )

        while True:
            code = proc.poll()
            if code is not None:
                if "Address already in use" in _read_from(log, offset):
                    raise _PortInUse(failure("could not bind its port"))
                raise ServerStartError(failure(f"exited with status {code} during start-up"))
            if self._ready(pidfile, proc.pid, port):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    failure(f"did not accept connections within {self._startup_timeout:g}s")
                )
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _ready(pidfile: Path, pid: int, port: int) -> bool:
        # postmaster.pid line 1 is the postmaster's pid, line 8 its status; "ready" means
        # accepting connections. Matching the pid ignores a stale file from a killed run.
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(pid) or lines[7].strip() != "ready":
            return False
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return True
        except OSError:
            return False

    def _after_death(self) -> None:
        """Clean what a SIGKILLed postmaster leaves: its SysV segment and postmaster.pid."""
        if self._dir is None:
            return
        pidfile = self.data_dir / "postmaster.pid"
        _remove_stale_shm(pidfile)
        # Our group is dead, so the lock file is stale; left in place, a recycled pid could
        # make the next start believe another postmaster owns the directory.
        pidfile.unlink(missing_ok=True)

    def _shutdown_process(self) -> None:
        proc = self._child.proc
        if proc is None:
            return
        graceful = proc.poll() is None
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        _terminate(proc, signal.SIGINT, _STOP_TIMEOUT)
        self._child.proc = None
        if not graceful or (self._dir is not None and (self.data_dir / "postmaster.pid").exists()):
            self._after_death()

    def stop(self) -> None:
        """Fast shutdown (SIGINT, then SIGKILL) and remove the temp directory. Idempotent."""
        self._shutdown_process()
        self._remove_owned_dir()
        self._dir = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the server's process group (postmaster and backends), as in a crash.

        The data directory stays; ``restart()`` runs crash recovery on it.
        """
        proc = self._child.proc
        if proc is not None:
            _kill_group(proc)
            self._child.proc = None
            self._after_death()

    def restart(self) -> Self:
        """Shut down if running (keeping the data), then start on the same port and dir.

        :returns: the server itself.
        :raises ServerStartError: it did not come back.
        """
        self._shutdown_process()
        return self.start()
