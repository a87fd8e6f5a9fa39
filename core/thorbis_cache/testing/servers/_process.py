"""Spawning and reaping the server processes, their temp directories and logs.

Each child runs in its own session (so a signal to its process group reaches everything
it forked), gets ``PR_SET_PDEATHSIG=SIGKILL`` (so it dies with this process even after
``kill -9``) and, as root, may run under other credentials. Children are forked from a
thread that lives as long as the process (see :class:`_Spawner`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

import attrs

_STOP_TIMEOUT = 15.0
_LOG_TAIL_LINES = 40
_SHM = Path("/dev/shm")  # noqa: S108 -- only a parent for mkdtemp, which is safe there
_SHM_MIN_FREE = 1 << 30


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
