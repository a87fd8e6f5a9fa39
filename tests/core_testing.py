"""Helpers shared by the core's tests (a uniquely named module, so it cannot clash with a
plugin test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import attrs
import pytest
from typer.testing import CliRunner

from thorbis_cache import CacheApp
from thorbis_cache.cli import app as cli_app

__all__ = ["HS", "HS_TENANTS", "HsEnv", "run_cli", "wait_until"]

#: The home_services plugin's entry-point name, and the tenants its data is loaded for.
HS = "home_services"
HS_TENANTS = ("acme", "globex")


def run_cli(*args: str, code: int = 0) -> str:
    """Run ``thorbis-cache ARGS`` in process; assert its exit code; return its output."""
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code == code, result.output
    return result.output


@attrs.frozen
class HsEnv:
    """A migrated database with the home_services tables, views, triggers and data of
    :data:`HS_TENANTS`, a started app on it, and a connection (the ``hs_env`` fixture)."""

    dsn: str
    redis_url: str
    conn: asyncpg.Connection
    app: CacheApp


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], within: float = 30.0
                     ) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting until {what}")
        await asyncio.sleep(0.01)
