"""Validation of what plugins declare (used by :mod:`thorbis_cache.plugins.manager`).

A :class:`Draft` is one plugin being examined: what its hooks returned and every problem
found. The checks never raise; they record problems, so that all of them are reported
at once.
"""

from __future__ import annotations

import graphlib
import zoneinfo
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from croniter import croniter

from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.errors import PluginProblem
from thorbis_cache.plugins import hookspecs
from thorbis_cache.plugins.declarations import (
    InvalidationRule,
    MaterializedView,
    Operation,
    PluginInfo,
    RefreshPolicy,
    RuleTarget,
    SqlScript,
    is_qualified,
)

if TYPE_CHECKING:
    from thorbis_cache.plugins.declarations import LoadedPlugin

__all__ = ["Draft", "check_across", "check_declarations", "describe"]


@attrs.define
class Draft:
    """One plugin being examined: what its hooks returned, and what is wrong."""

    name: str
    distribution: str | None
    version: str | None
    problems: list[PluginProblem] = attrs.field(factory=list)
    #: The exceptions hooks raised, kept as the ``__cause__`` of the load error.
    causes: list[BaseException] = attrs.field(factory=list)
    registered: bool = False
    info: PluginInfo | None = None
    declarations: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)

    def problem(self, hook: str, message: str) -> None:
        self.problems.append(
            PluginProblem(self.name, hook, message, self.distribution, self.version)
        )

    def who(self) -> str:
        dist = f" ({self.distribution} {self.version or '?'})" if self.distribution else ""
        return f"plugin {self.name!r}{dist}"

    def set_info(self, results: list[object]) -> None:
        hook = "register_plugin_info"
        if not results:
            self.problem(hook, "missing: every plugin must implement register_plugin_info() "
                         "returning PluginInfo(namespace=..., hook_api_version=...)")
            return
        if len(results) > 1:
            self.problem(hook, f"implemented {len(results)} times; exactly one is allowed")
            return
        info = results[0]
        if not isinstance(info, PluginInfo):
            self.problem(hook, f"expected PluginInfo, got {describe(info)}")
            return
        for text in info.problems():
            self.problem(hook, text)
        if info.problems():
            return
        self.info = info
        if info.hook_api_version not in hookspecs.SUPPORTED_HOOK_API_VERSIONS:
            supported = ", ".join(map(str, sorted(hookspecs.SUPPORTED_HOOK_API_VERSIONS)))
            self.problem(hook, f"the plugin targets hook API version {info.hook_api_version}; "
                         f"this thorbis-cache supports version(s) {supported} "
                         f"(current: {hookspecs.HOOK_API_VERSION})")

    def set_declarations(self, hook: str, expected: type, results: list[object]) -> None:
        items: list[object] = []
        for value in results:
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                self.problem(hook, f"expected a sequence of {expected.__name__}, "
                             f"got {describe(value)}")
                continue
            for index, item in enumerate(value):
                if isinstance(item, expected):
                    items.append(item)
                else:
                    self.problem(hook, f"item {index}: expected {expected.__name__}, "
                                 f"got {describe(item)}")
        self.declarations[hook] = tuple(items)


def describe(value: object) -> str:
    """A value's type and the start of its repr, for "expected X, got ..." messages."""
    return "None" if value is None else f"{type(value).__name__} {value!r:.60}"


# --------------------------------------------------------------------------- validation

#: How each kind of declaration is named in messages, and its attribute that must be
#: callable (if any).
_KINDS: dict[str, tuple[str, str | None]] = {
    "register_key_schemas": ("key schema", None),
    "register_cache_patterns": ("cache pattern", "run"),
    "register_sql": ("SQL script", None),
    "register_materialized_views": ("materialized view", None),
    "register_invalidation_rules": ("invalidation rule", None),
    "register_warmers": ("warmer", "produce"),
    "register_permissions": ("permission", None),
}


