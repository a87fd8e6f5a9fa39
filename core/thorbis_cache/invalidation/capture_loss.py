"""When change capture lost track: flush what can no longer be proven fresh.

A logical replication slot that was dropped, or invalidated because it held back more
WAL than ``max_slot_wal_keep_size``, lost the changes between its last confirmed
position and now: some cached entries built from the watched tables may be stale, and
nothing says which. The worker then never goes on silently
(:class:`~thorbis_cache.invalidation.slot_reader.SlotReader`):

1. it invalidates (:func:`flush_after_capture_loss`), for every tenant with a tag
   index (the slot registries of :class:`~thorbis_cache.cache.meta_sweep.MetaSweep`:
   bounded pages, no SCAN), every tag a rule on an affected table could reach -- the
   rules' own tags and the tags of the schemas they target -- so the stale entries go
   at once, even if the slot cannot be recreated yet;
2. recreates the slot, so every change from then on is captured;
3. invalidates again: a change committed between step 1 and the new slot is covered;
4. and says so loudly: an error log naming the slot's tables, the tags flushed, the
   tenants reached, and the schemas it could not reach (targeted by a rule but carrying
   no tag: their entries can only be found by key, so they stay until their TTL).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.meta_sweep import MetaSweep

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.plugins.declarations import InvalidationRule

__all__ = ["CaptureLossReport", "flush_after_capture_loss", "tags_reached"]

log = logging.getLogger(__name__)


@attrs.frozen(slots=True)
class CaptureLossReport:
    """What a flush after a lost slot did.

    :ivar tables: the tables whose changes may have been lost.
    :ivar tags: the tags invalidated for every tenant.
    :ivar tenants: how many tenants were reached.
    :ivar untagged: schemas a rule on those tables targets that carry no tag (not
        flushed: their entries expire with their TTL).
    """

    tables: tuple[str, ...]
    tags: tuple[str, ...]
    tenants: int
    untagged: tuple[str, ...]


def tags_reached(cache: Cache, rules: Iterable[InvalidationRule], tables: Iterable[str]
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tags a change to one of ``tables`` can invalidate through ``rules`` (the
    rules' tags and their target schemas' tags), and the targeted schemas without tags.
    """
    wanted = set(tables)
    tags: set[str] = set()
    untagged: set[str] = set()
    for rule in rules:
        if rule.table in wanted:
            reached, unreached = rule.tags_reached(cache.registry.get)
            tags.update(reached)
            untagged.update(unreached)
    return tuple(sorted(tags)), tuple(sorted(untagged))


async def flush_after_capture_loss(
    cache: Cache, rules: Iterable[InvalidationRule], tables: Sequence[str],
    invalidate_tags: Callable[[str, Sequence[str]], Awaitable[Any]],
    level: int = logging.ERROR,
) -> CaptureLossReport:
    """Invalidate, for every registered tenant, every tag a change to ``tables`` could
    reach (see the module doc); returns what was done, after logging it at ``level``
    (an error: a warning for a capture switched on purpose).

    :raises RedisUnavailableError: Redis cannot be reached (call again: idempotent).
    """
    tags, untagged = tags_reached(cache, rules, tables)
    tenants = 0
    if tags:
        async for tenant in MetaSweep.for_cache(cache).registered_tenants():
            await invalidate_tags(tenant, tags)
            tenants += 1
    report = CaptureLossReport(tuple(sorted(tables)), tags, tenants, untagged)
    log.log(
        level, "change capture lost track of %s: invalidated tags %s for %d tenant(s)%s",
        ", ".join(report.tables) or "(no table)", ", ".join(tags) or "(none)", tenants,
        f"; schemas without tags left to their TTL: {', '.join(untagged)}" if untagged
        else "")
    return report
