"""Reading a package's SQL files (``<package>/sql/*.sql``), shipped as package data.

SQL is code: each statement or query of a plugin lives in its own file with a header
comment that says what it does and why it is written that way. Files are read through
:mod:`importlib.resources`, so an installed wheel works like the source tree::

    from thorbis_cache.postgres.sql_files import PackageSql

    SQL = PackageSql("thorbis_automotive")
    SQL.query("q_vehicle_history")     # the statement, header comments stripped
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["PackageSql"]


class PackageSql:
    """The SQL files of one package's ``sql/`` directory (read once, then cached).

    :param package: the importable package holding ``sql/``.
    """

    def __init__(self, package: str) -> None:
        self.package = package
        self.script = functools.cache(self._script)
        self.query = functools.cache(self._query)

    def __repr__(self) -> str:
        return f"PackageSql({self.package!r})"

    def _script(self, name: str) -> str:
        """The full text of ``sql/<name>.sql``, header comments included.

        :param name: the file name without ``.sql``.
        :raises FileNotFoundError: there is no such file (named with the package).
        """
        path = resources.files(self.package).joinpath("sql", f"{name}.sql")
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.package}: no SQL file sql/{name}.sql") from None

    def _query(self, name: str) -> str:
        """``sql/<name>.sql`` without its leading comment block: one statement, ready to
        run or to embed (a view's ``SELECT``).

        :param name: the file name without ``.sql``.
        :raises FileNotFoundError: there is no such file.
        """
        lines = self.script(name).splitlines()
        start = 0
        while start < len(lines) and (not lines[start].strip() or lines[start].startswith("--")):
            start += 1
        return "\n".join(lines[start:]).strip()
