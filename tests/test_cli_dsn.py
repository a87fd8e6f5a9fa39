"""A bad PostgreSQL DSN is one line naming the DSN (password masked) and the cause, from
every command that takes ``--dsn``: run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from thorbis_cache.cli.dsn import redact_dsn

REFUSED = "postgresql://nobody:hunter2@127.0.0.1:1/x"  # port 1 on loopback: refused at once


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THORBIS_REDIS_URL": "redis://127.0.0.1:1/0"}
    env.pop("THORBIS_POSTGRES_DSN", None)
    return subprocess.run([sys.executable, "-m", "thorbis_cache.cli", *args],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


@pytest.mark.parametrize("command", [["db", "init"], ["db", "migrate"], ["worker"],
                                     ["worker", "--once"], ["audit", "verify"],
                                     ["mv", "status"]], ids=" ".join)
def test_unreachable_server_is_one_line(command: list[str]) -> None:
    result = run(*command, "--dsn", REFUSED)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: postgresql connect to postgresql://nobody:***@127.0.0.1:1/x: "
        "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    ], result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(("dsn", "cause"), [
    ("postgresql://u:hunter2@[bad/x", "Invalid IPv6 URL"),
    ("postgresql://u:hunter2@127.0.0.1:1/x?sslmode=bogus", "sslmode"),
], ids=["bracket", "bad-option"])
def test_malformed_dsn_is_one_line(dsn: str, cause: str) -> None:
    result = run("db", "init", "--dsn", dsn)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: postgresql dsn {redact_dsn(dsn)}: malformed (")
    assert cause in lines[0]
    assert "hunter2" not in result.stderr


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://u:p@ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_dsn("postgresql://h/db?sslmode=require&password=pw") == \
        "postgresql://h/db?sslmode=require&password=***"
    assert redact_dsn("host=h password='a b' user=u") == "host=h password=*** user=u"


async def test_the_library_names_an_unreachable_or_silent_server_too(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found as a user would: ``CacheApp.start`` (and the worker, ``db init`` in
    Python) raised the driver's bare ``TimeoutError``, with no message at all, for a
    server that accepts the TCP connection and then says nothing (one that hung), and
    its ``ConnectionRefusedError`` for one refused: every connection now fails with the
    CLI's PostgresUnavailableError, naming the DSN (password masked) and the cause, and
    each host of a multi-host DSN."""
    from thorbis_cache import CacheApp, KeyRing
    from thorbis_cache.errors import PostgresUnavailableError
    from thorbis_cache.postgres import connection
    from thorbis_cache.testing.servers import PostgresServer, RedisServer

    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 2.0)
    with RedisServer() as redis_server, PostgresServer() as silent:
        silent.freeze()
        try:
            url = f"redis://127.0.0.1:{redis_server.port}/0"
            for dsn, says in [
                    (REFUSED, "ConnectionRefusedError: [Errno 111] Connect call failed"),
                    (silent.dsn().replace("postgres@", "postgres:hunter2@"),
                     f"TimeoutError: no answer within {connection.CONNECT_TIMEOUT:g} s")]:
                app = CacheApp(url, keyring=KeyRing.generate(), postgres_dsn=dsn)
                with pytest.raises(PostgresUnavailableError) as caught:
                    await app.start(["home_services"])
                assert str(caught.value).startswith(
                    f"postgresql connect to {redact_dsn(dsn)}: {says}"), caught.value
                assert "hunter2" not in str(caught.value)
            both = (f"postgresql://postgres@127.0.0.1:{silent.port},127.0.0.1:1/postgres"
                    "?target_session_attrs=read-write")
            with pytest.raises(PostgresUnavailableError) as caught:
                await connection.connect(both)
            assert f"127.0.0.1:{silent.port}: TimeoutError: no answer within" in \
                str(caught.value)
            assert "127.0.0.1:1: ConnectionRefusedError" in str(caught.value)
        finally:
            silent.thaw()
