"""thorbis-cache: a multi-tenant cache framework on Redis and PostgreSQL.

Importing this package connects to nothing, reads no environment and loads no plugin.
"""

from __future__ import annotations

from thorbis_cache.app import CacheApp
from thorbis_cache.cache import Cache
from thorbis_cache.codec import CodecSettings
from thorbis_cache.config import CacheSettings
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

__all__ = [
    "HOOK_API_VERSION",
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
    "MaterializedView",
    "MissingRow",
    "NearCache",
    "Operation",
    "Param",
    "Permission",
    "PluginInfo",
    "PluginManager",
    "RedisStore",
    "RefreshPolicy",
    "RuleTarget",
    "SchemaKind",
    "SchemaRegistry",
    "SortedSet",
    "SqlScript",
    "Versioned",
    "WarmBatch",
    "WarmContext",
    "WarmOutcome",
    "Warmer",
    "batch_of",
    "hookimpl",
    "validate_tenant",
    "warm",
]

__version__ = "0.1.0"
