"""Invalidation driven by database changes: the worker that turns captured rows into the
keys and tags the plugins' rules name, the reliable queue between them, replay after a
failover, and what a lost capture slot flushes.

The engines it drives live with the cache (:mod:`thorbis_cache.cache.tags`,
:mod:`thorbis_cache.cache.invalidation_events`); their names stay importable from here.
"""

from __future__ import annotations

from thorbis_cache.cache.invalidation_events import (
    EventPublisher,
    EventSubscriber,
    InvalidationEvent,
    events_channel,
)
from thorbis_cache.cache.tags import CacheTagInvalidator, InvalidationLimits, TagEngine

__all__ = [
    "CacheTagInvalidator",
    "EventPublisher",
    "EventSubscriber",
    "InvalidationEvent",
    "InvalidationLimits",
    "TagEngine",
    "events_channel",
]
