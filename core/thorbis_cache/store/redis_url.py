"""Where Redis is, as one URL: the configuration switch between topologies.

The same string configures the cache, the worker, the CLI and the pytest fixtures:

==========================================================  ===============================
``redis://[user:password@]host:port[/db]``                   one server (or a proxy)
``rediss://…``                                               the same over TLS
``unix:///path/to/redis.sock[?db=N]``                        a local socket
``redis+cluster://[user:password@]host:port[,host:port…]``   a Redis Cluster (seed nodes)
``rediss+cluster://…``                                       a Cluster over TLS
``redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]``
                                                             a Sentinel-managed master
``rediss+sentinel://…``                                      the same, data nodes over TLS
==========================================================  ===============================

Username and password are Redis ACL credentials (a password alone is ``:password@``);
percent-encode reserved characters. Query parameters: ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs`` (``required``/``optional``/``none``) for TLS, and for
Sentinel ``sentinel_username``/``sentinel_password`` when the sentinels have their own
credentials (by default they are contacted without any). On every topology, the bounds
of the store's calls (redis-py's names, this store's meaning):

``socket_timeout``          seconds any call may wait for its reply, queueing included
                            (the store's deadline; 2 by default)
``socket_connect_timeout``  seconds to open a connection (2 by default)
``max_connections``         calls in flight at once; more wait their turn (128 by default)

They are the store's, never redis-py's own socket timeout (which would put a timer on
every command), and an argument given to ``RedisStore.from_url`` wins over the URL.
"""

from __future__ import annotations

import enum
import math
import re
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode

import attrs

from thorbis_cache.errors import ConfigurationError

__all__ = ["RedisAddress", "Topology", "parse_redis_url"]


class Topology(enum.Enum):
    """How the Redis behind a URL is deployed."""

    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": (Topology.STANDALONE, False),
    "rediss": (Topology.STANDALONE, True),
    "unix": (Topology.STANDALONE, False),
    "redis+cluster": (Topology.CLUSTER, False),
    "rediss+cluster": (Topology.CLUSTER, True),
    "redis+sentinel": (Topology.SENTINEL, False),
    "rediss+sentinel": (Topology.SENTINEL, True),
}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_CALL_OPTIONS = ("socket_timeout", "socket_connect_timeout", "max_connections")
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d+))?$")


@attrs.frozen
class RedisAddress:
    """A parsed Redis URL (see the module docstring for the forms).

    :ivar topology: one server, a Cluster or a Sentinel group.
    :ivar nodes: ``(host, port)`` pairs: the server, the Cluster's seed nodes, or the
        sentinels.
    :ivar service: the Sentinel service (master) name; empty otherwise.
    :ivar db: database number (always 0 on a Cluster).
    :ivar username: ACL user, or None for ``default``.
    :ivar password: ACL password, or None.
    :ivar tls: connect to the data nodes over TLS.
    :ivar tls_options: ``ssl_*`` keyword arguments for redis-py.
    :ivar sentinel_options: ``sentinel_username``/``sentinel_password``.
    :ivar url: the URL as given, without the call bounds (kept for the ``unix://``
        form, which redis-py parses itself).
    :ivar call_timeout: ``socket_timeout``: the store's deadline per call, or None.
    :ivar connect_timeout: ``socket_connect_timeout``, or None.
    :ivar max_connections: ``max_connections``: the calls in flight at once, or None.
    """

    topology: Topology
    nodes: tuple[tuple[str, int], ...]
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    tls_options: dict[str, str] = attrs.field(factory=dict)
    sentinel_options: dict[str, str] = attrs.field(factory=dict, repr=False)
    url: str = attrs.field(default="", repr=False)
    call_timeout: float | None = None
    connect_timeout: float | None = None
    max_connections: int | None = None

    def describe(self) -> str:
        """The address for messages: topology and nodes, never credentials."""
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.topology is Topology.CLUSTER:
            return f"cluster {nodes}"
        if self.topology is Topology.SENTINEL:
            return f"sentinel {nodes}/{self.service}"
        return nodes

    def connection_options(self) -> dict[str, Any]:
        """Credentials and TLS keyword arguments for a redis-py client of a data node."""
        options: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.tls:
            options["ssl"] = True
            options.update(self.tls_options)
        return options


def _port(text: str | None, default: int, url: str) -> int:
    if text is None:
        return default
    port = int(text)
    if not 0 < port < 65536:
        raise ConfigurationError(f"redis url {_redact(url)!r}: port {port} out of range")
    return port


