"""The hook declarations are the plugin authors' reference: every hook must document
itself completely (in the manner of pytest's hookspec.py)."""

from __future__ import annotations

import inspect

import pytest

import thorbis_cache
from thorbis_cache.plugins import hookspecs

HOOKS = [
    (name, fn)
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, "thorbis_cache_spec")
]


def test_every_hook_is_found() -> None:
    names = {name for name, _ in HOOKS}
    assert {"register_plugin_info", "register_key_schemas", "register_cache_patterns",
            "register_sql", "register_materialized_views", "register_invalidation_rules",
            "register_warmers", "register_permissions", "on_startup"} <= names


@pytest.mark.parametrize(("name", "hook"), HOOKS, ids=[n for n, _ in HOOKS])
def test_hook_is_documented(name: str, hook: object) -> None:
    doc = inspect.getdoc(hook) or ""
    assert doc.strip(), f"hook {name} has no docstring"
    assert ".. versionadded::" in doc, f"hook {name} has no version note"
    for param in inspect.signature(hook).parameters:  # type: ignore[arg-type]
        assert f":param {param}:" in doc, f"hook {name}: argument {param} is not documented"
    if name.startswith("register_"):
        assert ":returns:" in doc, f"hook {name} does not say what it returns"
        assert "Called" in doc, f"hook {name} does not say when it is called"


def test_hook_names_say_what_they_do() -> None:
    for name, _ in HOOKS:
        assert name.startswith(("register_", "on_")), name


def test_plugins_need_one_import() -> None:
    assert thorbis_cache.hookimpl is hookspecs.hookimpl
