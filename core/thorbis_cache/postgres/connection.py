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

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import attrs

from thorbis_cache.errors import ConfigurationError

__all__ = ["CONNECT_TIMEOUT", "POOLER_PARAMETER", "SESSION_SETTINGS", "Target", "connect",
           "target_of"]

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


#: Seconds to establish a connection (asyncpg's connect timeout).
CONNECT_TIMEOUT = 10.0


async def connect(dsn: str) -> asyncpg.Connection:
    """Open a connection to ``dsn`` as every part of thorbis-cache does: with
    :data:`SESSION_SETTINGS`, or through a transaction pooler (``pgbouncer=true``)
    without a statement cache and without session settings.

    :raises ConfigurationError: see :func:`target_of`.
    """
    target = target_of(dsn)
    if target.pooled:
        return await asyncpg.connect(target.dsn, timeout=CONNECT_TIMEOUT,
                                     statement_cache_size=0)
    conn = await asyncpg.connect(target.dsn, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute("".join(f"SET {name} = {value};"
                                   for name, value in SESSION_SETTINGS.items()))
    except BaseException:
        conn.terminate()
        raise
    return conn
