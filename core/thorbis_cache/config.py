"""Settings of a cache, as one frozen value."""

from __future__ import annotations

from typing import Any

import attrs

from thorbis_cache.codec import CodecSettings
from thorbis_cache.errors import ConfigurationError
from thorbis_cache.keys import validate_prefix

__all__ = ["CacheSettings"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(slots=True)
class CacheSettings:
    """How a :class:`~thorbis_cache.cache.Cache` behaves.

    :ivar prefix: first segment of every key (one per application sharing a Redis).
    :ivar lease_ttl: seconds a fill lease lives; longer than a slow load, short enough
        that a crashed filler does not block the key for long.
    :ivar lease_wait: seconds a client that finds the lease taken waits for the winner's
        value before loading by itself (without caching).
    :ivar serve_from_loader_when_unavailable: when Redis cannot be reached,
        ``get_or_load`` answers from the loader (logged and counted) instead of raising.
    :ivar degraded_concurrency: at most this many loader calls at once in that mode, so a
        Redis outage does not turn into a database stampede.
    :ivar codec: serialization, compression and size limits.
    :ivar publish_events: publish an event after every invalidation, so that near caches
        (L1) of other processes drop what it named; turn off only where no process uses
        a near cache.
    :ivar events_health_interval: seconds of silence after which a near cache's event
        subscription is PINGed; after three, it is declared lost and L1 is flushed.
    :ivar replica_max_lag: seconds a replica may be behind its master and still serve
        the schemas declared ``read_from_replicas`` (see :mod:`.replica_reads`).
    """

    prefix: str = attrs.field(default="tc", validator=lambda _i, _a, v: validate_prefix(v))
    lease_ttl: float = attrs.field(default=5.0, validator=_positive)
    lease_wait: float = attrs.field(default=2.0, validator=_positive)
    serve_from_loader_when_unavailable: bool = True
    degraded_concurrency: int = attrs.field(default=32, validator=_positive)
    codec: CodecSettings = attrs.field(factory=CodecSettings)
    publish_events: bool = True
    events_health_interval: float = attrs.field(default=1.0, validator=_positive)
    replica_max_lag: float = attrs.field(default=0.5, validator=_positive)
