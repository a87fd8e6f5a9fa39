"""The options several commands share, declared once: the servers, the plugins, the
cache prefix, ``--json`` and the metrics endpoint; and the exit status of bad input."""

from __future__ import annotations

import typer

from thorbis_cache.errors import ConfigurationError, ThorbisCacheError

__all__ = [
    "DSN",
    "EXIT_USAGE",
    "JSON",
    "METRICS_HOST",
    "METRICS_PORT",
    "PLUGINS",
    "PREFIX",
    "REDIS_URL",
    "BadInput",
    "checked_prefix",
]

#: The exit status of bad input (an unknown option, a malformed key, an invalid tenant):
#: sysexits' EX_USAGE, not click's 2, which ``health`` gives "unhealthy" (its 0/1/2/3
#: are the monitoring plugins' OK/WARNING/CRITICAL/UNKNOWN).
EXIT_USAGE = 64


class BadInput(ConfigurationError):
    """What the command line gives is wrong (an unknown schema or view, a malformed
    parameter or key ring, options that do not go together): said in one red line,
    exit status :data:`EXIT_USAGE`."""

REDIS_URL = typer.Option("--redis-url", envvar="THORBIS_REDIS_URL",
                         help="Redis URL (env THORBIS_REDIS_URL).")
DSN = typer.Option("--dsn", envvar="THORBIS_POSTGRES_DSN",
                   help="PostgreSQL DSN (env THORBIS_POSTGRES_DSN).")
PLUGINS = typer.Option("--plugin", "-p",
                       help="Plugin to load (repeatable; default: every installed plugin).")
PREFIX = typer.Option("--prefix", envvar="THORBIS_PREFIX",
                      help="Cache prefix (env THORBIS_PREFIX).")
JSON = typer.Option("--json", help="Print JSON.")
#: The port of ``worker --metrics-port`` and ``serve --metrics-port``.
METRICS_PORT = typer.Option(
    "--metrics-port", min=0, max=65535,
    help="Serve /metrics (Prometheus) and /health (JSON) on this port.")
#: The address the metrics endpoint listens on.
METRICS_HOST = typer.Option(
    "--metrics-host", help="Address the metrics endpoint listens on (0.0.0.0: every "
    "interface, for a Prometheus on another machine).")


def checked_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid cache prefix.

    :raises ConfigurationError: naming ``--prefix`` and what is wrong with it.
    """
    from thorbis_cache.cache.keys import validate_prefix

    try:
        validate_prefix(prefix)
    except ThorbisCacheError as exc:
        raise ConfigurationError(f"--prefix: {exc}") from None
    return prefix
