"""One URL configures every topology: parsing, ACL credentials and TLS, on real servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import ConfigurationError, RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.redis_url import Topology, parse_redis_url
from thorbis_cache.testing.servers import RedisServer
from thorbis_cache.testing.servers._ports import free_port

NOTE: KeySchema[str] = KeySchema("url.note", str, params={"id": int}, ttl=60)


def _registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    return registry


@pytest.mark.parametrize(("url", "topology", "nodes", "service", "db"), [
    ("redis://127.0.0.1:6380/2", Topology.STANDALONE, [("127.0.0.1", 6380)], "", 2),
    ("redis://cache.internal", Topology.STANDALONE, [("cache.internal", 6379)], "", 0),
    ("rediss://[::1]:7000/0", Topology.STANDALONE, [("::1", 7000)], "", 0),
    ("redis+cluster://a:7000,b:7001,c", Topology.CLUSTER,
     [("a", 7000), ("b", 7001), ("c", 6379)], "", 0),
    ("redis+sentinel://s1:26379,s2:26380,s3/orders/4", Topology.SENTINEL,
     [("s1", 26379), ("s2", 26380), ("s3", 26379)], "orders", 4),
    ("rediss+sentinel://s1/orders", Topology.SENTINEL, [("s1", 26379)], "orders", 0),
])
def test_each_topology_has_its_url(url: str, topology: Topology,
                                   nodes: list[tuple[str, int]], service: str,
                                   db: int) -> None:
    address = parse_redis_url(url)
    assert (address.topology, list(address.nodes), address.service, address.db) == (
        topology, nodes, service, db)
    assert address.tls == url.startswith("rediss")


@pytest.mark.parametrize(("url", "says"), [
    ("http://h:1", "scheme must be one of"),
    ("redis+sentinel://h:26379", "names its service"),
    ("redis+cluster://h:7000/3", "database 0 only"),
    ("redis://h:70000", "port 70000 out of range"),
    ("redis://a:1,b:2", "several hosts need redis+cluster:// or redis+sentinel://"),
    ("redis://h/zero", "database must be a number"),
    ("redis://h?timeout=3", "unknown parameter(s) timeout"),
    ("redis://user:hunter2@h:1?bad=1", "redis://user:***@h:1"),
])
def test_a_bad_url_is_one_clear_error_without_its_password(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_redis_url(url)
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


_name = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                min_size=1, max_size=12)


@given(user=_name, password=_name, db=st.integers(0, 15),
       ports=st.lists(st.integers(1, 65535), min_size=1, max_size=4))
def test_credentials_and_nodes_survive_any_characters(user: str, password: str, db: int,
                                                      ports: list[int]) -> None:
    hosts = ",".join(f"10.0.0.{i}:{p}" for i, p in enumerate(ports))
    url = f"redis+sentinel://{quote(user, safe='')}:{quote(password, safe='')}@{hosts}/svc/{db}"
    address = parse_redis_url(url)
    assert (address.username, address.password, address.db) == (user, password, db)
    assert [p for _, p in address.nodes] == ports
    assert "password" not in repr(address)


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    # The default user stays open: the launcher's readiness probe does not log in.
    server = RedisServer(extra_args=["--user", "thorbis", "on", ">s3cr:t@x", "~*", "&*",
                                     "+@all"])
    server.start()
    yield server
    server.stop()


async def test_acl_user_and_password_reach_redis(acl_server: RedisServer) -> None:
    """A password with URL-reserved characters, percent-encoded, logs the ACL user in;
    a wrong one is our RedisUnavailableError naming the server, never the secret."""
    registry = _registry()
    secret = quote("s3cr:t@x", safe="")
    url = f"redis://thorbis:{secret}@127.0.0.1:{acl_server.port}/0"
    async with Cache.from_url(url, registry) as cache:
        await cache.set(NOTE.key("t1", id=1), "hello")
        assert await cache.get(NOTE.key("t1", id=1)) == "hello"
    wrong = f"redis://thorbis:nope@127.0.0.1:{acl_server.port}/0"
    async with Cache.from_url(wrong, registry) as cache:
        with pytest.raises(RedisUnavailableError) as caught:
            await cache.get(NOTE.key("t1", id=1))
        assert "127.0.0.1" in str(caught.value)
        assert "nope" not in str(caught.value)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 that it signed."""
    now = dt.datetime.now(dt.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=1))
                   .not_valid_after(now + dt.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thorbis test CA")])
    ca = issue("thorbis test CA", ca_key, ca_name, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue("127.0.0.1", key, ca_name, ca_key, False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_rediss_talks_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no"])
    server.start()
    try:
        registry = _registry()
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
        async with Cache.from_url(url, registry) as cache:
            await cache.set(NOTE.key("t1", id=2), "over tls")
            assert await cache.get(NOTE.key("t1", id=2)) == "over tls"
        # Without the CA, the server's certificate is not trusted: refused, not ignored.
        async with RedisStore.from_url(f"rediss://127.0.0.1:{tls_port}/0") as store:
            with pytest.raises(RedisUnavailableError):
                await store.get("tc:x")
    finally:
        server.stop()


# --------------------------------------------------------------------------- call bounds


@pytest.mark.parametrize("url", [
    "redis://h:1/0?socket_timeout=0.25&socket_connect_timeout=1.5&max_connections=16",
    "rediss://h:1/0?socket_timeout=0.25&socket_connect_timeout=1.5&max_connections=16"
    "&ssl_cert_reqs=none",
    "redis+cluster://a:1,b:2?socket_timeout=0.25&socket_connect_timeout=1.5"
    "&max_connections=16",
    "redis+sentinel://s1:26379/orders/0?socket_timeout=0.25&socket_connect_timeout=1.5"
    "&max_connections=16",
    "unix:///run/redis.sock?db=2&socket_timeout=0.25&socket_connect_timeout=1.5"
    "&max_connections=16",
])
def test_the_call_bounds_are_in_the_url_on_every_topology(url: str) -> None:
    """A host configures the cache, the worker and the CLI with one string: the per-call
    deadline, the connect timeout and the calls in flight go in it too."""
    address = parse_redis_url(url)
    assert (address.call_timeout, address.connect_timeout, address.max_connections) == (
        0.25, 1.5, 16)
    # Never handed to redis-py as its own socket timeout: the store bounds every call.
    assert "socket_timeout" not in address.url
    assert "max_connections" not in address.url
    assert parse_redis_url(url.split("?")[0]).call_timeout is None


@pytest.mark.parametrize(("query", "says"), [
    ("socket_timeout=0", "socket_timeout must be a positive number of seconds, got '0'"),
    ("socket_timeout=-1", "socket_timeout must be a positive number of seconds, got '-1'"),
    ("socket_timeout=inf", "socket_timeout must be a positive number of seconds"),
    ("socket_timeout=fast", "socket_timeout must be a positive number of seconds, got 'fast'"),
    ("socket_connect_timeout=nan", "socket_connect_timeout must be a positive number"),
    ("max_connections=0", "max_connections must be a whole number >= 1, got '0'"),
    ("max_connections=2.5", "max_connections must be a whole number >= 1, got '2.5'"),
])
def test_a_bad_call_bound_is_refused_by_name(query: str, says: str) -> None:
    for base in ("redis://:hunter2@h:1/0", "redis+cluster://:hunter2@a:1",
                 "unix://:hunter2@/run/redis.sock"):
        with pytest.raises(ConfigurationError) as caught:
            parse_redis_url(f"{base}?{query}")
        assert says in str(caught.value)
        assert "hunter2" not in str(caught.value)


async def test_the_url_sets_the_deadline_of_every_call(
        thorbis_redis_server: RedisServer) -> None:
    url = f"{thorbis_redis_server.url}?socket_timeout=0.3&max_connections=4"
    async with Cache.from_url(url, _registry()) as cache:
        assert cache.store.timeout == 0.3
        await cache.set(NOTE.key("acme", id=1), "kept")
        thorbis_redis_server.command("CLIENT", "PAUSE", 1200, "ALL")
        try:
            with pytest.raises(RedisUnavailableError, match=r"no reply within 0\.3s"):
                await cache.get(NOTE.key("acme", id=1))
        finally:
            await asyncio.sleep(1.2)  # the pause over
        assert await cache.get(NOTE.key("acme", id=1)) == "kept"
    # An explicit argument wins over the URL.
    async with RedisStore.from_url(url, timeout=0.7) as store:
        assert store.timeout == 0.7
