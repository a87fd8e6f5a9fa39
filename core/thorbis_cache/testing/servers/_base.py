"""The process lifecycle shared by the server launchers, and the registry of live servers.

Every server that owns a process or a directory is in a weak registry; an ``atexit``
handler stops them all, and a server collected while running is killed by its finalizer.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers._process import _Child, _kill_group, _make_temp_dir

_PORT_ATTEMPTS = 8
_POLL_INTERVAL = 0.02


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


class _StartedInContext:
    """``with``-support for everything that starts processes (a server, a cluster, a
    Sentinel group): ``start()`` on entry -- stopping what it started if that fails,
    since ``__exit__`` does not run then -- and ``stop()`` on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

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


class _ServerBase(_StartedInContext):
    """Process handling shared by the Redis and PostgreSQL launchers."""

    _kind = "server"

    def __init__(self, *, port: int | None, startup_timeout: float) -> None:
        self._port = port
        self._port_fixed = port is not None
        self._startup_timeout = startup_timeout
        #: its directory, once started (see each launcher for what it holds)
        self._dir: Path | None = None
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
    def dir(self) -> Path:
        """The server's working directory (each launcher says what it holds).

        :raises ServerStartError: the server has never been started.
        """
        if self._dir is None:
            raise ServerStartError(f"{self._kind} has not been started; it has no directory")
        return self._dir

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
