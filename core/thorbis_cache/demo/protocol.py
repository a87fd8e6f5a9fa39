"""What a vertical gives the multi-vertical demo: :class:`VerticalDemo`.

A plugin distribution that wants to take part in ``thorbis-cache demo`` exposes, in a
module ``<package>.demo``, an object ``DEMO`` satisfying :class:`VerticalDemo`. The demo
finds it through the plugin's entry point (the package of the module the entry point
names), and drives every vertical the same way, per tenant:

1. :meth:`VerticalDemo.populate` writes the vertical's deterministic data in PostgreSQL
   (the demo then refreshes the plugin's materialized views);
2. :meth:`VerticalDemo.read` is called many times, concurrently, as a host would read
   (patterns, ``get_or_load`` with the plugin's loaders); the demo measures latency and
   counts hits and misses of the plugin's schemas;
3. :meth:`VerticalDemo.change` first reads an entry through the cache (so it is cached),
   then commits a change in PostgreSQL that one of the plugin's invalidation rules
   covers; after the outbox worker has applied it, the demo awaits the returned
   :attr:`DemoChange.verify`, which reads through the cache again and compares with the
   database.

Nothing here is demo-only behaviour: every call goes through the plugin's public
declarations, the way a host application uses them.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.plugins.manager import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    import asyncpg

    from thorbis_cache.app import CacheApp

__all__ = ["DemoChange", "VerticalDemo", "find_demo"]


@attrs.frozen(slots=True)
class DemoChange:
    """One committed database change and how to check the cache followed it.

    :ivar description: what changed, for the report (``"part 17 stock 12 -> 7"``).
    :ivar verify: awaited after the worker applied the change: reads the affected entry
        through the cache and returns None when it matches the database, else a sentence
        saying what differs.
    """

    description: str
    verify: Callable[[], Awaitable[str | None]]


@runtime_checkable
class VerticalDemo(Protocol):
    """A vertical's part in ``thorbis-cache demo``.

    :ivar plugin: the plugin's entry-point name (``"automotive"``).
    :ivar title: a human name for the summary table (``"Automotive"``).
    """

    plugin: str
    title: str

    async def populate(self, conn: asyncpg.Connection, tenants: Sequence[str], *,
                       seed: int, scale: int) -> int:
        """Write the vertical's deterministic data set for ``tenants``.

        :param conn: a connection to the database the plugin's SQL was applied to.
        :param tenants: the demo tenants.
        :param seed: the same seed gives the same rows.
        :param scale: the size knob (``1``: a small shop; rows grow linearly with it).
        :returns: the number of rows written.
        """
        ...

    async def read(self, app: CacheApp, pool: asyncpg.Pool, tenant: str,
                   rng: random.Random) -> str:
        """One cached read, as a host does it; the data comes from ``pool`` on a miss.
        Called concurrently (hence a pool, not one connection).

        :returns: the name of what was read (a pattern or schema name), for the report.
        """
        ...

    async def change(self, app: CacheApp, pool: asyncpg.Pool, tenant: str,
                     rng: random.Random) -> DemoChange:
        """Cache an entry, then commit a change of its rows that a rule of the plugin
        covers; return how to verify the cache followed."""
        ...


def find_demo(plugin: str) -> VerticalDemo | None:
    """The ``DEMO`` of an installed plugin: ``<package>.demo.DEMO``, where ``<package>``
    holds the module its entry point names; None when it ships none.

    :raises ConfigurationError: the plugin's ``demo`` module exists but its ``DEMO`` does
        not satisfy :class:`VerticalDemo` (named).
    """
    found = entry_points(group=ENTRY_POINT_GROUP, name=plugin)
    if not found:
        return None
    module = next(iter(found)).value.split(":", 1)[0]
    package = module.rpartition(".")[0] or module
    try:
        demo_module = importlib.import_module(f"{package}.demo")
    except ModuleNotFoundError as exc:
        if exc.name == f"{package}.demo":
            return None
        raise
    demo = getattr(demo_module, "DEMO", None)
    if not isinstance(demo, VerticalDemo):
        raise ConfigurationError(f"plugin {plugin!r}: {package}.demo.DEMO is "
                                 f"{type(demo).__name__}, not a VerticalDemo (needs plugin, "
                                 "title, populate, read, change)")
    return demo
