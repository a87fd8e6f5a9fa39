"""Locate (and optionally install) the server binaries the test kit runs.

Lookup order:

* redis-server (>= 7): ``$THORBIS_REDIS_SERVER``, then ``PATH``, then ``/usr/bin`` and
  ``/usr/local/bin``.
* PostgreSQL (>= 15): ``$THORBIS_PG_BINDIR``, then a ``PATH`` directory holding both
  ``postgres`` and ``initdb``, then the newest ``/usr/lib/postgresql/*/bin``.
* prometheus and promtool (>= 2.33, for the metrics tests): ``$THORBIS_PROMETHEUS``
  (the ``prometheus`` binary; ``promtool`` beside it), then ``PATH``, then ``/usr/bin``
  (Debian's ``prometheus`` package).
* pgbouncer (>= 1.15, for the connection-pooler tests): ``$THORBIS_PGBOUNCER`` (the
  ``pgbouncer`` binary), then ``PATH``, then ``/usr/sbin/pgbouncer`` (Debian's
  ``pgbouncer`` package).

``python -m thorbis_cache.testing.binaries ensure`` prints what it found and, as root on a
machine with apt, installs what is missing (``make servers`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

from thorbis_cache.errors import ServerBinaryNotFound

B = TypeVar("B")

__all__ = [
    "MIN_PGBOUNCER_VERSION",
    "MIN_POSTGRES_VERSION",
    "MIN_PROMETHEUS_VERSION",
    "MIN_REDIS_VERSION",
    "PgBouncerBinaries",
    "PostgresBinaries",
    "PrometheusBinaries",
    "RedisBinaries",
    "ensure_binaries",
    "ensure_pgbouncer",
    "ensure_postgres",
    "ensure_prometheus",
    "ensure_redis",
    "find_pgbouncer",
    "find_postgres",
    "find_prometheus",
    "find_redis",
    "main",
]

MIN_REDIS_VERSION: tuple[int, ...] = (7,)
MIN_POSTGRES_VERSION: tuple[int, ...] = (15,)

MIN_PROMETHEUS_VERSION: tuple[int, ...] = (2, 33)
MIN_PGBOUNCER_VERSION: tuple[int, ...] = (1, 15)

REDIS_ENV = "THORBIS_REDIS_SERVER"
PG_ENV = "THORBIS_PG_BINDIR"
PROMETHEUS_ENV = "THORBIS_PROMETHEUS"
PGBOUNCER_ENV = "THORBIS_PGBOUNCER"

_REDIS_FALLBACK_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))
_PG_GLOB = "/usr/lib/postgresql/*/bin"
_PGBOUNCER_FALLBACK = Path("/usr/sbin/pgbouncer")
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# Debian's convention: a policy-rc.d exiting 101 forbids maintainer scripts to start
# services, so installing redis-server does not leave a system redis on 6379 (nor
# pgbouncer a system pgbouncer on 6432).
_POLICY_RC_D_DENY = (
    "#!/bin/sh\n# written by thorbis-cache while installing test servers\nexit 101\n"
)

_REDIS_VERSION_RE = re.compile(r"\bv=(\d+(?:\.\d+)*)")
_PG_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)")
_PROMETHEUS_VERSION_RE = re.compile(r"\bversion (\d+(?:\.\d+)*)")
# First line of `pgbouncer --version`: "PgBouncer 1.18.0".
_PGBOUNCER_VERSION_RE = re.compile(r"^PgBouncer (\d+(?:\.\d+)*)", re.MULTILINE)

# apt-get update is slow and needed once per process at most.
_apt_updated = False


def _fmt(version: Sequence[int]) -> str:
    return ".".join(str(part) for part in version)


class _Versioned:
    """What every located binary says of its version (``version`` is the subclass's
    field)."""

    __slots__ = ()
    version: tuple[int, ...]

    @property
    def version_string(self) -> str:
        """The version as dotted text, e.g. ``"7.0.15"``."""
        return _fmt(self.version)


@attrs.frozen
class RedisBinaries(_Versioned):
    """A usable ``redis-server`` binary.

    :ivar server: path of the ``redis-server`` executable.
    :ivar version: its version, e.g. ``(7, 0, 15)``.
    """

    server: Path
    version: tuple[int, ...]


@attrs.frozen
class PostgresBinaries(_Versioned):
    """A usable PostgreSQL installation (server and initdb in one directory).

    :ivar bindir: directory holding ``postgres``, ``initdb`` and friends.
    :ivar version: version of ``postgres``, e.g. ``(15, 18)``.
    """

    bindir: Path
    version: tuple[int, ...]

    @property
    def postgres(self) -> Path:
        """Path of the ``postgres`` server executable."""
        return self.bindir / "postgres"

    @property
    def initdb(self) -> Path:
        """Path of ``initdb``."""
        return self.bindir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        """Path of ``pg_ctl``."""
        return self.bindir / "pg_ctl"

    @property
    def pg_isready(self) -> Path:
        """Path of ``pg_isready``."""
        return self.bindir / "pg_isready"


@attrs.frozen
class PrometheusBinaries(_Versioned):
    """A usable ``prometheus`` and the ``promtool`` beside it.

    :ivar prometheus: path of the ``prometheus`` server.
    :ivar promtool: path of ``promtool`` (rule checks and unit tests).
    :ivar version: the server's version, e.g. ``(2, 42, 0)``.
    """

    prometheus: Path
    promtool: Path
    version: tuple[int, ...]


@attrs.frozen
class PgBouncerBinaries(_Versioned):
    """A usable ``pgbouncer``.

    :ivar pgbouncer: path of the ``pgbouncer`` executable.
    :ivar version: its version, e.g. ``(1, 18, 0)``.
    """

    pgbouncer: Path
    version: tuple[int, ...]


# --------------------------------------------------------------------------- probing


def _run_version(binary: Path) -> str | None:
    """Output of ``binary --version``, or None when it cannot be run."""
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout + done.stderr


def _parse(pattern: re.Pattern[str], text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    match = pattern.search(text)
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _redis_version(binary: Path) -> tuple[int, ...] | None:
    return _parse(_REDIS_VERSION_RE, _run_version(binary))


def _postgres_version(bindir: Path) -> tuple[int, ...] | None:
    return _parse(_PG_VERSION_RE, _run_version(bindir / "postgres"))


def _usable_version(path: Path, pattern: re.Pattern[str], minimum: tuple[int, ...],
                    expected: str) -> tuple[int, ...] | str:
    """The version of the executable at ``path`` if it is at least ``minimum``, or why
    it is not usable (``expected``: what ``--version`` should have printed)."""
    if not _is_executable(path):
        return f"{path} is not an executable file"
    version = _parse(pattern, _run_version(path))
    if version is None:
        return f"{path}: `--version` printed no {expected}"
    if version < minimum:
        return f"{path} is version {_fmt(version)}"
    return version


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _unique(paths: Iterator[Path]) -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for path in paths:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _redis_missing(detail: str) -> ServerBinaryNotFound:
    return ServerBinaryNotFound(
        f"redis-server >= {_fmt(MIN_REDIS_VERSION)} not found ({detail}). Install it with "
        f"`sudo apt-get install -y redis-server`, or set {REDIS_ENV}=/path/to/redis-server"
    )


def _postgres_missing(detail: str) -> ServerBinaryNotFound:
    return ServerBinaryNotFound(
        f"PostgreSQL >= {_fmt(MIN_POSTGRES_VERSION)} (postgres + initdb) not found ({detail}). "
        "Install it with `sudo apt-get install -y postgresql-15`, or set "
        f"{PG_ENV}=/path/to/postgresql/bin (the directory holding postgres and initdb)"
    )


def find_redis() -> RedisBinaries:
    """Locate a ``redis-server`` of version 7 or later.

    ``$THORBIS_REDIS_SERVER`` wins when set (and must then be usable); otherwise
    ``PATH``, ``/usr/bin`` and ``/usr/local/bin`` are tried in that order.

    :returns: the binary and its version.
    :raises ServerBinaryNotFound: nothing usable was found; the message says how to fix it.
    """
    explicit = os.environ.get(REDIS_ENV)
    if explicit:
        # An explicit setting is never silently replaced by another binary.
        path = Path(explicit)
        if not _is_executable(path):
            raise _redis_missing(f"{REDIS_ENV}={explicit} is not an executable file")
        version = _redis_version(path)
        if version is None:
            raise _redis_missing(f"{REDIS_ENV}={explicit}: `--version` printed no v=X.Y.Z")
        if version < MIN_REDIS_VERSION:
            raise _redis_missing(f"{REDIS_ENV}={explicit} is version {_fmt(version)}")
        return RedisBinaries(server=path, version=version)

    def candidates() -> Iterator[Path]:
        on_path = shutil.which("redis-server")
        if on_path:
            yield Path(on_path)
        for directory in _REDIS_FALLBACK_DIRS:
            yield directory / "redis-server"

    rejected: list[str] = []
    for path in _unique(candidates()):
        if not _is_executable(path):
            continue
        version = _redis_version(path)
        if version is None:
            rejected.append(f"{path}: version unreadable")
        elif version < MIN_REDIS_VERSION:
            rejected.append(f"{path}: version {_fmt(version)}")
        else:
            return RedisBinaries(server=path, version=version)
    looked = ", ".join(["PATH", *(str(d) for d in _REDIS_FALLBACK_DIRS)])
    detail = f"looked in {looked}" + (f"; rejected {'; '.join(rejected)}" if rejected else "")
    raise _redis_missing(detail)


def _pg_dir_candidates() -> Iterator[Path]:
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            directory = Path(entry)
            if _is_executable(directory / "postgres") and _is_executable(directory / "initdb"):
                # /usr/local/bin often holds symlinks only; the real directory also has
                # pg_ctl, pg_isready and psql, so prefer it when it is complete.
                real = (directory / "postgres").resolve().parent
                if real != directory and _is_executable(real / "initdb"):
                    yield real
                yield directory

    def major(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    # Newest first: /usr/lib/postgresql/17/bin before /usr/lib/postgresql/15/bin.
    for path in sorted(glob.glob(_PG_GLOB), key=major, reverse=True):
        yield Path(path)


def find_postgres() -> PostgresBinaries:
    """Locate a PostgreSQL 15+ binary directory holding ``postgres`` and ``initdb``.

    ``$THORBIS_PG_BINDIR`` wins when set (and must then be usable); otherwise a ``PATH``
    directory with both binaries, then the newest ``/usr/lib/postgresql/*/bin``.

    :returns: the directory and the server version.
    :raises ServerBinaryNotFound: nothing usable was found; the message says how to fix it.
    """
    explicit = os.environ.get(PG_ENV)
    if explicit:
        bindir = Path(explicit)
        for name in ("postgres", "initdb"):
            if not _is_executable(bindir / name):
                raise _postgres_missing(f"{PG_ENV}={explicit} has no executable {name}")
        version = _postgres_version(bindir)
        if version is None:
            raise _postgres_missing(f"{PG_ENV}={explicit}: `postgres --version` is unreadable")
        if version < MIN_POSTGRES_VERSION:
            raise _postgres_missing(f"{PG_ENV}={explicit} is version {_fmt(version)}")
        return PostgresBinaries(bindir=bindir, version=version)

    rejected: list[str] = []
    for bindir in _unique(_pg_dir_candidates()):
        if not (_is_executable(bindir / "postgres") and _is_executable(bindir / "initdb")):
            continue
        version = _postgres_version(bindir)
        if version is None:
            rejected.append(f"{bindir}: version unreadable")
        elif version < MIN_POSTGRES_VERSION:
            rejected.append(f"{bindir}: version {_fmt(version)}")
        else:
            return PostgresBinaries(bindir=bindir, version=version)
    detail = f"looked in PATH and {_PG_GLOB}" + (
        f"; rejected {'; '.join(rejected)}" if rejected else ""
    )
    raise _postgres_missing(detail)


def _prometheus_missing(detail: str) -> ServerBinaryNotFound:
    return ServerBinaryNotFound(
        f"prometheus >= {_fmt(MIN_PROMETHEUS_VERSION)} with promtool not found ({detail}). "
        "Install it with `sudo apt-get install -y prometheus` (no service is needed: "
        f"the tests start their own), or set {PROMETHEUS_ENV}=/path/to/prometheus "
        "(promtool in the same directory)"
    )


def _prometheus_at(path: Path) -> PrometheusBinaries | str:
    """The binaries at ``path`` (promtool beside it), or why they are not usable."""
    promtool = path.parent / "promtool"
    if _is_executable(path) and not _is_executable(promtool):
        return f"no executable promtool beside {path}"
    version = _usable_version(path, _PROMETHEUS_VERSION_RE, MIN_PROMETHEUS_VERSION,
                              "a version")
    if isinstance(version, str):
        return version
    return PrometheusBinaries(prometheus=path, promtool=promtool, version=version)


def _find_binary(name: str, env: str, fallback: Path,
                 at: Callable[[Path], B | str],
                 missing: Callable[[str], ServerBinaryNotFound]) -> B:
    """The first usable ``name``: ``$env`` when set (it must then be usable), else on
    ``PATH``, else at ``fallback``; ``at`` says why a candidate is not usable."""
    explicit = os.environ.get(env)
    if explicit:
        found = at(Path(explicit))
        if isinstance(found, str):
            raise missing(f"{env}={explicit}: {found}")
        return found
    on_path = shutil.which(name)
    candidates = [Path(on_path)] if on_path else []
    rejected: list[str] = []
    for path in _unique(iter([*candidates, fallback])):
        if not path.exists():
            continue
        found = at(path)
        if isinstance(found, str):
            rejected.append(found)
        else:
            return found
    raise missing(f"looked in PATH and {fallback.parent}"
                  + (f"; rejected {'; '.join(rejected)}" if rejected else ""))


def find_prometheus() -> PrometheusBinaries:
    """Locate ``prometheus`` (>= 2.33) and the ``promtool`` beside it.

    ``$THORBIS_PROMETHEUS`` wins when set (and must then be usable); otherwise ``PATH``
    and ``/usr/bin``.

    :returns: the binaries and the server's version.
    :raises ServerBinaryNotFound: nothing usable was found; the message says how to fix it.
    """
    return _find_binary("prometheus", PROMETHEUS_ENV, Path("/usr/bin/prometheus"),
                        _prometheus_at, _prometheus_missing)


def _pgbouncer_missing(detail: str) -> ServerBinaryNotFound:
    return ServerBinaryNotFound(
        f"pgbouncer >= {_fmt(MIN_PGBOUNCER_VERSION)} not found ({detail}). Install it with "
        "`sudo apt-get install -y pgbouncer` (no service is needed: the tests start their "
        f"own), or set {PGBOUNCER_ENV}=/path/to/pgbouncer"
    )


def _pgbouncer_at(path: Path) -> PgBouncerBinaries | str:
    """The binary at ``path``, or why it is not usable."""
    version = _usable_version(path, _PGBOUNCER_VERSION_RE, MIN_PGBOUNCER_VERSION,
                              "PgBouncer X.Y.Z")
    if isinstance(version, str):
        return version
    return PgBouncerBinaries(pgbouncer=path, version=version)


def find_pgbouncer() -> PgBouncerBinaries:
    """Locate a ``pgbouncer`` of version 1.15 or later.

    ``$THORBIS_PGBOUNCER`` wins when set (and must then be usable); otherwise ``PATH``
    and ``/usr/sbin/pgbouncer``.

    :returns: the binary and its version.
    :raises ServerBinaryNotFound: nothing usable was found; the message says how to fix it.
    """
    return _find_binary("pgbouncer", PGBOUNCER_ENV, _PGBOUNCER_FALLBACK, _pgbouncer_at,
                        _pgbouncer_missing)


# --------------------------------------------------------------------------- installing


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    """Forbid package scripts to start services (a system redis would take port 6379).

    Debian's maintainer scripts start services through ``invoke-rc.d`` (SysV) and
    ``deb-systemd-invoke`` (systemd); both honour policy-rc.d, so this also keeps the
    ``pgbouncer`` package from starting a system pgbouncer on 6432.

    An existing policy-rc.d is the administrator's and is left untouched.
    """
    if _POLICY_RC_D.exists() or _POLICY_RC_D.is_symlink():
        yield
        return
    _POLICY_RC_D.write_text(_POLICY_RC_D_DENY)
    try:
        _POLICY_RC_D.chmod(0o755)
        yield
    finally:
        _POLICY_RC_D.unlink(missing_ok=True)


def _apt(args: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", *args]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL)


def _apt_install(packages: list[str]) -> None:
    global _apt_updated
    if not _apt_updated:
        _apt(["update"])
        _apt_updated = True
    with _services_not_started():
        _apt(["install", "-y", "--no-install-recommends", *packages])


def _ensure(find: Callable[[], B], env: str, packages: Sequence[str],
            missing: Callable[[str], ServerBinaryNotFound], install: bool) -> B:
    """``find()``, or when it fails and installing is allowed (``install``, no ``env``
    override, root with apt-get), the first of ``packages`` apt installs, then ``find()``."""
    try:
        return find()
    except ServerBinaryNotFound:
        if not install or os.environ.get(env) or not _can_install():
            raise
    errors: list[str] = []
    for package in packages:
        try:
            _apt_install([package])
        except (OSError, subprocess.CalledProcessError) as exc:
            errors.append(f"`apt-get install {package}` failed: {exc}")
            continue
        return find()
    raise missing("; ".join(errors))


def ensure_redis(install: bool = False) -> RedisBinaries:
    """Locate redis-server, installing it with apt when allowed and missing.

    :param install: install ``redis-server`` with apt when missing (root + apt-get only);
        package scripts are kept from starting a system service.
    :returns: the binary found.
    :raises ServerBinaryNotFound: missing and not installable; the message says how to fix it.
    """
    return _ensure(find_redis, REDIS_ENV, ("redis-server",), _redis_missing, install)


def ensure_postgres(install: bool = False) -> PostgresBinaries:
    """Locate PostgreSQL 15+, installing it with apt when allowed and missing.

    :param install: install ``postgresql-15`` (or ``postgresql``) with apt when missing
        (root + apt-get only); package scripts are kept from starting a system service.
    :returns: the binary directory found.
    :raises ServerBinaryNotFound: missing and not installable; the message says how to fix it.
    """
    # postgresql-15 where the distribution has it (Debian 12); otherwise its default,
    # which is 15 or newer on every current Debian/Ubuntu.
    return _ensure(find_postgres, PG_ENV, ("postgresql-15", "postgresql"), _postgres_missing,
                   install)


def ensure_prometheus(install: bool = False) -> PrometheusBinaries:
    """Locate prometheus and promtool, installing Debian's ``prometheus`` package with
    apt when allowed and missing (its service is not started).

    :param install: install with apt when missing (root + apt-get only).
    :returns: the binaries found.
    :raises ServerBinaryNotFound: missing and not installable; the message says how to fix it.
    """
    return _ensure(find_prometheus, PROMETHEUS_ENV, ("prometheus",), _prometheus_missing,
                   install)


def ensure_pgbouncer(install: bool = False) -> PgBouncerBinaries:
    """Locate pgbouncer, installing Debian's ``pgbouncer`` package with apt when allowed
    and missing (its service is not started).

    :param install: install with apt when missing (root + apt-get only).
    :returns: the binary found.
    :raises ServerBinaryNotFound: missing and not installable; the message says how to fix it.
    """
    return _ensure(find_pgbouncer, PGBOUNCER_ENV, ("pgbouncer",), _pgbouncer_missing, install)


def ensure_binaries(install: bool = False) -> tuple[RedisBinaries, PostgresBinaries]:
    """Locate both servers, installing missing ones with apt when allowed.

    :param install: install what is missing with apt (root + apt-get only).
    :returns: the redis-server binary and the PostgreSQL binary directory.
    :raises ServerBinaryNotFound: one of them is missing and could not be installed.
    """
    return ensure_redis(install), ensure_postgres(install)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m thorbis_cache.testing.binaries``.

    :param argv: arguments without the program name (defaults to ``sys.argv[1:]``).
    :returns: the process exit code: 0 when both servers are usable, 1 otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="python -m thorbis_cache.testing.binaries",
        description="Locate the redis-server and PostgreSQL binaries used by the test kit.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="print what is found; install what is missing")
    ensure.add_argument(
        "--no-install", action="store_true", help="only look; never run apt-get"
    )
    sub.add_parser("show", help="print what is found; never install")
    args = parser.parse_args(argv)
    install = args.command == "ensure" and not args.no_install

    failed = False
    try:
        redis_bin = ensure_redis(install)
        print(f"redis-server {redis_bin.version_string}: {redis_bin.server}")
    except ServerBinaryNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    try:
        pg_bin = ensure_postgres(install)
        print(f"postgres {pg_bin.version_string}: {pg_bin.bindir}")
    except ServerBinaryNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    # Only the pooler tests need pgbouncer (their fixture installs it): reported when
    # present, never installed here and never a failure.
    with contextlib.suppress(ServerBinaryNotFound):
        bouncer = find_pgbouncer()
        print(f"pgbouncer {bouncer.version_string}: {bouncer.pgbouncer}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
