"""Settings of a cache, as one frozen value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.codec import CodecSettings
from thorbis_cache.cache.keys import validate_prefix
from thorbis_cache.errors import ConfigurationError, InvalidSchemaError

if TYPE_CHECKING:
    from thorbis_cache.cache.keys import KeySchema
    from thorbis_cache.cache.registry import SchemaRegistry

__all__ = ["CacheSettings", "SchemaOverride"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value!r}")


def _seconds_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConfigurationError(f"{attribute.name} must be seconds (a number) or None, "
                                 f"got {value!r}")


@attrs.frozen(slots=True)
class SchemaOverride:
    """What a host changes in a key schema a plugin declared, without re-registering it
    (``CacheSettings(schema_overrides={"hs.customer": SchemaOverride(ttl=600)})``, or
    the same as plain mappings, as read from a configuration file). None keeps the
    plugin's value. The values are checked against the schema as a declaration would be
    when the cache is built (``near_ttl`` in (0, 60] and on value schemas only, ``ttl``
    not below the schema's ``negative_ttl``...).

    :ivar ttl: seconds a value lives (the schema's ``ttl``).
    :ivar near_ttl: seconds a value may live in the in-process near cache (L1); it puts
        the schema in L1 (``CacheApp(near=NearCache(...))``). Give it to every process
        that writes the schema, with or without a near cache: a process writing a schema
        with ``near_ttl`` tells the others' L1 (see :mod:`thorbis_cache.cache.near`).
    """

    ttl: float | None = attrs.field(default=None, validator=_seconds_or_none)
    near_ttl: float | None = attrs.field(default=None, validator=_seconds_or_none)


def _to_overrides(value: Mapping[str, Any] | None) -> dict[str, SchemaOverride]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"schema_overrides must map schema names to overrides, "
                                 f"got {type(value).__name__}")
    fields = [f.name for f in attrs.fields(SchemaOverride)]
    overrides = {}
    for name, override in value.items():
        if isinstance(override, Mapping):
            unknown = sorted(set(override) - set(fields))
            if unknown:
                raise ConfigurationError(
                    f"schema_overrides[{name!r}]: unknown setting(s) "
                    f"{', '.join(map(repr, unknown))} (settable: {', '.join(fields)})")
            try:
                override = SchemaOverride(**override)
            except ConfigurationError as exc:
                raise ConfigurationError(f"schema_overrides[{name!r}]: {exc}") from None
        elif not isinstance(override, SchemaOverride):
            raise ConfigurationError(f"schema_overrides[{name!r}] must be a SchemaOverride "
                                     f"or a mapping, got {override!r}")
        overrides[str(name)] = override
    return overrides


@attrs.frozen(slots=True)
class CacheSettings:
    """How a :class:`~thorbis_cache.cache.core.Cache` behaves.

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
    :ivar schema_overrides: schema name -> :class:`SchemaOverride` (or a mapping of its
        fields): TTLs a host sets for schemas plugins declared. A name no registered
        schema has, or a value the schema cannot take, fails the cache's construction
        with a :class:`~thorbis_cache.errors.ConfigurationError` naming it.
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
    schema_overrides: Mapping[str, SchemaOverride] = attrs.field(
        factory=dict, converter=_to_overrides, hash=False)

    def tuning(self, schema: KeySchema[Any]) -> tuple[float, float | None]:
        """``ttl`` and ``near_ttl`` of ``schema`` with the host's override applied."""
        override = self.schema_overrides.get(schema.name)
        if override is None:
            return schema.ttl, schema.near_ttl
        return (schema.ttl if override.ttl is None else override.ttl,
                schema.near_ttl if override.near_ttl is None else override.near_ttl)

    def check_overrides(self, registry: SchemaRegistry) -> None:
        """Refuse overrides of schemas ``registry`` does not hold, or values their schema
        cannot take (checked as a declaration is: ``attrs.evolve`` runs the schema's
        checks).

        :raises ConfigurationError: naming the override and what is wrong with it.
        """
        for name in self.schema_overrides:
            if name not in registry:
                raise ConfigurationError(
                    f"schema_overrides[{name!r}]: no registered key schema has this name "
                    f"(registered: {', '.join(sorted(s.name for s in registry))})")
            schema = registry.get(name)
            ttl, near_ttl = self.tuning(schema)
            try:
                attrs.evolve(schema, ttl=ttl, near_ttl=near_ttl)
            except InvalidSchemaError as exc:
                raise ConfigurationError(f"schema_overrides[{name!r}]: {exc.problem}"
                                         ) from None
