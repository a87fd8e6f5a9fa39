"""The schema registry: the key schemas a cache accepts, by name, with who registered
each; and the parsing of a Redis key back into its schema, tenant and parameters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from thorbis_cache.cache.keys import CacheKey, KeySchema, validate_tenant
from thorbis_cache.errors import (
    DuplicateSchemaError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidTenantId,
    UnknownSchemaError,
)

__all__ = ["SchemaRegistry"]


@attrs.define
class SchemaRegistry:
    """The set of key schemas a cache accepts, with their owners (plugin names)."""

    _schemas: dict[str, KeySchema[Any]] = attrs.field(factory=dict, init=False)
    _owners: dict[str, str] = attrs.field(factory=dict, init=False)

    def register(self, schema: KeySchema[Any], owner: str = "<app>") -> None:
        """Register ``schema``; registering the same object again is a no-op.

        :raises DuplicateSchemaError: when another schema already holds the name.
        """
        existing = self._schemas.get(schema.name)
        if existing is not None:
            if existing is schema:
                return
            raise DuplicateSchemaError(schema.name, self._owners[schema.name], owner)
        self._schemas[schema.name] = schema
        self._owners[schema.name] = owner

    def get(self, name: str) -> KeySchema[Any]:
        """The schema registered as ``name``.

        :raises UnknownSchemaError: when there is none.
        """
        try:
            return self._schemas[name]
        except KeyError:
            raise UnknownSchemaError(name, list(self._schemas)) from None

    def owner(self, name: str) -> str:
        """Who registered ``name``."""
        return self._owners[name]

    def is_registered(self, schema: KeySchema[Any]) -> bool:
        """True if this very schema object is registered."""
        return self._schemas.get(schema.name) is schema

    def __iter__(self) -> Iterator[KeySchema[Any]]:
        return iter(self._schemas.values())

    def __len__(self) -> int:
        return len(self._schemas)

    def __contains__(self, name: object) -> bool:
        return name in self._schemas

    def parse(self, prefix: str, redis_key: str) -> CacheKey[Any]:
        """Parse a full Redis key back into schema, tenant and parameter values.

        :raises InvalidKeyError: when the key is not exactly a key this registry builds.
        """
        head = prefix + ":{"
        if not redis_key.startswith(head):
            raise InvalidKeyError(redis_key, f"does not start with {head!r}")
        close = redis_key.find("}", len(head))
        if close < 0:
            raise InvalidKeyError(redis_key, "no closing '}' after the tenant")
        tenant = redis_key[len(head) : close]
        try:
            validate_tenant(tenant)
        except InvalidTenantId as exc:
            raise InvalidKeyError(redis_key, str(exc)) from None
        rest = redis_key[close + 1 :]
        if not rest.startswith(":"):
            raise InvalidKeyError(redis_key, "expected ':' after the tenant tag")
        parts = rest[1:].split(":")
        schema = self._schemas.get(parts[0])
        if schema is None:
            raise InvalidKeyError(redis_key, f"schema {parts[0]!r} is not registered")
        segments = parts[1:]
        if len(segments) != len(schema.params):
            raise InvalidKeyError(
                redis_key,
                f"schema {schema.name!r} takes {len(schema.params)} parameters, "
                f"found {len(segments)}",
            )
        values: dict[str, object] = {}
        for param, segment in zip(schema.params, segments):
            try:
                values[param.name] = param.decode(segment)
            except (ValueError, InvalidParameterError) as exc:
                raise InvalidKeyError(
                    redis_key, f"parameter {param.name!r} of {schema.name!r}: {exc}"
                ) from None
        key = schema.key(tenant, **values)
        if key.redis_key(prefix) != redis_key:  # pragma: no cover -- defensive, proven by tests
            raise InvalidKeyError(redis_key, "does not rebuild to itself")
        return key
