"""Reading the plugin's SQL files (``sql/*.sql``), shipped as package data.

SQL is code: each statement or query lives in its own file with a header comment that
says what it does and why it is written that way. Files are read through
:mod:`importlib.resources`, so an installed wheel works like the source tree.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["query", "script"]


@functools.cache
def script(name: str) -> str:
    """The full text of ``sql/<name>.sql``, header comments included.

    :param name: the file name without ``.sql``.
    :raises FileNotFoundError: there is no such file.
    """
    path = resources.files("thorbis_restaurant").joinpath("sql", f"{name}.sql")
    return path.read_text(encoding="utf-8")


@functools.cache
def query(name: str) -> str:
    """``sql/<name>.sql`` without its leading comment block: one statement, ready to run
    or to embed (a view's ``SELECT``).

    :param name: the file name without ``.sql``.
    :raises FileNotFoundError: there is no such file.
    """
    lines = script(name).splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith("--")):
        start += 1
    return "\n".join(lines[start:]).strip()
