"""An ephemeral PostgreSQL cluster on 127.0.0.1 (trust auth, durability off)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import PostgresBinaries, find_postgres
from thorbis_cache.testing.servers._base import _LIVE, _POLL_INTERVAL, _PortInUse, _ServerBase
from thorbis_cache.testing.servers._ports import HOST, free_port
from thorbis_cache.testing.servers._process import (
    _STOP_TIMEOUT,
    _Credentials,
    _kill_group,
    _read_from,
    _signal_group,
    _size,
    _spawn,
    _tail,
    _terminate,
)


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


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux's ``/proc``; none elsewhere)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in listed.split()]


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


class _PostgresWire(_ServerBase):
    """A process that speaks PostgreSQL's protocol on 127.0.0.1 (the server, a pooler)."""

    @property
    def user(self) -> str:
        """The database superuser (always ``postgres``)."""
        return "postgres"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq/asyncpg DSN for database ``dbname`` as the superuser (through a
        pooler: on its backend).

        :param dbname: database name.
        :returns: ``postgresql://postgres@127.0.0.1:PORT/dbname``.
        """
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"


class PostgresServer(_PostgresWire):
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, durability off).

    ``dir`` holds ``data/`` (PGDATA), ``postgres.log`` and the unix socket.

    As root, ``initdb`` and ``postgres`` run as the ``postgres`` user (PostgreSQL refuses
    root); the server is still a direct child of this process.

    :param port: listen on this port; by default a free one is picked. Restarts reuse it.
    :param max_connections: ``max_connections`` of the server.
    :param settings: more ``-c name=value`` server settings.
    :param binaries: the PostgreSQL to run; located with :func:`find_postgres` by default.
    :param startup_timeout: seconds to wait for the server to accept connections.
    :param standby_of: make this server a streaming standby of that (running) one: its
        data directory is a ``pg_basebackup`` of it, and it replays its WAL until
        :meth:`promote` (how a host's PostgreSQL fails over).
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
        standby_of: PostgresServer | None = None,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self._binaries = binaries
        self.standby_of = standby_of

    # ---- public state

    @property
    def binaries(self) -> PostgresBinaries:
        """The PostgreSQL binaries in use (located on first use)."""
        if self._binaries is None:
            self._binaries = find_postgres()
        return self._binaries

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file (its stderr)."""
        return self.dir / "postgres.log"

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
            if self.standby_of is None:
                self._initdb(binaries, creds)
            else:
                self._base_backup(binaries, creds, self.standby_of)
        self._start_with_port_retry(lambda port: self._launch(binaries, creds, port), free_port)
        return self

    def _env(self) -> dict[str, str]:
        # PG* variables of the caller (PGDATA, PGPORT, ...) must not leak into our server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["HOME"] = str(self.dir)
        return env

    def _initdb(self, binaries: PostgresBinaries, creds: _Credentials | None) -> None:
        self._run_tool([
            str(binaries.initdb),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ], "initdb", creds)  # fmt: skip

    def _base_backup(self, binaries: PostgresBinaries, creds: _Credentials | None,
                     primary: PostgresServer) -> None:
        if not primary.is_running:
            raise ServerStartError(f"standby of {primary!r}: its primary is not running")
        # -R writes primary_conninfo and standby.signal: the server starts as a standby
        # streaming from the primary; -X stream copies the WAL the backup needs.
        self._run_tool([
            str(binaries.bindir / "pg_basebackup"),
            "-D", str(self.data_dir),
            "-h", HOST, "-p", str(primary.port), "-U", "postgres",
            "-X", "stream", "-R", "--checkpoint=fast", "--no-sync",
        ], "pg_basebackup", creds)  # fmt: skip

    def _run_tool(self, argv: list[str], name: str, creds: _Credentials | None) -> None:
        log = self.dir / f"{name}.log"
        running = self._child.proc  # the server itself, while promoting
        proc = _spawn(argv, log=log, cwd=self.dir, creds=creds, env=self._env())
        if running is None:
            self._child.proc = proc  # killed with us if we are stopped meanwhile
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(proc)
            self._child.proc = running
        if code != 0:
            raise ServerStartError(
                f"{name} {argv[0]} into {self.data_dir} "
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
            # Logical decoding capture (thorbis_cache.postgres.logical) needs
            # wal_level=logical and a slot per worker group; every test database may
            # hold one, and the bench's psycopg2 client takes a WAL sender.
            "wal_level": "logical",
            "max_replication_slots": "64",
            "max_wal_senders": "16",
            # A slot nobody reads (a test that failed before dropping it) must not keep
            # WAL without bound: past this much the slot is invalidated and its WAL freed,
            # the failure the logical capture treats as a slot fault.
            "max_slot_wal_keep_size": "1GB",
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
        self.thaw()  # a frozen server would not hear the shutdown
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

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every process it started (each backend is a
        session of its own: the process group holds the postmaster alone): alive, its
        connections open, silent, as a server that hangs (a stalled disk, a frozen VM)
        or drops off the network without a reset. New connections wait for an answer
        that does not come. :meth:`thaw` (or :meth:`stop`) ends it."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped (harmless otherwise)."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        proc = self._child.proc
        if proc is None:
            return
        _signal_group(proc, sig)  # the postmaster first: it starts no one meanwhile
        for pid in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def restart(self) -> Self:
        """Shut down if running (keeping the data), then start on the same port and dir.

        :returns: the server itself.
        :raises ServerStartError: it did not come back.
        """
        self._shutdown_process()
        return self.start()

    def promote(self) -> Self:
        """Promote this standby to a primary (``pg_ctl promote``, waiting until it
        accepts writes): what a failover does. It then runs on a new timeline.

        :raises ServerStartError: it is not a running standby, or did not finish.
        """
        if not self.is_running or self.standby_of is None:
            raise ServerStartError(f"{self!r} is not a running standby: nothing to promote")
        self._run_tool([str(self.binaries.pg_ctl), "promote", "-w", "-t",
                        str(int(self._startup_timeout)), "-D", str(self.data_dir)],
                       "promote", _postgres_credentials())
        self.standby_of = None
        return self