def check_declarations(d: Draft) -> None:
    """Check what one plugin declared against itself: every name under the namespace and
    unique, callables callable, schemas and tags it refers to its own.

    When ``register_key_schemas`` raised (its problem is already recorded), references
    to schemas and tags are not checked: every one would be a knock-on problem of that
    one failure."""
    assert d.info is not None
    ns = d.info.namespace
    schemas_known = "register_key_schemas" in d.declarations
    schemas = {s.name: s for s in d.declarations.get("register_key_schemas", ())}
    tags = {t for s in schemas.values() for t in s.tags}
    for hook, (what, function) in _KINDS.items():
        seen: set[str] = set()
        for item in d.declarations.get(hook, ()):
            name: object = item.name
            label = f"{what} {name!r}"
            if not isinstance(name, str) or not name.startswith(ns + ".") or name == ns + ".":
                d.problem(hook, f"{label} is not under the plugin's namespace {ns!r} "
                          f"(expected '{ns}.<name>')")
            if isinstance(name, str) and name in seen:
                d.problem(hook, f"{label} is declared twice")
            seen.add(str(name))
            if function and not callable(getattr(item, function)):
                d.problem(hook, f"{label}: {function} must be callable, "
                          f"got {describe(getattr(item, function))}")
            for schema in getattr(item, "schemas", ()):  # patterns and warmers
                if schemas_known and schema not in schemas:
                    d.problem(hook, f"{label} uses key schema {schema!r}, which this plugin "
                              f"does not declare (declared: {_names(sorted(schemas))})")
            for tag in getattr(item, "tags", ()):  # key schemas and views
                if not isinstance(tag, str) or not tag.startswith(ns + "."):
                    d.problem(hook, f"{label}: tag {tag!r} is not under the namespace {ns!r}")
            if isinstance(item, SqlScript):
                text: object = item.sql
                if not isinstance(text, str) or not text.strip():
                    d.problem(hook, f"{label} has no SQL text")
            elif isinstance(item, MaterializedView):
                _check_view(d, item, label)
            elif isinstance(item, InvalidationRule):
                _check_rule(d, item, label, schemas if schemas_known else None, tags)
    if "register_materialized_views" in d.declarations:
        _check_mirrors(d, schemas)
    if schemas_known and "register_invalidation_rules" in d.declarations:
        _check_absences(d, schemas, d.declarations["register_invalidation_rules"])


def _check_absences(d: Draft, schemas: dict[str, KeySchema[Any]],
                    rules: Iterable[object]) -> None:
    """A schema that caches absences (``negative_ttl``) needs a rule that fires on
    INSERT and reaches it, by key or by one of its tags: otherwise a row inserted after
    its absence was cached stays unseen for up to ``negative_ttl`` (found as a plugin
    author would: the kit passed such a plugin). A schema mirroring a view is dropped
    by the view's refresh instead."""
    inserted: set[str] = set()
    for rule in rules:
        if not isinstance(rule, InvalidationRule) or Operation.INSERT not in rule.operations:
            continue
        for target in rule.targets:
            if isinstance(target, RuleTarget):
                inserted.add(str(target.schema if target.tag is None else target.tag))
    for schema in schemas.values():
        if schema.negative_ttl is None or schema.mirrors is not None:
            continue
        if schema.name not in inserted and not inserted & set(schema.tags):
            d.problem("register_key_schemas", (
                f"key schema {schema.name!r} caches absences (negative_ttl="
                f"{schema.negative_ttl:g}), and no rule of this plugin reaches it on "
                f"INSERT (by its key, or by a tag it carries: {_names(sorted(schema.tags))}): "
                "a row inserted after its absence was cached would stay unseen for up to "
                "negative_ttl; add INSERT to the operations of a rule that targets it"))


def _check_mirrors(d: Draft, schemas: dict[str, KeySchema[Any]]) -> None:
    """A schema that mirrors a view names one of the plugin's own views, and shares a
    tag with it: that tag is how the view's refresh drops the schema's entries."""
    views = {v.name: v for v in d.declarations.get("register_materialized_views", ())}
    for schema in schemas.values():
        if schema.mirrors is None:
            continue
        label = f"key schema {schema.name!r}"
        view = views.get(schema.mirrors)
        if view is None:
            d.problem("register_key_schemas",
                      f"{label} mirrors {schema.mirrors!r}, which is not a materialized view "
                      f"of this plugin (declared: {_names(sorted(views))})")
        elif not set(schema.tags) & set(view.tags):
            d.problem("register_key_schemas",
                      f"{label} mirrors the view {view.name!r} but shares none of its tags "
                      f"({_names(sorted(view.tags))}): the view's refresh would never drop "
                      "its entries; add one of them to the schema's tags")


