"""Applying queued invalidation jobs through a :class:`~thorbis_cache.cache.core.Cache`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from thorbis_cache.invalidation.queue import InvalidationJob

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache

__all__ = ["CacheInvalidator"]


class CacheInvalidator:
    """The queue handler of a cache: deletes a job's keys (with their fill leases, so no
    load in flight writes afterwards) and its tags, cascading when the job asks.

    Idempotent, as at-least-once delivery requires: deleting twice is harmless. A key
    that does not parse as a key of the cache's registered schemas raises
    :class:`~thorbis_cache.errors.InvalidKeyError`, so the job is retried and finally
    dead-lettered with that reason.

    :param cache: the cache whose keys the jobs name.
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def apply(self, job: InvalidationJob) -> None:
        """Invalidate what ``job`` names.

        :param job: the decoded job.
        """
        keys = [self._cache.parse_key(name) for name in job.keys]
        if keys:
            await self._cache.invalidate(*keys, cascade=job.cascade)
        if job.tags:
            await self._cache.invalidate_tags(job.tenant, job.tags, cascade=job.cascade)
