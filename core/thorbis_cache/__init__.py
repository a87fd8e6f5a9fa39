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
    from thorbis_cache.cache import Cache
    from thorbis_cache.codec import CodecSettings
    from thorbis_cache.config import (
        CacheSettings,
        SchemaOverride,
    )
    from thorbis_cache.crypto import KeyRing
    from thorbis_cache.declarations import (
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
    from thorbis_cache.errors import MissingRow
    from thorbis_cache.hookspecs import (
        HOOK_API_VERSION,
        hookimpl,
    )
    from thorbis_cache.keys import (
        CacheKey,
        Compression,
        KeySchema,
        Param,
        SchemaKind,
        SchemaRegistry,
        validate_tenant,
    )
    from thorbis_cache.metrics import CacheMetrics
    from thorbis_cache.near import NearCache
    from thorbis_cache.plugins import (
        LoadedPlugin,
        PluginManager,
    )
    from thorbis_cache.postgres.logical import LogicalCapture
    from thorbis_cache.redis_store import RedisStore
    from thorbis_cache.structures import (
        EntityHash,
        GeoIndex,
        SortedSet,
        Versioned,
    )
    from thorbis_cache.warming import (
        WarmBatch,
        WarmOutcome,
        batch_of,
        warm,
    )
    from thorbis_cache.worker import (
        BatchResult,
        OutboxWorker,
        WorkerMetrics,
    )

#: Every public name, imported on first access: ``import thorbis_cache`` (and so any
#: ``thorbis-cache --help``) loads none of the cache, Redis or PostgreSQL code.
_LAZY = {
    "BatchResult": "thorbis_cache.worker",
    "Cache": "thorbis_cache.cache",
    "CacheApp": "thorbis_cache.app",
    "CacheKey": "thorbis_cache.keys",
    "CacheMetrics": "thorbis_cache.metrics",
    "CachePattern": "thorbis_cache.declarations",
    "CacheSettings": "thorbis_cache.config",
    "CodecSettings": "thorbis_cache.codec",
    "Compression": "thorbis_cache.keys",
    "EntityHash": "thorbis_cache.structures",
    "GeoIndex": "thorbis_cache.structures",
    "HOOK_API_VERSION": "thorbis_cache.hookspecs",
    "InvalidationRule": "thorbis_cache.declarations",
    "KeyRing": "thorbis_cache.crypto",
    "KeySchema": "thorbis_cache.keys",
    "LoadedPlugin": "thorbis_cache.declarations",
    "LogicalCapture": "thorbis_cache.postgres.logical",
    "MaterializedView": "thorbis_cache.declarations",
    "MissingRow": "thorbis_cache.errors",
    "NearCache": "thorbis_cache.near",
    "Operation": "thorbis_cache.declarations",
    "OutboxWorker": "thorbis_cache.worker",
    "Param": "thorbis_cache.keys",
    "Permission": "thorbis_cache.declarations",
    "PluginInfo": "thorbis_cache.declarations",
    "PluginManager": "thorbis_cache.plugins",
    "RedisStore": "thorbis_cache.redis_store",
    "RefreshPolicy": "thorbis_cache.declarations",
    "RuleTarget": "thorbis_cache.declarations",
    "SchemaKind": "thorbis_cache.keys",
    "SchemaOverride": "thorbis_cache.config",
    "SchemaRegistry": "thorbis_cache.keys",
    "SortedSet": "thorbis_cache.structures",
    "SqlScript": "thorbis_cache.declarations",
    "Versioned": "thorbis_cache.structures",
    "WarmBatch": "thorbis_cache.warming",
    "WarmContext": "thorbis_cache.declarations",
    "WarmOutcome": "thorbis_cache.warming",
    "Warmer": "thorbis_cache.declarations",
    "WorkerMetrics": "thorbis_cache.worker",
    "batch_of": "thorbis_cache.warming",
    "hookimpl": "thorbis_cache.hookspecs",
    "validate_tenant": "thorbis_cache.keys",
    "warm": "thorbis_cache.warming",
}


__getattr__ = lazy_exports(globals(), _LAZY)


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
