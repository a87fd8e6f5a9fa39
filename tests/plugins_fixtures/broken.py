"""One plugin per defect the plugin manager must report, each otherwise valid.

Every plugin is a class whose functions are hook implementations (pluggy reads them off
the class, so they take no ``self``). :data:`EXPECTED` lists, per plugin, the
``(hook, text)`` pairs its problems must contain; the tests load them all at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from thorbis_cache import (
    CachePattern,
    InvalidationRule,
    KeySchema,
    MaterializedView,
    Permission,
    PluginInfo,
    RefreshPolicy,
    RuleTarget,
    SqlScript,
    WarmBatch,
    WarmContext,
    Warmer,
    hookimpl,
)


def _info(namespace: Any, version: Any = 1) -> Callable[[], PluginInfo]:
    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace=namespace, hook_api_version=version)

    return register_plugin_info


async def _run(cache: Any, tenant: str) -> None:
    return None


async def _load_nothing(keys: Sequence[Any]) -> Mapping[Any, Any]:
    return {}  # pragma: no cover


async def _produce(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    # Never run: every plugin using it is refused at load.
    yield WarmBatch((), _load_nothing, description="nothing")  # pragma: no cover


class MissingInfo:
    @hookimpl
    def register_permissions() -> list[Permission]:
        return [Permission("mi.read")]


class BadInfo:
    register_plugin_info = _info("Bad-NS", "1")


class FutureApi:
    register_plugin_info = _info("fut", 99)


class WrongType:
    register_plugin_info = _info("wt")

    @hookimpl
    def register_key_schemas() -> Any:
        return {"wt.thing": KeySchema("wt.thing", str)}

    @hookimpl
    def register_permissions() -> Any:
        return ["wt.read"]

    @hookimpl
    def register_warmers() -> Any:
        return None  # forgot to return the list


class OutsideNamespace:
    register_plugin_info = _info("ons")

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("other.thing", str, tags=["other.tag"])]

    @hookimpl
    def register_cache_patterns() -> list[CachePattern]:
        return [CachePattern("other.pattern", _run)]

    @hookimpl
    def register_sql() -> list[SqlScript]:
        return [SqlScript("other.script", "SELECT 1")]

    @hookimpl
    def register_materialized_views() -> list[MaterializedView]:
        return [MaterializedView("other.view", "SELECT 1 AS x", unique_index=["x"])]

    @hookimpl
    def register_invalidation_rules() -> list[InvalidationRule]:
        return [InvalidationRule("other.rule", table="ons.t", operations=["INSERT"],
                                 targets=[RuleTarget(schema="other.thing")])]

    @hookimpl
    def register_warmers() -> list[Warmer]:
        return [Warmer("other.warmer", _produce)]

    @hookimpl
    def register_permissions() -> list[Permission]:
        return [Permission("other.read")]


class InvalidSchema:
    register_plugin_info = _info("isc")

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("isc.thing", str, ttl=-5)]  # raises InvalidSchemaError


class BadRules:
    register_plugin_info = _info("br")

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("br.item", str, params={"item_id": int}, tags=["br.lists"])]

    @hookimpl
    def register_invalidation_rules() -> list[InvalidationRule]:
        return [
            InvalidationRule("br.unknown_schema", table="br.items", operations=["INSERT"],
                             targets=[RuleTarget(schema="br.nope")]),
            InvalidationRule("br.unknown_tag", table="br.items", operations=["INSERT"],
                             targets=[RuleTarget(tag="br.nope_tag")]),
            InvalidationRule("br.both", table="br.items", operations=["INSERT"],
                             targets=[RuleTarget(schema="br.item", tag="br.lists",
                                                 params={"item_id": "id"})]),
            InvalidationRule("br.neither", table="br.items", operations=["INSERT"],
                             targets=[RuleTarget()]),
            InvalidationRule("br.params", table="br.items", operations=["UPDATE"],
                             targets=[RuleTarget(schema="br.item", params={"id": "id"})]),
            InvalidationRule("br.unqualified", table="items", operations=["DELETE"],
                             targets=[RuleTarget(tag="br.lists")]),
        ]


class BadViews:
    register_plugin_info = _info("bv")

    @hookimpl
    def register_materialized_views() -> list[MaterializedView]:
        return [
            MaterializedView("bv.no_unique", "SELECT 1 AS x",
                             refresh=RefreshPolicy(concurrently=True)),
            MaterializedView("bv.bad_cron", "SELECT 1 AS x", unique_index=["x"],
                             refresh=RefreshPolicy(cron="every five minutes")),
        ]


class BadMirrors:
    register_plugin_info = _info("bm")

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [
            # the view is not this plugin's (nor anyone's)
            KeySchema("bm.orphan", int, tags=["bm.reports"], mirrors="bm.missing"),
            # the view's refresh invalidates bm.reports, which this schema does not carry
            KeySchema("bm.untagged", int, tags=["bm.items"], mirrors="bm.counts"),
        ]

    @hookimpl
    def register_materialized_views() -> list[MaterializedView]:
        return [MaterializedView("bm.counts", "SELECT 1 AS x", unique_index=["x"],
                                 tags=["bm.reports"])]


class BadReferences:
    register_plugin_info = _info("bref")

    @hookimpl
    def register_cache_patterns() -> list[CachePattern]:
        return [CachePattern("bref.pattern", _run, schemas=["bref.missing"])]

    @hookimpl
    def register_warmers() -> list[Warmer]:
        return [Warmer("bref.warmer", _produce, schemas=["bref.absent"])]


class DuplicatePermissions:
    register_plugin_info = _info("dup")

    @hookimpl
    def register_permissions() -> list[Permission]:
        return [Permission("dup.read"), Permission("dup.write"), Permission("dup.read")]


class CollideA:
    register_plugin_info = _info("col")

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("col.thing", str)]


class CollideB:
    register_plugin_info = _info("col")

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("col.thing", int)]


class UnknownHook:
    register_plugin_info = _info("uh")

    @hookimpl
    def register_key_schema() -> list[KeySchema[Any]]:  # typo: the hook is ..._schemas
        return []


class BadArguments:
    register_plugin_info = _info("ba")

    @hookimpl
    def on_startup(app: Any, cache: Any) -> None:  # the hook passes app only
        return None


class Wrapper:
    register_plugin_info = _info("wr")

    @hookimpl(wrapper=True)
    def register_permissions() -> Any:
        return (yield)


class Raises:
    register_plugin_info = _info("rai")

    @hookimpl
    def register_sql() -> list[SqlScript]:
        raise RuntimeError("database file missing")


#: Not a plugin at all: no hook implementations.
NOT_A_PLUGIN = object()

#: Every plugin above by name (the name each is added under).
PLUGINS: dict[str, object] = {
    "missing_info": MissingInfo,
    "bad_info": BadInfo,
    "future_api": FutureApi,
    "wrong_type": WrongType,
    "outside_namespace": OutsideNamespace,
    "invalid_schema": InvalidSchema,
    "bad_rules": BadRules,
    "bad_views": BadViews,
    "bad_mirrors": BadMirrors,
    "bad_references": BadReferences,
    "duplicate_permissions": DuplicatePermissions,
    "collide_a": CollideA,
    "collide_b": CollideB,
    "unknown_hook": UnknownHook,
    "bad_arguments": BadArguments,
    "wrapper": Wrapper,
    "raises": Raises,
    "not_a_plugin": NOT_A_PLUGIN,
}

#: Per plugin, the (hook, text) of every problem it must produce.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "missing_info": [("register_plugin_info", "missing")],
    "bad_info": [("register_plugin_info", "namespace 'Bad-NS' must be"),
                 ("register_plugin_info", "hook_api_version must be an int, got '1'")],
    "future_api": [("register_plugin_info", "targets hook API version 99; this thorbis-cache "
                                            "supports version(s) 1")],
    "wrong_type": [("register_key_schemas", "expected a sequence of KeySchema, got dict"),
                   ("register_permissions", "item 0: expected Permission, got str 'wt.read'"),
                   ("register_warmers", "expected a sequence of Warmer, got None")],
    "outside_namespace": [
        ("register_key_schemas", "key schema 'other.thing' is not under the plugin's "
                                 "namespace 'ons'"),
        ("register_key_schemas", "tag 'other.tag' is not under the namespace 'ons'"),
        ("register_cache_patterns", "cache pattern 'other.pattern' is not under"),
        ("register_sql", "SQL script 'other.script' is not under"),
        ("register_materialized_views", "materialized view 'other.view' is not under"),
        ("register_invalidation_rules", "invalidation rule 'other.rule' is not under"),
        ("register_warmers", "warmer 'other.warmer' is not under"),
        ("register_permissions", "permission 'other.read' is not under"),
    ],
    "invalid_schema": [("register_key_schemas", "raised InvalidSchemaError: key schema "
                                                "'isc.thing': ttl must be")],
    "bad_rules": [
        ("register_invalidation_rules", "'br.unknown_schema', target 0 names key schema "
                                        "'br.nope', which this plugin does not declare"),
        ("register_invalidation_rules", "'br.unknown_tag', target 0 names tag 'br.nope_tag', "
                                        "which no key schema of this plugin carries"),
        ("register_invalidation_rules", "'br.both', target 0: set exactly one of schema= and "
                                        "tag= (got both)"),
        ("register_invalidation_rules", "'br.neither', target 0: set exactly one of schema= "
                                        "and tag= (got neither)"),
        ("register_invalidation_rules", "'br.params', target 0: params must map every "
                                        "parameter of 'br.item' (item_id) to a column; "
                                        "missing: item_id; unknown: id"),
        ("register_invalidation_rules", "table 'items' must be '<schema>.<table>'"),
    ],
    "bad_views": [
        ("register_materialized_views", "'bv.no_unique' asks for concurrent refresh but "
                                        "declares no unique_index"),
        ("register_materialized_views", "cron 'every five minutes' is not a valid cron"),
    ],
    "bad_mirrors": [
        ("register_key_schemas", "key schema 'bm.orphan' mirrors 'bm.missing', which is not "
                                 "a materialized view of this plugin (declared: bm.counts)"),
        ("register_key_schemas", "key schema 'bm.untagged' mirrors the view 'bm.counts' but "
                                 "shares none of its tags (bm.reports): the view's refresh "
                                 "would never drop its entries"),
    ],
    "bad_references": [
        ("register_cache_patterns", "uses key schema 'bref.missing', which this plugin does "
                                    "not declare"),
        ("register_warmers", "uses key schema 'bref.absent'"),
    ],
    "duplicate_permissions": [("register_permissions", "permission 'dup.read' is declared "
                                                       "twice")],
    "collide_a": [("register_plugin_info", "namespace 'col' is also declared by plugin "
                                           "'collide_b'"),
                  ("register_key_schemas", "key schema 'col.thing' is also declared by plugin "
                                           "'collide_b'")],
    "collide_b": [("register_plugin_info", "namespace 'col' is also declared by plugin "
                                           "'collide_a'"),
                  ("register_key_schemas", "key schema 'col.thing' is also declared by plugin "
                                           "'collide_a'")],
    "unknown_hook": [("register_key_schema", "@hookimpl function 'register_key_schema' "
                                             "matches no hook of thorbis_cache.plugins.hookspecs; "
                                             "did you mean 'register_key_schemas'?")],
    "bad_arguments": [("on_startup", "requires cache, which the hook does not pass (it passes "
                                     "app)")],
    "wrapper": [("register_permissions", "hook wrappers are not supported")],
    "raises": [("register_sql", "raised RuntimeError: database file missing")],
    "not_a_plugin": [("register", "is not a plugin: it has no @thorbis_cache.hookimpl "
                                  "functions")],
}
