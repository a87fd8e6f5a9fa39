"""What the cache's parts (the value and structure fills, the leases, the structures)
use of the :class:`~thorbis_cache.cache.core.Cache` that composes them, described as a
protocol, so that they sit below ``cache.py`` and never import it; and the per-schema
state and scripts the cache keeps for them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import attrs

from thorbis_cache.cache.codec import SchemaCodec
from thorbis_cache.cache.envelope import CorruptEntry
from thorbis_cache.cache.keys import CacheKey, KeySchema
from thorbis_cache.cache.loading import Loader, LoaderCalls
from thorbis_cache.cache.metrics import CacheMetrics, SchemaCounters
from thorbis_cache.cache.near import NearCache
from thorbis_cache.cache.settings import CacheSettings
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script, load_scripts

__all__ = ["CacheCore", "CacheScripts", "Loader", "SchemaRuntime"]

T = TypeVar("T")


@attrs.frozen(slots=True)
class SchemaRuntime:
    """What the cache keeps per registered schema."""

    schema: KeySchema[Any]
    codec: SchemaCodec[Any]
    counters: SchemaCounters
    near: NearCache | None  #: the cache's L1 if this schema uses it
    #: GET of one key: the store's (the master) or a replica's (``read_from_replicas``)
    read: Callable[[str], Awaitable[bytes | None]]
    ttl: float  #: the schema's, or the host's ``CacheSettings.schema_overrides``
    near_ttl: float | None  #: likewise


@attrs.frozen(slots=True)
class CacheScripts:
    """The cache's Lua scripts, loaded once per cache."""

    lease_acquire: Script
    lease_fill: Script
    store: Script
    delete_if_equal: Script
    lease_release: Script
    hash_replace: Script
    hash_update: Script
    write_expire: Script
    struct_remove: Script
    struct_read: Script
    struct_fill: Script

    @classmethod
    def load(cls) -> CacheScripts:
        return load_scripts(cls)


class CacheCore(Protocol):
    """The members of a :class:`~thorbis_cache.cache.core.Cache` its parts call."""

    @property
    def store(self) -> RedisStore: ...

    @property
    def settings(self) -> CacheSettings: ...

    @property
    def metrics(self) -> CacheMetrics: ...

    @property
    def _scripts(self) -> CacheScripts: ...

    def redis_key(self, key: CacheKey[Any]) -> str: ...

    def lease_key(self, key: CacheKey[Any]) -> str: ...

    def tag_keys(self, key: CacheKey[Any]) -> list[str]: ...

    def ttl_ms(self, schema: KeySchema[Any], ttl: float | None = None) -> int: ...

    def revoke_flights(self, names: Iterable[str] = (), *, tenant: str | None = None
                       ) -> None: ...

    async def delete(self, *keys: CacheKey[Any], replicate: bool = True) -> int: ...

    @property
    def loaders(self) -> LoaderCalls: ...

    def _timing(self, schema: KeySchema[Any], ttl_ms: int, delta_ms: int
                ) -> tuple[int, int] | None: ...

    async def _drop_corrupt(self, rt: SchemaRuntime, key: CacheKey[Any], rk: str,
                            data: bytes, exc: CorruptEntry) -> None: ...
