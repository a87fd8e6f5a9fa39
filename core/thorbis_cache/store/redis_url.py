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
credentials (by default they are contacted without any).
"""

from __future__ import annotations

import enum
import re
from typing import Any
from urllib.parse import parse_qs, unquote

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
    :ivar url: the URL as given (kept for the standalone ``redis://``/``unix://`` forms,
        which redis-py parses itself).
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
        return RedisAddress(topology, (("localhost", 0),), url=url)
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
    allowed = set(_TLS_OPTIONS) | ({"db"} if topology is Topology.STANDALONE else set())
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
    db_text = segments[0] if segments else params.get("db", "0")
    if len(segments) > 1 or not db_text.isdigit():
        raise ConfigurationError(f"redis url {_redact(url)!r}: database must be a number")
    return RedisAddress(
        topology, nodes, service=service, db=int(db_text), username=username,
        password=password, tls=tls,
        tls_options={k: params[k] for k in _TLS_OPTIONS if k in params},
        sentinel_options={k: params[k] for k in _SENTINEL_OPTIONS if k in params},
        url=url,
    )
