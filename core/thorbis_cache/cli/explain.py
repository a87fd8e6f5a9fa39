"""``thorbis-cache explain --tenant T SCHEMA k=v...``: everything the cache knows about a key.

The report (:func:`thorbis_cache.observability.explain.explain`): Redis key, hash slot
and Cluster node, owning plugin, TTL left, stored size and type, envelope flags and key
id, whether the entry opens (and why not), tags with their member counts, dependents,
the rules that reach it, XFetch state, fill lease, near cache. ``--json`` prints it as
one object.

The helpers here (loading the plugins' schemas, parsing ``k=v`` with the schema's own
key validation, one line and exit 64 for bad input) are shared with ``invalidate``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import enum
import json
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from thorbis_cache.cli import options
from thorbis_cache.cli.options import BadInput
from thorbis_cache.errors import (
    InvalidParameterError,
    InvalidTenantId,
    ThorbisCacheError,
)

if TYPE_CHECKING:  # imported when a command runs, not at CLI start
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.cache.crypto import KeyRing
    from thorbis_cache.cache.keys import CacheKey, KeySchema
    from thorbis_cache.cache.registry import SchemaRegistry
    from thorbis_cache.observability.explain import Explanation
    from thorbis_cache.plugins.manager import PluginManager

__all__ = [
    "EXIT_ABSENT",
    "BadInput",
    "build_key",
    "explain_command",
    "parse_param",
]

EXIT_ABSENT = 1

TENANT = typer.Option("--tenant", "-t", help="The tenant id.")
KEYRING_ENV = typer.Option(
    "--keyring-env", help="Environment variable holding the key ring (never pass the "
                          "ring itself as an argument).")

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: BaseException, code: int) -> NoReturn:
    """Print ``exc`` as the CLI's one red line and exit with ``code``."""
    _stderr.print(f"[bold red]error:[/] [red]{escape(str(exc))}[/]")
    raise typer.Exit(code)


def parse_param(schema: KeySchema[Any], name: str, text: str) -> object:
    """The value of parameter ``name`` of ``schema`` from its command-line spelling:
    ``int``, ``true``/``false`` (or 1/0), a UUID, an ISO date, an enum's value (or
    member name), or the text itself for ``str``. The schema's own checks (type,
    length, validator) then run when the key is built.

    :raises InvalidParameterError: naming the schema, the parameter and the text.
    """
    param = next((p for p in schema.params if p.name == name), None)
    if param is None:
        raise InvalidParameterError(
            schema.name, name, f"unexpected (declared: {[p.name for p in schema.params]})")
    tp = param.type
    try:
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            for member in tp:
                if text in (str(member.value), member.name):
                    return member
            raise ValueError(f"expected one of {[str(m.value) for m in tp]}")
        if tp is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return text.lower() in ("true", "1")
        if tp is int:
            return int(text)
        if tp is uuid.UUID:
            return uuid.UUID(text)
        if tp is dt.date:
            return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidParameterError(schema.name, name, f"{text!r}: {exc}") from None
    return text


def _schema(registry: SchemaRegistry, name: str) -> KeySchema[Any]:
    if name in registry:
        return registry.get(name)
    known = sorted(s.name for s in registry)
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    if near:
        hint = f"did you mean {', '.join(near)}?"
    elif known:
        hint = f"the loaded plugins declare: {', '.join(known[:12])}"
        hint += ", ..." if len(known) > 12 else ""
    else:
        hint = "no plugin declaring key schemas is loaded"
    raise BadInput(f"unknown key schema {name!r}; {hint}")