def _check_view(d: Draft, view: MaterializedView, label: str) -> None:
    hook = "register_materialized_views"
    if not is_qualified(view.name):
        d.problem(hook, f"{label} must be '<schema>.<view>' with the namespace as schema")
    for source in view.sources:
        if not is_qualified(source):
            d.problem(hook, f"{label}: source {source!r} must be '<schema>.<table>'")
    refresh: object = view.refresh
    if not isinstance(refresh, RefreshPolicy):
        d.problem(hook, f"{label}: refresh must be a RefreshPolicy, got {describe(refresh)}")
        return
    if refresh.concurrently and not view.unique_index:
        d.problem(hook, f"{label} asks for concurrent refresh but declares no unique_index "
                  "(REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index)")
    if refresh.cron is not None and not croniter.is_valid(refresh.cron):
        d.problem(hook, f"{label}: cron {refresh.cron!r} is not a valid cron expression")
    try:
        zoneinfo.ZoneInfo(refresh.timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        d.problem(hook, f"{label}: timezone {refresh.timezone!r} is not an IANA time zone")
    for field, value in (("max_staleness", refresh.max_staleness),
                         ("min_changes", refresh.min_changes),
                         ("statement_timeout", refresh.statement_timeout)):
        if value is not None and not value > 0:
            d.problem(hook, f"{label}: {field} must be positive, got {value!r}")
    for dependency in view.depends_on:
        if dependency == view.name:
            d.problem(hook, f"{label} depends on itself")
        elif not is_qualified(dependency):
            d.problem(hook, f"{label}: dependency {dependency!r} must be '<schema>.<view>'")


def _check_rule(d: Draft, rule: InvalidationRule, label: str,
                schemas: dict[str, KeySchema[Any]] | None, tags: set[str]) -> None:
    """``schemas`` is None when they are unknown (``register_key_schemas`` raised): the
    targets' schemas and tags are then not checked."""
    hook = "register_invalidation_rules"
    if not is_qualified(rule.table):
        d.problem(hook, f"{label}: table {rule.table!r} must be '<schema>.<table>'")
    if not rule.operations or not rule.targets:
        d.problem(hook, f"{label} needs at least one operation and one target")
    for index, item in enumerate(rule.targets):
        target: object = item
        where = f"{label}, target {index}"
        if not isinstance(target, RuleTarget):
            d.problem(hook, f"{where}: expected RuleTarget, got {describe(target)}")
        elif (target.schema is None) == (target.tag is None):
            got = "neither" if target.schema is None else "both"
            d.problem(hook, f"{where}: set exactly one of schema= and tag= (got {got})")
        elif schemas is None:
            continue
        elif target.tag is not None:
            if target.tag not in tags:
                d.problem(hook, f"{where} names tag {target.tag!r}, which no key schema of "
                          f"this plugin carries (tags: {_names(sorted(tags))})")
            if target.params:
                d.problem(hook, f"{where}: params only apply to a schema target")
        elif (schema := schemas.get(str(target.schema))) is None:
            d.problem(hook, f"{where} names key schema {target.schema!r}, which this plugin "
                      f"does not declare (declared: {_names(sorted(schemas))})")
        else:
            declared = [p.name for p in schema.params]
            missing = [p for p in declared if p not in target.params]
            unknown = [p for p in target.params if p not in declared]
            if missing or unknown:
                d.problem(hook, f"{where}: params must map every parameter of {schema.name!r} "
                          f"({_names(declared)}) to a column; missing: {_names(missing)}; "
                          f"unknown: {_names(unknown)}")


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def check_across(drafts: list[Draft], loaded: Iterable[LoadedPlugin],
                  registry: SchemaRegistry) -> None:
    """Check the batch against the loaded plugins and itself. A collision inside the batch
    is reported on both plugins, each message naming the other."""
    loaded = list(loaded)
    held: dict[tuple[str, str], str] = {}
    for plugin in loaded:
        who = Draft(plugin.name, plugin.distribution, plugin.version).who()
        held["namespace", plugin.info.namespace] = who
        held.update((("permission", p.name), who) for p in plugin.permissions)
    held.update((("key schema", s.name), repr(registry.owner(s.name))) for s in registry)
    claims: dict[tuple[str, str], Draft] = {}
    for d in drafts:
        if d.info is None:
            continue
        names = [("register_plugin_info", "namespace", d.info.namespace)]
        names += [("register_key_schemas", "key schema", s.name)
                  for s in d.declarations.get("register_key_schemas", ())]
        names += [("register_permissions", "permission", p.name)
                  for p in d.declarations.get("register_permissions", ())]
        for hook, what, name in dict.fromkeys(n for n in names if isinstance(n[2], str)):
            if (what, name) in held:
                d.problem(hook, f"{what} {name!r} is already held by {held[what, name]}")
            elif (other := claims.setdefault((what, name), d)) is not d:
                d.problem(hook, f"{what} {name!r} is also declared by {other.who()}")
                other.problem(hook, f"{what} {name!r} is also declared by {d.who()}")
    _check_view_dependencies(drafts, loaded)


def _check_view_dependencies(drafts: list[Draft], loaded: Iterable[LoadedPlugin]) -> None:
    """Each view's ``depends_on`` names a view of a loaded plugin or of this batch, and
    the dependencies have no cycle (the scheduler refreshes in their order)."""
    owner: dict[str, Draft | None] = {}
    depends: dict[str, tuple[str, ...]] = {}
    for plugin in loaded:
        for view in plugin.views:
            owner[view.name] = None
            depends[view.name] = view.depends_on
    batch = [(d, v) for d in drafts
             for v in d.declarations.get("register_materialized_views", ())
             if isinstance(v, MaterializedView)]
    for d, view in batch:
        owner[view.name] = d
        depends[view.name] = view.depends_on
    hook = "register_materialized_views"
    for d, view in batch:
        unknown = [n for n in view.depends_on if n not in owner]
        if unknown:
            d.problem(hook, f"materialized view {view.name!r} depends on {_names(unknown)}, "
                      f"which no loaded plugin declares (views: {_names(sorted(owner))})")
    graph = {name: [n for n in deps if n in owner and n != name]
             for name, deps in depends.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        told: set[int] = set()
        for name in dict.fromkeys(cycle):
            holder = owner.get(name)
            if holder is not None and id(holder) not in told:
                told.add(id(holder))
                holder.problem(hook, "materialized views depend on each other in a cycle: "
                          + " -> ".join(cycle))
