"""thorbis-cache: a multi-tenant cache framework on Redis and PostgreSQL.

Importing this package connects to nothing, reads no environment and loads no plugin.
"""

from __future__ import annotations

from thorbis_cache.cache import Cache
from thorbis_cache.codec import CodecSettings
from thorbis_cache.config import CacheSettings
from thorbis_cache.crypto import KeyRing
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
from thorbis_cache.redis_store import RedisStore
from thorbis_cache.structures import EntityHash, GeoIndex, SortedSet, Versioned

__all__ = [
    "Cache",
    "CacheKey",
    "CacheMetrics",
    "CacheSettings",
    "CodecSettings",
    "Compression",
    "EntityHash",
    "GeoIndex",
    "KeyRing",
    "KeySchema",
    "Param",
    "RedisStore",
    "SchemaKind",
    "SchemaRegistry",
    "SortedSet",
    "Versioned",
    "validate_tenant",
]

__version__ = "0.1.0"
