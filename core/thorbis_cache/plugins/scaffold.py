"""Generate a new vertical distribution: ``thorbis-cache new-plugin NAME``.

The generated project is a complete, installable plugin whose own tests -- the plugin
contract included -- pass as generated::

    thorbis-NAME/
        pyproject.toml                    entry point in group thorbis_cache.plugins
        README.md
        src/thorbis_NAME/__init__.py
        src/thorbis_NAME/plugin.py        every hook: info, schemas, SQL, view, rule,
                                          warmer, permissions
        src/thorbis_NAME/sql/tables.sql   schema + table (idempotent, tenant column)
        src/thorbis_NAME/sql/item_counts.sql   the materialized view's query
        src/thorbis_NAME/py.typed
        tests/test_NAME_contract.py       PluginContract with a little seed data

Templates are string constants below with ``@@KEY@@`` placeholders (SQL's ``$1`` and
Python's braces need no escaping that way). The tree is written to a temporary
directory beside the target and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import attrs

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.plugins.declarations import namespace_problem

__all__ = ["PluginNames", "render", "scaffold_files", "write_plugin"]

_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")
_NAMESPACE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PLACEHOLDER_RE = re.compile(r"@@[A-Z]+@@")

# PostgreSQL's reserved key words (appendix C of its manual): the namespace is used
# unquoted as a schema name, so it cannot be one of these.


@attrs.frozen
class PluginNames:
    """Every name of a new plugin, derived from one.

    :ivar name: the entry-point name (``pet_grooming``).
    :ivar namespace: prefix of every declared name, and the PostgreSQL schema.
    :ivar distribution: the distribution (``thorbis-pet-grooming``).
    :ivar package: the import package (``thorbis_pet_grooming``).
    :ivar title: a human name (``Pet grooming``).
    :ivar class_prefix: CamelCase, for the test class (``PetGrooming``).
    """

    name: str
    namespace: str
    distribution: str
    package: str
    title: str
    class_prefix: str

    @classmethod
    def from_name(cls, name: str, namespace: str | None = None) -> PluginNames:
        """Derive the names from ``name`` (``pet-grooming`` or ``pet_grooming``).

        :param name: lower-case letters and digits, words joined by ``_`` or ``-``.
        :param namespace: defaults to the name with ``_`` for ``-``.
        :raises ConfigurationError: naming the value and the rule it breaks.
        """
        if not _NAME_RE.fullmatch(name) or len(name) > 48:
            raise ConfigurationError(
                f"plugin name {name!r} must be lower-case letters and digits, words joined "
                "by '_' or '-', starting with a letter, at most 48 characters "
                "(e.g. pet_grooming)"
            )
        snake = name.replace("-", "_")
        ns = snake if namespace is None else namespace
        problem = namespace_problem(ns)
        if problem is not None:
            hint = ("pass a shorter --namespace" if namespace is None
                    and not _NAMESPACE_RE.fullmatch(ns) else "pass another --namespace")
            raise ConfigurationError(f"{problem}; {hint}")
        words = snake.split("_")
        return cls(
            name=snake,
            namespace=ns,
            distribution="thorbis-" + "-".join(words),
            package="thorbis_" + snake,
            title=" ".join(words).capitalize(),
            class_prefix="".join(w.capitalize() for w in words),
        )

    def placeholders(self) -> dict[str, str]:
        """The ``@@KEY@@`` values of the templates."""
        return {
            "NAME": self.name,
            "NS": self.namespace,
            "DIST": self.distribution,
            "PACKAGE": self.package,
            "TITLE": self.title,
            "CLASS": self.class_prefix,
        }


def render(template: str, values: dict[str, str]) -> str:
    """Replace every ``@@KEY@@`` of ``template`` with ``values[KEY]``.

    :raises KeyError: a placeholder has no value (a bug in a template).
    """
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group()[2:-2]], template)


def scaffold_files(names: PluginNames) -> dict[str, str]:
    """The generated project: relative path -> file content."""
    values = names.placeholders()
    package = f"src/{names.package}"
    templates = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{package}/__init__.py": _INIT,
        f"{package}/plugin.py": _PLUGIN,
        f"{package}/py.typed": "",
        f"{package}/sql/tables.sql": _TABLES_SQL,
        f"{package}/sql/item_counts.sql": _ITEM_COUNTS_SQL,
        f"tests/test_{names.name}_contract.py": _CONTRACT_TEST,
    }
    return {path: render(text, values) for path, text in templates.items()}


def write_plugin(names: PluginNames, parent: Path) -> Path:
    """Write the project to ``parent / names.distribution``, all or nothing.

    :param names: the plugin's names.
    :param parent: an existing directory.
    :returns: the project's root directory.
    :raises ConfigurationError: ``parent`` is not a directory, or the target exists.
    """
    parent = parent.resolve()
    if not parent.is_dir():
        raise ConfigurationError(f"--dir {parent} is not a directory")
    root = parent / names.distribution
    if root.exists():
        raise ConfigurationError(f"{root} already exists; remove it or choose another --dir")
    staging = Path(tempfile.mkdtemp(prefix=f".{names.distribution}-", dir=parent))
    try:
        for relative, content in scaffold_files(names).items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


# --------------------------------------------------------------------------- templates

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "@@DIST@@"
version = "0.1.0"
description = "@@TITLE@@: a thorbis-cache vertical."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["thorbis-cache"]

[project.optional-dependencies]
testing = ["thorbis-cache[testing]"]

# How the host finds the plugin: entry point "@@NAME@@" in group thorbis_cache.plugins.
[project.entry-points."thorbis_cache.plugins"]
@@NAME@@ = "@@PACKAGE@@.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
@@PACKAGE@@ = ["py.typed", "sql/*.sql"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-ra --strict-markers"
asyncio_default_fixture_loop_scope = "function"
'''

_README = '''\
# @@DIST@@

@@TITLE@@: a [thorbis-cache](https://github.com/thorbis/thorbis-cache) vertical plugin,
generated by `thorbis-cache new-plugin @@NAME@@`.

| | |
|---|---|
| entry point | `@@NAME@@` in group `thorbis_cache.plugins` |
| namespace | `@@NS@@`: every declared name starts with `@@NS@@.` |
| PostgreSQL schema | `@@NS@@` |
| plugin module | `src/@@PACKAGE@@/plugin.py` |
| SQL | `src/@@PACKAGE@@/sql/` |

## Develop

```bash
pip install -e '.[testing]'
pytest                       # the plugin contract, on real Redis and PostgreSQL
thorbis-cache plugins        # the plugin, as a host sees it
```

The tests start throw-away Redis (single and cluster) and PostgreSQL servers; they need
`redis-server` and PostgreSQL binaries (`python -m thorbis_cache.testing.binaries ensure`
finds or installs them).

## What to change

* `plugin.py`: replace the `Item` example with your entities; keep every name under
  `@@NS@@.`.
* `sql/tables.sql`: your tables, idempotent (`CREATE ... IF NOT EXISTS`), each with a
  `tenant_id` column first in its primary key.
* `tests/test_@@NAME@@_contract.py`: `seed_sql` inserts a few rows for the tenants
  `acme` and `globex`, so warmers and views have data to work on.

Two rules the example follows, and the contract checks:

* A warmer yields `WarmBatch`es: the keys to fill (from a cheap query of ids) and a
  `load` that reads the rows of the keys it is handed. thorbis-cache takes the keys'
  fill leases before calling `load`, so a row changed meanwhile is never cached stale.
* A schema whose entries are read from a materialized view says so with `mirrors=`,
  shares a tag with the view (its refresh drops them), and no invalidation rule
  targets it: a table change does not change the view until it is refreshed.

See thorbis-cache's `docs/plugin-authors.md` for the hooks, the declarations and the
contract.
'''

_INIT = '''\
"""@@TITLE@@: a thorbis-cache vertical plugin.

