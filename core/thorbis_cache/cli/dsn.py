"""The CLI's check of a PostgreSQL DSN: one clear line instead of a driver traceback.

Every command that takes ``--dsn`` calls :func:`check_postgres` before its work: a
malformed DSN is a :class:`~thorbis_cache.errors.ConfigurationError`, a server that
cannot be reached or refuses the connection a
:class:`~thorbis_cache.errors.PostgresUnavailableError`; both name the DSN with its
password masked and the cause, and the CLI prints them as one red line (exit 1), as it
does for a bad Redis URL.
"""

from __future__ import annotations

from thorbis_cache.errors import redact_dsn

__all__ = ["check_postgres", "redact_dsn"]


async def check_postgres(dsn: str) -> None:
    """Open and close one connection to ``dsn``.

    :raises ConfigurationError: the DSN does not parse.
    :raises PostgresUnavailableError: the server cannot be reached or refuses (naming
        the DSN, password masked, and the cause).
    """
    from thorbis_cache.postgres.connection import connect

    conn = await connect(dsn)
    await conn.close()