def _nodes(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in netloc.split(","):
        match = _HOST_PORT.match(part.strip())
        if match is None:
            raise ConfigurationError(
                f"redis url {_redact(url)!r}: {part!r} is not host[:port]")
        host = match["v6"] or match["host"]
        nodes.append((host, _port(match["port"], default_port, url)))
    return tuple(nodes)


def _call_bounds(params: dict[str, str], url: str) -> dict[str, Any]:
    """The call bounds among ``params`` (removed from it), checked."""
    bounds: dict[str, Any] = {}
    for name, field in (("socket_timeout", "call_timeout"),
                        ("socket_connect_timeout", "connect_timeout")):
        if name in params:
            text = params.pop(name)
            try:
                seconds = float(text)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                raise ConfigurationError(
                    f"redis url {_redact(url)!r}: {name} must be a positive number of "
                    f"seconds, got {text!r}")
            bounds[field] = seconds
    if "max_connections" in params:
        text = params.pop("max_connections")
        if not text.isdigit() or int(text) < 1:
            raise ConfigurationError(
                f"redis url {_redact(url)!r}: max_connections must be a whole number >= 1, "
                f"got {text!r}")
        bounds["max_connections"] = int(text)
    return bounds


def _without_bounds(url: str) -> str:
    """``url`` without its call bounds (so that redis-py never sees them as its own)."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
            if k not in _CALL_OPTIONS]
    return f"{base}?{urlencode(kept)}" if kept else base


def _redact(url: str) -> str:
    """The URL with its password replaced (for error messages)."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def parse_redis_url(url: str) -> RedisAddress:
    """Parse a Redis URL of any topology.

    :raises ConfigurationError: unknown scheme, no host, a bad port or database, an
        unknown query parameter, or a Sentinel URL without a service name; the message
        shows the URL with its password masked.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(f"redis url {_redact(url)!r}: scheme must be one of {known}")
    topology, tls = _SCHEMES[scheme]
    if scheme == "unix":
        # redis-py parses the rest of this form itself.
        params = {k: v[-1] for k, v in
                  parse_qs(url.partition("?")[2], keep_blank_values=True).items()}
        return RedisAddress(topology, (("localhost", 0),), url=_without_bounds(url),
                            **_call_bounds(params, url))
    # urlsplit refuses "h1:1,h2:2" as a port, so the netloc is split by hand.
    netloc, _, path_query = rest.partition("/")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
        path_query = "?" + query
    path, _, query = path_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not hosts:
        raise ConfigurationError(f"redis url {_redact(url)!r}: no host")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = 26379 if topology is Topology.SENTINEL else 6379
    nodes = _nodes(hosts, default_port, url)
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    allowed = set(_TLS_OPTIONS) | set(_CALL_OPTIONS) | (
        {"db"} if topology is Topology.STANDALONE else set())
    if topology is Topology.SENTINEL:
        allowed |= set(_SENTINEL_OPTIONS)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigurationError(
            f"redis url {_redact(url)!r}: unknown parameter(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})")
    segments = [unquote(s) for s in path.split("/") if s]
    service = ""
    if topology is Topology.SENTINEL:
        if not segments:
            raise ConfigurationError(
                f"redis url {_redact(url)!r}: a Sentinel URL names its service: "
                f"{scheme}://host:port[,host:port]/SERVICE[/db]")
        service = segments.pop(0)
    if topology is Topology.CLUSTER and segments not in ([], ["0"]):
        raise ConfigurationError(
            f"redis url {_redact(url)!r}: a Cluster has database 0 only")
    if topology is Topology.STANDALONE and len(nodes) > 1:
        raise ConfigurationError(
            f"redis url {_redact(url)!r}: several hosts need {scheme}+cluster:// or "
            f"{scheme}+sentinel://")
    bounds = _call_bounds(params, url)
    db_text = segments[0] if segments else params.get("db", "0")
    if len(segments) > 1 or not db_text.isdigit():
        raise ConfigurationError(f"redis url {_redact(url)!r}: database must be a number")
    return RedisAddress(
        topology, nodes, service=service, db=int(db_text), username=username,
        password=password, tls=tls,
        tls_options={k: params[k] for k in _TLS_OPTIONS if k in params},
        sentinel_options={k: params[k] for k in _SENTINEL_OPTIONS if k in params},
        url=_without_bounds(url), **bounds,
    )
