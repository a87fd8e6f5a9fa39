"""One ephemeral ``pgbouncer`` on 127.0.0.1 in front of a PostgreSQL server.

Its configuration, auth file, log and pid file live in a fresh temp directory, removed on
``stop()``; the process is a child of this one, like the other launchers' (never a
system service). Every database name is passed through to the backend (a ``*`` entry),
and unknown startup parameters are refused as PgBouncer does by default
(``ignore_startup_parameters`` is not set), so tests see its real behaviour.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Self

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import PgBouncerBinaries, find_pgbouncer
from thorbis_cache.testing.servers._base import _LIVE, _POLL_INTERVAL, _PortInUse
from thorbis_cache.testing.servers._ports import HOST, free_port
from thorbis_cache.testing.servers._process import (
    _STOP_TIMEOUT,
    _Credentials,
    _read_from,
    _size,
    _spawn,
    _tail,
    _terminate,
)
from thorbis_cache.testing.servers.postgres_server import (
    _check_reachable,
    _postgres_credentials,
    _PostgresWire,
)

__all__ = ["POOL_MODES", "PgBouncer"]

#: The values ``pool_mode`` accepts.
POOL_MODES = ("session", "transaction", "statement")

# From 1.23 on SIGTERM waits for every client to disconnect; SIGQUIT is the immediate
# shutdown there. Before 1.23 SIGTERM is the immediate shutdown (SIGQUIT is unhandled).
_SIGQUIT_FROM = (1, 23)


class PgBouncer(_PostgresWire):
    """A ``pgbouncer`` on 127.0.0.1 pooling connections to ``127.0.0.1:backend_port``.

    ``dir`` holds ``pgbouncer.ini``, ``users.txt`` (the auth file: user ``postgres``),
    ``pgbouncer.log`` (its log file), ``pgbouncer.out`` (its stderr) and
    ``pgbouncer.pid``. Authentication is ``trust``; ``postgres`` is also an admin user
    (the ``pgbouncer`` console database). No unix socket is opened.

    As root, ``pgbouncer`` runs as the ``postgres`` user (it refuses root, like
    PostgreSQL); it is still a direct child of this process.

    :param backend_port: port of the PostgreSQL server on 127.0.0.1 (trust auth for
        ``postgres``, e.g. a :class:`~thorbis_cache.testing.servers.PostgresServer`).
    :param pool_mode: ``"session"``, ``"transaction"`` or ``"statement"``.
    :param port: listen on this port; by default a free one is picked. Restarts reuse it.
    :param binaries: the pgbouncer to run; located with :func:`find_pgbouncer` by default.
    :param startup_timeout: seconds to wait for it to accept connections.
    :raises ValueError: ``pool_mode`` is not one of :data:`POOL_MODES`.
    """

    _kind = "pgbouncer"

    def __init__(
        self,
        *,
        backend_port: int,
        pool_mode: str = "transaction",
        port: int | None = None,
        binaries: PgBouncerBinaries | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise ValueError(
                f"pool_mode must be one of {', '.join(POOL_MODES)}; got {pool_mode!r}"
            )
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.backend_port = backend_port
        self.pool_mode = pool_mode
        self._binaries = binaries

    # ---- public state

    @property
    def binaries(self) -> PgBouncerBinaries:
        """The pgbouncer in use (located on first use)."""
        if self._binaries is None:
            self._binaries = find_pgbouncer()
        return self._binaries

    @property
    def config_path(self) -> Path:
        """``pgbouncer.ini``."""
        return self.dir / "pgbouncer.ini"

    @property
    def log_path(self) -> Path:
        """PgBouncer's log file (``logfile``)."""
        return self.dir / "pgbouncer.log"

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (
            f"<PgBouncer {HOST}:{self._port} -> {HOST}:{self.backend_port} "
            f"pool_mode={self.pool_mode} {state} dir={self._dir}>"
        )

    def config(self, port: int) -> str:
        """The text of ``pgbouncer.ini`` for listening on ``port``."""
        directory = self.dir
        lines = [
            "[databases]",
            f"* = host={HOST} port={self.backend_port}",
            "",
            "[pgbouncer]",
            f"listen_addr = {HOST}",
            f"listen_port = {port}",
            "auth_type = trust",
            f"auth_file = {directory / 'users.txt'}",
            f"pool_mode = {self.pool_mode}",
            "max_client_conn = 500",
            "default_pool_size = 20",
            f"logfile = {directory / 'pgbouncer.log'}",
            f"pidfile = {directory / 'pgbouncer.pid'}",
            "unix_socket_dir =",
            "admin_users = postgres",
        ]
        return "\n".join(lines) + "\n"

    # ---- lifecycle

    def start(self) -> Self:
        """Start it (no-op when running) and wait until it accepts connections.

        :returns: the pooler itself.
        :raises ServerBinaryNotFound: no usable pgbouncer.
        :raises ServerStartError: it exited or did not listen in time; the message names
            the binary, port and directory and carries the log tail.
        """
        if self.is_running:
            return self
        binaries = self.binaries
        creds = _postgres_credentials()
        if self._dir is None:
            root = self._new_dir("thorbis-pgbouncer-")
            if creds is not None:
                os.chown(root, creds.uid, creds.gid)
            self._dir = root
            if creds is not None:
                _check_reachable(root, creds)
        self._write(self.dir / "users.txt", '"postgres" ""\n', creds)
        _LIVE.add(self)
        self._start_with_port_retry(lambda port: self._launch(binaries, creds, port), free_port)
        return self

    @staticmethod
    def _write(path: Path, text: str, creds: _Credentials | None) -> None:
        path.write_text(text)
        if creds is not None:
            # Readable by the pgbouncer process whatever our umask.
            os.chown(path, creds.uid, creds.gid)

    def _launch(self, binaries: PgBouncerBinaries, creds: _Credentials | None,
                port: int) -> None:
        directory = self.dir
        log = directory / "pgbouncer.log"
        out = directory / "pgbouncer.out"
        self._write(self.config_path, self.config(port), creds)
        # Not running, so any pid file is stale; a recycled pid in it would make
        # pgbouncer believe another instance owns the directory.
        (directory / "pgbouncer.pid").unlink(missing_ok=True)
        # Only output of this launch tells whether *this* attempt lost its port.
        offsets = (_size(log), _size(out))
        argv = [str(binaries.pgbouncer), str(self.config_path)]
        self._child.proc = proc = _spawn(argv, log=out, cwd=directory, creds=creds)
        deadline = time.monotonic() + self._startup_timeout

        def failure(what: str) -> str:
            # Its stderr repeats the log file and also has what precedes opening it.
            tail = _tail(out) if _size(out) else _tail(log)
            return (
                f"pgbouncer {binaries.pgbouncer} on {HOST}:{port} (dir {directory}) {what}"
                f"{f' (as user {creds.name})' if creds else ''}; log tail:\n{tail}"
            )

        while True:
            code = proc.poll()
            if code is not None:
                fresh = _read_from(log, offsets[0]) + _read_from(out, offsets[1])
                if "Address already in use" in fresh:
                    raise _PortInUse(failure("could not bind its port"))
                raise ServerStartError(failure(f"exited with status {code} during start-up"))
            if "listening on" in _read_from(log, offsets[0]) and self._accepts(port):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    failure(f"did not accept connections within {self._startup_timeout:g}s")
                )
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return True
        except OSError:
            return False

    def _shutdown_signal(self) -> signal.Signals:
        version = self._binaries.version if self._binaries is not None else ()
        return signal.SIGQUIT if version >= _SIGQUIT_FROM else signal.SIGTERM

    def stop(self) -> None:
        """Immediate shutdown (then SIGKILL) and remove the temp directory. Idempotent;
        safe on a pooler that was never started or was killed."""
        proc = self._child.proc
        if proc is not None:
            _terminate(proc, self._shutdown_signal(), _STOP_TIMEOUT)
            self._child.proc = None
        self._remove_owned_dir()
        self._dir = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the pooler, as in a crash; ``start()`` brings it back on the same port
        and directory."""
        self._discard_process()
