"""thorbis-cache: a multi-tenant cache framework on Redis and PostgreSQL.

Importing this package connects to nothing, reads no environment and loads no plugin.
The worker's names (:class:`OutboxWorker`, :class:`WorkerMetrics`, :class:`BatchResult`,
:class:`LogicalCapture`) are imported on first use, so a host that never runs a worker
never loads the PostgreSQL driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from thorbis_cache.app import CacheApp
from thorbis_cache.cache import Cache
from thorbis_cache.codec import CodecSettings
from thorbis_cache.config import CacheSettings, SchemaOverride
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
from thorbis_cache.hookspecs import HOOK_API_VERSION, hookimpl
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
from thorbis_cache.plugins import LoadedPlugin, PluginManager
from thorbis_cache.redis_store import RedisStore
from thorbis_cache.structures import EntityHash, GeoIndex, SortedSet, Versioned
from thorbis_cache.warming import WarmBatch, WarmOutcome, batch_of, warm

if TYPE_CHECKING:
    from thorbis_cache.postgres.logical import LogicalCapture
    from thorbis_cache.worker import BatchResult, OutboxWorker, WorkerMetrics

#: Names imported on first access (they import asyncpg).
_LAZY = {
    "BatchResult": "thorbis_cache.worker",
    "LogicalCapture": "thorbis_cache.postgres.logical",
    "OutboxWorker": "thorbis_cache.worker",
    "WorkerMetrics": "thorbis_cache.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
