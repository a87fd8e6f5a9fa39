"""``thorbis-cache invalidate --tenant T ...``: drop cache entries by key, tag or cascade.

* ``SCHEMA k=v...``: the key (any kind) and its fill lease (``Cache.delete``);
* ``--cascade SCHEMA k=v...``: the key and every key recorded as depending on it,
  transitively (``Cache.invalidate(key, cascade=True)``);
* ``--tag TAG`` (repeatable): every key of the tenant written under the tags
  (``Cache.invalidate_tags``), with ``--cascade`` their dependents too.

Like the library calls, it returns once the keys are gone (from the replicas too), and
announces the invalidation to the near caches of other processes.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from thorbis_cache.cache.keys import validate_tenant
from thorbis_cache.cli import options
from thorbis_cache.cli.explain import (
    KEYRING_ENV,
    TENANT,
    BadInput,
    build_key,
    fail,
    keyring_from_env,
    open_cache,
)
from thorbis_cache.errors import InvalidTenantId

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache

__all__ = ["invalidate_command"]


def invalidate_command(
    target: Annotated[list[str] | None, typer.Argument(
        help="SCHEMA NAME=VALUE...: the key to invalidate (none with --tag).")] = None,
    tenant: Annotated[str, TENANT] = "",
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="Invalidate every key of the tenant carrying this tag "
                      "(repeatable).")] = None,
    cascade: Annotated[bool, typer.Option(
        "--cascade", help="Also invalidate the keys that depend on the key (or on the "
                          "tagged keys), transitively.")] = False,
    redis_url: Annotated[str, options.REDIS_URL] = "",
    prefix: Annotated[str, options.PREFIX] = "tc",
    plugin: Annotated[list[str] | None, options.PLUGINS] = None,
    keyring_env: Annotated[str, KEYRING_ENV] = "THORBIS_KEYRING",
    as_json: Annotated[bool, options.JSON] = False,
) -> None:
    """Invalidate cache entries of one tenant: a key (SCHEMA NAME=VALUE...), every key
    under a tag (--tag TAG), and with --cascade their dependents; prints how many keys
    existed and were removed. Fill leases in flight are revoked, so no load that started
    before the call writes afterwards.

    Exit status: 0 done (also when nothing was cached), 1 an error (printed as one line:
    Redis unreachable...), 64 bad input (unknown schema or tag, malformed or refused
    parameter, invalid tenant, a key and --tag together).
    """
    if not tenant:
        fail(BadInput("invalidate needs --tenant"), options.EXIT_USAGE)
    if bool(target) == bool(tag):
        fail(BadInput("invalidate takes a key (SCHEMA NAME=VALUE...) or --tag TAG, "
                      "not both and not neither"), options.EXIT_USAGE)
    try:
        report = asyncio.run(_invalidate(target or [], tag or [], tenant, cascade,
                                         redis_url, prefix, plugin or None, keyring_env))
    except BadInput as exc:
        fail(exc, options.EXIT_USAGE)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    what = (f"key {report['key']}" if report["key"] else
            "tag(s) " + ", ".join(f"{t} ({n} recorded)" for t, n in report["tags"].items()))
    mode = " in cascade" if cascade else ""
    typer.echo(f"tenant {tenant}: {what}{mode}: {report['removed']} key(s) removed")


async def _invalidate(target: list[str], tags: list[str], tenant: str, cascade: bool,
                      redis_url: str, prefix: str, plugins: list[str] | None,
                      keyring_env: str) -> dict[str, Any]:
    # Only keys are deleted, no value is opened: a throwaway ring does when none is set.
    cache, _ = await open_cache(redis_url, prefix, plugins, keyring_from_env(keyring_env))
    async with cache:
        if target:
            key = build_key(cache.registry, tenant, target[0], target[1:])
            removed = await (cache.invalidate(key, cascade=True) if cascade
                             else cache.delete(key))
            return {"tenant": key.tenant, "key": cache.redis_key(key), "tags": {},
                    "cascade": cascade, "removed": removed}
        try:
            validate_tenant(tenant)
        except InvalidTenantId as exc:
            raise BadInput(str(exc)) from None
        _check_tags(cache, tags)
        recorded = {t: int(await cache.store.command("SCARD", cache.tag_key(tenant, t)))
                    for t in dict.fromkeys(tags)}
        removed = await cache.invalidate_tags(tenant, tags, cascade=cascade)
        return {"tenant": tenant, "key": None, "tags": recorded, "cascade": cascade,
                "removed": removed}


def _check_tags(cache: Cache, tags: list[str]) -> None:
    """Refuse a tag no loaded schema carries (a typo would remove nothing, silently)."""
    known = sorted({t for schema in cache.registry for t in schema.tags})
    for tag in tags:
        if tag not in known:
            near = difflib.get_close_matches(tag, known, n=5, cutoff=0.5)
            hint = (f"did you mean {', '.join(near)}?" if near else
                    f"the loaded schemas carry: {', '.join(known) or '(no tag)'}")
            raise BadInput(f"no loaded key schema carries tag {tag!r}; {hint}")
