"""``CacheApp``: what a host application starts -- plugins loaded, cache connected.

::

    app = CacheApp("redis://localhost:6379/0", keyring=KeyRing.from_env(),
                   postgres_dsn="postgresql://app@localhost/app")
    async with await app.start(["home_services"], apply_sql=True):
        summary = await app.pattern("hs.customer_summary")("acme", customer_id=42)

:meth:`CacheApp.start` is all or nothing: when any step fails (a plugin problem, SQL that
does not apply, a rule naming a missing column, an ``on_startup`` hook that raises),
the plugins it loaded are unloaded, the cache is closed, and the error names every
problem. SQL already committed for other plugins stays (plugin SQL is idempotent).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from thorbis_cache.cache import Cache
from thorbis_cache.config import CacheSettings
from thorbis_cache.crypto import KeyRing
from thorbis_cache.errors import ConfigurationError
from thorbis_cache.plugins import PluginManager

__all__ = ["CacheApp"]


class CacheApp:
    """A host application's cache: its plugins, its schema registry, its Redis.

    :param redis_url: where Redis is, on any topology (``redis://``, ``rediss://``,
        ``redis+cluster://``, ``redis+sentinel://``: see :mod:`thorbis_cache.redis_url`).
    :param keyring: master keys; required when a plugin declares a sensitive schema.
    :param settings: cache behaviour (prefix, leases, codec).
    :param postgres_dsn: where plugin SQL is applied (``start(apply_sql=True)``).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        keyring: KeyRing | None = None,
        settings: CacheSettings | None = None,
        postgres_dsn: str | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.keyring = keyring
        self.settings = settings
        self.postgres_dsn = postgres_dsn
        self.plugins = PluginManager()
        self._cache: Cache | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._cache else "not started"
        return f"<CacheApp {state}, plugins={list(self.plugins.plugins)}>"

    @property
    def cache(self) -> Cache:
        """The cache (after :meth:`start`).

        :raises ConfigurationError: the app is not started.
        """
        if self._cache is None:
            raise ConfigurationError("CacheApp.cache is available after `await app.start()`")
        return self._cache

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add an in-process plugin (a module or object with ``@hookimpl`` functions);
        :meth:`start` loads it with the others.

        :raises PluginLoadError: the name is already taken.
        """
        self.plugins.add(plugin, name)

    async def start(
        self, plugins: Iterable[str] | None = None, *, apply_sql: bool = False
    ) -> CacheApp:
        """Load plugins, connect the cache, optionally apply SQL, and notify plugins.

        In order: load (``None``: every installed and registered plugin; else the named
        ones), apply every loaded plugin's SQL and views then check its rules against
        the database (``apply_sql``), build the cache on the plugins' schemas, call each
        plugin's ``on_startup``.

        :param plugins: plugin names, or None for all.
        :param apply_sql: apply plugin SQL to ``postgres_dsn`` first.
        :returns: this app (so ``async with await app.start():`` reads well).
        :raises PluginLoadError: naming every problem; nothing of this start is kept.
        :raises ConfigurationError: started twice, ``apply_sql`` without a DSN, or a
            sensitive schema without a key ring.
        """
        if self._cache is not None or self._closed:
            raise ConfigurationError("a CacheApp is started once; create another one")
        if apply_sql and not self.postgres_dsn:
            raise ConfigurationError("start(apply_sql=True) needs CacheApp(postgres_dsn=...)")
        loaded = await self.plugins.load(plugins)
        try:
            if apply_sql:
                await self._apply_sql()
            self._cache = Cache.from_url(
                self.redis_url, self.plugins.registry, keyring=self.keyring,
                settings=self.settings,
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

    async def _apply_sql(self) -> None:
        # Imported here: only a host that applies SQL loads asyncpg.
        from thorbis_cache.postgres import apply_and_check

        assert self.postgres_dsn is not None
        await apply_and_check(self.postgres_dsn, list(self.plugins.plugins.values()))

    def pattern(self, name: str) -> Callable[..., Awaitable[Any]]:
        """The cache pattern ``name``, bound to this app's cache:
        ``await app.pattern("hs.high_priority")(tenant, **kwargs)`` runs
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
