"""Invalidation engines: by key, by tag and in cascade, server-side in Redis, and the
events that keep other processes' near caches coherent.

See :mod:`thorbis_cache.invalidation.tags`, :mod:`thorbis_cache.invalidation.events` and
``docs/architecture.md``.
"""

from __future__ import annotations

from thorbis_cache.invalidation.events import (
    EventPublisher,
    EventSubscriber,
    InvalidationEvent,
    events_channel,
)
from thorbis_cache.invalidation.tags import CacheTagInvalidator, InvalidationLimits, TagEngine

__all__ = [
    "CacheTagInvalidator",
    "EventPublisher",
    "EventSubscriber",
    "InvalidationEvent",
    "InvalidationLimits",
    "TagEngine",
    "events_channel",
]
