"""Every connection thorbis-cache opens to PostgreSQL, directly or through a pooler.

Found as a user would: behind PgBouncer (the usual front of a production PostgreSQL),
no command could connect at all -- ``db init``, the worker, ``health``, a host's
``CacheApp`` -- because the worker's connections asked for ``plan_cache_mode`` as a
startup parameter, and PgBouncer refuses every startup parameter it does not know
(``unsupported startup parameter: plan_cache_mode``), in every pool mode. So:

* **No startup parameter.** A session setting is set with ``SET`` once connected.
* **Transaction pooling** (PgBouncer ``pool_mode = transaction``, Supavisor, RDS Proxy
  and the like) hands each transaction to any server connection: a statement prepared
  in one is unknown to the next (asyncpg's statement cache fails with ``prepared
  statement ... does not exist``), and a ``SET`` would stay behind on a connection that
  other clients then get. A DSN that says so with ``pgbouncer=true`` (the query
  parameter Prisma introduced and poolers' docs use) gets asyncpg without a statement
  cache (each statement is planned where it runs: what ``plan_cache_mode`` asks for
  anyway) and no ``SET``; the parameter is taken out before asyncpg sees the DSN
  (which would send it on as a startup parameter). Logical capture cannot go through
  such a pooler (it needs a replication connection): it is refused, naming why.

Session pooling needs nothing: a pooled session is a session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg
import attrs

from thorbis_cache.errors import ConfigurationError, PostgresUnavailableError, redact_dsn

__all__ = ["CONNECT_TIMEOUT", "POOLER_PARAMETER", "QUERY_TIMEOUT", "SESSION_SETTINGS", "Target",
           "connect", "hosts_of", "refuse_standby", "target_of"]

#: The DSN query parameter that says the connection goes through a transaction pooler.
POOLER_PARAMETER = "pgbouncer"

#: Session settings of every connection (set once connected; not through a transaction
#: pooler). ``plan_cache_mode``: asyncpg prepares each statement once per connection,
#: and after five executions PostgreSQL may keep a generic plan built with the
#: statistics of that moment. The outbox is empty most of the time, so the claim's
#: generic plan was one for an empty table (a nested loop scanning the whole outbox per
#: claimed id): after a quiet spell, a burst of 68,000 rows made one claim take more
#: than 20 s instead of 15 ms, and the worker fell further behind with every batch. A
#: custom plan per execution costs well under a millisecond and follows the table's
#: real size.
SESSION_SETTINGS = {"plan_cache_mode": "force_custom_plan"}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@attrs.frozen(slots=True)
class Target:
    """Where a DSN leads.

    :ivar dsn: the DSN for the driver (without :data:`POOLER_PARAMETER`).
    :ivar pooled: the connection goes through a transaction pooler.
    """

    dsn: str
    pooled: bool


def target_of(dsn: str) -> Target:
    """Read :data:`POOLER_PARAMETER` out of a ``postgresql://`` DSN (a ``key=value`` DSN
    has no query: it is never pooled).

    :raises ConfigurationError: the parameter's value is not a boolean (named).
    """
    if "://" not in dsn:
        return Target(dsn, False)
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = [v for k, v in query if k == POOLER_PARAMETER]
    if not values:
        return Target(dsn, False)
    value = values[-1].strip().lower()
    if value not in _TRUE | _FALSE:
        raise ConfigurationError(f"postgresql dsn: {POOLER_PARAMETER}={values[-1]!r} is not "
                                 "true or false")
    rest = urlencode([(k, v) for k, v in query if k != POOLER_PARAMETER])
    return Target(urlunsplit(parts._replace(query=rest)), value in _TRUE)


#: Seconds to establish a connection to one host (asyncpg's connect timeout).
CONNECT_TIMEOUT = 10.0

#: Seconds a statement of a background process (the worker, the view scheduler) may
#: take before its connection is taken for lost: a server that hung, or a network
#: partition without a reset, keeps a connection open and silent, and a statement on it
#: would wait forever. The process then reconnects -- to the promoted standby, when the
#: DSN lists it. Their statements take milliseconds; a view's refresh has its own bound.
QUERY_TIMEOUT = 30.0


def _one_line(exc: BaseException, dsn: str) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        text = f"no answer within {CONNECT_TIMEOUT:g} s"
    else:
        text = " ".join(str(exc).split()) or "no detail"
    # Drivers may quote the DSN back: never let its password through.
    text = text.replace(dsn, redact_dsn(dsn))
    return f"{type(exc).__name__}: {text}"


def hosts_of(dsn: str) -> list[tuple[str, int | None]]:
    """The hosts a ``postgresql://`` DSN lists, in order, with their ports (None: the
    default); one entry for a single host, none for a DSN without one."""
    if "://" not in dsn:
        return []
    spec = urlsplit(dsn).netloc.rpartition("@")[2]
    hosts: list[tuple[str, int | None]] = []
    for item in spec.split(",") if spec else ():
        if item.startswith("["):  # [IPv6]:port
            address, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            address, _, port = item.partition(":")
        hosts.append((unquote(address), int(port) if port.isdigit() else None))
    return hosts


async def _connect_each(target: Target, options: dict[str, Any]) -> asyncpg.Connection:
    """asyncpg's connection, giving each host of a multi-host DSN its own
    :data:`CONNECT_TIMEOUT`. asyncpg's timeout covers the whole list, so a first host
    that accepts the TCP connection and then says nothing (a hung server: a failed-over
    primary that was not fenced) used it all, and the host after it, the new primary,
    was never tried."""
    hosts = hosts_of(target.dsn)
    attrs_wanted = dict(parse_qsl(urlsplit(target.dsn).query)).get("target_session_attrs")
    if len(hosts) < 2 or attrs_wanted == "prefer-standby":  # (a random pick: asyncpg's)
        return await asyncpg.connect(target.dsn, timeout=CONNECT_TIMEOUT, **options)
    failures: list[str] = []
    for host, port in hosts:
        where = {"host": host} if port is None else {"host": host, "port": port}
        try:
            return await asyncpg.connect(target.dsn, timeout=CONNECT_TIMEOUT, **where,
                                         **options)
        except (OSError, TimeoutError, asyncpg.TargetServerAttributeNotMatched,
                asyncpg.CannotConnectNowError) as exc:
            failures.append(f"{host}{'' if port is None else f':{port}'}: "
                            f"{_one_line(exc, target.dsn)}")
    raise PostgresUnavailableError(redact_dsn(target.dsn), "; ".join(failures))


async def connect(dsn: str, *, writes: str | None = None,
                  command_timeout: float | None = None,
                  settings: Mapping[str, str] | None = None) -> asyncpg.Connection:
    """Open a connection to ``dsn`` as every part of thorbis-cache does: with
    :data:`SESSION_SETTINGS`, or through a transaction pooler (``pgbouncer=true``)
    without a statement cache and without session settings; each host of a multi-host
    DSN tried in turn, each within :data:`CONNECT_TIMEOUT`.

    :param writes: what the connection is for, when that writes (the worker, a
        migration, a refresh): a standby is then refused, naming it (see
        :func:`refuse_standby`).
    :param command_timeout: seconds any statement may take (asyncpg raises
        :class:`TimeoutError` after that); None for no bound (a migration, a view's
        refresh).
    :param settings: more session settings of this connection (not through a
        transaction pooler either: the pooler's own settings apply there).
    :raises ConfigurationError: see :func:`target_of` and :func:`refuse_standby`; or the
        driver cannot read the DSN.
    :raises PostgresUnavailableError: no server answered, or each refused (each host
        named with its cause, the password masked): refused, unknown host, timed out,
        authentication, no such database.
    """
    try:
        target = target_of(dsn)
        options: dict[str, Any] = {"command_timeout": command_timeout}
        if target.pooled:
            options["statement_cache_size"] = 0
        conn = await _connect_each(target, options)
    except (PostgresUnavailableError, ConfigurationError):
        raise
    except ValueError as exc:  # the driver's DSN parsing (asyncpg: ClientConfigurationError)
        raise ConfigurationError(f"postgresql dsn {redact_dsn(dsn)}: malformed "
                                 f"({_one_line(exc, dsn)})") from exc
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            asyncpg.TargetServerAttributeNotMatched) as exc:
        # Refused, unknown host, timed out; or the server's refusal: authentication,
        # no such database, too many connections.
        raise PostgresUnavailableError(redact_dsn(dsn), _one_line(exc, dsn)) from exc
    try:
        if not target.pooled:
            await conn.execute("".join(f"SET {name} = {value};" for name, value
                                       in {**SESSION_SETTINGS, **(settings or {})}.items()))
        if writes is not None:
            await refuse_standby(conn, writes)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def refuse_standby(conn: asyncpg.Connection, writes: str) -> None:
    """Refuse a connection to a standby (a server in recovery: read-only).

    Found as a user would: ``db init`` against a standby failed with asyncpg's
    ``cannot execute CREATE SCHEMA in a read-only transaction`` traceback, and a worker
    there said that change capture was not installed (a standby has no replication
    slot). Both now name the server and what to give instead.

    :param writes: what needs the primary (``"db init"``, ``"the worker"``...).
    :raises ConfigurationError: the server is a standby.
    """
    row = await conn.fetchrow("SELECT pg_is_in_recovery() AS standby, "
                              "inet_server_addr()::text AS host, inet_server_port() AS port")
    if row is None or not row["standby"]:
        return
    where = "through its unix socket" if row["host"] is None else \
        f"at {row['host'].split('/')[0]}:{row['port']}"
    raise ConfigurationError(
        f"PostgreSQL {where} is a standby (in recovery, read-only): {writes} needs the "
        "primary. Give the primary's address, or list the servers and let the driver "
        "find it: postgresql://host1,host2/db?target_session_attrs=read-write")