def build_key(registry: SchemaRegistry, tenant: str, schema_name: str,
              pairs: Sequence[str]) -> CacheKey[Any]:
    """The key ``SCHEMA k=v...`` of ``tenant`` names.

    :raises BadInput: an unknown schema (with near matches), a pair without ``=``, a
        parameter given twice, missing, unexpected, or refused by the schema's checks,
        or an invalid tenant.
    """
    schema = _schema(registry, schema_name)
    params: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"key schema {schema.name!r}: {pair!r} is not NAME=VALUE "
                           f"(parameters: {[p.name for p in schema.params]})")
        if name in params:
            raise BadInput(f"key schema {schema.name!r}, parameter {name!r}: given twice")
        try:
            params[name] = parse_param(schema, name, text)
        except InvalidParameterError as exc:
            raise BadInput(str(exc)) from None
    try:
        return schema.key(tenant, **params)
    except (InvalidParameterError, InvalidTenantId) as exc:
        raise BadInput(str(exc)) from None


def keyring_from_env(variable: str) -> KeyRing | None:
    """The ring in ``variable``, or None when it is unset or empty.

    :raises KeyRingError: the variable holds a malformed ring.
    """
    from thorbis_cache.cache.crypto import KeyRing

    return KeyRing.from_env(variable) if os.environ.get(variable) else None


async def open_cache(redis_url: str, prefix: str, plugins: list[str] | None,
                     keyring: KeyRing | None) -> tuple[Cache, PluginManager]:
    """The plugins' schemas loaded and a cache on ``redis_url`` (not started: no
    ``on_startup`` hook runs, nothing is written). Without a ring, a throwaway one lets
    the sensitive schemas register (their entries are then not opened)."""
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.cache.crypto import KeyRing
    from thorbis_cache.cache.settings import CacheSettings
    from thorbis_cache.plugins.manager import PluginManager

    if not redis_url:
        raise BadInput("no Redis URL: pass --redis-url or set THORBIS_REDIS_URL")
    try:
        settings = CacheSettings(prefix=prefix)
    except ThorbisCacheError as exc:
        raise BadInput(str(exc)) from None
    manager = PluginManager()
    await manager.load(plugins)
    cache = Cache.from_url(redis_url, manager.registry,
                           keyring=keyring or KeyRing.generate(), settings=settings)
    return cache, manager


def explain_command(
    schema: Annotated[str, typer.Argument(help="Key schema, e.g. hs.customer.")],
    params: Annotated[list[str] | None, typer.Argument(
        help="The key's parameters as NAME=VALUE (e.g. customer_id=42).")] = None,
    tenant: Annotated[str, TENANT] = "",
    redis_url: Annotated[str, options.REDIS_URL] = "",
    prefix: Annotated[str, options.PREFIX] = "tc",
    plugin: Annotated[list[str] | None, options.PLUGINS] = None,
    keyring_env: Annotated[str, KEYRING_ENV] = "THORBIS_KEYRING",
    show_value: Annotated[bool, typer.Option(
        "--show-value", help="Also print the decoded value (it may hold personal "
                             "data).")] = False,
    as_json: Annotated[bool, options.JSON] = False,
) -> None:
    """Explain one cache key: Redis key, hash slot and node, owning plugin, TTL left,
    size and type, envelope flags and key id, whether the entry opens (the reason if
    not), tags and their member counts, dependents, rules, XFetch state, fill lease,
    near cache. Nothing is written, scanned or dropped.

    Entries of sensitive schemas are opened with the key ring of THORBIS_KEYRING (see
    --keyring-env); without it they are reported but not opened.

    Exit status: 0 the key is cached (even when it does not open), 1 the key is absent
    (or an error, printed as one line: Redis unreachable...), 64 bad input (unknown
    schema, malformed or refused parameter, invalid tenant).
    """
    if not tenant:
        fail(BadInput("explain needs --tenant"), options.EXIT_USAGE)
    try:
        report = asyncio.run(_explain(schema, params or [], tenant, redis_url, prefix,
                                      plugin or None, keyring_env, show_value))
    except BadInput as exc:
        fail(exc, options.EXIT_USAGE)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print(report)
    if not report.exists:
        raise typer.Exit(EXIT_ABSENT)


