"""Invalidation engines: by key, by tag and in cascade, server-side in Redis.

See :mod:`thorbis_cache.invalidation.tags` and ``docs/architecture.md``.
"""

from __future__ import annotations

from thorbis_cache.invalidation.tags import CacheTagInvalidator, InvalidationLimits, TagEngine

__all__ = ["CacheTagInvalidator", "InvalidationLimits", "TagEngine"]
