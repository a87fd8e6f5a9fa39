"""Helpers shared by the home-services tests (a uniquely named module, so it cannot
clash with another test directory's helpers when the whole repository is collected)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
from thorbis_cache import CacheApp, SchemaRegistry
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.declarations import Fetch
from thorbis_cache.testing import plugin_db
from thorbis_cache.testing.plugin_db import create_plugin_schema, schema_registry

from thorbis_home_services import datagen, loaders
from thorbis_home_services.schemas import (
    ALL_SCHEMAS,
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_LIST,
    CUSTOMER_SUMMARY,
    FINANCIAL_DAILY,
    SCHEDULE_GEO,
    SERVICE_AREA,
    SERVICE_AREA_GEO,
    TECHNICIAN_PERFORMANCE,
    TECHNICIAN_SCHEDULE,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
)
from thorbis_home_services.sqlfiles import script
from thorbis_home_services.views import ALL_VIEWS

TENANTS = ("acme", "globex")
PER_TENANT = 60


def registry() -> SchemaRegistry:
    """A registry of every home-services schema."""
    return schema_registry(ALL_SCHEMAS, owner="home_services")


async def create_schema(conn: Any) -> None:
    """Apply the tables script and create every view with its indexes."""
    await create_plugin_schema(conn, [script("tables")], ALL_VIEWS)


#: A database with the schema, the generated data of two tenants, and views.
LoadedDb = plugin_db.LoadedDb[datagen.Dataset]


def entry_loader(fetch: Fetch, key: CacheKey[Any]) -> Callable[[], Awaitable[Any]]:
    """The plugin's single-key loader of ``key``'s entry, bound to its tenant and
    parameters: what a read-through of that key calls."""
    tenant, p = key.tenant, key.params
    loads: dict[str, Callable[[], Awaitable[Any]]] = {
        CUSTOMER.name: lambda: loaders.customer(fetch, tenant, p["customer_id"]),
        CUSTOMER_LIST.name: lambda: loaders.customer_list(fetch, tenant, p["segment"]),
        CUSTOMER_SUMMARY.name: lambda: loaders.customer_summary(fetch, tenant,
                                                                p["customer_id"]),
        WORK_ORDER.name: lambda: loaders.work_order(fetch, tenant, p["work_order_id"]),
        WORK_ORDERS_BY_STATUS.name: lambda: loaders.work_orders_by_status(fetch, tenant,
                                                                          p["status"]),
        TECHNICIAN_SCHEDULE.name: lambda: loaders.technician_schedule(
            fetch, tenant, p["technician_id"], p["day"]),
        SCHEDULE_GEO.name: lambda: loaders.schedule_geo(fetch, tenant, p["day"]),
        CUSTOMER_HISTORY.name: lambda: loaders.service_history(fetch, tenant, p["customer_id"]),
        SERVICE_AREA.name: lambda: loaders.service_area(fetch, tenant, p["area_id"]),
        SERVICE_AREA_GEO.name: lambda: loaders.service_area_geo(fetch, tenant),
        TECHNICIAN_PERFORMANCE.name: lambda: loaders.technician_performance(
            fetch, tenant, p["technician_id"]),
        FINANCIAL_DAILY.name: lambda: loaders.financial_day(fetch, tenant, p["report_date"]),
    }
    assert set(loads) == {s.name for s in ALL_SCHEMAS}, "a schema without a loader"
    return loads[key.schema.name]


@attrs.define
class CountingFetch:
    """A :data:`~thorbis_cache.plugins.declarations.Fetch` that counts the queries it runs, to
    tell a read-through that loaded from one answered by the cache."""

    fetch: Fetch
    calls: int = 0

    async def __call__(self, sql: str, *args: object) -> Sequence[Mapping[str, Any]]:
        self.calls += 1
        return await self.fetch(sql, *args)


async def never() -> Any:
    """A loader for reads that must be answered by the cache."""
    raise AssertionError("the loader was called: the entry was not cached")


@attrs.frozen
class HsApp:
    """A migrated database with the plugin's tables, views, capture triggers and the
    generated data of :data:`TENANTS`, a started app on it, and a connection (the
    ``hs_app`` fixture): rules are applied as in production, by the outbox worker."""

    dsn: str
    conn: Any
    app: CacheApp

    def worker(self) -> OutboxWorker:
        """An outbox worker applying the plugin's rules to the app's cache."""
        return OutboxWorker.from_app(self.app, self.dsn)

    async def fetch(self, sql: str, *args: object) -> list[Mapping[str, Any]]:
        """Rows as dicts, on the connection (a :data:`Fetch`)."""
        return [dict(r) for r in await self.conn.fetch(sql, *args)]

    async def apply_changes(self) -> int:
        """Run the outbox worker until the outbox is empty; returns the keys and tags it
        invalidated."""
        async with self.worker() as worker:
            results = await worker.drain()
        return sum(len(r.keys) + len(r.tags) for r in results)
