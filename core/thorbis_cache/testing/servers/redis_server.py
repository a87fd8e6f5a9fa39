"""One ephemeral ``redis-server`` (standalone or a cluster node) on 127.0.0.1."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from thorbis_cache import deploy_examples
from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import RedisBinaries, find_redis
from thorbis_cache.testing.servers._base import _LIVE, _POLL_INTERVAL, _PortInUse, _ServerBase
from thorbis_cache.testing.servers._ports import HOST, free_cluster_port, free_port
from thorbis_cache.testing.servers._process import (
    _STOP_TIMEOUT,
    _read_from,
    _size,
    _spawn,
    _tail,
    _terminate,
)
from thorbis_cache.testing.servers._resp import _info_fields, _redis_command, _RespError


class RedisServer(_ServerBase):
    """One ``redis-server`` on 127.0.0.1, data in a temp directory.

    ``dir`` holds the data, the AOF, the log and ``nodes.conf``.

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
    #: The example config included before the per-instance arguments (None: none).
    _example: str | None = deploy_examples.REDIS_CONF

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
        self._dir = dir

    # ---- public state

    @property
    def binaries(self) -> RedisBinaries:
        """The redis-server binary in use (located on first use)."""
        if self._binaries is None:
            self._binaries = find_redis()
        return self._binaries

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
        argv = [str(binaries.server)]
        if self._example is not None:
            # deploy/redis/redis.conf first, so the settings below override it.
            argv += ["--include", str(deploy_examples.path(self._example))]
        argv += [
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
        self._discard_process()

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