The plugin module is :mod:`@@PACKAGE@@.plugin`, found by the host through the
``thorbis_cache.plugins`` entry point ``@@NAME@@``.
"""

from __future__ import annotations

from @@PACKAGE@@.plugin import CATEGORY_COUNTS, ITEM, NAMESPACE, Item

__all__ = ["CATEGORY_COUNTS", "ITEM", "NAMESPACE", "Item"]
'''

_PLUGIN = '''\
"""The @@NAME@@ plugin: the hooks thorbis-cache calls when it loads the plugin.

Each ``register_*`` hook returns declarations; nothing here connects to anything at
import. Every declared name starts with the namespace ``@@NS@@``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from importlib.resources import files
from typing import Any

import attrs
from thorbis_cache import (
    CacheKey,
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

__all__ = ["CATEGORY_COUNTS", "ITEM", "NAMESPACE", "Item"]

#: Prefix of every name this plugin declares, and its PostgreSQL schema.
NAMESPACE = "@@NS@@"


def _sql(name: str) -> str:
    return files("@@PACKAGE@@").joinpath("sql", name).read_text(encoding="utf-8")


@attrs.frozen
class Item:
    """An example entity: replace it with yours."""

    id: int
    name: str
    category: str


#: One item per key; dropped when its row changes (see the rule below). To cache
#: "no such item" too, add ``negative_ttl=<seconds>`` -- and INSERT to the rule's
#: operations, or an item created after a miss stays "absent" that long.
ITEM: KeySchema[Item] = KeySchema(
    "@@NS@@.item", Item, params={"item_id": int}, ttl=3600, ttl_jitter=0.1,
    tags=("@@NS@@.items",), description="an item",
)
#: Items per category, read from the materialized view item_counts: the entry mirrors
#: the view, not the items table. An item change alters the view only at its next
#: refresh, so the refresh drops the entry (through the reports tag, which it shares
#: with the view) and no invalidation rule may target it, by schema or by tag: a rule
#: on the items table would only make readers reload the same unrefreshed counts.
#: ``mirrors=`` says so; the host checks the shared tag at load, the contract the rules.
CATEGORY_COUNTS: KeySchema[dict[str, int]] = KeySchema(
    "@@NS@@.category_counts", dict[str, int], ttl=600,
    tags=("@@NS@@.reports",),
    mirrors="@@NS@@.item_counts",
    description="items per category",
)


async def warm_items(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    """The tenant's first 1000 items, then its category counts.

    A warmer yields batches -- keys, and a ``load`` that reads their entries -- never
    rows it read itself: thorbis-cache takes each key's fill lease *before* it calls
    ``load``, so a row changed while it is read is not cached in its old state. Hence
    a cheap query of ids here, and the rows read by ``load``, for the keys it is handed
    only (those not cached already). Items come before the counts.
    """
    tenant = ctx.tenant
    ids = await ctx.fetch(
        "SELECT id FROM @@NS@@.items "
        "WHERE tenant_id = $1 ORDER BY id LIMIT 1000",
        tenant,
    )
    keys = {ITEM.key(tenant, item_id=row["id"]): row["id"] for row in ids}

    async def load_items(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        rows = await ctx.fetch(
            "SELECT id, name, category FROM @@NS@@.items "
            "WHERE tenant_id = $1 AND id = ANY($2::bigint[])",
            tenant, [keys[k] for k in leased],
        )
        # An item deleted since its id was read is missing here: an absent row.
        return {ITEM.key(tenant, item_id=row["id"]): Item(**row) for row in rows}

    if keys:
        yield WarmBatch(keys, load_items, description="items")
    counts = CATEGORY_COUNTS.key(tenant)

    async def load_counts(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        rows = await ctx.fetch(
            "SELECT category, items FROM @@NS@@.item_counts "
            "WHERE tenant_id = $1",
            tenant,
        )
        return {counts: {row["category"]: row["items"] for row in rows}}

    yield WarmBatch([counts], load_counts, description="category counts")


@hookimpl
def register_plugin_info() -> PluginInfo:
    """Who the plugin is: its namespace and the hook API version it was written for."""
    return PluginInfo(namespace=NAMESPACE, hook_api_version=1, title="@@TITLE@@")


@hookimpl
def register_key_schemas() -> Sequence[KeySchema[Any]]:
    """The key schemas of the plugin."""
    return [ITEM, CATEGORY_COUNTS]


@hookimpl
def register_sql() -> Sequence[SqlScript]:
    """The plugin's schema and tables (idempotent)."""
    return [SqlScript("@@NS@@.tables", _sql("tables.sql"))]


@hookimpl
def register_materialized_views() -> Sequence[MaterializedView]:
    """Items per category, refreshed concurrently (it has a unique index); each refresh
    drops the entries that mirror it (its tag, reports)."""
    return [
        MaterializedView(
            "@@NS@@.item_counts",
            _sql("item_counts.sql"),
            unique_index=("tenant_id", "category"),
            sources=("@@NS@@.items",),
            refresh=RefreshPolicy(cron="*/15 * * * *", max_staleness=3600),
            tags=("@@NS@@.reports",),
        )
    ]


@hookimpl
def register_invalidation_rules() -> Sequence[InvalidationRule]:
    """An item's cache entry is stale once its name or category changed, or it is gone
    (an update of ``updated_at`` alone does not count).

    No rule targets the category counts or their reports tag: those entries mirror
    the view, which only its refresh changes (see CATEGORY_COUNTS).
    """
    return [
        InvalidationRule(
            "@@NS@@.item", table="@@NS@@.items", operations=["UPDATE", "DELETE"],
            significant_columns=["name", "category"],
            targets=[RuleTarget(schema="@@NS@@.item", params={"item_id": "id"})],
        )
    ]


@hookimpl
def register_warmers() -> Sequence[Warmer]:
    """Fill a tenant's items and counts ahead of demand."""
    return [
        Warmer("@@NS@@.items", warm_items,
               schemas=["@@NS@@.item", "@@NS@@.category_counts"],
               description="items and category counts"),
    ]


@hookimpl
def register_permissions() -> Sequence[Permission]:
    """Permission names the plugin introduces."""
    return [
        Permission("@@NS@@.items.read", "see items"),
        Permission("@@NS@@.items.write", "create and edit items"),
        Permission("@@NS@@.reports.view", "see item reports"),
    ]
'''

_TABLES_SQL = '''\
-- @@NAME@@: the plugin's PostgreSQL schema and tables.
-- Idempotent (applied at every `thorbis-cache db init`, and twice by the contract).
-- Every table has tenant_id first in its primary key.

CREATE SCHEMA IF NOT EXISTS @@NS@@;

CREATE TABLE IF NOT EXISTS @@NS@@.items (
    tenant_id  text        NOT NULL,
    id         bigint      NOT NULL,
    name       text        NOT NULL,
    category   text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX IF NOT EXISTS items_by_category ON @@NS@@.items (tenant_id, category);
'''

_ITEM_COUNTS_SQL = '''\
-- @@NS@@.item_counts: items per tenant and category. One row per (tenant_id, category),
-- the view's unique index, so it can be refreshed CONCURRENTLY.
SELECT tenant_id, category, count(*)::integer AS items
FROM @@NS@@.items
GROUP BY tenant_id, category
'''

_CONTRACT_TEST = '''\
"""@@NAME@@ against the thorbis-cache plugin contract (real Redis and PostgreSQL)."""

from __future__ import annotations

from thorbis_cache.testing.contract import PluginContract

#: Rows for the contract's tenants, so that the warmer and the view have data.
SEED_SQL = [
    """
    INSERT INTO @@NS@@.items (tenant_id, id, name, category) VALUES
        ('acme', 1, 'First', 'a'),
        ('acme', 2, 'Second', 'a'),
        ('acme', 3, 'Third', 'b'),
        ('globex', 1, 'Elsewhere', 'a')
    """,
]


class Test@@CLASS@@Contract(PluginContract):
    plugin = "@@NAME@@"
    seed_sql = SEED_SQL
'''
