"""thorbis-cache: a multi-tenant cache framework on Redis and PostgreSQL.

Importing this package connects to nothing, reads no environment, loads no plugin and
imports nothing else: every public name (``from thorbis_cache import Cache``) is
imported on first use, so a host that never runs a worker never loads the PostgreSQL
driver, and the command line answers ``--help`` without loading the cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thorbis_cache._lazy import lazy_exports

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.codec import CodecSettings
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.cache.crypto import KeyRing
    from thorbis_cache.cache.keys import (
        CacheKey,
        Compression,
        KeySchema,
        Param,
        SchemaKind,
        validate_tenant,
    )
    from thorbis_cache.cache.metrics import CacheMetrics
    from thorbis_cache.cache.near import NearCache
    from thorbis_cache.cache.registry import SchemaRegistry
    from thorbis_cache.cache.settings import (
        CacheSettings,
        SchemaOverride,
    )
    from thorbis_cache.cache.structures import (
        EntityHash,
        GeoIndex,
        SortedSet,
        Versioned,
    )
    from thorbis_cache.errors import MissingRow
    from thorbis_cache.invalidation.worker import (
        BatchResult,
        OutboxWorker,
        WorkerMetrics,
    )
    from thorbis_cache.plugins.declarations import (
        CachePattern,
        InvalidationRule,
        MaterializedView,
        Operation,
        Permission,
        PluginInfo,
        RefreshPolicy,
        RuleTarget,
        SqlScript,
        WarmContext,
        Warmer,
    )
    from thorbis_cache.plugins.hookspecs import (
        HOOK_API_VERSION,
        hookimpl,
    )
    from thorbis_cache.plugins.manager import (
        LoadedPlugin,
        PluginManager,
    )
    from thorbis_cache.postgres.logical import LogicalCapture
    from thorbis_cache.store.redis_store import RedisStore
    from thorbis_cache.warming import (
        WarmBatch,
        WarmOutcome,
        batch_of,
        warm,
    )

#: Every public name, imported on first access: ``import thorbis_cache`` (and so any
#: ``thorbis-cache --help``) loads none of the cache, Redis or PostgreSQL code.
_LAZY = {
    "BatchResult": "thorbis_cache.invalidation.worker",
    "Cache": "thorbis_cache.cache.core",
    "CacheApp": "thorbis_cache.app",
    "CacheKey": "thorbis_cache.cache.keys",
    "CacheMetrics": "thorbis_cache.cache.metrics",
    "CachePattern": "thorbis_cache.plugins.declarations",
    "CacheSettings": "thorbis_cache.cache.settings",
    "CodecSettings": "thorbis_cache.cache.codec",
    "Compression": "thorbis_cache.cache.keys",
    "EntityHash": "thorbis_cache.cache.structures",
    "GeoIndex": "thorbis_cache.cache.structures",
    "HOOK_API_VERSION": "thorbis_cache.plugins.hookspecs",
    "InvalidationRule": "thorbis_cache.plugins.declarations",
    "KeyRing": "thorbis_cache.cache.crypto",
    "KeySchema": "thorbis_cache.cache.keys",
    "LoadedPlugin": "thorbis_cache.plugins.declarations",
    "LogicalCapture": "thorbis_cache.postgres.logical",
    "MaterializedView": "thorbis_cache.plugins.declarations",
    "MissingRow": "thorbis_cache.errors",
    "NearCache": "thorbis_cache.cache.near",
    "Operation": "thorbis_cache.plugins.declarations",
    "OutboxWorker": "thorbis_cache.invalidation.worker",
    "Param": "thorbis_cache.cache.keys",
    "Permission": "thorbis_cache.plugins.declarations",
    "PluginInfo": "thorbis_cache.plugins.declarations",
    "PluginManager": "thorbis_cache.plugins",
    "RedisStore": "thorbis_cache.store.redis_store",
    "RefreshPolicy": "thorbis_cache.plugins.declarations",
    "RuleTarget": "thorbis_cache.plugins.declarations",
    "SchemaKind": "thorbis_cache.cache.keys",
    "SchemaOverride": "thorbis_cache.cache.settings",
    "SchemaRegistry": "thorbis_cache.cache.registry",
    "SortedSet": "thorbis_cache.cache.structures",
    "SqlScript": "thorbis_cache.plugins.declarations",
    "Versioned": "thorbis_cache.cache.structures",
    "WarmBatch": "thorbis_cache.warming",
    "WarmContext": "thorbis_cache.plugins.declarations",
    "WarmOutcome": "thorbis_cache.warming",
    "Warmer": "thorbis_cache.plugins.declarations",
    "WorkerMetrics": "thorbis_cache.invalidation.worker",
    "batch_of": "thorbis_cache.warming",
    "hookimpl": "thorbis_cache.plugins.hookspecs",
    "validate_tenant": "thorbis_cache.cache.keys",
    "warm": "thorbis_cache.warming",
}


# Plugins written before the core was grouped into subpackages import these two modules
# from the top level (``from thorbis_cache import declarations``); they keep working.
_MOVED_MODULES = {
    "declarations": "thorbis_cache.plugins.declarations",
    "hookspecs": "thorbis_cache.plugins.hookspecs",
}

__getattr__ = lazy_exports(globals(), _LAZY, _MOVED_MODULES)


__all__ = [
    "HOOK_API_VERSION",
    "BatchResult",
    "Cache",
    "CacheApp",
    "CacheKey",
    "CacheMetrics",
    "CachePattern",
    "CacheSettings",
    "CodecSettings",
    "Compression",
    "EntityHash",
    "GeoIndex",
    "InvalidationRule",
    "KeyRing",
    "KeySchema",
    "LoadedPlugin",
    "LogicalCapture",
    "MaterializedView",
    "MissingRow",
    "NearCache",
    "Operation",
    "OutboxWorker",
    "Param",
    "Permission",
    "PluginInfo",
    "PluginManager",
    "RedisStore",
    "RefreshPolicy",
    "RuleTarget",
    "SchemaKind",
    "SchemaOverride",
    "SchemaRegistry",
    "SortedSet",
    "SqlScript",
    "Versioned",
    "WarmBatch",
    "WarmContext",
    "WarmOutcome",
    "Warmer",
    "WorkerMetrics",
    "batch_of",
    "hookimpl",
    "validate_tenant",
    "warm",
]

__version__ = "0.1.0"
