"""The cache: typed get / get_many / set / delete / get_or_load over Redis.

Values are encoded by the schema's :class:`~thorbis_cache.cache.codec.SchemaCodec`; entries
that do not open are misses (deleted, counted, logged), never errors. ``get_or_load``
is cache-aside with single-flight, fill leases and optional XFetch (see :mod:`.fill`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from thorbis_cache.cache.codec import SchemaCodec, make_converter
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.cache.envelope import CorruptEntry
from thorbis_cache.cache.eviction import check_eviction_policy
from thorbis_cache.cache.invalidation_events import Coherence
from thorbis_cache.cache.keys import (
    _SCHEMA_NAME_RE,
    CacheKey,
    KeySchema,
    SchemaKind,
    checked_ttl,
    validate_tenant,
)
from thorbis_cache.cache.loading import LoaderCalls
from thorbis_cache.cache.metrics import CacheMetrics, CacheObserver
from thorbis_cache.cache.near import MISS, NearCache
from thorbis_cache.cache.protocol import CacheScripts, Loader, SchemaRuntime
from thorbis_cache.cache.read_through import ABSENT, StructureFills
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.cache.settings import CacheSettings
from thorbis_cache.cache.structures import EntityHash, GeoIndex, SortedSet
from thorbis_cache.cache.tags import InvalidationLimits, TagEngine
from thorbis_cache.cache.value_fill import ValueFills
from thorbis_cache.errors import (
    ConfigurationError,
    InvalidKeyError,
    RedisUnavailableError,
    UnknownSchemaError,
    ValueTooLargeError,
    WrongRedisTypeError,
    WrongSchemaKindError,
)
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.replica_reads import ReplicaReads

__all__ = ["Cache"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Cache:
    """A multi-tenant typed cache on Redis.

    :param store: the Redis adapter (see :meth:`from_url`).
    :param registry: the key schemas this cache accepts.
    :param keyring: master keys; required as soon as one schema is sensitive.
    :param settings: behaviour knobs.
    :param metrics: where counters go (a private registry by default).
    :param invalidation_limits: per-call bounds of tag and cascade invalidations.
    :param near: an in-process near cache (L1) for the schemas with ``near_ttl`` (see
        :mod:`thorbis_cache.cache.near`); owned by this cache alone.
    :raises ConfigurationError: a sensitive schema without a key ring, or ``near``
        already used by another cache.
    """

    def __init__(
        self,
        store: RedisStore,
        registry: SchemaRegistry,
        *,
        keyring: KeyRing | None = None,
        settings: CacheSettings | None = None,
        metrics: CacheMetrics | None = None,
        owns_store: bool = False,
        invalidation_limits: InvalidationLimits | None = None,
        near: NearCache | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.keyring = keyring
        self.settings = settings or CacheSettings()
        self.metrics = metrics or CacheMetrics()
        #: per-operation latency and tenant traffic (None: the read path calls nothing)
        self.observer: CacheObserver | None = None
        self._prefix = self.settings.prefix
        self._lease_prefix = f"{self._prefix}:~lease:"
        self._tag_prefix = f"{self._prefix}:~tag:"
        self.tags = TagEngine(store, self._prefix, invalidation_limits)
        self._converter = make_converter()
        self._runtimes: dict[str, SchemaRuntime] = {}
        self._scripts = CacheScripts.load()
        #: the loader calls of every fill (counted; degraded while Redis is down)
        self.loaders = LoaderCalls(self.settings)
        self._owns_store = owns_store
        self.near = near
        # Checked before L1 is bound to this cache: a cache refused here must leave it
        # free for the next (a host trying again with its settings mended).
        self.settings.check_overrides(registry)
        self._coherence = Coherence(store, self.settings, self.metrics.coherence, near)
        self._values = ValueFills(self)
        self.fills = StructureFills(self)
        #: replica routing, made on first use by a ``read_from_replicas`` schema
        self.replicas: ReplicaReads | None = None
        try:
            for schema in registry:
                self._runtime(schema)
        except BaseException:
            if near is not None:
                near.detach(self._coherence.origin)
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        registry: SchemaRegistry,
        *,
        keyring: KeyRing | None = None,
        settings: CacheSettings | None = None,
        metrics: CacheMetrics | None = None,
        invalidation_limits: InvalidationLimits | None = None,
        near: NearCache | None = None,
    ) -> Cache:
        """A cache on the Redis ``url`` names (one server, a Cluster or a Sentinel group:
        see :mod:`thorbis_cache.store.redis_url`); the connections are owned and closed by
        :meth:`aclose`."""
        store = RedisStore.from_url(url)
        return cls(store, registry, keyring=keyring, settings=settings, metrics=metrics,
                   owns_store=True, invalidation_limits=invalidation_limits, near=near)

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel in-flight loads, stop the event subscriber, and close the store if
        this cache owns it."""
        await self._values.aclose()
        await self.fills.aclose()
        await self._coherence.aclose()
        if self.replicas is not None:
            await self.replicas.aclose()
        if self._owns_store:
            await self.store.aclose()

    # ----------------------------------------------------------------- keys

    def redis_key(self, key: CacheKey[Any]) -> str:
        """The full Redis key of ``key`` under this cache's prefix."""
        return f"{self._prefix}:{key.body}"

    def lease_key(self, key: CacheKey[Any]) -> str:
        """The fill-lease key of ``key`` (same slot; outside every schema's keyspace)."""
        return self._lease_prefix + key.body

    def tag_key(self, tenant: str, tag: str) -> str:
        """The tag set of ``tag`` for ``tenant``: the Redis keys written under it (same
        slot as the tenant's keys; outside every schema's keyspace)."""
        return f"{self._tag_prefix}{{{tenant}}}:{tag}"

    def tag_keys(self, key: CacheKey[Any]) -> list[str]:
        """The tag sets a write of ``key`` must join (empty for a schema without tags,
        which therefore pays nothing)."""
        tags = key.schema.tags
        if not tags:
            return []
        head = f"{self._tag_prefix}{{{key.tenant}}}:"
        return [head + tag for tag in tags]

    def sync_key(self, tenant: str) -> str:
        """The key an invalidation of ``tenant`` writes to wait for its replicas (see
        :meth:`RedisStore.sync_replicas`); in the tenant's slot."""
        return f"{self._prefix}:~sync:{{{tenant}}}"

    async def _sync_replicas(self, tenants: Iterable[str]) -> None:
        await self.store.sync_replicas_each(
            [self.sync_key(tenant) for tenant in sorted(set(tenants))])

    def parse_key(self, redis_key: str) -> CacheKey[Any]:
        """Parse a Redis key of this cache back into a :class:`CacheKey`."""
        return self.registry.parse(self._prefix, redis_key)

    def _runtime(self, schema: KeySchema[Any]) -> SchemaRuntime:
        rt = self._runtimes.get(schema.name)
        if rt is not None and rt.schema is schema:
            return rt
        if not self.registry.is_registered(schema):
            raise UnknownSchemaError(schema.name, [s.name for s in self.registry])
        if schema.sensitive and self.keyring is None:
            raise ConfigurationError(
                f"key schema {schema.name!r} is sensitive: the cache needs a KeyRing"
            )
        ttl, near_ttl = self.settings.tuning(schema)
        rt = SchemaRuntime(
            schema,
            SchemaCodec(schema, self._converter, self.keyring, self.settings.codec),
            self.metrics.for_schema(schema.name),
            self.near if near_ttl is not None else None,
            self._replica_reads().get if schema.read_from_replicas else self.store.get,
            ttl,
            near_ttl,
        )
        self._runtimes[schema.name] = rt
        return rt

    def _replica_reads(self) -> ReplicaReads:
        if self.replicas is None:
            self.replicas = ReplicaReads(self.store, self._prefix,
                                         max_lag=self.settings.replica_max_lag)
        return self.replicas

    def _value_runtime(self, key: CacheKey[Any], operation: str) -> SchemaRuntime:
        rt = self._runtimes.get(key.schema.name)
        if rt is None or rt.schema is not key.schema:
            rt = self._runtime(key.schema)
        kind = key.schema.kind
        if kind is not SchemaKind.VALUE:
            helper = {SchemaKind.HASH: "hash", SchemaKind.ZSET: "zset", SchemaKind.GEO: "geo"}
            raise WrongSchemaKindError(
                key.schema.name, kind.value, operation,
                f"use cache.{helper[kind]}(key): its get_or_load(loader) reads the "
                f"{kind.value} through the cache with the same fill lease",
            )
        return rt

    def ttl_ms(self, schema: KeySchema[Any], ttl: float | None = None) -> int:
        """The TTL to write, in ms: ``ttl`` or the schema's (as overridden by
        ``CacheSettings.schema_overrides``), with the schema's jitter."""
        seconds = self._runtime(schema).ttl if ttl is None else checked_ttl(schema.name, ttl)
        if schema.ttl_jitter:
            seconds *= 1.0 + random.uniform(-schema.ttl_jitter, schema.ttl_jitter)
        return max(1, int(seconds * 1000))

    # ----------------------------------------------------------------- reads

    async def get(self, key: CacheKey[T]) -> T | None:
        """The cached value of ``key``, or None on a miss (or an entry that does not open).

        :raises UnknownSchemaError: the key's schema is not registered here.
        :raises RedisUnavailableError: Redis cannot be reached.
        """
        rt = self._value_runtime(key, "get")
        rk = f"{self._prefix}:{key.body}"
        near = rt.near
        if near is not None:
            found = self._near_lookup(rt, near, rk)
            if found is not MISS:
                return found  # type: ignore[no-any-return]
            started = self._coherence.begin(near)
        # Timed here, around the awaited call itself (as get_or_load does): a wrapping
        # coroutine would cost every observed hit another await (bench/hit_path.py).
        observer = self.observer
        try:
            if observer is None:
                data = await rt.read(rk)
            else:
                began = time.perf_counter()
                try:
                    data = await rt.read(rk)
                except BaseException as exc:
                    observer.failed(key, "get", exc, time.perf_counter() - began)
                    raise
                observer.observe(key, "get", time.perf_counter() - began)
        except WrongRedisTypeError:  # foreign data under our key: a miss, never an error
            data = None
        if data is None:
            rt.counters.misses += 1
            return None
        try:
            value: T = rt.codec.decode_value(data, rk.encode(), key.tenant)
        except CorruptEntry as exc:
            if data == ABSENT:
                rt.counters.negative_hits += 1
                return None
            await self._drop_corrupt(rt, key, rk, data, exc)
            rt.counters.misses += 1
            return None
        rt.counters.hits += 1
        if near is not None:
            self._near_put(rt, near, key, rk, value, started)
        return value

    @staticmethod
    def _near_lookup(rt: SchemaRuntime, near: NearCache, rk: str) -> Any:
        """L1's value of ``rk`` or :data:`MISS`, counted."""
        found = near.lookup(rk)
        if found is MISS:
            rt.counters.near_misses += 1
        else:
            rt.counters.near_hits += 1
        return found

    @staticmethod
    def _near_put(rt: SchemaRuntime, near: NearCache, key: CacheKey[Any], rk: str, value: object,
                  started: tuple[int, float]) -> None:
        """Keep a value read from Redis (or loaded) in L1 for the schema's near_ttl."""
        near.put(rk, value, key.tenant, key.schema.tags, rt.near_ttl or 0.0, started)

    async def get_many(self, keys: Sequence[CacheKey[T]]) -> list[T | None]:
        """Values of ``keys`` in order (None for misses), with one MGET per hash slot
        and per ``store.keys_per_command`` keys, all written at once: about one round
        trip in all."""
        # A batch is usually of one schema: resolve each distinct schema once.
        runtimes: dict[int, SchemaRuntime] = {}
        for key in keys:
            if id(key.schema) not in runtimes:
                runtimes[id(key.schema)] = self._value_runtime(key, "get_many")
        prefix = self._prefix
        rks = [f"{prefix}:{k.body}" for k in keys]
        datas = await self.store.mget(rks)
        if len(runtimes) == 1:  # the usual batch
            return await self._decode_batch(runtimes[id(keys[0].schema)], keys, rks, datas)
        # Several schemas: each one's keys decode as a batch of their own.
        out: list[T | None] = [None] * len(keys)
        for schema_id, rt in runtimes.items():
            at = [i for i, k in enumerate(keys) if id(k.schema) == schema_id]
            values = await self._decode_batch(rt, [keys[i] for i in at], [rks[i] for i in at],
                                              [datas[i] for i in at])
            for i, value in zip(at, values, strict=True):
                out[i] = value
        return out

    async def _decode_batch(self, rt: SchemaRuntime, keys: Sequence[CacheKey[T]],
                            rks: Sequence[str], datas: Sequence[bytes | None]
                            ) -> list[T | None]:
        """``get_many``'s values of one schema, decoded in one pass and counted in bulk;
        entries that do not open are dropped (a cached absence is a negative hit)."""
        values, corrupt = rt.codec.decode_values(datas, rks, [k.tenant for k in keys])
        absent = datas.count(None)
        misses = absent
        for i, exc in corrupt:
            data = datas[i]
            assert data is not None
            if data == ABSENT:
                rt.counters.negative_hits += 1
                continue
            await self._drop_corrupt(rt, keys[i], rks[i], data, exc)
            misses += 1
        rt.counters.hits += len(keys) - absent - len(corrupt)
        rt.counters.misses += misses
        return values

    # ----------------------------------------------------------------- writes

    async def set(self, key: CacheKey[T], value: T, *, ttl: float | None = None) -> None:
        """Write ``value`` (write-through) and revoke any in-flight fill of ``key``.

        :raises ValueTypeError: ``value`` is not of the schema's value type.
        :raises ValueTooLargeError: ``value`` serializes to more than ``max_value_size``;
            the entry it was to replace is deleted.
        """
        rt = self._value_runtime(key, "set")
        rt.codec.check(value)
        rk = f"{self._prefix}:{key.body}"
        ttl_ms = self.ttl_ms(key.schema, ttl)  # a bad ttl= is refused before anything
        self.revoke_flights([rk])
        try:
            data = rt.codec.encode(value, rk.encode(), key.tenant,
                                   self._timing(key.schema, ttl_ms, 0))
        except ValueTooLargeError:
            await self.delete(key)  # the host meant to replace it: not left as it was
            raise
        await self.store.run(
            self._scripts.store, [rk, self.lease_key(key), *self.tag_keys(key)], [data, ttl_ms]
        )
        if rt.near_ttl is not None:  # other processes may hold the old value in L1
            await self._coherence.announce(key.tenant, [rk])

    async def delete(self, *keys: CacheKey[Any], replicate: bool = True) -> int:
        """Delete ``keys`` (of any kind) and their fill leases, so that no fill started
        before this call can write afterwards.

        This is the plain, non-cascading invalidation; see :meth:`invalidate`. Where the
        master has replicas, it returns once they have the deletes too (``WAIT``, bounded
        by ``store.wait_timeout``), so a failover right after it does not bring the
        values back; ``replicate=False`` leaves that to the caller (the worker, which
        waits once per batch).

        :returns: how many of the keys existed.
        """
        names: list[str] = []
        by_tenant: dict[str, list[str]] = {}
        for key in keys:
            self._runtime(key.schema)
            rk = f"{self._prefix}:{key.body}"
            names.append(rk)
            names.append(self.lease_key(key))
            by_tenant.setdefault(key.tenant, []).append(rk)
        self.revoke_flights(names[::2])
        deleted = await self.store.delete(names)
        if replicate:
            await self._sync_replicas(by_tenant)
        await self._coherence.announce_deletes(by_tenant)
        return deleted

    # ----------------------------------------------------------------- invalidation

    async def invalidate(
        self, *keys: CacheKey[Any], cascade: bool = False, replicate: bool = True
    ) -> int:
        """Delete ``keys`` and their fill leases; with ``cascade``, also every key that
        depends on them (see :meth:`depend`), transitively and cycle-safe, server-side
        in bounded steps. Returns when the keys are gone (from the replicas too, as for
        :meth:`delete`).

        :returns: how many keys existed (dependents included).
        """
        if not cascade:
            return await self.delete(*keys, replicate=replicate)
        by_tenant: dict[str, list[str]] = {}
        for key in keys:
            self._runtime(key.schema)
            by_tenant.setdefault(key.tenant, []).append(self.redis_key(key))
        deleted = 0
        for tenant, names in by_tenant.items():
            # Dependents are found server-side: revoke every flight of the tenant.
            self.revoke_flights(tenant=tenant)
            deleted += await self.tags.cascade(tenant, names)
            if replicate:
                await self._sync_replicas([tenant])
            await self._coherence.announce(tenant, names, tenant_wide=True)
        return deleted

    async def invalidate_tags(
        self, tenant: str, tags: Sequence[str], *, cascade: bool = False,
        replicate: bool = True,
    ) -> int:
        """Delete every key of ``tenant`` written under one of ``tags`` (and their fill
        leases, so a load in flight is not written afterwards); with ``cascade``, their
        dependents too. Works in batches of ``InvalidationLimits.tag_batch`` keys per
        Redis call. Returns when the keys are gone (from the replicas too, as for
        :meth:`delete`).

        :returns: how many keys existed.
        :raises InvalidTenantId: ``tenant`` is not a valid tenant id.
        :raises InvalidKeyError: a tag is not a tag name (``<namespace>.<name>``).
        """
        validate_tenant(tenant)
        if isinstance(tags, str):
            tags = [tags]  # a lone tag would otherwise be iterated letter by letter
        for tag in tags:
            if not isinstance(tag, str) or not _SCHEMA_NAME_RE.fullmatch(tag):
                raise InvalidKeyError(
                    self.tag_key(tenant, str(tag)), "a tag name looks like '<namespace>.<name>'"
                )
        # The tags' members are known to Redis only: revoke every flight of the tenant.
        self.revoke_flights(tenant=tenant)
        deleted = await self.tags.invalidate_tags(tenant, tags, cascade=cascade)
        if replicate:
            await self._sync_replicas([tenant])
        await self._coherence.announce(tenant, (), tags, tenant_wide=cascade)
        return deleted

    def revoke_flights(self, names: Iterable[str] = (), *, tenant: str | None = None) -> None:
        """Make the loads in flight in this process for these Redis keys (or for every
        key of ``tenant``) serve nobody who calls after this: the callers already
        waiting get their load's answer, later callers load again. Every invalidation
        and write calls it before touching Redis (the server-side half -- the fill
        refused -- is the lease's)."""
        names = list(names)
        prefix = None if tenant is None else f"{self._prefix}:{{{tenant}}}:"
        self._values.revoke(names, prefix)
        self.fills.revoke(names, prefix)

    async def verify_server(self) -> str | None:
        """Check that Redis cannot break invalidation by evicting keys: every master must
        run a supported ``maxmemory-policy`` (noeviction or volatile-*; see
        :mod:`thorbis_cache.cache.eviction`). Called by ``CacheApp.start`` and the outbox
        worker before they serve.

        :returns: the policy, or None when Redis cannot be reached (logged: a cache
            starts while Redis is down, and reads are then served by their loaders).
        :raises EvictionPolicyError: a policy that may evict keys without a TTL
            (allkeys-*), or one that cannot be read, naming the server and the fix.
        """
        try:
            return await check_eviction_policy(self.store, self._prefix)
        except RedisUnavailableError as exc:
            log.warning("could not check the eviction policy of redis: %s", exc)
            return None

    async def near_ready(self, wait: float = 5.0) -> bool:
        """Start the near cache's event subscription if needed and wait up to
        ``wait`` seconds until it is confirmed (L1 fills only from then on).

        :returns: True when confirmed; False without a near cache or on timeout.
        """
        return await self._coherence.ready(wait)

    async def depend(
        self, dependent: CacheKey[Any], *, on: CacheKey[Any], ttl: float | None = None
    ) -> bool:
        """Record that ``dependent`` derives from ``on``: ``invalidate(on, cascade=True)``
        (or a cascading tag invalidation reaching ``on``) also deletes ``dependent``.

        The edge lives at least as long as ``dependent`` can (its schema's TTL with
        jitter, or ``ttl`` seconds when it is written with a longer one).

        :returns: True when the edge is new.
        :raises InvalidKeyError: the keys belong to different tenants (their hash slots
            differ, so no server-side cascade could follow the edge).
        """
        dependent_ttl = self._runtime(dependent.schema).ttl
        self._runtime(on.schema)
        if dependent.tenant != on.tenant:
            raise InvalidKeyError(
                self.redis_key(dependent),
                f"cannot depend on {self.redis_key(on)!r}: tenants {dependent.tenant!r} and "
                f"{on.tenant!r} differ; dependencies stay within one tenant",
            )
        seconds = dependent_ttl if ttl is None else max(
            checked_ttl(dependent.schema.name, ttl), dependent_ttl)
        ttl_ms = int(seconds * (1.0 + dependent.schema.ttl_jitter) * 1000) + 1
        return await self.tags.depend(on.body, self.redis_key(dependent), ttl_ms)

    # ----------------------------------------------------------------- cache-aside

    async def get_or_load(
        self, key: CacheKey[T], loader: Loader[T], *, ttl: float | None = None
    ) -> T:
        """The cached value of ``key``; on a miss, ``loader()``'s result, cached.

        Concurrent misses in this process call ``loader`` once; across processes a fill
        lease lets one client load while the others wait for its value; a load that
        raced with an invalidation is returned but not written. A loader's exception
        propagates unchanged (and nothing is cached). If Redis is unreachable and
        ``serve_from_loader_when_unavailable`` is set, the loader answers (bounded
        concurrency, counted, logged).
        """
        rt = self._value_runtime(key, "get_or_load")
        rk = f"{self._prefix}:{key.body}"
        near = rt.near
        if near is not None:
            found = self._near_lookup(rt, near, rk)
            if found is not MISS:
                return found  # type: ignore[no-any-return]
            started = self._coherence.begin(near)
        # Past L1, a read that reaches Redis is observed whatever the schema (as get's).
        observer = self.observer
        if observer is None:
            value = await self._values.read(rt, key, rk, loader, ttl)
        else:
            began = time.perf_counter()
            try:
                value = await self._values.read(rt, key, rk, loader, ttl)
            except BaseException as exc:
                observer.failed(key, "get_or_load", exc, time.perf_counter() - began)
                raise
            observer.observe(key, "get_or_load", time.perf_counter() - began)
        if near is not None:
            self._near_put(rt, near, key, rk, value, started)
        return value

    def _timing(self, schema: KeySchema[Any], ttl_ms: int, delta_ms: int) -> tuple[int, int] | None:
        if schema.early_recompute is None:
            return None
        return (int(time.time() * 1000) + ttl_ms, min(delta_ms, 0xFFFFFFFF))

    async def _drop_corrupt(
        self, rt: SchemaRuntime, key: CacheKey[Any], rk: str, data: bytes, exc: CorruptEntry
    ) -> None:
        self.metrics.corrupt(key.schema.name, exc.reason)
        log.warning(
            "dropping unreadable cache entry %s (schema %s, tenant %s): %s",
            rk, key.schema.name, key.tenant, exc,
        )
        # If Redis is gone it stays unreadable, and the next reader drops it.
        with contextlib.suppress(RedisUnavailableError):
            await self.store.run(self._scripts.delete_if_equal, [rk], [data])

    # ----------------------------------------------------------------- structures

    def hash(self, key: CacheKey[T]) -> EntityHash[T]:
        """Typed access to an entity hash (partial updates, optimistic version)."""
        rt = self._kind_runtime(key, SchemaKind.HASH, "hash")
        scripts = self._scripts
        return EntityHash(self, self.fills, key, rt.codec, scripts.hash_replace,
                          scripts.hash_update)

    def zset(self, key: CacheKey[T]) -> SortedSet[T]:
        """Typed access to a sorted set of members."""
        self._kind_runtime(key, SchemaKind.ZSET, "zset")
        return SortedSet(self, self.fills, key, self._scripts.write_expire,
                         self._scripts.struct_remove)

    def geo(self, key: CacheKey[T]) -> GeoIndex[T]:
        """Typed access to a geo index of members."""
        self._kind_runtime(key, SchemaKind.GEO, "geo")
        return GeoIndex(self, self.fills, key, self._scripts.write_expire,
                        self._scripts.struct_remove)

    def _kind_runtime(self, key: CacheKey[Any], kind: SchemaKind, operation: str) -> SchemaRuntime:
        rt = self._runtime(key.schema)
        if key.schema.kind is not kind:
            raise WrongSchemaKindError(key.schema.name, key.schema.kind.value, operation)
        return rt