async def _explain(schema_name: str, pairs: list[str], tenant: str, redis_url: str,
                   prefix: str, plugins: list[str] | None, keyring_env: str,
                   show_value: bool) -> Explanation:
    from thorbis_cache.observability.explain import explain

    keyring = keyring_from_env(keyring_env)
    cache, manager = await open_cache(redis_url, prefix, plugins, keyring)
    async with cache:
        key = build_key(cache.registry, tenant, schema_name, pairs)
        # Without the ring, an encrypted entry would not open for want of the key only.
        verify = keyring is not None or not key.schema.sensitive
        return await explain(cache, key, rules=manager.all_rules(), verify=verify,
                             show_value=show_value)


def _ms(ms: int | None) -> str:
    if ms is None:
        return "no expiry"
    return f"{ms / 1000:.3f} s" if ms < 120_000 else f"{ms / 60_000:.1f} min"


def _print(r: Explanation) -> None:
    out = Console(highlight=False, soft_wrap=True)
    line = out.print
    line(f"[bold]{escape(r.redis_key)}[/]")
    line(f"  schema      {r.schema} ({r.kind}), owner {escape(r.owner)}")
    line(f"  slot        {r.slot}" + (f" on node {r.node}" if r.node else "")
         + f" ({escape(r.server)})")
    if not r.exists:
        line("  [yellow]not cached[/]")
    else:
        size = "?" if r.size_bytes is None else f"{r.size_bytes} bytes"
        length = "" if r.length is None else f", {r.length} field(s)/member(s)"
        line(f"  stored      {r.redis_type}, {size}{length}, ttl {_ms(r.ttl_ms)}")
        if r.marker:
            what = "absence" if r.marker == "absent" else "empty set"
            line(f"  marker      {r.marker} (a cached {what})")
        env = r.envelope
        if env is not None:
            flags = [n for n, on in (("encrypted", env.encrypted), ("compressed", env.compressed),
                                     ("timing", env.timing)) if on] or ["clear"]
            kid = f", key id {env.key_id}" if env.key_id else ""
            line(f"  envelope    format {env.format}, schema v{env.schema_version}, "
                 f"{'+'.join(flags)}{kid}")
        if r.opens is True:
            line("  opens       [green]yes[/]")
        elif r.opens is False:
            detail = f" ({escape(r.corrupt_detail)})" if r.corrupt_detail else ""
            line(f"  opens       [red]no: {r.corrupt_reason}{detail}[/]")
        elif r.marker is None:
            line("  opens       [yellow]not checked (no key ring: set THORBIS_KEYRING)[/]")
    for tag in r.tags:
        held = "records this key" if tag.holds_key else "[yellow]does not record it[/]"
        line(f"  tag         {tag.tag}: {tag.members} member(s), {held}" if r.exists
             else f"  tag         {tag.tag}: {tag.members} member(s)")
    line(f"  dependents  {r.dependents}" + (
        f": {escape(', '.join(r.dependents_sample))}" if r.dependents_sample else ""))
    if r.mirrors:
        line(f"  mirrors     {r.mirrors} (its refresh drops the key)")
    for rule in r.rules:
        line(f"  rule        {escape(rule)}")
    x = r.xfetch
    if x.expires_at_ms is not None:
        p = "" if x.recompute_probability is None else (
            f", a read now recomputes early with p={x.recompute_probability:.3g}")
        line(f"  xfetch      beta {x.beta}, expires in {x.seconds_left} s, "
             f"load took {x.delta_ms} ms{p}")
    elif x.beta is not None:
        line(f"  xfetch      beta {x.beta}, no timing stored")
    lease = r.lease
    line("  lease       " + (f"[yellow]fill in flight[/] (expires in {_ms(lease.ttl_ms)})"
                             if lease.held else "none"))
    if r.near is not None:
        line(f"  near cache  {'holds it' if r.near else 'does not hold it'} (this process)")
    if r.value is not None:
        line(f"  value       {escape(json.dumps(r.to_dict()['value'], default=str))}")
