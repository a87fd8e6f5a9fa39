"""The Lua scripts the cache runs: their sources (with the shared steps inlined) and
their SHA, by which :meth:`RedisStore.run <thorbis_cache.store.redis_store.RedisStore.run>`
calls them."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TypeVar

import attrs

__all__ = ["Script", "load_lua", "load_scripts"]

_INCLUDE = "-- @include "


def load_lua(name: str) -> str:
    """The source of ``thorbis_cache/lua/<name>.lua``, each ``-- @include <part>`` line
    replaced by ``lua/_<part>.lua`` (EVAL scripts cannot share code at run time, so the
    steps several scripts share are written once and inlined here)."""
    folder = resources.files("thorbis_cache") / "lua"
    lines = (folder / f"{name}.lua").read_text("utf-8").split("\n")
    return "\n".join(
        (folder / f"_{line[len(_INCLUDE):].strip()}.lua").read_text("utf-8").rstrip("\n")
        if line.startswith(_INCLUDE) else line
        for line in lines
    )


S = TypeVar("S")


def load_scripts(cls: type[S]) -> S:
    """An attrs class whose fields are :class:`Script` s, each loaded from the Lua file
    named like the field (``lease_fill`` -> ``lua/lease_fill.lua``)."""
    return cls(**{f.name: Script(f.name, load_lua(f.name))
                  for f in attrs.fields(cls)})  # type: ignore[arg-type]


class Script:
    """A Lua script run by SHA; a NOSCRIPT reply (restarted or new node) falls back to
    EVAL, which also loads it there."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
