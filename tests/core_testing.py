"""Helpers shared by the core's tests (a uniquely named module, so it cannot clash with a
plugin test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import attrs
import pytest
from thorbis_home_services.models import AccountStatus, Customer, CustomerType, PaymentStatus
from typer.testing import CliRunner

from thorbis_cache import CacheApp, LogicalCapture
from thorbis_cache.cli import app as cli_app

__all__ = ["CUSTOMER_SQL", "HS", "HS_TENANTS", "NOW", "TECH_SQL", "WORK_ORDER_SQL", "HsEnv",
           "db_init", "run_cli", "stale_customer", "wait_until"]

#: The home_services plugin's entry-point name, and the tenants its data is loaded for.
HS = "home_services"
HS_TENANTS = ("acme", "globex")

#: ``$1`` tenant, ``$2`` how many: home_services customers 1..n (the capture tests').
CUSTOMER_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
SELECT $1, i, 'Ada', 'Lovelace', 'ada@example.com', '555-0100', 'residential', 'active',
       'current', -97.7, 30.2
  FROM generate_series(1, $2::int) AS i
"""
#: ``$1`` tenant, ``$2`` id: a technician.
TECH_SQL = """
INSERT INTO hs.technicians (tenant_id, id, first_name, last_name, email, role)
VALUES ($1, $2, 'Tom', 'Tech', 'tom@example.com', 'technician')
"""
#: ``$1`` tenant, ``$2`` id, ``$3`` customer, ``$4`` technician, ``$5`` scheduled at.
WORK_ORDER_SQL = """
INSERT INTO hs.work_orders (tenant_id, id, customer_id, assigned_technician_id, status,
                            priority, service_type, scheduled_at, longitude, latitude)
VALUES ($1, $2, $3, $4, 'scheduled', 'high', 'hvac', $5, -97.7, 30.2)
"""
#: When the capture tests' work orders are scheduled and their customers were made.
NOW = dt.datetime(2024, 5, 1, 15, 0, tzinfo=dt.UTC)


def stale_customer(cid: int) -> Customer:
    """A home_services customer as a cache would hold it before a change (phone
    ``stale``): what the capture tests cache, then expect gone."""
    return Customer(cid, "Ada", "Lovelace", "ada@example.com", "stale",
                    CustomerType.RESIDENTIAL, AccountStatus.ACTIVE, PaymentStatus.CURRENT,
                    None, "", "", "", -97.7, 30.2, NOW, NOW)


def run_cli(*args: str, code: int = 0) -> str:
    """Run ``thorbis-cache ARGS`` in process; assert its exit code; return its output."""
    result = CliRunner().invoke(cli_app, list(args))
    if result.exit_code != code and result.exc_info is not None \
            and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"exit {result.exit_code}: {result.output}") from result.exception
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


async def db_init(app: CacheApp, dsn: str, mode: str) -> LogicalCapture | None:
    """``thorbis-cache db init --plugin home_services --capture MODE`` on ``dsn``; under
    logical capture with a slot of its own, returned (the caller drops it)."""
    args = ["db", "init", "--dsn", dsn, "--plugin", HS, "--capture", mode]
    capture = None
    if mode == "logical":
        slot = f"t{uuid.uuid4().hex[:10]}"
        capture = LogicalCapture(slot, app.plugins.all_rules(), app.plugins.all_views())
        args += ["--slot", slot]
    await asyncio.to_thread(run_cli, *args)
    return capture
