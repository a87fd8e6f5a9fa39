"""The CLI's check of a PostgreSQL DSN: one clear line instead of a driver traceback.

Every command that takes ``--dsn`` calls :func:`check_postgres` before its work: a
malformed DSN is a :class:`~thorbis_cache.errors.ConfigurationError`, a server that
cannot be reached or refuses the connection a
:class:`~thorbis_cache.errors.PostgresUnavailableError`; both name the DSN with its
password masked and the cause, and the CLI prints them as one red line (exit 1), as it
does for a bad Redis URL.
"""

from __future__ import annotations

import re

from thorbis_cache.errors import ConfigurationError, PostgresUnavailableError

__all__ = ["check_postgres", "redact_dsn"]

# URL userinfo (postgresql://user:SECRET@host), a URL query or key/value "password=SECRET".
_URL_SECRET = re.compile(r"(//[^:/@?#]*:)[^/?#]*@")
_PARAM_SECRET = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URL or ``key=value`` form)."""
    return _PARAM_SECRET.sub(r"\1***", _URL_SECRET.sub(r"\1***@", dsn))


def _one_line(exc: BaseException, dsn: str) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    # Drivers may quote the DSN back: never let its password through.
    text = text.replace(dsn, redact_dsn(dsn))
    return f"{type(exc).__name__}: {text}"


async def check_postgres(dsn: str) -> None:
    """Open and close one connection to ``dsn``.

    :raises ConfigurationError: the DSN does not parse.
    :raises PostgresUnavailableError: the server cannot be reached or refuses (naming
        the DSN, password masked, and the cause).
    """
    from thorbis_cache.postgres.connection import connect

    shown = redact_dsn(dsn)
    try:
        conn = await connect(dsn)
    except (OSError, TimeoutError) as exc:  # refused, unknown host, timed out
        raise PostgresUnavailableError(shown, _one_line(exc, dsn)) from exc
    except ValueError as exc:  # the driver's DSN parsing (asyncpg: ClientConfigurationError)
        raise ConfigurationError(
            f"postgresql dsn {shown}: malformed ({_one_line(exc, dsn)})") from exc
    except Exception as exc:  # the server's refusal: authentication, no such database...
        raise PostgresUnavailableError(shown, _one_line(exc, dsn)) from exc
    await conn.close()
