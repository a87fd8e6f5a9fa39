"""``CacheApp``: what a host application starts -- plugins loaded, cache connected.

::

    app = CacheApp("redis://localhost:6379/0", keyring=KeyRing.from_env(),
                   postgres_dsn="postgresql://app@localhost/app")
    async with await app.start(["home_services"], apply_sql=True):
        best = await app.pattern("hs.top_customers")("acme", n=10)

:meth:`CacheApp.start` is all or nothing: when any step fails (a plugin problem, SQL that
does not apply, a rule naming a missing column, an ``on_startup`` hook that raises),
the plugins it loaded are unloaded, the cache is closed, and the error names every
problem. Every plugin's SQL and the rule checks apply in one transaction, so a start
refused by them leaves the database as it was; one that fails later (an ``on_startup``
hook) leaves the applied SQL in place, which is idempotent.

With ``apply_sql=True`` it prepares the database exactly as ``thorbis-cache db init``
does (:func:`thorbis_cache.postgres.setup.setup_database`: core migrations, plugin SQL,
change capture). Given a ``postgres_dsn`` without ``apply_sql``, it checks that every
rule's table is captured and refuses to start otherwise
(:class:`~thorbis_cache.errors.CaptureNotInstalledError`): a cache whose changes nothing
captures serves stale entries until their TTL. See ``docs/host-application.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.cache.near import NearCache
from thorbis_cache.cache.settings import CacheSettings
from thorbis_cache.errors import ConfigurationError
from thorbis_cache.plugins.manager import PluginManager

if TYPE_CHECKING:
    from thorbis_cache.postgres.setup import CaptureMode, DatabaseSetup

__all__ = ["CacheApp"]

log = logging.getLogger(__name__)


class CacheApp:
    """A host application's cache: its plugins, its schema registry, its Redis.

    :param redis_url: where Redis is, on any topology (``redis://``, ``rediss://``,
        ``redis+cluster://``, ``redis+sentinel://``: see :mod:`thorbis_cache.store.redis_url`).
    :param keyring: master keys; required when a plugin declares a sensitive schema.
    :param settings: cache behaviour (prefix, leases, codec, and
        ``schema_overrides``: TTLs per schema, set by the host for schemas plugins declare).
    :param postgres_dsn: the database of the plugins' tables: where ``start(apply_sql=True)``
        prepares everything, and where :meth:`start` otherwise checks the change capture.
    :param near: an in-process near cache (L1) for the schemas with a ``near_ttl``, the
        plugin's or one set in ``settings.schema_overrides``; owned by this app's cache.

    :ivar plugins: the :class:`~thorbis_cache.plugins.manager.PluginManager`: after :meth:`start`,
        ``plugins.plugins`` (name -> :class:`~thorbis_cache.plugins.manager.LoadedPlugin`),
        ``plugins.registry`` (the key schemas), ``all_rules()``, ``all_views()``,
        ``all_warmers()``: what :meth:`OutboxWorker.from_app
        <thorbis_cache.invalidation.worker.OutboxWorker.from_app>` reads.
    :ivar database: what ``start(apply_sql=True)`` did, else None.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        keyring: KeyRing | None = None,
        settings: CacheSettings | None = None,
        postgres_dsn: str | None = None,
        near: NearCache | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.keyring = keyring
        self.settings = settings
        self.postgres_dsn = postgres_dsn
        self.near = near
        self.database: DatabaseSetup | None = None
        self.plugins = PluginManager()
        self._cache: Cache | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._cache else "not started"
        return f"<CacheApp {state}, plugins={list(self.plugins.plugins)}>"

    @property
    def cache(self) -> Cache:
        """The cache (after :meth:`start`).

        :raises ConfigurationError: the app is not started, or was closed.
        """
        if self._cache is None:
            if self._closed:
                raise ConfigurationError("this CacheApp was closed (aclose); a CacheApp is "
                                         "started once: create another one")
            raise ConfigurationError("CacheApp.cache is available after `await app.start()`")
        return self._cache

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add an in-process plugin (a module or object with ``@hookimpl`` functions);
        :meth:`start` loads it with the others.

        :raises PluginLoadError: the name is already taken.
        """
        self.plugins.add(plugin, name)

    async def start(
        self, plugins: Iterable[str] | None = None, *, apply_sql: bool = False,
        capture: CaptureMode = "auto", slot: str = "main",
    ) -> CacheApp:
        """Load plugins, optionally prepare the database, connect the cache, and notify
        plugins.

        In order: load (``None``: every installed and registered plugin; else the named
        ones); with ``apply_sql``, what ``thorbis-cache db init --capture CAPTURE --slot
        SLOT`` does (core migrations, every loaded plugin's SQL and views checked against
        the database, change capture: :func:`~thorbis_cache.postgres.setup.setup_database`),
        or, given a ``postgres_dsn`` without ``apply_sql``, check that every rule's table
        is captured (by triggers or by a ``thorbis_*`` slot and publication); build the
        cache on the plugins' schemas; call each plugin's ``on_startup``.

        :param plugins: plugin names, or None for all.
        :param apply_sql: prepare ``postgres_dsn`` first, as ``db init`` does.
        :param capture: with ``apply_sql``: ``"auto"`` (the default: logical decoding
            when the server allows it, else triggers), ``"triggers"`` or ``"logical"``,
            as ``db init --capture``; :meth:`OutboxWorker.from_app
            <thorbis_cache.invalidation.worker.OutboxWorker.from_app>` follows what was set up.
        :param slot: with ``apply_sql`` and logical capture: the slot's name, as
            ``db init --slot``.
        :returns: this app (so ``async with await app.start():`` reads well).
        :raises PluginLoadError: naming every problem; nothing of this start is kept.
        :raises CaptureNotInstalledError: a rule's table has no capture installed
            (``postgres_dsn`` without ``apply_sql``): the message names the tables, the
            rules and the ``thorbis-cache db init`` command that fixes it.
        :raises ConfigurationError: started twice, ``apply_sql`` without a DSN, a
            sensitive schema without a key ring, or a bad ``schema_overrides`` entry.
        """
        if self._cache is not None or self._closed:
            raise ConfigurationError("a CacheApp is started once; create another one")
        if apply_sql and not self.postgres_dsn:
            raise ConfigurationError("start(apply_sql=True) needs CacheApp(postgres_dsn=...)")
        loaded = await self.plugins.load(plugins)
        try:
            if apply_sql:
                await self._setup_database(capture, slot)
            elif self.postgres_dsn:
                await self._check_capture()
            self._cache = Cache.from_url(
                self.redis_url, self.plugins.registry, keyring=self.keyring,
                settings=self.settings, near=self.near,
            )
            await self._cache.verify_server()
            await self.plugins.notify_startup(self)
        except BaseException:
            if self._cache is not None:
                await self._cache.aclose()
                self._cache = None
            for plugin in reversed(loaded):
                self.plugins.unload(plugin.name)
            raise
        return self

    async def _setup_database(self, capture: CaptureMode, slot: str) -> None:
        # Imported here: only a host that gives a DSN loads asyncpg.
        from thorbis_cache.postgres.setup import setup_database

        assert self.postgres_dsn is not None
        self.database = await setup_database(self.postgres_dsn, self.plugins,
                                             capture=capture, slot=slot)
        if self.database.ddl_guard:
            log.warning("%s", self.database.ddl_guard)

    async def _check_capture(self) -> None:
        from thorbis_cache.postgres.capture_check import check_capture
        from thorbis_cache.postgres.connection import connect

        assert self.postgres_dsn is not None
        conn = await connect(self.postgres_dsn)
        try:
            await check_capture(conn, self.plugins.all_rules(), "any",
                                plugins=list(self.plugins.plugins))
        finally:
            await conn.close()

    def pattern(self, name: str) -> Callable[..., Awaitable[Any]]:
        """The cache pattern ``name``, bound to this app's cache:
        ``await app.pattern("hs.high_priority_work_orders")(tenant, **kwargs)`` runs
        ``pattern.run(app.cache, tenant, **kwargs)``.

        :raises UnknownPatternError: no loaded plugin declares it.
        """
        run = self.plugins.pattern(name).run

        async def bound(tenant: str, /, **kwargs: Any) -> Any:
            return await run(self.cache, tenant, **kwargs)

        bound.__name__ = bound.__qualname__ = name
        return bound

    async def aclose(self) -> None:
        """Close the cache (idempotent)."""
        self._closed = True
        cache, self._cache = self._cache, None
        if cache is not None:
            await cache.aclose()

    async def __aenter__(self) -> CacheApp:
        """Start with every plugin unless :meth:`start` was already called."""
        if self._cache is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_cache", None) is not None:
            warnings.warn(f"unclosed {self!r}; use `async with` or `await app.aclose()`",
                          ResourceWarning, stacklevel=1, source=self)
