"""Public names imported on first use (PEP 562), for the packages whose import must stay
cheap: ``thorbis_cache`` itself and ``thorbis_cache.observability``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], names: Mapping[str, str],
                 modules: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each of ``names`` (name -> module) on first
    access and keeps it in ``namespace`` (the module's ``globals()``), so the next access
    is a plain lookup. ``modules`` (name -> module) are whole modules offered under a
    name: where a module lived before it moved into a subpackage."""

    def __getattr__(name: str) -> Any:
        if modules and name in modules:
            value = importlib.import_module(modules[name])
            namespace[name] = value
            return value
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
